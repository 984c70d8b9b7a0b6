//! A running job's lease: claim, heartbeat, complete, fail. A group of claims or completions is
//! one transaction of the single-job statements (one commit, one sync of the file).

use pixelfarm_core::*;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::time::Duration;

use super::columns::{JOB_COLUMNS, ms, now_ms, record, time};
use crate::error::db;
use crate::row::{failure_columns, progress_columns};

pub(super) async fn claim_many(
    pool: &SqlitePool,
    jobs: &[JobId],
    worker: &str,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    let mut tx = pool.begin().await.map_err(db("cannot claim jobs"))?;
    let mut claimed = Vec::with_capacity(jobs.len());
    for job in jobs {
        claimed.extend(claim(&mut tx, *job, worker, lease).await?);
    }
    tx.commit().await.map_err(db("cannot claim jobs"))?;
    Ok(claimed)
}

async fn claim(
    conn: &mut SqliteConnection,
    job: JobId,
    worker: &str,
    lease: Duration,
) -> Result<Option<ClaimedJob>> {
    let now = now_ms();
    let sql = format!(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?2,
             lease_until = ?3 + ?4, started_at = ?3, run_after = NULL,
             steps_done = NULL, steps_total = NULL
         WHERE id = ?1 AND state IN ('pending', 'queued') AND attempt < max_attempts
         RETURNING {JOB_COLUMNS}, tenant_id, queued_at"
    );
    let row = sqlx::query(&sql)
        .bind(job.to_string())
        .bind(worker)
        .bind(now)
        .bind(ms(lease))
        .fetch_optional(conn)
        .await
        .map_err(db("cannot claim job"))?;
    row.map(|r| {
        Ok(ClaimedJob {
            job: record(&r)?,
            tenant: r.get::<String, _>("tenant_id").parse()?,
            queued_at: time(r.get("queued_at")),
        })
    })
    .transpose()
}

pub(super) async fn heartbeat(
    pool: &SqlitePool,
    job: JobId,
    worker: &str,
    attempt: u32,
    lease: Duration,
    progress: Option<StepProgress>,
) -> Result<bool> {
    let (done, total) = progress_columns(progress);
    let r = sqlx::query(
        "UPDATE jobs SET lease_until = ?4,
             steps_done = COALESCE(?5, steps_done), steps_total = COALESCE(?6, steps_total)
         WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3",
    )
    .bind(job.to_string())
    .bind(worker)
    .bind(i64::from(attempt))
    .bind(now_ms() + ms(lease))
    .bind(done.map(i64::from))
    .bind(total.map(i64::from))
    .execute(pool)
    .await
    .map_err(db("cannot renew lease"))?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn complete_many(
    pool: &SqlitePool,
    worker: &str,
    jobs: &[(JobId, u32, Completion)],
) -> Result<Vec<Option<BatchId>>> {
    let mut tx = pool.begin().await.map_err(db("cannot complete jobs"))?;
    let mut changed = Vec::with_capacity(jobs.len());
    for (job, attempt, done) in jobs {
        changed.push(complete(&mut tx, *job, worker, *attempt, done).await?);
    }
    tx.commit().await.map_err(db("cannot complete jobs"))?;
    Ok(changed)
}

async fn complete(
    conn: &mut SqliteConnection,
    job: JobId,
    worker: &str,
    attempt: u32,
    done: &Completion,
) -> Result<Option<BatchId>> {
    let batch: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET state = 'succeeded', finished_at = ?4, lease_owner = NULL, lease_until = NULL,
             object_key = ?5, sha256 = ?6, timings = ?7, device_seconds = device_seconds + ?8
         WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3
         RETURNING batch_id",
    )
    .bind(job.to_string())
    .bind(worker)
    .bind(i64::from(attempt))
    .bind(now_ms())
    .bind(&done.object_key)
    .bind(&done.sha256)
    .bind(serde_json::to_string(&done.timings).expect("timings serialize"))
    .bind(done.device_seconds)
    .fetch_optional(conn)
    .await
    .map_err(db("cannot complete job"))?;
    batch.map(|b| b.parse()).transpose()
}

pub(super) async fn fail(
    pool: &SqlitePool,
    job: JobId,
    worker: &str,
    attempt: u32,
    failure: &Failure,
) -> Result<Option<BatchId>> {
    let (kind, message, delay) = failure_columns(failure);
    let now = now_ms();
    let batch: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET
             state = CASE WHEN ?6 IS NULL THEN 'dead' ELSE 'retryable' END,
             finished_at = CASE WHEN ?6 IS NULL THEN ?7 END,
             run_after = ?7 + ?6,
             lease_owner = NULL, lease_until = NULL, queued_at = NULL,
             error_kind = ?4, last_error = ?5
         WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3
         RETURNING batch_id",
    )
    .bind(job.to_string())
    .bind(worker)
    .bind(i64::from(attempt))
    .bind(kind)
    .bind(message)
    .bind(delay.map(|d| (d * 1000.0) as i64))
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(db("cannot record job failure"))?;
    batch.map(|b| b.parse()).transpose()
}
