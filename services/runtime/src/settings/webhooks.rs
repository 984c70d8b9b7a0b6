//! `scheduler.webhooks` section: which receivers webhooks may call and how the relay retries.

use pixelfarm_core::WebhookPolicy;
use serde::Deserialize;

/// `scheduler.webhooks` section (docs/webhooks.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Hosts (`hooks.example.com`) or suffixes (`*.example.com`) webhooks may be sent to; empty:
    /// any host at a public address.
    pub allowed_hosts: Vec<String>,
    /// Let webhooks reach private, loopback, link-local and other special-purpose addresses
    /// (refused by default: a tenant's webhook must not reach the cluster's own services).
    pub allow_private_networks: bool,
    /// Bound of one delivery attempt, in seconds.
    pub timeout_seconds: u64,
    /// Attempts in flight at once per scheduler.
    pub concurrency: u32,
    /// Between two looks at the outbox when nothing was due, in milliseconds.
    pub poll_ms: u64,
    /// Wait after the first failed attempt, in seconds; it doubles after each failure.
    pub first_retry_seconds: u64,
    /// The longest wait between two attempts, in seconds.
    pub max_retry_seconds: u64,
    /// Events older than this many hours are not tried again (given up, in the delivery log).
    pub give_up_after_hours: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allowed_hosts: Vec::new(),
            allow_private_networks: false,
            timeout_seconds: 10,
            concurrency: 16,
            poll_ms: 1000,
            first_retry_seconds: 10,
            max_retry_seconds: 3600,
            give_up_after_hours: 24,
        }
    }
}

impl WebhookSettings {
    /// The receivers these settings allow.
    pub fn policy(&self) -> WebhookPolicy {
        WebhookPolicy {
            allowed_hosts: self.allowed_hosts.clone(),
            allow_private_networks: self.allow_private_networks,
        }
    }

    /// # Errors
    /// A message naming the `scheduler.webhooks` field out of range and what is accepted.
    pub fn validate(&self) -> Result<(), String> {
        let field = |name: &str, is: String, accepted: &str| {
            Err(format!(
                "scheduler.webhooks.{name}: is {is}; accepted: {accepted}"
            ))
        };
        if !(1..=300).contains(&self.timeout_seconds) {
            return field(
                "timeout_seconds",
                self.timeout_seconds.to_string(),
                "1 to 300",
            );
        }
        if !(1..=1024).contains(&self.concurrency) {
            return field("concurrency", self.concurrency.to_string(), "1 to 1024");
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return field("poll_ms", self.poll_ms.to_string(), "10 to 60000");
        }
        if self.first_retry_seconds == 0 || self.first_retry_seconds > self.max_retry_seconds {
            return field(
                "first_retry_seconds",
                self.first_retry_seconds.to_string(),
                "1 up to max_retry_seconds",
            );
        }
        if !(1..=24 * 30).contains(&self.give_up_after_hours) {
            return field(
                "give_up_after_hours",
                self.give_up_after_hours.to_string(),
                "1 to 720",
            );
        }
        if let Some(bad) = self.allowed_hosts.iter().find(|h| {
            let name = h.strip_prefix("*.").unwrap_or(h);
            name.is_empty() || name.contains(['/', ':', '*', ' ', '@'])
        }) {
            return field(
                "allowed_hosts",
                format!("{bad:?}"),
                "host names (hooks.example.com) or *.suffixes (*.example.com)",
            );
        }
        Ok(())
    }
}
