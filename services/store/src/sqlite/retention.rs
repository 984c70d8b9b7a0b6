//! Retention: the job rows of finished batches past their tenant's retention, deleted chunk by
//! chunk, each statement its own transaction ([`pixelfarm_core::retention`] says which and when).

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};

use super::columns::{ms, now_ms};
use crate::error::db;
use crate::purge::PurgeSteps;

impl PurgeSteps for SqlitePool {
    type Batch = String;

    async fn purging(&self) -> Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT id FROM batches WHERE jobs_purge_pending = 1 ORDER BY id LIMIT 1",
        )
        .fetch_optional(self)
        .await
        .map_err(db("cannot read the batches being purged"))
    }

    async fn take_next(&self, default: Retention) -> Result<Option<String>> {
        let default_ms = match default {
            Retention::Forever => 0,
            Retention::For(d) => ms(d),
        };
        sqlx::query_scalar(
            "UPDATE batches SET jobs_purged_at = ?2, jobs_purge_pending = 1
             WHERE jobs_purged_at IS NULL AND id = (
                 SELECT b.id FROM batches b JOIN tenants t ON t.id = b.tenant_id
                     JOIN batch_progress p ON p.batch_id = b.id
                 WHERE b.jobs_purged_at IS NULL AND NOT p.open
                   AND coalesce(t.job_retention_seconds * 1000, ?1) > 0
                   AND p.last_finished_at < ?2 - coalesce(t.job_retention_seconds * 1000, ?1)
                 ORDER BY b.created_at LIMIT 1)
             RETURNING id",
        )
        .bind(default_ms)
        .bind(now_ms())
        .fetch_optional(self)
        .await
        .map_err(db("cannot take a batch past its retention"))
    }

    async fn delete_rows(&self, batch: &String, limit: u64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE batch_id = ?1 ORDER BY id LIMIT ?2)",
        )
        .bind(batch)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(self)
        .await
        .map_err(db("cannot delete the jobs of a batch past its retention"))?;
        Ok(r.rows_affected())
    }

    async fn finish(&self, batch: &String) -> Result<Option<PurgedBatch>> {
        let row = sqlx::query(
            "UPDATE batches SET jobs_purge_pending = 0 WHERE id = ?1 AND jobs_purge_pending = 1
             RETURNING name, job_count, (SELECT name FROM tenants WHERE id = batches.tenant_id) AS tenant",
        )
        .bind(batch)
        .fetch_optional(self)
        .await
        .map_err(db("cannot mark a batch purged"))?;
        row.map(|r| {
            Ok(PurgedBatch {
                id: batch.parse()?,
                tenant: r.get("tenant"),
                name: r.get("name"),
                jobs: r.get::<i64, _>("job_count").max(0) as u64,
            })
        })
        .transpose()
    }
}
