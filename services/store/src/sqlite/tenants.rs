//! Tenants, their quotas and usage, and their API keys.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};

use super::columns::{TENANT_COLUMNS, clamp_i64, now_ms, tenant_info, time};
use crate::error::{db, tenant_updated};

/// The name of a key in listings and `revoke`: its prefix, or for a key registered without one
/// (by an older scheduler) `sha256:` and 8 digits of its hash, as `core::key_prefix` names such keys.
pub(super) const KEY_PREFIX: &str = "coalesce(prefix, 'sha256:' || substr(key_sha256, 1, 8))";

/// The quotas' day, in milliseconds.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// A key's `last_used_at` is rewritten once it is this old (one write per key and minute).
const LAST_USED_EVERY_MS: i64 = 60_000;

/// [`JobStore::usage`] on one connection (the submit's transaction, or a pooled one).
pub(super) async fn usage_of(conn: &mut sqlx::SqliteConnection, tenant: TenantId) -> Result<Usage> {
    let row = sqlx::query(
        "SELECT (SELECT coalesce(sum(pending + queued + running + retryable), 0)
                   FROM batch_progress WHERE tenant_id = ?1 AND open) AS queued,
                (SELECT coalesce(sum(job_count), 0) FROM batches WHERE tenant_id = ?1
                   AND created_at > ?2) AS day",
    )
    .bind(tenant.to_string())
    .bind(now_ms() - DAY_MS)
    .fetch_one(conn)
    .await
    .map_err(db("cannot read usage"))?;
    Ok(Usage {
        queued_jobs: row.get::<i64, _>("queued") as u64,
        jobs_last_day: row.get::<i64, _>("day") as u64,
    })
}

pub(super) async fn create_tenant(pool: &SqlitePool, name: &str, weight: u32) -> Result<TenantId> {
    let id = TenantId::generate();
    sqlx::query("INSERT INTO tenants (id, name, weight, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(id.to_string())
        .bind(name)
        .bind(i64::from(weight))
        .bind(now_ms())
        .execute(pool)
        .await
        .map_err(db("cannot create tenant"))?;
    Ok(id)
}

pub(super) async fn tenant_by_name(pool: &SqlitePool, name: &str) -> Result<Option<TenantId>> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db("cannot look up tenant"))?;
    id.map(|s| s.parse()).transpose()
}

pub(super) async fn tenant(pool: &SqlitePool, tenant: TenantId) -> Result<TenantInfo> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
    ))
    .bind(tenant.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read tenant"))?
    .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    tenant_info(&row)
}

