//! Webhooks: what a batch (its manifest's `webhook:`) or a tenant (registered by an operator)
//! subscribes to, the events of the outbox the store writes in the transaction of the change that
//! caused them, and the records of their delivery (docs/webhooks.md).

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use utoipa::ToSchema;

use crate::ids::{BatchId, EventId, JobId, TenantId, WebhookId};
use crate::{Error, Result};

/// What happened, as the `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Every job of the batch is final and none is dead (cancelled jobs are counted in `counts`).
    BatchCompleted,
    /// Every job of the batch is final and at least one is dead.
    BatchFailed,
    /// A job failed for good: it is dead (its retries spent, or a permanent failure).
    JobFailed,
    /// A job's image is stored (one event per job: asked for explicitly, never by default).
    JobSucceeded,
}

impl EventKind {
    /// Every kind, in the order of their bits.
    pub const ALL: [EventKind; 4] = [
        EventKind::BatchCompleted,
        EventKind::BatchFailed,
        EventKind::JobFailed,
        EventKind::JobSucceeded,
    ];

    /// Every kind's name, for messages saying what is accepted.
    pub const NAMES: &'static str = "batch.completed, batch.failed, job.failed, job.succeeded";

    /// The name on the wire and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BatchCompleted => "batch.completed",
            EventKind::BatchFailed => "batch.failed",
            EventKind::JobFailed => "job.failed",
            EventKind::JobSucceeded => "job.succeeded",
        }
    }

    /// Its bit in an [`EventSet`] (the stores' `events` column and triggers use the same bits).
    pub fn bit(self) -> u8 {
        match self {
            EventKind::BatchCompleted => 1,
            EventKind::BatchFailed => 2,
            EventKind::JobFailed => 4,
            EventKind::JobSucceeded => 8,
        }
    }

    /// The kind called `name`.
    ///
    /// # Errors
    /// `Invalid` naming the accepted names.
    pub fn parse(name: &str) -> Result<Self> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown event {name:?}; accepted: {}",
                    EventKind::NAMES
                ))
            })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events a webhook is sent: a non-empty set of [`EventKind`]s, written as a list of names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// A manifest's `webhook:` without `events`: the batch's outcome.
    pub const BATCH_OUTCOME: EventSet = EventSet(1 | 2);

    /// The set of `kinds`.
    ///
    /// # Errors
    /// `Invalid` when `kinds` is empty.
    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> Result<Self> {
        let bits = kinds.into_iter().fold(0, |bits, k| bits | k.bit());
        Self::from_bits(bits)
    }

    /// The set stored as `bits`.
    ///
    /// # Errors
    /// `Invalid` for no event or an unknown bit.
    pub fn from_bits(bits: u8) -> Result<Self> {
        if bits == 0 || bits > 15 {
            return Err(Error::invalid(format!(
                "events must name at least one of {}",
                EventKind::NAMES
            )));
        }
        Ok(EventSet(bits))
    }

    /// Its bits, as the stores keep them.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds in the set.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(EventKind::as_str))
            .finish()
    }
}

impl Serialize for EventSet {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(EventKind::as_str))
    }
}

impl<'de> Deserialize<'de> for EventSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let kinds = names
            .iter()
            .map(|n| EventKind::parse(n))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| serde::de::Error::custom(e.to_string()))?;
        EventSet::of(kinds).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

/// Where a webhook is sent: an absolute `http`/`https` URL with a host, no user name or password
/// and no fragment, at most [`WebhookUrl::MAX_BYTES`]. Whether its host may be called is the
/// deployment's rule, checked by the scheduler when the webhook is registered and when it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    /// Longest accepted URL.
    pub const MAX_BYTES: usize = 2048;

    /// Check `text`.
    ///
    /// # Errors
    /// `Invalid` saying what is accepted.
    pub fn parse(text: &str) -> Result<Self> {
        const ACCEPTED: &str = "accepted: an absolute http:// or https:// URL with a host, without user name, password or #fragment";
        if text.len() > Self::MAX_BYTES {
            return Err(Error::invalid(format!(
                "is {} bytes; accepted: at most {} bytes",
                text.len(),
                Self::MAX_BYTES
            )));
        }
        let url = url::Url::parse(text)
            .map_err(|e| Error::invalid(format!("is not a URL ({e}); {ACCEPTED}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "has scheme {:?}; {ACCEPTED}",
                url.scheme()
            )));
        }
        if url.host().is_none() {
            return Err(Error::invalid(format!("has no host; {ACCEPTED}")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(format!(
                "holds a user name or password; {ACCEPTED} (authenticate the sender by the signature)"
            )));
        }
        if url.fragment().is_some() {
            return Err(Error::invalid(format!("has a #fragment; {ACCEPTED}")));
        }
        Ok(WebhookUrl(url))
    }

    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        WebhookUrl::parse(&text).map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

