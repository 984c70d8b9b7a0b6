//! What the dispatcher publishes next, and the backlog it reports.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};

use super::columns::now_ms;
use crate::error::db;
use crate::progress;

pub(super) async fn dispatchable(
    pool: &SqlitePool,
    model: &ModelName,
    limit: u32,
) -> Result<Vec<JobMessage>> {
    // Same order as Postgres: priority, then n-th job of a tenant at n / weight, then age.
    let rows = sqlx::query(
        "SELECT j.id, j.batch_id, j.priority, j.crashes FROM (
             SELECT id, batch_id, priority, tenant_id, crashes,
                    row_number() OVER (PARTITION BY tenant_id, priority ORDER BY id) AS rn
             FROM jobs WHERE state = 'pending' AND model = ?1) j
         JOIN tenants t ON t.id = j.tenant_id
         ORDER BY j.priority DESC, CAST(j.rn AS REAL) / t.weight, j.id
         LIMIT ?2",
    )
    .bind(model.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot select jobs to dispatch"))?;
    rows.iter()
        .map(|r| {
            Ok(JobMessage {
                job_id: r.get::<String, _>("id").parse()?,
                batch_id: r.get::<String, _>("batch_id").parse()?,
                model: model.clone(),
                priority: Priority::parse(u8::try_from(r.get::<i64, _>("priority")).unwrap_or(0))?,
                crashes: u32::try_from(r.get::<i64, _>("crashes")).unwrap_or(0),
            })
        })
        .collect()
}

/// The batches of the jobs it moved, one entry per job.
pub(super) async fn mark_queued(pool: &SqlitePool, ids: &[JobId]) -> Result<Vec<BatchId>> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    let now = now_ms();
    let mut batches = Vec::new();
    for id in ids {
        let batch: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', queued_at = ?2 WHERE id = ?1 AND state = 'pending'
             RETURNING batch_id",
        )
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot mark job queued"))?;
        batches.extend(batch.map(|b| b.parse::<BatchId>()).transpose()?);
    }
    tx.commit().await.map_err(db("cannot commit"))?;
    Ok(batches)
}

pub(super) async fn backlog(pool: &SqlitePool) -> Result<Vec<BacklogRow>> {
    per_model(pool, progress::BACKLOG, &progress::OPEN_STATES).await
}

pub(super) async fn finished(pool: &SqlitePool) -> Result<Vec<BacklogRow>> {
    per_model(pool, progress::FINISHED, &progress::FINAL_STATES).await
}

async fn per_model(pool: &SqlitePool, sql: &str, states: &[JobState]) -> Result<Vec<BacklogRow>> {
    let rows = sqlx::query(sql)
        .fetch_all(pool)
        .await
        .map_err(db("cannot count jobs"))?;
    let mut out = Vec::new();
    for r in &rows {
        out.extend(progress::backlog_rows(
            &r.get::<String, _>("model"),
            states,
            |s| r.get::<i64, _>(s),
        )?);
    }
    Ok(out)
}
