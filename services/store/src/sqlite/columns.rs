//! The column lists and row decoding the queries share.

use chrono::{DateTime, TimeZone, Utc};
use pixelfarm_core::*;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::time::Duration;
use uuid::Uuid;

use crate::error::db;
use crate::row::JobRow;

pub(super) const JOB_COLUMNS: &str = "id, batch_id, key, model, params, state, attempt, max_attempts, \
    object_key, sha256, last_error, error_kind, timings, created_at, started_at, finished_at, steps_done, steps_total, review, reviewed_by, reviewed_at";

pub(super) const TENANT_COLUMNS: &str = "id, name, weight, max_queued_jobs, max_jobs_per_day, max_watches, \
    submits_per_minute, max_priority, job_retention_seconds, content_credentials";

pub(super) fn tenant_info(r: &SqliteRow) -> Result<TenantInfo> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok((
            uuid(r, "id")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<i64, _>("weight")?,
            r.try_get::<Option<i64>, _>("max_queued_jobs")?,
            r.try_get::<Option<i64>, _>("max_jobs_per_day")?,
            r.try_get::<Option<i64>, _>("max_watches")?,
            r.try_get::<Option<i64>, _>("submits_per_minute")?,
            r.try_get::<Option<i64>, _>("max_priority")?,
            r.try_get::<Option<i64>, _>("job_retention_seconds")?,
            r.try_get::<bool, _>("content_credentials")?,
        ))
    };
    let (id, name, weight, queued, day, watches, rate, prio, retention, content_credentials) =
        read().map_err(db("cannot read tenant row"))?;
    let small = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(TenantInfo {
        id: TenantId::from_uuid(id),
        name,
        weight: small(weight),
        quota: Quota {
            max_queued_jobs: queued.map(|v| v.max(0) as u64),
            max_jobs_per_day: day.map(|v| v.max(0) as u64),
            max_watches: watches.map(small),
            submits_per_minute: rate.map(small),
            max_priority: prio
                .map(|p| Priority::parse(u8::try_from(p).unwrap_or(0)))
                .transpose()?,
        },
        retention: retention.map(|s| Retention::from_seconds(s.max(0) as u64)),
        content_credentials,
    })
}

pub(super) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

pub(super) fn time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

pub(super) fn uuid(r: &SqliteRow, col: &str) -> std::result::Result<Uuid, sqlx::Error> {
    let s: String = r.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(super) fn opt_uuid(r: &SqliteRow, col: &str) -> std::result::Result<Option<Uuid>, sqlx::Error> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

pub(super) fn json(
    r: &SqliteRow,
    col: &str,
) -> std::result::Result<Option<serde_json::Value>, sqlx::Error> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

pub(super) fn job_row(r: &SqliteRow) -> std::result::Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: uuid(r, "id")?,
        batch_id: uuid(r, "batch_id")?,
        key: r.try_get("key")?,
        model: r.try_get("model")?,
        params: json(r, "params")?.unwrap_or_default(),
        state: r.try_get("state")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        object_key: r.try_get("object_key")?,
        sha256: r.try_get("sha256")?,
        last_error: r.try_get("last_error")?,
        error_kind: r.try_get("error_kind")?,
        timings: json(r, "timings")?,
        created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        started_at: time(r.try_get("started_at")?),
        finished_at: time(r.try_get("finished_at")?),
        steps_done: r.try_get("steps_done")?,
        steps_total: r.try_get("steps_total")?,
        review: r.try_get("review")?,
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed_at: time(r.try_get("reviewed_at")?),
    })
}

pub(super) fn record(r: &SqliteRow) -> Result<JobRecord> {
    job_row(r).map_err(db("cannot read job row"))?.into_record()
}
