//! What both stores' webhook queries share: the rows they read, decoded the same way, and the
//! delivery log assembled from them (the outbox itself is written by each schema's triggers,
//! migration 0009).

use chrono::{DateTime, Utc};
use pixelfarm_core::*;
use uuid::Uuid;

/// How long a rotated-out secret keeps signing beside the new one.
pub(crate) const PREVIOUS_SECRET_SIGNS_FOR: chrono::Duration = chrono::Duration::days(1);

/// Longest error text kept per attempt in the log.
const MAX_ERROR_CHARS: usize = 500;

/// A webhook row.
pub(crate) struct WebhookRow {
    pub(crate) id: Uuid,
    pub(crate) tenant: Uuid,
    pub(crate) batch: Option<Uuid>,
    pub(crate) url: String,
    pub(crate) events: i64,
    pub(crate) created_at: DateTime<Utc>,
}

impl WebhookRow {
    pub(crate) fn decode(self) -> Result<Webhook> {
        Ok(Webhook {
            id: WebhookId::from_uuid(self.id),
            tenant: TenantId::from_uuid(self.tenant),
            batch: self.batch.map(BatchId::from_uuid),
            url: WebhookUrl::parse(&self.url)?,
            events: EventSet::from_bits(u8::try_from(self.events).unwrap_or(0))?,
            created_at: self.created_at,
        })
    }
}

/// A claimed event row with its tenant's secrets.
pub(crate) struct EventRow {
    pub(crate) id: Uuid,
    pub(crate) kind: String,
    pub(crate) tenant: Uuid,
    pub(crate) batch: Uuid,
    pub(crate) job: Option<Uuid>,
    pub(crate) url: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) attempts: i64,
    pub(crate) body: Option<String>,
    pub(crate) secret: Option<String>,
    /// The previous secret, only while it still signs.
    pub(crate) previous: Option<String>,
}

impl EventRow {
    pub(crate) fn decode(self) -> Result<DueEvent> {
        let secrets = [self.secret, self.previous]
            .into_iter()
            .flatten()
            .map(WebhookSecret::from_stored)
            .collect::<Result<Vec<_>>>()?;
        Ok(DueEvent {
            id: EventId::from_uuid(self.id),
            kind: EventKind::parse(&self.kind)?,
            tenant: TenantId::from_uuid(self.tenant),
            batch: BatchId::from_uuid(self.batch),
            job: self.job.map(JobId::from_uuid),
            url: self.url,
            created_at: self.created_at,
            attempt: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            body: self.body,
            secrets,
        })
    }
}

/// An event of the delivery log, before its attempts are attached.
pub(crate) struct LoggedEvent {
    pub(crate) id: Uuid,
    pub(crate) kind: String,
    pub(crate) job: Option<Uuid>,
    pub(crate) url: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) next_attempt_at: DateTime<Utc>,
    pub(crate) delivered: bool,
    pub(crate) gave_up: bool,
}

/// An attempt row of the delivery log.
pub(crate) struct LoggedAttempt {
    pub(crate) event: Uuid,
    pub(crate) attempt: DeliveryAttempt,
}

/// The log: `events` in order, each with its attempts (`attempts` in any order).
pub(crate) fn delivery_log(
    events: Vec<LoggedEvent>,
    attempts: Vec<LoggedAttempt>,
) -> Vec<WebhookDelivery> {
    let mut out: Vec<WebhookDelivery> = events
        .into_iter()
        .map(|e| {
            let state = if e.delivered {
                "delivered"
            } else if e.gave_up {
                "failed"
            } else {
                "pending"
            };
            WebhookDelivery {
                id: EventId::from_uuid(e.id),
                kind: e.kind,
                job_id: e.job.map(JobId::from_uuid),
                url: e.url,
                created_at: e.created_at,
                state: state.to_owned(),
                next_attempt_at: (state == "pending").then_some(e.next_attempt_at),
                attempts: Vec::new(),
            }
        })
        .collect();
    for a in attempts {
        if let Some(d) = out.iter_mut().find(|d| d.id.as_uuid() == a.event) {
            d.attempts.push(a.attempt);
        }
    }
    for d in &mut out {
        d.attempts.sort_by_key(|a| a.attempt);
    }
    out
}

/// What an attempt row stores of `outcome`: status, error, delivered, retry time.
pub(crate) fn attempt_columns(
    outcome: &AttemptOutcome,
) -> (Option<i32>, Option<String>, bool, Option<DateTime<Utc>>) {
    match outcome {
        AttemptOutcome::Delivered { status } => (Some(i32::from(*status)), None, true, None),
        AttemptOutcome::Failed {
            status,
            error,
            retry_at,
        } => (
            status.map(i32::from),
            Some(error.chars().take(MAX_ERROR_CHARS).collect()),
            false,
            *retry_at,
        ),
    }
}