pub(super) async fn set_quota(pool: &SqlitePool, tenant: TenantId, quota: &Quota) -> Result<()> {
    let n = sqlx::query(
        "UPDATE tenants SET max_queued_jobs = ?2, max_jobs_per_day = ?3, max_watches = ?4,
                submits_per_minute = ?5, max_priority = ?6
         WHERE id = ?1",
    )
    .bind(tenant.to_string())
    .bind(quota.max_queued_jobs.map(clamp_i64))
    .bind(quota.max_jobs_per_day.map(clamp_i64))
    .bind(quota.max_watches.map(i64::from))
    .bind(quota.submits_per_minute.map(i64::from))
    .bind(quota.max_priority.map(|p| i64::from(p.get())))
    .execute(pool)
    .await
    .map_err(db("cannot set quota"))?
    .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn set_retention(
    pool: &SqlitePool,
    tenant: TenantId,
    retention: Option<Retention>,
) -> Result<()> {
    let n = sqlx::query("UPDATE tenants SET job_retention_seconds = ?2 WHERE id = ?1")
        .bind(tenant.to_string())
        .bind(retention.map(|r| clamp_i64(r.as_seconds())))
        .execute(pool)
        .await
        .map_err(db("cannot set retention"))?
        .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn set_content_credentials(
    pool: &SqlitePool,
    tenant: TenantId,
    on: bool,
) -> Result<()> {
    let n = sqlx::query("UPDATE tenants SET content_credentials = ?2 WHERE id = ?1")
        .bind(tenant.to_string())
        .bind(on)
        .execute(pool)
        .await
        .map_err(db("cannot set content credentials"))?
        .rows_affected();
    tenant_updated(tenant, n)
}

pub(super) async fn usage(pool: &SqlitePool, tenant: TenantId) -> Result<Usage> {
    usage_of(
        &mut *pool.acquire().await.map_err(db("cannot read usage"))?,
        tenant,
    )
    .await
}

pub(super) async fn usage_by_tenant(pool: &SqlitePool) -> Result<Vec<(String, Usage)>> {
    let rows = sqlx::query(
        "SELECT t.name,
                (SELECT coalesce(sum(p.pending + p.queued + p.running + p.retryable), 0)
                   FROM batch_progress p WHERE p.tenant_id = t.id AND p.open) AS queued,
                (SELECT coalesce(sum(b.job_count), 0) FROM batches b WHERE b.tenant_id = t.id
                   AND b.created_at > ?1) AS day
         FROM tenants t ORDER BY t.name",
    )
    .bind(now_ms() - DAY_MS)
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

pub(super) async fn add_api_key(
    pool: &SqlitePool,
    tenant: TenantId,
    key: &NewApiKey,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_sha256, tenant_id, created_at, prefix, expires_at, from_config)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (key_sha256) DO UPDATE SET revoked_at = NULL, revoked_by = NULL
         WHERE revoked_by = 'config' AND excluded.from_config = 1
           AND tenant_id = excluded.tenant_id",
    )
    .bind(&key.key_sha256)
    .bind(tenant.to_string())
    .bind(now_ms())
    .bind(&key.prefix)
    .bind(key.expires_at.map(|t| t.timestamp_millis()))
    .bind(key.from_config)
    .execute(pool)
    .await
    .map_err(db("cannot add api key"))?;
    Ok(())
}

pub(super) async fn tenant_by_key(pool: &SqlitePool, key_sha256: &str) -> Result<Option<TenantId>> {
    let now = now_ms();
    let row = sqlx::query(
        "SELECT tenant_id, coalesce(last_used_at, 0) AS last_used_at FROM api_keys
         WHERE key_sha256 = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
    )
    .bind(key_sha256)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(db("cannot look up api key"))?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<i64, _>("last_used_at") < now - LAST_USED_EVERY_MS {
        sqlx::query("UPDATE api_keys SET last_used_at = ?2 WHERE key_sha256 = ?1")
            .bind(key_sha256)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db("cannot record api key use"))?;
    }
    row.get::<String, _>("tenant_id").parse().map(Some)
}

pub(super) async fn api_keys(pool: &SqlitePool, tenant: TenantId) -> Result<Vec<ApiKeyInfo>> {
    let rows = sqlx::query(&format!(
        "SELECT {KEY_PREFIX} AS prefix, created_at, last_used_at, expires_at, revoked_at, from_config
         FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at, prefix"
    ))
    .bind(tenant.to_string())
    .fetch_all(pool)
    .await
    .map_err(db("cannot list api keys"))?;
    Ok(rows
        .iter()
        .map(|r| ApiKeyInfo {
            prefix: r.get("prefix"),
            created_at: time(r.get("created_at")).unwrap_or_default(),
            last_used_at: time(r.get("last_used_at")),
            expires_at: time(r.get("expires_at")),
            revoked_at: time(r.get("revoked_at")),
            from_config: r.get("from_config"),
        })
        .collect())
}

pub(super) async fn revoke_api_keys(
    pool: &SqlitePool,
    tenant: TenantId,
    prefix: &str,
) -> Result<u64> {
    Ok(sqlx::query(&format!(
        "UPDATE api_keys SET revoked_at = ?3, revoked_by = 'operator'
         WHERE tenant_id = ?1 AND {KEY_PREFIX} = ?2 AND revoked_at IS NULL"
    ))
    .bind(tenant.to_string())
    .bind(prefix)
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(db("cannot revoke api keys"))?
    .rows_affected())
}

pub(super) async fn revoke_config_keys_except(pool: &SqlitePool, keep: &[String]) -> Result<u64> {
    let keep = serde_json::to_string(keep).expect("strings serialize");
    Ok(sqlx::query(
        "UPDATE api_keys SET revoked_at = ?2, revoked_by = 'config'
         WHERE from_config = 1 AND revoked_at IS NULL
           AND key_sha256 NOT IN (SELECT value FROM json_each(?1))",
    )
    .bind(keep)
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(db("cannot revoke api keys"))?
    .rows_affected())
}
