//! A parsed, expanded, valid batch.

use std::collections::BTreeMap;

use super::jobs::Jobs;
use crate::params::*;

/// A parsed, expanded, valid batch: what the store writes in one transaction.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Human name shown in listings.
    pub name: String,
    /// The model every job of the batch renders with (routing key).
    pub model: ModelName,
    /// Dispatch priority.
    pub priority: Priority,
    /// Re-submitting with the same key returns the same batch instead of a new one.
    pub idempotency_key: Option<String>,
    /// Free-form labels, kept for the audit trail.
    pub tags: BTreeMap<String, String>,
    /// The manifest as submitted, kept for the audit trail.
    pub source: String,
    /// Every job, in manifest order, built as it is read.
    pub jobs: Jobs,
    /// Where the batch's events are sent (`webhook:`), besides its tenant's webhooks.
    pub webhook: Option<crate::webhooks::WebhookSpec>,
}
