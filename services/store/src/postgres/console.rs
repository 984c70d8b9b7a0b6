//! What the web console reads and writes beyond the API's: the tenant's batches newest first, a
//! batch's manifest, reviews, and sign-in sessions.

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::batches::{BATCH_COLUMNS, batch_status};
use super::tenants::KEY_PREFIX;
use crate::error::db;

pub(super) async fn batches(
    pool: &PgPool,
    tenant: TenantId,
    before: Option<BatchId>,
    limit: u32,
) -> Result<Vec<BatchStatus>> {
    let rows = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS}
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id
         WHERE b.tenant_id = $1
           AND ($2::uuid IS NULL OR (b.created_at, b.id) <
                (SELECT created_at, id FROM batches WHERE id = $2 AND tenant_id = $1))
         ORDER BY b.created_at DESC, b.id DESC LIMIT $3"
    ))
    .bind(tenant.as_uuid())
    .bind(before.map(BatchId::as_uuid))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot list batches"))?;
    rows.iter().map(batch_status).collect()
}

pub(super) async fn batch_manifest(
    pool: &PgPool,
    tenant: TenantId,
    batch: BatchId,
) -> Result<String> {
    sqlx::query_scalar("SELECT manifest FROM batches WHERE id = $1 AND tenant_id = $2")
        .bind(batch.as_uuid())
        .bind(tenant.as_uuid())
        .fetch_optional(pool)
        .await
        .map_err(db("cannot read manifest"))?
        .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))
}

pub(super) async fn review(
    pool: &PgPool,
    tenant: TenantId,
    jobs: &[JobId],
    verdict: Option<Verdict>,
    by: &str,
) -> Result<u64> {
    let mut ids: Vec<Uuid> = jobs.iter().map(|j| j.as_uuid()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tx = pool.begin().await.map_err(db("cannot begin review"))?;
    let changed = sqlx::query(
        "UPDATE jobs SET review = $3,
                reviewed_by = CASE WHEN $3::text IS NULL THEN NULL ELSE $4 END,
                reviewed_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END
         WHERE id = ANY($1) AND tenant_id = $2 AND state = 'succeeded'",
    )
    .bind(&ids)
    .bind(tenant.as_uuid())
    .bind(verdict.map(Verdict::as_str))
    .bind(by)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot record review"))?
    .rows_affected();
    crate::review::all_or_none(changed, ids.len())?;
    tx.commit().await.map_err(db("cannot commit review"))?;
    Ok(changed)
}

pub(super) async fn open_session(pool: &PgPool, new: &NewSession) -> Result<Option<Session>> {
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now() - interval '1 day'")
        .execute(pool)
        .await
        .map_err(db("cannot prune sessions"))?;
    // The key's prefix is read as `api_keys` stores it, with the prefix column's fallback for
    // keys of older schedulers.
    let row = sqlx::query(&format!(
        "WITH k AS (
             SELECT key_sha256, tenant_id, {KEY_PREFIX} AS who FROM api_keys
             WHERE key_sha256 = $2 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())),
         s AS (
             INSERT INTO console_sessions (token_sha256, key_sha256, csrf, expires_at)
             SELECT $1, key_sha256, $3, now() + make_interval(secs => $4) FROM k
             RETURNING expires_at)
         SELECT k.tenant_id, k.who, s.expires_at FROM k, s"
    ))
    .bind(&new.token_sha256)
    .bind(&new.key_sha256)
    .bind(&new.csrf)
    .bind(new.ttl.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot open session"))?;
    Ok(row.map(|r| Session {
        tenant: TenantId::from_uuid(r.get("tenant_id")),
        who: r.get("who"),
        csrf: new.csrf.clone(),
        expires_at: r.get("expires_at"),
    }))
}

pub(super) async fn session(pool: &PgPool, token_sha256: &str) -> Result<Option<Session>> {
    let row = sqlx::query(&format!(
        "SELECT k.tenant_id, k.who, s.csrf, s.expires_at
         FROM console_sessions s
         JOIN LATERAL (SELECT tenant_id, revoked_at, expires_at, {KEY_PREFIX} AS who
                       FROM api_keys WHERE key_sha256 = s.key_sha256) k ON true
         WHERE s.token_sha256 = $1 AND s.expires_at > now() AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now())"
    ))
    .bind(token_sha256)
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read session"))?;
    Ok(row.map(|r| Session {
        tenant: TenantId::from_uuid(r.get("tenant_id")),
        who: r.get("who"),
        csrf: r.get("csrf"),
        expires_at: r.get("expires_at"),
    }))
}

pub(super) async fn close_session(pool: &PgPool, token_sha256: &str) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_sha256 = $1")
        .bind(token_sha256)
        .execute(pool)
        .await
        .map_err(db("cannot close session"))?;
    Ok(())
}
