//! What the web console reads and writes beyond the API's, as `postgres::console` does: the
//! tenant's batches newest first, a batch's manifest, reviews, and sign-in sessions.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};

use super::batches::{BATCH_COLUMNS, batch_status};
use super::columns::{ms, now_ms, time};
use super::tenants::KEY_PREFIX;
use crate::error::db;

pub(super) async fn batches(
    pool: &SqlitePool,
    tenant: TenantId,
    before: Option<BatchId>,
    limit: u32,
) -> Result<Vec<BatchStatus>> {
    let rows = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS}
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id
         WHERE b.tenant_id = ?1
           AND (?2 IS NULL OR (b.created_at, b.id) <
                (SELECT created_at, id FROM batches WHERE id = ?2 AND tenant_id = ?1))
         ORDER BY b.created_at DESC, b.id DESC LIMIT ?3"
    ))
    .bind(tenant.to_string())
    .bind(before.map(|b| b.to_string()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot list batches"))?;
    rows.iter().map(batch_status).collect()
}

pub(super) async fn batch_manifest(
    pool: &SqlitePool,
    tenant: TenantId,
    batch: BatchId,
) -> Result<String> {
    sqlx::query_scalar("SELECT manifest FROM batches WHERE id = ?1 AND tenant_id = ?2")
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db("cannot read manifest"))?
        .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))
}

pub(super) async fn review(
    pool: &SqlitePool,
    tenant: TenantId,
    jobs: &[JobId],
    verdict: Option<Verdict>,
    by: &str,
) -> Result<u64> {
    let mut ids: Vec<String> = jobs.iter().map(ToString::to_string).collect();
    ids.sort_unstable();
    ids.dedup();
    let list = serde_json::to_string(&ids).expect("strings serialize");
    let mut tx = pool.begin().await.map_err(db("cannot begin review"))?;
    // The three columns are written together, and only on a succeeded job (the migration could
    // not add those constraints to the table).
    let changed = sqlx::query(
        "UPDATE jobs SET review = ?3,
                reviewed_by = CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END,
                reviewed_at = CASE WHEN ?3 IS NULL THEN NULL ELSE ?5 END
         WHERE id IN (SELECT value FROM json_each(?1)) AND tenant_id = ?2 AND state = 'succeeded'",
    )
    .bind(&list)
    .bind(tenant.to_string())
    .bind(verdict.map(Verdict::as_str))
    .bind(by)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(db("cannot record review"))?
    .rows_affected();
    crate::review::all_or_none(changed, ids.len())?;
    tx.commit().await.map_err(db("cannot commit review"))?;
    Ok(changed)
}

pub(super) async fn open_session(pool: &SqlitePool, new: &NewSession) -> Result<Option<Session>> {
    let now = now_ms();
    let mut tx = pool.begin().await.map_err(db("cannot begin session"))?;
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < ?1")
        .bind(now - ms(std::time::Duration::from_secs(86_400)))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot prune sessions"))?;
    let Some(key) = sqlx::query(&format!(
        "SELECT tenant_id, {KEY_PREFIX} AS who FROM api_keys
         WHERE key_sha256 = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
    ))
    .bind(&new.key_sha256)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot look up api key"))?
    else {
        return Ok(None);
    };
    let expires = now.saturating_add(ms(new.ttl));
    sqlx::query(
        "INSERT INTO console_sessions (token_sha256, key_sha256, csrf, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(&new.token_sha256)
    .bind(&new.key_sha256)
    .bind(&new.csrf)
    .bind(now)
    .bind(expires)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot open session"))?;
    tx.commit().await.map_err(db("cannot commit session"))?;
    Ok(Some(Session {
        tenant: key.get::<String, _>("tenant_id").parse()?,
        who: key.get("who"),
        csrf: new.csrf.clone(),
        expires_at: time(Some(expires)).unwrap_or_default(),
    }))
}

pub(super) async fn session(pool: &SqlitePool, token_sha256: &str) -> Result<Option<Session>> {
    let row = sqlx::query(&format!(
        "SELECT k.tenant_id, k.who, s.csrf, s.expires_at
         FROM console_sessions s
         JOIN (SELECT key_sha256, tenant_id, revoked_at, expires_at, {KEY_PREFIX} AS who
               FROM api_keys) k ON k.key_sha256 = s.key_sha256
         WHERE s.token_sha256 = ?1 AND s.expires_at > ?2 AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > ?2)"
    ))
    .bind(token_sha256)
    .bind(now_ms())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read session"))?;
    row.map(|r| {
        Ok(Session {
            tenant: r.get::<String, _>("tenant_id").parse()?,
            who: r.get("who"),
            csrf: r.get("csrf"),
            expires_at: time(r.get("expires_at")).unwrap_or_default(),
        })
    })
    .transpose()
}

pub(super) async fn close_session(pool: &SqlitePool, token_sha256: &str) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = ?1")
        .bind(token_sha256)
        .execute(pool)
        .await
        .map_err(db("cannot close session"))?;
    Ok(())
}