/// A manifest's `webhook:`: where the batch's events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to send them.
    pub url: WebhookUrl,
    /// Which; the batch's outcome (`batch.completed`, `batch.failed`) when left out.
    #[serde(default = "batch_outcome")]
    pub events: EventSet,
}

fn batch_outcome() -> EventSet {
    EventSet::BATCH_OUTCOME
}

/// A webhook as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    #[allow(missing_docs)]
    pub id: WebhookId,
    #[allow(missing_docs)]
    pub tenant: TenantId,
    /// The batch whose manifest named it; `None` for a tenant's webhook (every batch of it).
    pub batch: Option<BatchId>,
    #[allow(missing_docs)]
    pub url: WebhookUrl,
    #[allow(missing_docs)]
    pub events: EventSet,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
}

/// A tenant's signing secret, in the Standard Webhooks form `whsec_<base64 of 32 random bytes>`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    const PREFIX: &str = "whsec_";

    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        WebhookSecret(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    /// A stored secret.
    ///
    /// # Errors
    /// `Permanent` when it is not of the `whsec_<base64>` form.
    pub fn from_stored(text: String) -> Result<Self> {
        let secret = WebhookSecret(text);
        secret
            .key()
            .map(|_| secret.clone())
            .ok_or_else(|| Error::permanent("a stored webhook secret is not whsec_<base64>"))
    }

    /// The HMAC key: the bytes after the prefix, base64-decoded.
    pub fn key(&self) -> Option<Vec<u8>> {
        let b64 = self.0.strip_prefix(Self::PREFIX)?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    /// The secret as given to the tenant.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// An event due for an attempt, claimed by one relay until its lease ends.
#[derive(Debug, Clone)]
pub struct DueEvent {
    #[allow(missing_docs)]
    pub id: EventId,
    #[allow(missing_docs)]
    pub kind: EventKind,
    #[allow(missing_docs)]
    pub tenant: TenantId,
    #[allow(missing_docs)]
    pub batch: BatchId,
    /// The dead job of a `job.failed`.
    pub job: Option<JobId>,
    /// Where it goes (copied from the webhook when the event was written).
    pub url: String,
    /// When the change that caused it committed.
    pub created_at: DateTime<Utc>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The body every attempt sends, once the first attempt wrote it.
    pub body: Option<String>,
    /// The tenant's secrets to sign with: the current one, and the previous one for a day after
    /// a rotation (a receiver that still holds it keeps verifying).
    pub secrets: Vec<WebhookSecret>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its HTTP status.
        status: u16,
    },
    /// Anything else: another status, a refused address, a timeout, a connection error.
    Failed {
        /// Its HTTP status, when it answered.
        status: Option<u16>,
        /// What went wrong, for the delivery log.
        error: String,
        /// When to try again; `None`: never (the event is given up).
        retry_at: Option<DateTime<Utc>>,
    },
}

/// One attempt of a delivery, in the log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    #[allow(missing_docs)]
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// An event of a batch and what became of it: the delivery log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// The event's id (the `webhook-id` header).
    pub id: EventId,
    /// `batch.completed`, `batch.failed`, `job.failed` or `job.succeeded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The job of a `job.failed` or `job.succeeded`.
    pub job_id: Option<JobId>,
    #[allow(missing_docs)]
    pub url: String,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
    /// `pending` (due again at `next_attempt_at`), `delivered` or `failed` (given up).
    pub state: String,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// Which receivers a deployment lets webhooks call (`scheduler.webhooks`): hosts on the
/// allow-list (all when it is empty) at addresses outside private, loopback, link-local and other
/// special-purpose ranges unless `allow_private_networks` (a webhook must not reach the cluster's
/// own services: SSRF).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Host names (`hooks.example.com`) or suffixes (`*.example.com`) that may be called; empty:
    /// any host.
    pub allowed_hosts: Vec<String>,
    /// Let webhooks reach private and special-purpose addresses (tests, on-premises receivers).
    pub allow_private_networks: bool,
}

