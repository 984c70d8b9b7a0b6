//! The leader's maintenance: rescuing expired leases, promoting retries, requeueing stale
//! messages. Each returns the batches of the jobs it moved (one entry per job), to announce.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};
use std::time::Duration;

use super::columns::{ms, now_ms};
use crate::error::db;

pub(super) async fn rescue_expired(
    pool: &SqlitePool,
    limit: u32,
    max_crashes: u32,
) -> Result<(RescueOutcome, Vec<BatchId>)> {
    let now = now_ms();
    // SQLite evaluates every right-hand side on the old row, as Postgres does.
    let rows = sqlx::query(
        "UPDATE jobs SET
             crashes = crashes + 1,
             attempt = CASE WHEN crashes + 1 >= ?3 THEN attempt ELSE attempt - 1 END,
             state = CASE WHEN crashes + 1 >= ?3 THEN 'dead' ELSE 'pending' END,
             finished_at = CASE WHEN crashes + 1 >= ?3 THEN ?1 END,
             error_kind = CASE WHEN crashes + 1 >= ?3 THEN 'crashed_worker' ELSE 'lease_expired' END,
             last_error = CASE WHEN crashes + 1 >= ?3
                 THEN 'crashed the worker: its lease expired ' || (crashes + 1)
                      || ' times (last on worker ' || lease_owner || ')'
                 ELSE 'lease of worker ' || lease_owner || ' expired (the worker died or lost the database); '
                      || 'not counted as an attempt, ' || (crashes + 1) || ' of ' || ?3
                      || ' before the job counts as crashing workers' END,
             lease_owner = NULL, lease_until = NULL, queued_at = NULL
         WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < ?1
                      ORDER BY lease_until LIMIT ?2)
         RETURNING state, batch_id",
    )
    .bind(now)
    .bind(i64::from(limit))
    .bind(i64::from(max_crashes.max(1)))
    .fetch_all(pool)
    .await
    .map_err(db("cannot rescue expired leases"))?;
    let dead = rows
        .iter()
        .filter(|r| r.get::<String, _>("state") == "dead")
        .count() as u64;
    let batches = rows
        .iter()
        .map(|r| r.get::<String, _>("batch_id").parse())
        .collect::<Result<_>>()?;
    let outcome = RescueOutcome {
        to_pending: rows.len() as u64 - dead,
        to_dead: dead,
    };
    Ok((outcome, batches))
}

pub(super) async fn promote_retryable(pool: &SqlitePool, limit: u32) -> Result<Vec<BatchId>> {
    let batches: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs SET state = 'pending', run_after = NULL
         WHERE id IN (SELECT id FROM jobs WHERE state = 'retryable' AND run_after <= ?1
                      ORDER BY run_after LIMIT ?2)
         RETURNING batch_id",
    )
    .bind(now_ms())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot promote retryable jobs"))?;
    batches.iter().map(|b| b.parse()).collect()
}

pub(super) async fn requeue_stale_queued(
    pool: &SqlitePool,
    older_than: Duration,
    limit: u32,
) -> Result<Vec<BatchId>> {
    let batches: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs SET state = 'pending', queued_at = NULL
         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND queued_at < ?1
                      ORDER BY queued_at LIMIT ?2)
         RETURNING batch_id",
    )
    .bind(now_ms() - ms(older_than))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot requeue stale queued jobs"))?;
    batches.iter().map(|b| b.parse()).collect()
}
