//! Retention: the job rows of finished batches past their tenant's retention, deleted chunk by
//! chunk, each statement its own transaction ([`pixelfarm_core::retention`] says which and when).

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::db;
use crate::purge::PurgeSteps;

impl PurgeSteps for PgPool {
    type Batch = Uuid;

    async fn purging(&self) -> Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM batches WHERE jobs_purge_pending ORDER BY id LIMIT 1")
            .fetch_optional(self)
            .await
            .map_err(db("cannot read the batches being purged"))
    }

    async fn take_next(&self, default: Retention) -> Result<Option<Uuid>> {
        sqlx::query_scalar(
            "UPDATE batches SET jobs_purged_at = now(), jobs_purge_pending = true
             WHERE jobs_purged_at IS NULL AND id = (
                 SELECT b.id FROM batches b JOIN tenants t ON t.id = b.tenant_id
                     JOIN batch_progress p ON p.batch_id = b.id,
                     LATERAL (SELECT coalesce(t.job_retention_seconds, $1) AS secs) r
                 WHERE b.jobs_purged_at IS NULL AND r.secs > 0 AND NOT p.open
                   AND p.last_finished_at < now() - make_interval(secs => r.secs)
                 ORDER BY b.created_at LIMIT 1)
             RETURNING id",
        )
        .bind(default.as_secs_f64())
        .fetch_optional(self)
        .await
        .map_err(db("cannot take a batch past its retention"))
    }

    async fn delete_rows(&self, batch: &Uuid, limit: u64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE batch_id = $1 ORDER BY id LIMIT $2)",
        )
        .bind(batch)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(self)
        .await
        .map_err(db("cannot delete the jobs of a batch past its retention"))?;
        Ok(r.rows_affected())
    }

    async fn finish(&self, batch: &Uuid) -> Result<Option<PurgedBatch>> {
        let row = sqlx::query(
            "UPDATE batches b SET jobs_purge_pending = false FROM tenants t
             WHERE b.id = $1 AND b.jobs_purge_pending AND t.id = b.tenant_id
             RETURNING b.name, b.job_count, t.name AS tenant",
        )
        .bind(batch)
        .fetch_optional(self)
        .await
        .map_err(db("cannot mark a batch purged"))?;
        Ok(row.map(|r| PurgedBatch {
            id: BatchId::from_uuid(*batch),
            tenant: r.get("tenant"),
            name: r.get("name"),
            jobs: r.get::<i32, _>("job_count").max(0) as u64,
        }))
    }
}
