//! What the dispatcher publishes next, and the backlog it reports.

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::db;
use crate::progress;

pub(super) async fn dispatchable(
    pool: &PgPool,
    model: &ModelName,
    limit: u32,
) -> Result<Vec<JobMessage>> {
    // Priority first; within a priority, tenants interleave by weight (the n-th job of a tenant
    // with weight w ranks at n / w); then age. Each tenant contributes at most `limit` rows,
    // read from the partial index, so the cost does not grow with the backlog.
    let rows = sqlx::query(
        "SELECT c.id, c.batch_id, c.priority, c.crashes
         FROM tenants t
         CROSS JOIN LATERAL (
             SELECT j.id, j.batch_id, j.priority, j.crashes,
                    row_number() OVER (PARTITION BY j.priority ORDER BY j.id) AS rn
             FROM (SELECT id, batch_id, priority, crashes FROM jobs
                   WHERE state = 'pending' AND model = $1 AND tenant_id = t.id
                   ORDER BY priority DESC, id LIMIT $2) j
         ) c
         ORDER BY c.priority DESC, c.rn::float8 / t.weight, c.id
         LIMIT $2",
    )
    .bind(model.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("cannot select jobs to dispatch"))?;
    rows.iter()
        .map(|r| {
            Ok(JobMessage {
                job_id: JobId::from_uuid(r.get("id")),
                batch_id: BatchId::from_uuid(r.get("batch_id")),
                model: model.clone(),
                priority: Priority::parse(u8::try_from(r.get::<i16, _>("priority")).unwrap_or(0))?,
                crashes: u32::try_from(r.get::<i32, _>("crashes")).unwrap_or(0),
            })
        })
        .collect()
}

pub(super) async fn mark_queued(pool: &PgPool, ids: &[JobId]) -> Result<u64> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    let r = sqlx::query(
        "UPDATE jobs SET state = 'queued', queued_at = now() WHERE id = ANY($1) AND state = 'pending'",
    )
    .bind(&ids)
    .execute(pool)
    .await
    .map_err(db("cannot mark jobs queued"))?;
    Ok(r.rows_affected())
}

pub(super) async fn backlog(pool: &PgPool) -> Result<Vec<BacklogRow>> {
    per_model(pool, progress::BACKLOG, &progress::OPEN_STATES).await
}

pub(super) async fn finished(pool: &PgPool) -> Result<Vec<BacklogRow>> {
    per_model(pool, progress::FINISHED, &progress::FINAL_STATES).await
}

async fn per_model(pool: &PgPool, sql: &str, states: &[JobState]) -> Result<Vec<BacklogRow>> {
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
