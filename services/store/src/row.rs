//! The row shape both stores read jobs into, and its conversion to [`JobRecord`].

use chrono::{DateTime, Utc};
use pixelfarm_core::{
    BatchId, Error, JobId, JobParams, JobRecord, JobState, ModelName, Result, Review, StepProgress,
    Verdict,
};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A job row with store-neutral types.
pub(crate) struct JobRow {
    pub id: Uuid,
    pub batch_id: Uuid,
    pub key: String,
    pub model: String,
    pub params: serde_json::Value,
    pub state: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub object_key: Option<String>,
    pub sha256: Option<String>,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub timings: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps_done: Option<i64>,
    pub steps_total: Option<i64>,
    pub review: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn into_record(self) -> Result<JobRecord> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            Error::permanent(format!("job {} has a corrupt {what} column: {e}", self.id))
        };
        let params: JobParams =
            serde_json::from_value(self.params.clone()).map_err(|e| corrupt("params", &e))?;
        let timings: BTreeMap<String, f64> = match &self.timings {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| corrupt("timings", &e))?,
            None => BTreeMap::new(),
        };
        Ok(JobRecord {
            id: JobId::from_uuid(self.id),
            batch_id: BatchId::from_uuid(self.batch_id),
            key: self.key,
            model: ModelName::parse(self.model)?,
            params,
            state: JobState::parse(&self.state)?,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(1),
            object_key: self.object_key,
            sha256: self.sha256,
            image_url: None,
            last_error: self.last_error,
            error_kind: self.error_kind,
            timings,
            progress: match (self.steps_done, self.steps_total) {
                (Some(done), Some(total)) => Some(StepProgress {
                    done: u32::try_from(done).unwrap_or(0),
                    total: u32::try_from(total).unwrap_or(0),
                }),
                _ => None,
            },
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            review: match (self.review, self.reviewed_by, self.reviewed_at) {
                (Some(verdict), Some(by), Some(at)) => Some(Review {
                    verdict: Verdict::parse(&verdict).map_err(|e| corrupt("review", &e))?,
                    by,
                    at,
                }),
                _ => None,
            },
        })
    }
}

/// Text stored with a failure: kind name and message.
pub(crate) fn failure_columns(f: &pixelfarm_core::Failure) -> (&'static str, &str, Option<f64>) {
    match f {
        pixelfarm_core::Failure::Retry {
            delay,
            kind,
            message,
        } => (kind.as_str(), message.as_str(), Some(delay.as_secs_f64())),
        pixelfarm_core::Failure::Dead { kind, message } => (kind.as_str(), message.as_str(), None),
    }
}

/// The progress columns of a heartbeat: both `None` (keep what is stored) or both set, `done`
/// clamped to `total` so the row's check holds whatever a renderer reported.
pub(crate) fn progress_columns(p: Option<StepProgress>) -> (Option<u32>, Option<u32>) {
    match p {
        Some(p) => (Some(p.done.min(p.total)), Some(p.total)),
        None => (None, None),
    }
}
