//! Domain records ↔ protobuf messages.

use chrono::{DateTime, Utc};
use pixelfarm_core::*;
use pixelfarm_proto::v1;

use crate::BatchView;

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

fn parse_ts(s: &str) -> Result<Option<DateTime<Utc>>> {
    if s.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| Error::invalid(format!("timestamp `{s}` is not RFC 3339: {e}")))
}

fn counts_to(c: &StateCounts) -> v1::StateCounts {
    v1::StateCounts {
        pending: c.pending,
        queued: c.queued,
        running: c.running,
        succeeded: c.succeeded,
        retryable: c.retryable,
        dead: c.dead,
        cancelled: c.cancelled,
    }
}

fn counts_from(c: &v1::StateCounts) -> StateCounts {
    StateCounts {
        pending: c.pending,
        queued: c.queued,
        running: c.running,
        succeeded: c.succeeded,
        retryable: c.retryable,
        dead: c.dead,
        cancelled: c.cancelled,
    }
}

impl From<&BatchView> for v1::Batch {
    fn from(v: &BatchView) -> Self {
        let s = &v.status;
        v1::Batch {
            id: s.id.to_string(),
            name: s.name.clone(),
            model: s.model.to_string(),
            priority: u32::from(s.priority.get()),
            tags: s.tags.clone().into_iter().collect(),
            created_at: s.created_at.to_rfc3339(),
            counts: Some(counts_to(&s.counts)),
            total: v.total,
            done: v.done,
            rate_per_second: v.rate_per_second,
            eta_seconds: v.eta_seconds,
            device_seconds: s.device_seconds,
            live_workers: v.live_workers,
            jobs_purged_at: ts(s.jobs_purged_at),
        }
    }
}

impl TryFrom<v1::Batch> for BatchView {
    type Error = Error;
    fn try_from(b: v1::Batch) -> Result<Self> {
        Ok(BatchView {
            status: BatchStatus {
                id: b.id.parse()?,
                name: b.name,
                model: ModelName::parse(b.model)?,
                priority: Priority::parse(u8::try_from(b.priority).unwrap_or(u8::MAX))?,
                tags: b.tags.into_iter().collect(),
                created_at: parse_ts(&b.created_at)?.unwrap_or_default(),
                counts: b.counts.as_ref().map(counts_from).unwrap_or_default(),
                first_started_at: None,
                last_finished_at: None,
                device_seconds: b.device_seconds,
                jobs_purged_at: parse_ts(&b.jobs_purged_at)?,
            },
            done: b.done,
            total: b.total,
            rate_per_second: b.rate_per_second,
            eta_seconds: b.eta_seconds,
            live_workers: b.live_workers,
        })
    }
}

/// A page cursor as the protobuf messages carry it (`after`, `next_after`): empty for none.
pub fn cursor_to_proto(cursor: Option<impl ToString>) -> String {
    cursor.map(|c| c.to_string()).unwrap_or_default()
}

/// A page cursor from a protobuf message: `None` when empty.
///
/// # Errors
/// `Invalid` when it is not an id.
pub fn cursor_from_proto<T: std::str::FromStr<Err = Error>>(s: &str) -> Result<Option<T>> {
    (!s.is_empty()).then(|| s.parse()).transpose()
}

/// A job record as a protobuf message.
pub fn job_to_proto(j: &JobRecord) -> v1::Job {
    v1::Job {
        id: j.id.to_string(),
        batch_id: j.batch_id.to_string(),
        key: j.key.clone(),
        model: j.model.to_string(),
        params_json: serde_json::to_string(&j.params).expect("params serialize"),
        state: j.state.to_string(),
        attempt: j.attempt,
        max_attempts: j.max_attempts,
        object_key: j.object_key.clone().unwrap_or_default(),
        sha256: j.sha256.clone().unwrap_or_default(),
        last_error: j.last_error.clone().unwrap_or_default(),
        error_kind: j.error_kind.clone().unwrap_or_default(),
        timings: j.timings.clone().into_iter().collect(),
        created_at: j.created_at.to_rfc3339(),
        started_at: ts(j.started_at),
        finished_at: ts(j.finished_at),
        steps_done: j.progress.map_or(0, |p| p.done),
        steps_total: j.progress.map_or(0, |p| p.total),
        image_url: j
            .image_url
            .as_ref()
            .map(|u| u.url.clone())
            .unwrap_or_default(),
        image_url_expires_at: ts(j.image_url.as_ref().map(|u| u.expires_at)),
        review: j
            .review
            .as_ref()
            .map(|r| r.verdict.as_str().to_string())
            .unwrap_or_default(),
        reviewed_by: j.review.as_ref().map(|r| r.by.clone()).unwrap_or_default(),
        reviewed_at: ts(j.review.as_ref().map(|r| r.at)),
    }
}

