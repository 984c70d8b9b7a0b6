//! Batches: the submit transaction, reading a batch and its jobs, cancelling.

use pixelfarm_core::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::columns::{JOB_COLUMNS, TENANT_COLUMNS, now_ms, record, tenant_info, time};
use super::tenants::usage_of;
use crate::error::db;
use crate::progress::state_counts;

pub(super) async fn submit(
    pool: &SqlitePool,
    tenant: TenantId,
    batch: &BatchSpec,
    max_attempts: u32,
) -> Result<SubmitOutcome> {
    let mut tx = pool.begin().await.map_err(db("cannot begin submit"))?;
    // A write first: the transaction holds the database's write lock from here, so the
    // counts below stay true until commit (as the row lock does on Postgres).
    let row = sqlx::query(&format!(
        "UPDATE tenants SET name = name WHERE id = ?1 RETURNING {TENANT_COLUMNS}"
    ))
    .bind(tenant.to_string())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot lock tenant"))?
    .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    let quota = tenant_info(&row)?.quota;
    if let Some(existing) = sqlx::query(
        "SELECT id, job_count FROM batches WHERE tenant_id = ?1 AND idempotency_key = ?2",
    )
    .bind(tenant.to_string())
    .bind(&batch.idempotency_key)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot read existing batch"))?
    {
        return Ok(SubmitOutcome {
            batch_id: existing.get::<String, _>("id").parse()?,
            created: false,
            jobs: existing.get::<i64, _>("job_count") as u64,
        });
    }
    let usage = if quota.counts_usage() {
        usage_of(&mut tx, tenant).await?
    } else {
        Usage::default()
    };
    quota.admit(batch, usage)?;
    let id = BatchId::generate();
    let now = now_ms();
    let tags = serde_json::to_string(&batch.tags).expect("string map serializes");
    let inserted = sqlx::query(
        "INSERT INTO batches (id, tenant_id, name, model, priority, idempotency_key, tags, manifest, job_count, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(tenant.to_string())
    .bind(&batch.name)
    .bind(batch.model.as_str())
    .bind(i64::from(batch.priority.get()))
    .bind(&batch.idempotency_key)
    .bind(&tags)
    .bind(&batch.source)
    .bind(batch.jobs.len() as i64)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot insert batch"))?;
    if inserted.rows_affected() == 0 {
        // Unreachable while this transaction holds the write lock: the key was looked up above.
        return Err(Error::new(
            ErrorKind::Conflict,
            "a batch with this idempotency key was stored meanwhile; submit again",
        ));
    }
    if let Some(hook) = &batch.webhook {
        super::webhooks::insert(&mut tx, tenant, Some(id), hook).await?;
    }
    for j in batch.jobs.iter() {
        sqlx::query(
            "INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(JobId::generate().to_string())
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(batch.model.as_str())
        .bind(i64::from(batch.priority.get()))
        .bind(&j.key)
        .bind(serde_json::to_string(&j.params).expect("params serialize"))
        .bind(i64::from(max_attempts.max(1)))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot insert job"))?;
    }
    tx.commit().await.map_err(db("cannot commit submit"))?;
    Ok(SubmitOutcome {
        batch_id: id,
        created: true,
        jobs: batch.jobs.len() as u64,
    })
}

/// The columns [`batch_status`] reads, from `batches b JOIN batch_progress p`.
pub(super) const BATCH_COLUMNS: &str = "b.id, b.name, b.model, b.priority, b.tags, b.created_at, \
    p.pending, p.queued, p.running, p.succeeded, p.retryable, p.dead, p.cancelled, \
    p.first_started_at, p.last_finished_at, p.device_seconds, b.jobs_purged_at";

/// A batch with its counts, from a row of [`BATCH_COLUMNS`].
pub(super) fn batch_status(row: &SqliteRow) -> Result<BatchStatus> {
    Ok(BatchStatus {
        id: row.get::<String, _>("id").parse()?,
        name: row.get("name"),
        model: ModelName::parse(row.get::<String, _>("model"))?,
        priority: Priority::parse(u8::try_from(row.get::<i64, _>("priority")).unwrap_or(0))?,
        tags: serde_json::from_str(&row.get::<String, _>("tags")).unwrap_or_default(),
        created_at: time(row.get("created_at")).unwrap_or_default(),
        counts: state_counts(|state| row.get::<i64, _>(state)),
        first_started_at: time(row.get("first_started_at")),
        last_finished_at: time(row.get("last_finished_at")),
        device_seconds: row.get("device_seconds"),
        jobs_purged_at: time(row.get("jobs_purged_at")),
    })
}

pub(super) async fn batch(
    pool: &SqlitePool,
    tenant: TenantId,
    batch: BatchId,
) -> Result<BatchStatus> {
    let row = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS}
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id
         WHERE b.id = ?1 AND b.tenant_id = ?2"
    ))
    .bind(batch.to_string())
    .bind(tenant.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read batch"))?
    .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))?;
    batch_status(&row)
}

pub(super) async fn jobs(
    pool: &SqlitePool,
    tenant: TenantId,
    batch: BatchId,
    after: Option<JobId>,
    limit: u32,
) -> Result<Vec<JobRecord>> {
    // Rows of a batch retention took may remain while it deletes them: none is listed.
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = ?1 AND tenant_id = ?2 AND id > ?3
           AND NOT EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND jobs_purged_at IS NOT NULL)
         ORDER BY id LIMIT ?4"
    );
    let rows = sqlx::query(&sql)
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .bind(after.map_or_else(String::new, |a| a.to_string()))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db("cannot list jobs"))?;
    if rows.is_empty() {
        // Distinguish "no such batch" and "its jobs are gone" from an empty page.
        if let Some(at) = self::batch(pool, tenant, batch).await?.jobs_purged_at {
            return Err(jobs_gone(batch, at));
        }
    }
    rows.iter().map(record).collect()
}

pub(super) async fn job(pool: &SqlitePool, tenant: TenantId, job: JobId) -> Result<JobRecord> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant_id = ?2");
    let row = sqlx::query(&sql)
        .bind(job.to_string())
        .bind(tenant.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db("cannot read job"))?
        .ok_or_else(|| job_not_found(job))?;
    record(&row)
}

pub(super) async fn cancel(pool: &SqlitePool, tenant: TenantId, batch: BatchId) -> Result<u64> {
    self::batch(pool, tenant, batch).await?;
    let r = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = ?3, queued_at = NULL, run_after = NULL,
             lease_owner = NULL, lease_until = NULL
         WHERE batch_id = ?1 AND tenant_id = ?2 AND state IN ('pending', 'queued', 'retryable', 'running')",
    )
    .bind(batch.to_string())
    .bind(tenant.to_string())
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(db("cannot cancel batch"))?;
    Ok(r.rows_affected())
}
