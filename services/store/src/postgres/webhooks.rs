//! Webhooks: subscriptions, the tenant's signing secret, and the relay's claims and records on
//! the outbox the triggers of migration 0009 write.

use pixelfarm_core::*;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

use crate::error::db;
use crate::webhooks::*;

const WEBHOOK_COLUMNS: &str = "id, tenant_id, batch_id, url, events, created_at";

fn webhook(r: &PgRow) -> Result<Webhook> {
    WebhookRow {
        id: r.get("id"),
        tenant: r.get("tenant_id"),
        batch: r.get("batch_id"),
        url: r.get("url"),
        events: i64::from(r.get::<i16, _>("events")),
        created_at: r.get("created_at"),
    }
    .decode()
}

/// Give the tenant a signing secret if it has none.
async fn ensure_secret(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("UPDATE tenants SET webhook_secret = $2 WHERE id = $1 AND webhook_secret IS NULL")
        .bind(tenant.as_uuid())
        .bind(WebhookSecret::generate().expose())
        .execute(conn)
        .await
        .map_err(db("cannot make the webhook secret"))?;
    Ok(())
}

/// Store a webhook (`batch`: one batch's, from its manifest) on `conn`, the submit's transaction
/// for a batch's.
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    batch: Option<BatchId>,
    spec: &WebhookSpec,
) -> Result<Webhook> {
    ensure_secret(conn, tenant).await?;
    let row = sqlx::query(&format!(
        "INSERT INTO webhooks (id, tenant_id, batch_id, url, events) VALUES ($1, $2, $3, $4, $5)
         RETURNING {WEBHOOK_COLUMNS}"
    ))
    .bind(WebhookId::generate().as_uuid())
    .bind(tenant.as_uuid())
    .bind(batch.map(BatchId::as_uuid))
    .bind(spec.url.as_str())
    .bind(i16::from(spec.events.bits()))
    .fetch_one(conn)
    .await
    .map_err(db("cannot store the webhook"))?;
    webhook(&row)
}

pub(super) async fn add(pool: &PgPool, tenant: TenantId, spec: &WebhookSpec) -> Result<Webhook> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    let hook = insert(&mut tx, tenant, None, spec).await?;
    tx.commit().await.map_err(db("cannot commit the webhook"))?;
    Ok(hook)
}

pub(super) async fn list(pool: &PgPool, tenant: TenantId) -> Result<Vec<Webhook>> {
    sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND batch_id IS NULL
         ORDER BY created_at, id"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(pool)
    .await
    .map_err(db("cannot list webhooks"))?
    .iter()
    .map(webhook)
    .collect()
}

pub(super) async fn remove(pool: &PgPool, tenant: TenantId, id: WebhookId) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    // Its undelivered events are given up: nobody asks for them any more.
    sqlx::query(
        "UPDATE webhook_events SET gave_up_at = now()
         WHERE webhook_id = $1 AND tenant_id = $2 AND delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .execute(&mut *tx)
    .await
    .map_err(db("cannot give up the webhook's events"))?;
    let removed = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id.as_uuid())
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db("cannot remove the webhook"))?
        .rows_affected();
    tx.commit().await.map_err(db("cannot commit the removal"))?;
    Ok(removed > 0)
}

pub(super) async fn secret(pool: &PgPool, tenant: TenantId, rotate: bool) -> Result<WebhookSecret> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    if rotate {
        sqlx::query(
            "UPDATE tenants SET webhook_secret_previous = webhook_secret,
                 webhook_secret_rotated_at = now(), webhook_secret = $2
             WHERE id = $1",
        )
        .bind(tenant.as_uuid())
        .bind(WebhookSecret::generate().expose())
        .execute(&mut *tx)
        .await
        .map_err(db("cannot rotate the webhook secret"))?;
    }
    ensure_secret(&mut tx, tenant).await?;
    let text: String = sqlx::query_scalar("SELECT webhook_secret FROM tenants WHERE id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read the webhook secret"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    tx.commit()
        .await
        .map_err(db("cannot commit the webhook secret"))?;
    WebhookSecret::from_stored(text)
}

