//! Batches: the submit transaction, reading a batch and its jobs, cancelling.

use pixelfarm_core::*;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::columns::{JOB_COLUMNS, TENANT_COLUMNS, record, tenant_info};
use super::tenants::usage_of;
use crate::error::db;
use crate::progress::state_counts;

/// Rows per INSERT statement when writing a batch's jobs (bind arrays, one round trip each).
const INSERT_CHUNK: usize = 10_000;

pub(super) async fn submit(
    pool: &PgPool,
    tenant: TenantId,
    batch: &BatchSpec,
    max_attempts: u32,
) -> Result<SubmitOutcome> {
    let mut tx = pool.begin().await.map_err(db("cannot begin submit"))?;
    // The tenant's row locked until commit: its submits count and write one at a time.
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE"
    ))
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot lock tenant"))?
    .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
    let quota = tenant_info(&row)?.quota;
    if let Some(existing) = sqlx::query(
        "SELECT id, job_count FROM batches WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant.as_uuid())
    .bind(&batch.idempotency_key)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot read existing batch"))?
    {
        return Ok(SubmitOutcome {
            batch_id: BatchId::from_uuid(existing.get("id")),
            created: false,
            jobs: existing.get::<i32, _>("job_count") as u64,
        });
    }
    let usage = if quota.counts_usage() {
        usage_of(&mut tx, tenant).await?
    } else {
        Usage::default()
    };
    quota.admit(batch, usage)?;
    let id = BatchId::generate();
    let tags = serde_json::to_value(&batch.tags).expect("string map serializes");
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO batches (id, tenant_id, name, model, priority, idempotency_key, tags, manifest, job_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
         RETURNING id",
    )
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(&batch.name)
    .bind(batch.model.as_str())
    .bind(i16::from(batch.priority.get()))
    .bind(&batch.idempotency_key)
    .bind(&tags)
    .bind(&batch.source)
    .bind(i32::try_from(batch.jobs.len()).unwrap_or(i32::MAX))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("cannot insert batch"))?;
    if inserted.is_none() {
        // Unreachable while the tenant's row is locked: the key was looked up above.
        return Err(Error::new(
            ErrorKind::Conflict,
            "a batch with this idempotency key was stored meanwhile; submit again",
        ));
    }
    if let Some(hook) = &batch.webhook {
        super::webhooks::insert(&mut tx, tenant, Some(id), hook).await?;
    }
    // The jobs are built chunk by chunk as they are written: memory stays one chunk's.
    let mut jobs = batch.jobs.iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<JobSpec> = jobs.by_ref().take(INSERT_CHUNK).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|_| JobId::generate().as_uuid()).collect();
        let keys: Vec<&str> = chunk.iter().map(|j| j.key.as_str()).collect();
        let params: Vec<String> = chunk
            .iter()
            .map(|j| serde_json::to_string(&j.params).expect("params serialize"))
            .collect();
        sqlx::query(
            "INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts)
             SELECT u.id, $1, $2, $3, $4, u.key, u.params::jsonb, $5
             FROM UNNEST($6::uuid[], $7::text[], $8::text[]) AS u (id, key, params)",
        )
        .bind(id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(batch.model.as_str())
        .bind(i16::from(batch.priority.get()))
        .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
        .bind(&ids)
        .bind(&keys)
        .bind(&params)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot insert jobs"))?;
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
pub(super) fn batch_status(row: &PgRow) -> Result<BatchStatus> {
    let tags: serde_json::Value = row.get("tags");
    Ok(BatchStatus {
        id: BatchId::from_uuid(row.get("id")),
        name: row.get("name"),
        model: ModelName::parse(row.get::<String, _>("model"))?,
        priority: Priority::parse(u8::try_from(row.get::<i16, _>("priority")).unwrap_or(0))?,
        tags: serde_json::from_value::<BTreeMap<String, String>>(tags).unwrap_or_default(),
        created_at: row.get("created_at"),
        counts: state_counts(|state| row.get::<i64, _>(state)),
        first_started_at: row.get("first_started_at"),
        last_finished_at: row.get("last_finished_at"),
        device_seconds: row.get("device_seconds"),
        jobs_purged_at: row.get("jobs_purged_at"),
    })
}

pub(super) async fn batch(pool: &PgPool, tenant: TenantId, batch: BatchId) -> Result<BatchStatus> {
    let row = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS}
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id
         WHERE b.id = $1 AND b.tenant_id = $2"
    ))
    .bind(batch.as_uuid())
    .bind(tenant.as_uuid())
    .fetch_optional(pool)
    .await
    .map_err(db("cannot read batch"))?
    .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))?;
    batch_status(&row)
}

pub(super) async fn jobs(
    pool: &PgPool,
    tenant: TenantId,
    batch: BatchId,
    after: Option<JobId>,
    limit: u32,
) -> Result<Vec<JobRecord>> {
    // Rows of a batch retention took may remain while it deletes them: none is listed.
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = $1 AND tenant_id = $2 AND id > $3
           AND NOT EXISTS (SELECT 1 FROM batches WHERE id = $1 AND jobs_purged_at IS NOT NULL)
         ORDER BY id LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(batch.as_uuid())
        .bind(tenant.as_uuid())
        .bind(after.map_or(Uuid::nil(), JobId::as_uuid))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db("cannot list jobs"))?;
    if rows.is_empty() {
        // Distinguish "no such batch" (or another tenant's) and "its jobs are gone" from an
        // empty page.
        if let Some(at) = self::batch(pool, tenant, batch).await?.jobs_purged_at {
            return Err(jobs_gone(batch, at));
        }
    }
    rows.iter().map(record).collect()
}

pub(super) async fn job(pool: &PgPool, tenant: TenantId, job: JobId) -> Result<JobRecord> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2");
    let row = sqlx::query(&sql)
        .bind(job.as_uuid())
        .bind(tenant.as_uuid())
        .fetch_optional(pool)
        .await
        .map_err(db("cannot read job"))?
        .ok_or_else(|| job_not_found(job))?;
    record(&row)
}

pub(super) async fn cancel(pool: &PgPool, tenant: TenantId, batch: BatchId) -> Result<u64> {
    self::batch(pool, tenant, batch).await?;
    let r = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), queued_at = NULL, run_after = NULL,
             lease_owner = NULL, lease_until = NULL
         WHERE batch_id = $1 AND tenant_id = $2 AND state IN ('pending', 'queued', 'retryable', 'running')",
    )
    .bind(batch.as_uuid())
    .bind(tenant.as_uuid())
    .execute(pool)
    .await
    .map_err(db("cannot cancel batch"))?;
    Ok(r.rows_affected())
}
