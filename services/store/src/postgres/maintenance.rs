//! The leader's maintenance: rescuing expired leases, promoting retries, requeueing stale
//! messages, and the leader lock itself.

use async_trait::async_trait;
use pixelfarm_core::*;
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::time::Duration;

use super::columns::secs;
use crate::error::db;

/// Lock id of the single scheduler leader (`pg_try_advisory_lock`).
const LEADER_LOCK: i64 = 0x7069_7865_6c66_6172; // "pixelfar"

struct PgLeader {
    conn: Option<PgConnection>,
}

#[async_trait]
impl Leadership for PgLeader {
    async fn still_leader(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let alive = tokio::time::timeout(Duration::from_secs(5), conn.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            // The session is gone, and with it the advisory lock.
            self.conn = None;
            return false;
        }
        true
    }
}

pub(super) async fn rescue_expired(
    pool: &PgPool,
    limit: u32,
    max_crashes: u32,
) -> Result<RescueOutcome> {
    let rows = sqlx::query(
        "WITH expired AS (
             SELECT id, crashes + 1 >= $2 AS crashing FROM jobs
             WHERE state = 'running' AND lease_until < now()
             ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE jobs j SET
             crashes = j.crashes + 1,
             attempt = CASE WHEN e.crashing THEN j.attempt ELSE j.attempt - 1 END,
             state = CASE WHEN e.crashing THEN 'dead'::job_state ELSE 'pending'::job_state END,
             finished_at = CASE WHEN e.crashing THEN now() END,
             error_kind = CASE WHEN e.crashing THEN 'crashed_worker' ELSE 'lease_expired' END,
             last_error = CASE WHEN e.crashing
                 THEN format('crashed the worker: its lease expired %s times (last on worker %s)',
                             j.crashes + 1, j.lease_owner)
                 ELSE format('lease of worker %s expired (the worker died or lost the database); '
                             'not counted as an attempt, %s of %s before the job counts as crashing workers',
                             j.lease_owner, j.crashes + 1, $2) END,
             lease_owner = NULL, lease_until = NULL, queued_at = NULL
         FROM expired e WHERE j.id = e.id
         RETURNING j.state::text AS state",
    )
    .bind(i64::from(limit))
    .bind(i64::from(max_crashes.max(1)))
    .fetch_all(pool)
    .await
    .map_err(db("cannot rescue expired leases"))?;
    let dead = rows
        .iter()
        .filter(|r| r.get::<String, _>("state") == "dead")
        .count() as u64;
    Ok(RescueOutcome {
        to_pending: rows.len() as u64 - dead,
        to_dead: dead,
    })
}

pub(super) async fn promote_retryable(pool: &PgPool, limit: u32) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE jobs SET state = 'pending', run_after = NULL
         WHERE id IN (SELECT id FROM jobs WHERE state = 'retryable' AND run_after <= now()
                      ORDER BY run_after LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db("cannot promote retryable jobs"))?;
    Ok(r.rows_affected())
}

pub(super) async fn requeue_stale_queued(
    pool: &PgPool,
    older_than: Duration,
    limit: u32,
) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE jobs SET state = 'pending', queued_at = NULL
         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'
                          AND queued_at < now() - make_interval(secs => $1)
                      ORDER BY queued_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(secs(older_than))
    .bind(i64::from(limit))
    .execute(pool)
    .await
    .map_err(db("cannot requeue stale queued jobs"))?;
    Ok(r.rows_affected())
}

pub(super) async fn try_lead(pool: &PgPool) -> Result<Option<Box<dyn Leadership>>> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(db("cannot get a connection"))?
        .detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut conn)
        .await
        .map_err(db("cannot try the leader lock"))?;
    Ok(got.then(|| Box::new(PgLeader { conn: Some(conn) }) as Box<dyn Leadership>))
}
