//! A running job's lease: claim, heartbeat, complete, fail; claims and completions a group at a
//! time (one job is a group of one).

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

use super::columns::{JOB_COLUMNS, record, secs};
use crate::error::db;
use crate::row::{failure_columns, progress_columns};

/// Claim each of `jobs` in one statement. The ids go in sorted, so two groups that share a job
/// (a duplicate message) lock their rows in the same order.
pub(super) async fn claim_many(
    pool: &PgPool,
    jobs: &[JobId],
    worker: &str,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    let mut ids: Vec<Uuid> = jobs.iter().map(|j| j.as_uuid()).collect();
    ids.sort_unstable();
    let sql = format!(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = $2,
             lease_until = now() + make_interval(secs => $3), started_at = now(), run_after = NULL,
             steps_done = NULL, steps_total = NULL
         WHERE id = ANY($1) AND state IN ('pending', 'queued') AND attempt < max_attempts
         RETURNING {JOB_COLUMNS}, tenant_id, queued_at"
    );
    let rows = sqlx::query(&sql)
        .bind(&ids)
        .bind(worker)
        .bind(secs(lease))
        .fetch_all(pool)
        .await
        .map_err(db("cannot claim jobs"))?;
    rows.iter()
        .map(|r| {
            Ok(ClaimedJob {
                job: record(r)?,
                tenant: TenantId::from_uuid(r.get("tenant_id")),
                queued_at: r.get("queued_at"),
            })
        })
        .collect()
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

/// Complete each `(job, attempt, completion)` in one statement, each row only while `worker`
/// holds its lease at that attempt; whether each changed, in order.
pub(super) async fn complete_many(
    pool: &PgPool,
    worker: &str,
    jobs: &[(JobId, u32, Completion)],
) -> Result<Vec<bool>> {
    let mut sorted: Vec<&(JobId, u32, Completion)> = jobs.iter().collect();
    sorted.sort_unstable_by_key(|(id, _, _)| id.as_uuid());
    let ids: Vec<Uuid> = sorted.iter().map(|(id, _, _)| id.as_uuid()).collect();
    let attempts: Vec<i32> = sorted.iter().map(|(_, a, _)| *a as i32).collect();
    let keys: Vec<&str> = sorted
        .iter()
        .map(|(_, _, d)| d.object_key.as_str())
        .collect();
    let shas: Vec<&str> = sorted.iter().map(|(_, _, d)| d.sha256.as_str()).collect();
    let timings: Vec<String> = sorted
        .iter()
        .map(|(_, _, d)| serde_json::to_string(&d.timings).expect("timings serialize"))
        .collect();
    let device: Vec<f64> = sorted.iter().map(|(_, _, d)| d.device_seconds).collect();
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE jobs j SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_until = NULL,
             object_key = u.object_key, sha256 = u.sha256, timings = u.timings::jsonb,
             device_seconds = j.device_seconds + u.device_seconds
         FROM UNNEST($2::uuid[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::float8[])
             AS u(id, attempt, object_key, sha256, timings, device_seconds)
         WHERE j.id = u.id AND j.state = 'running' AND j.lease_owner = $1 AND j.attempt = u.attempt
         RETURNING j.id",
    )
    .bind(worker)
    .bind(&ids)
    .bind(&attempts)
    .bind(&keys)
    .bind(&shas)
    .bind(&timings)
    .bind(&device)
    .fetch_all(pool)
    .await
    .map_err(db("cannot complete jobs"))?;
    let changed: HashSet<Uuid> = changed.into_iter().collect();
    Ok(jobs
        .iter()
        .map(|(id, _, _)| changed.contains(&id.as_uuid()))
        .collect())
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
