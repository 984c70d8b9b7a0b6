//! Which workers serve which models, and the models' limits.

use pixelfarm_core::*;
use sqlx::{PgPool, Row};
use std::time::Duration;

use super::columns::secs;
use crate::error::db;

/// Rows of workers whose announcement expired this long ago are deleted (pod names change with
/// every rollout); the models they served stay in `served_models`.
pub(crate) const PRESENCE_PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);

pub(super) async fn announce_worker(
    pool: &PgPool,
    worker: &str,
    models: &[ModelName],
    ttl: Duration,
) -> Result<()> {
    // Sorted, so concurrent announcements lock the model rows in one order.
    let mut names: Vec<&str> = models.iter().map(ModelName::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut tx = pool.begin().await.map_err(db("cannot announce worker"))?;
    sqlx::query(
        "INSERT INTO served_models (model) SELECT unnest($1::text[])
         ON CONFLICT (model) DO UPDATE SET last_seen_at = now()",
    )
    .bind(&names)
    .execute(&mut *tx)
    .await
    .map_err(db("cannot announce worker"))?;
    sqlx::query(
        "DELETE FROM worker_models
         WHERE worker_id = $1 OR live_until < now() - make_interval(secs => $2)",
    )
    .bind(worker)
    .bind(secs(PRESENCE_PRUNE_AFTER))
    .execute(&mut *tx)
    .await
    .map_err(db("cannot announce worker"))?;
    sqlx::query(
        "INSERT INTO worker_models (worker_id, model, seen_at, live_until)
         SELECT $1, unnest($2::text[]), now(), now() + make_interval(secs => $3)",
    )
    .bind(worker)
    .bind(&names)
    .bind(secs(ttl))
    .execute(&mut *tx)
    .await
    .map_err(db("cannot announce worker"))?;
    tx.commit().await.map_err(db("cannot announce worker"))
}

pub(super) async fn set_model_limits(
    pool: &PgPool,
    limits: &[(ModelName, ModelLimits)],
) -> Result<()> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db("cannot record model limits"))?;
    for (model, l) in limits {
        sqlx::query(
            "INSERT INTO served_models (model, limits) VALUES ($1, $2)
             ON CONFLICT (model) DO UPDATE SET limits = EXCLUDED.limits",
        )
        .bind(model.as_str())
        .bind(sqlx::types::Json(l))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot record model limits"))?;
    }
    tx.commit().await.map_err(db("cannot record model limits"))
}

pub(super) async fn withdraw_worker(pool: &PgPool, worker: &str) -> Result<()> {
    sqlx::query("DELETE FROM worker_models WHERE worker_id = $1")
        .bind(worker)
        .execute(pool)
        .await
        .map_err(db("cannot withdraw worker"))?;
    Ok(())
}

pub(super) async fn model_presence(pool: &PgPool) -> Result<Vec<ModelPresence>> {
    let rows = sqlx::query(
        "SELECT s.model, s.last_seen_at, s.limits,
                count(w.worker_id) FILTER (WHERE w.live_until > now()) AS live
         FROM served_models s LEFT JOIN worker_models w ON w.model = s.model
         GROUP BY s.model, s.last_seen_at, s.limits ORDER BY s.model",
    )
    .fetch_all(pool)
    .await
    .map_err(db("cannot read served models"))?;
    rows.iter()
        .map(|r| {
            let model: String = r
                .try_get("model")
                .map_err(db("cannot read served models"))?;
            Ok(ModelPresence {
                model: ModelName::parse(model)?,
                live_workers: u64::try_from(
                    r.try_get::<i64, _>("live")
                        .map_err(db("cannot read served models"))?,
                )
                .unwrap_or(0),
                last_seen_at: r
                    .try_get("last_seen_at")
                    .map_err(db("cannot read served models"))?,
                limits: r
                    .try_get::<Option<sqlx::types::Json<ModelLimits>>, _>("limits")
                    .map_err(db("cannot read served models"))?
                    .map(|j| j.0),
            })
        })
        .collect()
}
