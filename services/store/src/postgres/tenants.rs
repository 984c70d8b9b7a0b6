//! Tenants, their quotas and usage, and their API keys.

use pixelfarm_core::*;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::columns::{TENANT_COLUMNS, clamp_i32, clamp_i64, tenant_info};
use crate::error::{db, tenant_updated};

/// The name of a key in listings and `revoke`: its prefix, or for a key registered without one
/// (by an older scheduler) `sha256:` and 8 digits of its hash, as `core::key_prefix` names such keys.
pub(super) const KEY_PREFIX: &str = "coalesce(prefix, 'sha256:' || left(key_sha256, 8))";

/// [`JobStore::usage`] on one connection (the submit's transaction, or a pooled one).
pub(super) async fn usage_of(conn: &mut PgConnection, tenant: TenantId) -> Result<Usage> {
    let row = sqlx::query(
        "SELECT (SELECT coalesce(sum(pending + queued + running + retryable), 0)::bigint
                   FROM batch_progress WHERE tenant_id = $1 AND open) AS queued,
                (SELECT coalesce(sum(job_count), 0)::bigint FROM batches WHERE tenant_id = $1
                   AND created_at > now() - interval '1 day') AS day",
    )
    .bind(tenant.as_uuid())
    .fetch_one(conn)
    .await
    .map_err(db("cannot read usage"))?;
    Ok(Usage {
        queued_jobs: row.get::<i64, _>("queued") as u64,
        jobs_last_day: row.get::<i64, _>("day") as u64,
    })
}

pub(super) async fn create_tenant(pool: &PgPool, name: &str, weight: u32) -> Result<TenantId> {
    let id = TenantId::generate();
    sqlx::query("INSERT INTO tenants (id, name, weight) VALUES ($1, $2, $3)")
        .bind(id.as_uuid())
        .bind(name)
        .bind(i32::try_from(weight).unwrap_or(i32::MAX))
        .execute(pool)
        .await
        .map_err(db("cannot create tenant"))?;
    Ok(id)
}

pub(super) async fn tenant_by_name(pool: &PgPool, name: &str) -> Result<Option<TenantId>> {
    let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db("cannot look up tenant"))?;
    Ok(id.map(TenantId::from_uuid))
}

pub(super) async fn tenant(pool: &PgPool, tenant: TenantId) -> Result<TenantInfo> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
    ))
    .bind(tenant.as_uuid())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read tenant"))?
    .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    tenant_info(&row)
}

