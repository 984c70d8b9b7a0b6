//! Webhooks: subscriptions, the tenant's signing secret, and the relay's claims and records on
//! the outbox the triggers of migration 0009 write (one process uses the database: a claim needs
//! no SKIP LOCKED).

use pixelfarm_core::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::time::Duration;

use super::columns::{ms, now_ms, opt_uuid, time, uuid};
use crate::error::db;
use crate::webhooks::*;

const WEBHOOK_COLUMNS: &str = "id, tenant_id, batch_id, url, events, created_at";

fn webhook(r: &SqliteRow) -> Result<Webhook> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok(WebhookRow {
            id: uuid(r, "id")?,
            tenant: uuid(r, "tenant_id")?,
            batch: opt_uuid(r, "batch_id")?,
            url: r.try_get("url")?,
            events: r.try_get("events")?,
            created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        })
    };
    read().map_err(db("cannot read webhook row"))?.decode()
}

async fn ensure_secret(conn: &mut SqliteConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("UPDATE tenants SET webhook_secret = ?2 WHERE id = ?1 AND webhook_secret IS NULL")
        .bind(tenant.to_string())
        .bind(WebhookSecret::generate().expose())
        .execute(conn)
        .await
        .map_err(db("cannot make the webhook secret"))?;
    Ok(())
}

/// Store a webhook (`batch`: one batch's, from its manifest) on `conn`, the submit's transaction
/// for a batch's.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    batch: Option<BatchId>,
    spec: &WebhookSpec,
) -> Result<Webhook> {
    ensure_secret(conn, tenant).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO webhooks (id, tenant_id, batch_id, url, events, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(WebhookId::generate().to_string())
    .bind(tenant.to_string())
    .bind(batch.map(|b| b.to_string()))
    .bind(spec.url.as_str())
    .bind(i64::from(spec.events.bits()))
    .bind(now_ms())
    .fetch_one(conn)
    .await
    .map_err(db("cannot store the webhook"))?;
    webhook(&row)
}

pub(super) async fn add(
    pool: &SqlitePool,
    tenant: TenantId,
    spec: &WebhookSpec,
) -> Result<Webhook> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    let hook = insert(&mut tx, tenant, None, spec).await?;
    tx.commit().await.map_err(db("cannot commit the webhook"))?;
    Ok(hook)
}

pub(super) async fn list(pool: &SqlitePool, tenant: TenantId) -> Result<Vec<Webhook>> {
    sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = ?1 AND batch_id IS NULL
         ORDER BY created_at, id"
    ))
    .bind(tenant.to_string())
    .fetch_all(pool)
    .await
    .map_err(db("cannot list webhooks"))?
    .iter()
    .map(webhook)
    .collect()
}

pub(super) async fn remove(pool: &SqlitePool, tenant: TenantId, id: WebhookId) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    sqlx::query(
        "UPDATE webhook_events SET gave_up_at = ?3
         WHERE webhook_id = ?1 AND tenant_id = ?2 AND delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .bind(id.to_string())
    .bind(tenant.to_string())
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(db("cannot give up the webhook's events"))?;
    let removed = sqlx::query("DELETE FROM webhooks WHERE id = ?1 AND tenant_id = ?2")
        .bind(id.to_string())
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("cannot remove the webhook"))?
        .rows_affected();
    tx.commit().await.map_err(db("cannot commit the removal"))?;
    Ok(removed > 0)
}

pub(super) async fn secret(
    pool: &SqlitePool,
    tenant: TenantId,
    rotate: bool,
) -> Result<WebhookSecret> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    if rotate {
        sqlx::query(
            "UPDATE tenants SET webhook_secret_previous = webhook_secret,
                 webhook_secret_rotated_at = ?3, webhook_secret = ?2
             WHERE id = ?1",
        )
        .bind(tenant.to_string())
        .bind(WebhookSecret::generate().expose())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("cannot rotate the webhook secret"))?;
    }
    ensure_secret(&mut tx, tenant).await?;
    let text: String = sqlx::query_scalar("SELECT webhook_secret FROM tenants WHERE id = ?1")
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read the webhook secret"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    tx.commit()
        .await
        .map_err(db("cannot commit the webhook secret"))?;
    WebhookSecret::from_stored(text)
}