/// A protobuf job message as a validated record.
///
/// # Errors
/// `Invalid` when a field does not parse.
pub fn job_from_proto(j: v1::Job) -> Result<JobRecord> {
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(JobRecord {
        id: j.id.parse()?,
        batch_id: j.batch_id.parse()?,
        key: j.key,
        model: ModelName::parse(j.model)?,
        params: serde_json::from_str(&j.params_json)
            .map_err(|e| Error::invalid(format!("job params_json does not parse: {e}")))?,
        state: JobState::parse(&j.state)?,
        attempt: j.attempt,
        max_attempts: j.max_attempts,
        object_key: opt(j.object_key),
        sha256: opt(j.sha256),
        image_url: match (opt(j.image_url), parse_ts(&j.image_url_expires_at)?) {
            (Some(url), Some(expires_at)) => Some(SignedUrl { url, expires_at }),
            _ => None,
        },
        last_error: opt(j.last_error),
        error_kind: opt(j.error_kind),
        timings: j.timings.into_iter().collect(),
        created_at: parse_ts(&j.created_at)?.unwrap_or_default(),
        started_at: parse_ts(&j.started_at)?,
        finished_at: parse_ts(&j.finished_at)?,
        progress: (j.steps_total > 0).then_some(StepProgress {
            done: j.steps_done,
            total: j.steps_total,
        }),
        review: match (opt(j.review), parse_ts(&j.reviewed_at)?) {
            (Some(verdict), Some(at)) => Some(Review {
                verdict: Verdict::parse(&verdict)?,
                by: j.reviewed_by,
                at,
            }),
            _ => None,
        },
    })
}

/// An upload's outcome as protobuf.
pub fn uploaded_to_proto(u: &crate::UploadedInput) -> v1::UploadedInput {
    v1::UploadedInput {
        key: u.key.clone(),
        sha256: u.sha256.clone(),
        format: serde_json::to_value(u.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        width: u.width,
        height: u.height,
        bytes: u.bytes,
    }
}

/// An upload's outcome from protobuf.
///
/// # Errors
/// `Invalid` for a format the client does not know.
pub fn uploaded_from_proto(u: v1::UploadedInput) -> Result<crate::UploadedInput> {
    let format = serde_json::from_value(serde_json::Value::String(u.format.clone()))
        .map_err(|_| Error::invalid(format!("image format `{}` is not known", u.format)))?;
    Ok(crate::UploadedInput {
        key: u.key,
        sha256: u.sha256,
        format,
        width: u.width,
        height: u.height,
        bytes: u.bytes,
    })
}

/// A delivery log entry as protobuf.
pub fn delivery_to_proto(d: &WebhookDelivery) -> v1::WebhookDelivery {
    v1::WebhookDelivery {
        id: d.id.to_string(),
        r#type: d.kind.clone(),
        job_id: d.job_id.map(|j| j.to_string()).unwrap_or_default(),
        url: d.url.clone(),
        created_at: d.created_at.to_rfc3339(),
        state: d.state.clone(),
        next_attempt_at: ts(d.next_attempt_at),
        attempts: d
            .attempts
            .iter()
            .map(|a| v1::DeliveryAttempt {
                attempt: a.attempt,
                at: a.at.to_rfc3339(),
                status: a.status.map_or(0, u32::from),
                error: a.error.clone().unwrap_or_default(),
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

/// A protobuf delivery log entry as the API's record.
///
/// # Errors
/// `Invalid` when a field does not parse.
pub fn delivery_from_proto(d: v1::WebhookDelivery) -> Result<WebhookDelivery> {
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(WebhookDelivery {
        id: d.id.parse()?,
        kind: d.r#type,
        job_id: opt(d.job_id).map(|j| j.parse()).transpose()?,
        url: d.url,
        created_at: parse_ts(&d.created_at)?.unwrap_or_default(),
        state: d.state,
        next_attempt_at: parse_ts(&d.next_attempt_at)?,
        attempts: d
            .attempts
            .into_iter()
            .map(|a| {
                Ok(DeliveryAttempt {
                    attempt: a.attempt,
                    at: parse_ts(&a.at)?.unwrap_or_default(),
                    status: u16::try_from(a.status).ok().filter(|s| *s != 0),
                    error: opt(a.error),
                    duration_ms: a.duration_ms,
                })
            })
            .collect::<Result<_>>()?,
    })
}
