//! A running job's lease: claim, heartbeat, complete, fail.

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use std::time::Duration;

use super::columns::{JOB_COLUMNS, record, secs};
use crate::error::db;
use crate::row::{failure_columns, progress_columns};

pub(super) async fn claim(
    pool: &PgPool,
    job: JobId,
    worker: &str,
    lease: Duration,
) -> Result<Option<ClaimedJob>> {
    let sql = format!(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = $2,
             lease_until = now() + make_interval(secs => $3), started_at = now(), run_after = NULL,
             steps_done = NULL, steps_total = NULL
         WHERE id = $1 AND state IN ('pending', 'queued') AND attempt < max_attempts
         RETURNING {JOB_COLUMNS}, tenant_id, queued_at"
    );
    let row = sqlx::query(&sql)
        .bind(job.as_uuid())
        .bind(worker)
        .bind(secs(lease))
        .fetch_optional(pool)
        .await
        .map_err(db("cannot claim job"))?;
    row.map(|r| {
        Ok(ClaimedJob {
            job: record(&r)?,
            tenant: TenantId::from_uuid(r.get("tenant_id")),
            queued_at: r.get("queued_at"),
        })
    })
    .transpose()
}

pub(super) async fn heartbeat(
    pool: &PgPool,
    job: JobId,
    worker: &str,
    attempt: u32,
    lease: Duration,
    progress: Option<StepProgress>,
) -> Result<bool> {
    let (done, total) = progress_columns(progress);
    let r = sqlx::query(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => $4),
             steps_done = COALESCE($5, steps_done), steps_total = COALESCE($6, steps_total)
         WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
    )
    .bind(job.as_uuid())
    .bind(worker)
    .bind(attempt as i32)
    .bind(secs(lease))
    .bind(done.map(|d| d as i32))
    .bind(total.map(|t| t as i32))
    .execute(pool)
    .await
    .map_err(db("cannot renew lease"))?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn complete(
    pool: &PgPool,
    job: JobId,
    worker: &str,
    attempt: u32,
    done: &Completion,
) -> Result<bool> {
    let timings = serde_json::to_value(&done.timings).expect("timings serialize");
    let r = sqlx::query(
        "UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_until = NULL,
             object_key = $4, sha256 = $5, timings = $6, device_seconds = device_seconds + $7
         WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
    )
    .bind(job.as_uuid())
    .bind(worker)
    .bind(attempt as i32)
    .bind(&done.object_key)
    .bind(&done.sha256)
    .bind(&timings)
    .bind(done.device_seconds)
    .execute(pool)
    .await
    .map_err(db("cannot complete job"))?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn fail(
    pool: &PgPool,
    job: JobId,
    worker: &str,
    attempt: u32,
    failure: &Failure,
) -> Result<bool> {
    let (kind, message, delay) = failure_columns(failure);
    let r = sqlx::query(
        "UPDATE jobs SET
             state = CASE WHEN $6::float8 IS NULL THEN 'dead'::job_state ELSE 'retryable'::job_state END,
             finished_at = CASE WHEN $6::float8 IS NULL THEN now() END,
             run_after = now() + make_interval(secs => $6::float8),
             lease_owner = NULL, lease_until = NULL, queued_at = NULL,
             error_kind = $4, last_error = $5
         WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
    )
    .bind(job.as_uuid())
    .bind(worker)
    .bind(attempt as i32)
    .bind(kind)
    .bind(message)
    .bind(delay)
    .execute(pool)
    .await
    .map_err(db("cannot record job failure"))?;
    Ok(r.rows_affected() == 1)
}
