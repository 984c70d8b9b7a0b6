//! What the dispatcher publishes next, and the backlog it reports.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};

use super::columns::now_ms;
use crate::error::db;

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

pub(super) async fn mark_queued(pool: &SqlitePool, ids: &[JobId]) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db("cannot begin"))?;
    let now = now_ms();
    let mut n = 0;
    for id in ids {
        n += sqlx::query(
            "UPDATE jobs SET state = 'queued', queued_at = ?2 WHERE id = ?1 AND state = 'pending'",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot mark job queued"))?
        .rows_affected();
    }
    tx.commit().await.map_err(db("cannot commit"))?;
    Ok(n)
}

pub(super) async fn backlog(pool: &SqlitePool) -> Result<Vec<BacklogRow>> {
    count_by_state(
        pool,
        "state IN ('pending', 'queued', 'running', 'retryable')",
    )
    .await
}

pub(super) async fn finished(pool: &SqlitePool) -> Result<Vec<BacklogRow>> {
    count_by_state(pool, "state IN ('succeeded', 'dead', 'cancelled')").await
}

async fn count_by_state(pool: &SqlitePool, filter: &'static str) -> Result<Vec<BacklogRow>> {
    let sql = format!("SELECT model, state, count(*) AS n FROM jobs WHERE {filter} GROUP BY 1, 2");
    let rows = sqlx::query(&sql)
        .fetch_all(pool)
        .await
        .map_err(db("cannot count jobs"))?;
    rows.iter()
        .map(|r| {
            Ok(BacklogRow {
                model: ModelName::parse(r.get::<String, _>("model"))?,
                state: JobState::parse(r.get("state"))?,
                jobs: r.get::<i64, _>("n") as u64,
            })
        })
        .collect()
}