pub(super) async fn set_quota(pool: &PgPool, tenant: TenantId, quota: &Quota) -> Result<()> {
    let n = sqlx::query(
        "UPDATE tenants SET max_queued_jobs = $2, max_jobs_per_day = $3, max_watches = $4,
                submits_per_minute = $5, max_priority = $6
         WHERE id = $1",
    )
    .bind(tenant.as_uuid())
    .bind(quota.max_queued_jobs.map(clamp_i64))
    .bind(quota.max_jobs_per_day.map(clamp_i64))
    .bind(quota.max_watches.map(clamp_i32))
    .bind(quota.submits_per_minute.map(clamp_i32))
    .bind(quota.max_priority.map(|p| i16::from(p.get())))
    .execute(pool)
    .await
    .map_err(db("cannot set quota"))?
    .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn set_retention(
    pool: &PgPool,
    tenant: TenantId,
    retention: Option<Retention>,
) -> Result<()> {
    let n = sqlx::query("UPDATE tenants SET job_retention_seconds = $2 WHERE id = $1")
        .bind(tenant.as_uuid())
        .bind(retention.map(|r| clamp_i64(r.as_seconds())))
        .execute(pool)
        .await
        .map_err(db("cannot set retention"))?
        .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn set_content_credentials(
    pool: &PgPool,
    tenant: TenantId,
    on: bool,
) -> Result<()> {
    let n = sqlx::query("UPDATE tenants SET content_credentials = $2 WHERE id = $1")
        .bind(tenant.as_uuid())
        .bind(on)
        .execute(pool)
        .await
        .map_err(db("cannot set content credentials"))?
        .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn usage(pool: &PgPool, tenant: TenantId) -> Result<Usage> {
    usage_of(
        &mut *pool.acquire().await.map_err(db("cannot read usage"))?,
        tenant,
    )
    .await
}

pub(super) async fn usage_by_tenant(pool: &PgPool) -> Result<Vec<(String, Usage)>> {
    let rows = sqlx::query(
        "SELECT t.name,
                (SELECT coalesce(sum(p.pending + p.queued + p.running + p.retryable), 0)::bigint
                   FROM batch_progress p WHERE p.tenant_id = t.id AND p.open) AS queued,
                (SELECT coalesce(sum(b.job_count), 0)::bigint FROM batches b WHERE b.tenant_id = t.id
                   AND b.created_at > now() - interval '1 day') AS day
         FROM tenants t ORDER BY t.name",
    )
    .fetch_all(pool)
    .await
    .map_err(db("cannot read usage"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("name"),
                Usage {
                    queued_jobs: r.get::<i64, _>("queued") as u64,
                    jobs_last_day: r.get::<i64, _>("day") as u64,
                },
            )
        })
        .collect())
}

pub(super) async fn add_api_key(pool: &PgPool, tenant: TenantId, key: &NewApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_sha256, tenant_id, prefix, expires_at, from_config)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key_sha256) DO UPDATE SET revoked_at = NULL, revoked_by = NULL
         WHERE api_keys.revoked_by = 'config' AND EXCLUDED.from_config
           AND api_keys.tenant_id = EXCLUDED.tenant_id",
    )
    .bind(&key.key_sha256)
    .bind(tenant.as_uuid())
    .bind(&key.prefix)
    .bind(key.expires_at)
    .bind(key.from_config)
    .execute(pool)
    .await
    .map_err(db("cannot add api key"))?;
    Ok(())
}

pub(super) async fn tenant_by_key(pool: &PgPool, key_sha256: &str) -> Result<Option<TenantId>> {
    let row = sqlx::query(
        "SELECT tenant_id,
                (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') AS stale
         FROM api_keys
         WHERE key_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(key_sha256)
    .fetch_optional(pool)
    .await
    .map_err(db("cannot look up api key"))?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<bool, _>("stale") {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE key_sha256 = $1")
            .bind(key_sha256)
            .execute(pool)
            .await
            .map_err(db("cannot record api key use"))?;
    }
    Ok(Some(TenantId::from_uuid(row.get("tenant_id"))))
}

pub(super) async fn api_keys(pool: &PgPool, tenant: TenantId) -> Result<Vec<ApiKeyInfo>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_PREFIX} AS prefix, created_at, last_used_at, expires_at, revoked_at, from_config
         FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, prefix"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(pool)
    .await
    .map_err(db("cannot list api keys"))?;
    Ok(rows
        .iter()
        .map(|r| ApiKeyInfo {
            prefix: r.get("prefix"),
            created_at: r.get("created_at"),
            last_used_at: r.get("last_used_at"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
            from_config: r.get("from_config"),
        })
        .collect())
}

pub(super) async fn revoke_api_keys(pool: &PgPool, tenant: TenantId, prefix: &str) -> Result<u64> {
    Ok(sqlx::query(&format!(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = 'operator'
         WHERE tenant_id = $1 AND {KEY_PREFIX} = $2 AND revoked_at IS NULL"
    ))
    .bind(tenant.as_uuid())
    .bind(prefix)
    .execute(pool)
    .await
    .map_err(db("cannot revoke api keys"))?
    .rows_affected())
}

pub(super) async fn revoke_config_keys_except(pool: &PgPool, keep: &[String]) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = 'config'
         WHERE from_config AND revoked_at IS NULL AND NOT (key_sha256 = ANY($1))",
    )
    .bind(keep)
    .execute(pool)
    .await
    .map_err(db("cannot revoke api keys"))?
    .rows_affected())
}