impl WebhookPolicy {
    /// Whether `url` may be registered or called, before any name is resolved: its host is
    /// allowed, and an address written as the host is not refused.
    ///
    /// # Errors
    /// `Invalid` saying which rule refused it.
    pub fn check(&self, url: &WebhookUrl) -> Result<()> {
        let host = url.url().host_str().unwrap_or_default();
        if !self.host_allowed(host) {
            return Err(Error::invalid(format!(
                "host {host:?} is not on this deployment's webhook allow-list ({})",
                self.allowed_hosts.join(", ")
            )));
        }
        let literal = match url.url().host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        match literal {
            Some(ip) => self.check_address(ip),
            None => Ok(()),
        }
    }

    /// Whether a resolved address may be connected to.
    ///
    /// # Errors
    /// `Invalid` for a refused address.
    pub fn check_address(&self, ip: std::net::IpAddr) -> Result<()> {
        if self.allow_private_networks || is_public(ip) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "address {ip} is private or special-purpose; webhooks go to public addresses \
                 unless the deployment sets scheduler.webhooks.allow_private_networks"
            )))
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|rule| {
                let rule = rule.to_ascii_lowercase();
                match rule.strip_prefix("*.") {
                    Some(suffix) => host
                        .strip_suffix(suffix)
                        .is_some_and(|rest| rest.ends_with('.')),
                    None => host == rule,
                }
            })
    }
}

/// Whether `ip` is a globally routable unicast address (not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, unspecified or reserved; IPv6 mapped
/// and NAT64 addresses judged by their IPv4 address).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    fn v4(ip: Ipv4Addr) -> bool {
        let [a, b, c, _] = ip.octets();
        !(ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_private()
            || ip.is_link_local()
            || ip.is_broadcast()
            || ip.is_documentation()
            || ip.is_multicast()
            || a == 0
            || (a == 100 && (64..128).contains(&b))
            || (a == 192 && b == 0 && c == 0)
            || (a == 198 && (18..20).contains(&b))
            || a >= 240)
    }
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            if let Some(mapped) = ip.to_ipv4_mapped() {
                return v4(mapped);
            }
            let s = ip.segments();
            if s[0] == 0x64 && s[1] == 0xff9b {
                return v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            // Global unicast is 2000::/3, less documentation (2001:db8::/32).
            (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_field_by_field() {
        assert!(WebhookUrl::parse("https://hooks.example.com/pf?x=1").is_ok());
        for bad in [
            "ftp://x/",
            "https://user:pw@x/",
            "https://x/#f",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://x/{}", "a".repeat(WebhookUrl::MAX_BYTES));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    #[test]
    fn private_and_special_addresses_are_refused_unless_allowed() {
        let deny = WebhookPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            let url = WebhookUrl::parse(url).unwrap();
            assert!(deny.check(&url).is_err(), "{url}");
        }
        assert!(
            deny.check(&WebhookUrl::parse("http://93.184.216.34/").unwrap())
                .is_ok()
        );
        let allow = WebhookPolicy {
            allow_private_networks: true,
            ..Default::default()
        };
        assert!(
            allow
                .check(&WebhookUrl::parse("http://127.0.0.1:9/").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn the_allow_list_matches_names_and_suffixes() {
        let policy = WebhookPolicy {
            allowed_hosts: vec!["hooks.example.com".into(), "*.acme.io".into()],
            allow_private_networks: false,
        };
        let ok = |u: &str| policy.check(&WebhookUrl::parse(u).unwrap()).is_ok();
        assert!(ok("https://hooks.example.com/x"));
        assert!(ok("https://a.b.acme.io/x"));
        assert!(!ok("https://acme.io/x"));
        assert!(!ok("https://evilacme.io/x"));
        assert!(!ok("https://example.com/x"));
    }

    #[test]
    fn event_sets_read_and_write_names() {
        let set: EventSet = serde_json::from_str(r#"["job.failed", "batch.failed"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["batch.failed","job.failed"]"#
        );
        assert!(serde_json::from_str::<EventSet>("[]").is_err());
        let err = serde_json::from_str::<EventSet>(r#"["batch.done"]"#).unwrap_err();
        assert!(
            err.to_string().contains("accepted: batch.completed"),
            "{err}"
        );
    }

    #[test]
    fn secrets_round_trip_and_hide() {
        let s = WebhookSecret::generate();
        assert_eq!(s.key().unwrap().len(), 32);
        assert_eq!(
            WebhookSecret::from_stored(s.expose().to_owned()).unwrap(),
            s
        );
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