pub(super) async fn claim(pool: &PgPool, limit: u32, lease: Duration) -> Result<Vec<DueEvent>> {
    // Each claim counts as an attempt and moves the event's next attempt a lease ahead, so a
    // relay that dies mid-send leaves it due again then (SKIP LOCKED: relays of several
    // schedulers take different events).
    let rows = sqlx::query(
        "UPDATE webhook_events e SET attempts = e.attempts + 1,
             next_attempt_at = now() + $2 * interval '1 millisecond'
         FROM (SELECT id FROM webhook_events
               WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, tenants t
         WHERE e.id = due.id AND t.id = e.tenant_id
         RETURNING e.id, e.kind, e.tenant_id, e.batch_id, e.job_id, e.url, e.created_at,
             e.attempts, e.body, t.webhook_secret,
             CASE WHEN t.webhook_secret_rotated_at > now() - $3 * interval '1 second'
                  THEN t.webhook_secret_previous END AS previous",
    )
    .bind(i64::from(limit))
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(PREVIOUS_SECRET_SIGNS_FOR.num_seconds() as f64)
    .fetch_all(pool)
    .await
    .map_err(db("cannot claim webhook events"))?;
    rows.iter()
        .map(|r| {
            EventRow {
                id: r.get("id"),
                kind: r.get("kind"),
                tenant: r.get("tenant_id"),
                batch: r.get("batch_id"),
                job: r.get("job_id"),
                url: r.get("url"),
                created_at: r.get("created_at"),
                attempts: i64::from(r.get::<i32, _>("attempts")),
                body: r.get("body"),
                secret: r.get("webhook_secret"),
                previous: r.get("previous"),
            }
            .decode()
        })
        .collect()
}

pub(super) async fn record(
    pool: &PgPool,
    event: EventId,
    attempt: u32,
    body: &str,
    outcome: &AttemptOutcome,
    took: Duration,
) -> Result<()> {
    let (status, error, delivered, retry_at) = attempt_columns(outcome);
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    // Only the latest claim's attempt may settle the event: a relay whose lease ran out while
    // it waited on the receiver records its attempt, and the event stays with the newer claim.
    sqlx::query(
        "UPDATE webhook_events SET body = coalesce(body, $3),
             delivered_at = CASE WHEN $4 THEN now() END,
             gave_up_at = CASE WHEN NOT $4 AND $5::timestamptz IS NULL THEN now() END,
             next_attempt_at = coalesce($5, next_attempt_at)
         WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .bind(event.as_uuid())
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(body)
    .bind(delivered)
    .bind(retry_at)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot record the webhook attempt"))?;
    sqlx::query(
        "INSERT INTO webhook_attempts (event_id, attempt, status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(event.as_uuid())
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(status)
    .bind(error)
    .bind(i64::try_from(took.as_millis()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await
    .map_err(db("cannot log the webhook attempt"))?;
    tx.commit()
        .await
        .map_err(db("cannot commit the webhook attempt"))
}

pub(super) async fn deliveries(
    pool: &PgPool,
    tenant: TenantId,
    batch: BatchId,
    after: Option<EventId>,
    limit: u32,
) -> Result<Vec<WebhookDelivery>> {
    let rows = sqlx::query(
        "SELECT id, kind, job_id, url, created_at, next_attempt_at,
                delivered_at IS NOT NULL AS delivered, gave_up_at IS NOT NULL AS gave_up
         FROM webhook_events
         WHERE tenant_id = $1 AND batch_id = $2
           AND ($3::uuid IS NULL OR (created_at, id) >
                (SELECT created_at, id FROM webhook_events WHERE id = $3 AND batch_id = $2))
         ORDER BY created_at, id LIMIT $4",
    )
    .bind(tenant.as_uuid())
    .bind(batch.as_uuid())
    .bind(after.map(EventId::as_uuid))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot read the delivery log"))?;
    let events: Vec<LoggedEvent> = rows
        .iter()
        .map(|r| LoggedEvent {
            id: r.get("id"),
            kind: r.get("kind"),
            job: r.get("job_id"),
            url: r.get("url"),
            created_at: r.get("created_at"),
            next_attempt_at: r.get("next_attempt_at"),
            delivered: r.get("delivered"),
            gave_up: r.get("gave_up"),
        })
        .collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let attempts = sqlx::query(
        "SELECT event_id, attempt, at, status, error, duration_ms FROM webhook_attempts
         WHERE event_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(db("cannot read the delivery attempts"))?
    .iter()
    .map(|r| LoggedAttempt {
        event: r.get("event_id"),
        attempt: DeliveryAttempt {
            attempt: r.get::<i32, _>("attempt").max(0) as u32,
            at: r.get("at"),
            status: r
                .get::<Option<i32>, _>("status")
                .and_then(|s| u16::try_from(s).ok()),
            error: r.get("error"),
            duration_ms: r.get::<i64, _>("duration_ms").max(0) as u64,
        },
    })
    .collect();
    Ok(delivery_log(events, attempts))
}

pub(super) async fn pending(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL AND gave_up_at IS NULL",
    )
    .fetch_one(pool)
    .await
    .map_err(db("cannot count pending webhook events"))?;
    Ok(n.max(0) as u64)
}
