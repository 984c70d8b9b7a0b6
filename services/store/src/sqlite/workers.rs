//! Which workers serve which models, and the models' limits.

use pixelfarm_core::*;
use sqlx::{Row, SqlitePool};
use std::time::Duration;

use super::columns::{ms, now_ms, time};
use crate::error::db;

pub(super) async fn announce_worker(
    pool: &SqlitePool,
    worker: &str,
    models: &[ModelName],
    ttl: Duration,
) -> Result<()> {
    let now = now_ms();
    let prune_before = now - ms(crate::postgres::PRESENCE_PRUNE_AFTER);
    let mut tx = pool.begin().await.map_err(db("cannot announce worker"))?;
    sqlx::query("DELETE FROM worker_models WHERE worker_id = ?1 OR live_until < ?2")
        .bind(worker)
        .bind(prune_before)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
    for model in models {
        sqlx::query(
            "INSERT INTO served_models (model, first_seen_at, last_seen_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (model) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(model.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
        sqlx::query(
            "INSERT INTO worker_models (worker_id, model, seen_at, live_until)
             VALUES (?1, ?2, ?3, ?3 + ?4) ON CONFLICT (worker_id, model) DO NOTHING",
        )
        .bind(worker)
        .bind(model.as_str())
        .bind(now)
        .bind(ms(ttl))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
    }
    tx.commit().await.map_err(db("cannot announce worker"))
}

pub(super) async fn set_model_limits(
    pool: &SqlitePool,
    limits: &[(ModelName, ModelLimits)],
) -> Result<()> {
    let now = now_ms();
    let mut tx = pool
        .begin()
        .await
        .map_err(db("cannot record model limits"))?;
    for (model, l) in limits {
        sqlx::query(
            "INSERT INTO served_models (model, first_seen_at, last_seen_at, limits)
             VALUES (?1, ?2, ?2, ?3)
             ON CONFLICT (model) DO UPDATE SET limits = excluded.limits",
        )
        .bind(model.as_str())
        .bind(now)
        .bind(sqlx::types::Json(l))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot record model limits"))?;
    }
    tx.commit().await.map_err(db("cannot record model limits"))
}

pub(super) async fn withdraw_worker(pool: &SqlitePool, worker: &str) -> Result<()> {
    sqlx::query("DELETE FROM worker_models WHERE worker_id = ?1")
        .bind(worker)
        .execute(pool)
        .await
        .map_err(db("cannot withdraw worker"))?;
    Ok(())
}

pub(super) async fn model_presence(pool: &SqlitePool) -> Result<Vec<ModelPresence>> {
    let rows = sqlx::query(
        "SELECT s.model, s.last_seen_at, s.limits,
                count(w.worker_id) FILTER (WHERE w.live_until > ?1) AS live
         FROM served_models s LEFT JOIN worker_models w ON w.model = s.model
         GROUP BY s.model, s.last_seen_at, s.limits ORDER BY s.model",
    )
    .bind(now_ms())
    .fetch_all(pool)
    .await
    .map_err(db("cannot read served models"))?;
    rows.iter()
        .map(|r| {
            let model: String = r
                .try_get("model")
                .map_err(db("cannot read served models"))?;
            let live: i64 = r.try_get("live").map_err(db("cannot read served models"))?;
            Ok(ModelPresence {
                model: ModelName::parse(model)?,
                live_workers: u64::try_from(live).unwrap_or(0),
                last_seen_at: time(
                    r.try_get("last_seen_at")
                        .map_err(db("cannot read served models"))?,
                )
                .unwrap_or_default(),
                limits: r
                    .try_get::<Option<sqlx::types::Json<ModelLimits>>, _>("limits")
                    .map_err(db("cannot read served models"))?
                    .map(|j| j.0),
            })
        })
        .collect()
}