pub(super) async fn claim(pool: &SqlitePool, limit: u32, lease: Duration) -> Result<Vec<DueEvent>> {
    let now = now_ms();
    let rows = sqlx::query(
        "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?2 + ?3
         WHERE id IN (SELECT id FROM webhook_events
                      WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?2
                      ORDER BY next_attempt_at LIMIT ?1)
         RETURNING id, kind, tenant_id, batch_id, job_id, url, created_at, attempts, body,
             (SELECT webhook_secret FROM tenants t WHERE t.id = tenant_id) AS secret,
             (SELECT webhook_secret_previous FROM tenants t
              WHERE t.id = tenant_id AND webhook_secret_rotated_at > ?2 - ?4) AS previous",
    )
    .bind(i64::from(limit))
    .bind(now)
    .bind(ms(lease))
    .bind(PREVIOUS_SECRET_SIGNS_FOR.num_milliseconds())
    .fetch_all(pool)
    .await
    .map_err(db("cannot claim webhook events"))?;
    rows.iter()
        .map(|r| {
            let read = || -> std::result::Result<_, sqlx::Error> {
                Ok(EventRow {
                    id: uuid(r, "id")?,
                    kind: r.try_get("kind")?,
                    tenant: uuid(r, "tenant_id")?,
                    batch: uuid(r, "batch_id")?,
                    job: opt_uuid(r, "job_id")?,
                    url: r.try_get("url")?,
                    created_at: time(r.try_get("created_at")?).unwrap_or_default(),
                    attempts: r.try_get("attempts")?,
                    body: r.try_get("body")?,
                    secret: r.try_get("secret")?,
                    previous: r.try_get("previous")?,
                })
            };
            read()
                .map_err(db("cannot read webhook event row"))?
                .decode()
        })
        .collect()
}

pub(super) async fn record(
    pool: &SqlitePool,
    event: EventId,
    attempt: u32,
    body: &str,
    outcome: &AttemptOutcome,
    took: Duration,
) -> Result<()> {
    let (status, error, delivered, retry_at) = attempt_columns(outcome);
    let now = now_ms();
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    // Only the latest claim's attempt may settle the event (see the Postgres store).
    sqlx::query(
        "UPDATE webhook_events SET body = coalesce(body, ?3),
             delivered_at = CASE WHEN ?4 THEN ?6 END,
             gave_up_at = CASE WHEN NOT ?4 AND ?5 IS NULL THEN ?6 END,
             next_attempt_at = coalesce(?5, next_attempt_at)
         WHERE id = ?1 AND attempts = ?2 AND delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .bind(event.to_string())
    .bind(i64::from(attempt))
    .bind(body)
    .bind(delivered)
    .bind(retry_at.map(|t| t.timestamp_millis()))
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot record the webhook attempt"))?;
    sqlx::query(
        "INSERT INTO webhook_attempts (event_id, attempt, at, status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )
    .bind(event.to_string())
    .bind(i64::from(attempt))
    .bind(now)
    .bind(status)
    .bind(error)
    .bind(ms(took))
    .execute(&mut *tx)
    .await
    .map_err(db("cannot log the webhook attempt"))?;
    tx.commit()
        .await
        .map_err(db("cannot commit the webhook attempt"))
}

pub(super) async fn deliveries(
    pool: &SqlitePool,
    tenant: TenantId,
    batch: BatchId,
    after: Option<EventId>,
    limit: u32,
) -> Result<Vec<WebhookDelivery>> {
    let rows = sqlx::query(
        "SELECT id, kind, job_id, url, created_at, next_attempt_at,
                delivered_at IS NOT NULL AS delivered, gave_up_at IS NOT NULL AS gave_up
         FROM webhook_events
         WHERE tenant_id = ?1 AND batch_id = ?2
           AND (?3 IS NULL OR (created_at, id) >
                (SELECT created_at, id FROM webhook_events WHERE id = ?3 AND batch_id = ?2))
         ORDER BY created_at, id LIMIT ?4",
    )
    .bind(tenant.to_string())
    .bind(batch.to_string())
    .bind(after.map(|e| e.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot read the delivery log"))?;
    let read = |r: &SqliteRow| -> std::result::Result<LoggedEvent, sqlx::Error> {
        Ok(LoggedEvent {
            id: uuid(r, "id")?,
            kind: r.try_get("kind")?,
            job: opt_uuid(r, "job_id")?,
            url: r.try_get("url")?,
            created_at: time(r.try_get("created_at")?).unwrap_or_default(),
            next_attempt_at: time(r.try_get("next_attempt_at")?).unwrap_or_default(),
            delivered: r.try_get("delivered")?,
            gave_up: r.try_get("gave_up")?,
        })
    };
    let events = rows
        .iter()
        .map(read)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db("cannot read the delivery log"))?;
    let ids = serde_json::to_string(&events.iter().map(|e| e.id).collect::<Vec<_>>())
        .expect("uuids serialize");
    let attempts = sqlx::query(
        "SELECT event_id, attempt, at, status, error, duration_ms FROM webhook_attempts
         WHERE event_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(db("cannot read the delivery attempts"))?
    .iter()
    .map(|r| {
        Ok(LoggedAttempt {
            event: uuid(r, "event_id")?,
            attempt: DeliveryAttempt {
                attempt: r.try_get::<i64, _>("attempt")?.max(0) as u32,
                at: time(r.try_get("at")?).unwrap_or_default(),
                status: r
                    .try_get::<Option<i64>, _>("status")?
                    .and_then(|s| u16::try_from(s).ok()),
                error: r.try_get("error")?,
                duration_ms: r.try_get::<i64, _>("duration_ms")?.max(0) as u64,
            },
        })
    })
    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
    .map_err(db("cannot read the delivery attempts"))?;
    Ok(delivery_log(events, attempts))
}

pub(super) async fn pending(pool: &SqlitePool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .fetch_one(pool)
    .await
    .map_err(db("cannot count pending webhook events"))?;
    Ok(n.max(0) as u64)
}
