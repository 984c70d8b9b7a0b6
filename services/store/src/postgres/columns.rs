//! The column lists and row decoding the queries share.

use pixelfarm_core::*;
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::time::Duration;
use uuid::Uuid;

use crate::error::db;
use crate::row::JobRow;

pub(super) const JOB_COLUMNS: &str = "id, batch_id, key, model, params, state::text AS state, attempt, max_attempts, \
    object_key, sha256, last_error, error_kind, timings, created_at, started_at, finished_at, steps_done, steps_total, review, reviewed_by, reviewed_at";

pub(super) fn job_row(r: &PgRow) -> std::result::Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get("id")?,
        batch_id: r.try_get("batch_id")?,
        key: r.try_get("key")?,
        model: r.try_get("model")?,
        params: r.try_get("params")?,
        state: r.try_get("state")?,
        attempt: i64::from(r.try_get::<i32, _>("attempt")?),
        max_attempts: i64::from(r.try_get::<i32, _>("max_attempts")?),
        object_key: r.try_get("object_key")?,
        sha256: r.try_get("sha256")?,
        last_error: r.try_get("last_error")?,
        error_kind: r.try_get("error_kind")?,
        timings: r.try_get("timings")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        steps_done: r.try_get::<Option<i32>, _>("steps_done")?.map(i64::from),
        steps_total: r.try_get::<Option<i32>, _>("steps_total")?.map(i64::from),
        review: r.try_get("review")?,
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed_at: r.try_get("reviewed_at")?,
    })
}

pub(super) fn record(r: &PgRow) -> Result<JobRecord> {
    job_row(r).map_err(db("cannot read job row"))?.into_record()
}

pub(super) const TENANT_COLUMNS: &str = "id, name, weight, max_queued_jobs, max_jobs_per_day, max_watches, \
    submits_per_minute, max_priority, job_retention_seconds, content_credentials";

pub(super) fn tenant_info(r: &PgRow) -> Result<TenantInfo> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok((
            r.try_get::<Uuid, _>("id")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<i32, _>("weight")?,
            r.try_get::<Option<i64>, _>("max_queued_jobs")?,
            r.try_get::<Option<i64>, _>("max_jobs_per_day")?,
            r.try_get::<Option<i32>, _>("max_watches")?,
            r.try_get::<Option<i32>, _>("submits_per_minute")?,
            r.try_get::<Option<i16>, _>("max_priority")?,
            r.try_get::<Option<i64>, _>("job_retention_seconds")?,
            r.try_get::<bool, _>("content_credentials")?,
        ))
    };
    let (id, name, weight, queued, day, watches, rate, prio, retention, content_credentials) =
        read().map_err(db("cannot read tenant row"))?;
    Ok(TenantInfo {
        id: TenantId::from_uuid(id),
        name,
        weight: weight.max(0) as u32,
        quota: Quota {
            max_queued_jobs: queued.map(|v| v.max(0) as u64),
            max_jobs_per_day: day.map(|v| v.max(0) as u64),
            max_watches: watches.map(|v| v.max(0) as u32),
            submits_per_minute: rate.map(|v| v.max(0) as u32),
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

pub(super) fn clamp_i32<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
