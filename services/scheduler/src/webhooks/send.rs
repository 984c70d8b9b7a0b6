//! One attempt of one event: a signed POST to the receiver, through a resolver that refuses the
//! addresses the deployment's [`WebhookPolicy`] refuses (the check runs on the addresses the
//! connection will use, so a name that resolves to a private address — DNS rebinding included —
//! is refused like the address itself), without proxies and without following redirects.

use chrono::Utc;
use pixelfarm_core::{DueEvent, Error, Result, WebhookPolicy, WebhookUrl};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::sign::signature;

/// What the receiver (or the way to it) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed; `None` for a 2xx.
    pub error: Option<String>,
}

/// Sends events' bodies.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<WebhookPolicy>,
}

impl Sender {
    /// A sender under `policy`, each attempt bounded by `timeout`.
    ///
    /// # Errors
    /// `Permanent` when the HTTP client cannot be built (no TLS roots).
    pub fn new(policy: WebhookPolicy, timeout: Duration) -> Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Guarded(policy.clone())))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("pixelfarm-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::permanent(format!("cannot build the webhook client: {e}")))?;
        Ok(Sender { client, policy })
    }

    /// POST `body` to the event's URL, signed, and say how it went.
    pub async fn send(&self, event: &DueEvent, body: &str) -> Answer {
        let refused = |e: Error| Answer {
            status: None,
            error: Some(e.to_string()),
        };
        let url = match WebhookUrl::parse(&event.url) {
            Ok(url) => url,
            Err(e) => return refused(e),
        };
        if let Err(e) = self.policy.check(&url) {
            return refused(e);
        }
        let id = event.id.to_string();
        let timestamp = Utc::now().timestamp();
        let sent = self
            .client
            .post(url.url().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&event.secrets, &id, timestamp, body),
            )
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                Answer {
                    status: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("the receiver answered {status}")),
                }
            }
            Err(e) => Answer {
                status: None,
                error: Some(describe(&e)),
            },
        }
    }
}

/// A transport error in one line, with its causes (the policy's refusal among them).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = what.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The system resolver, less the addresses the policy refuses.
struct Guarded(Arc<WebhookPolicy>);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match policy.check_address(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.map_or_else(
                    || format!("{host} has no address"),
                    |e| format!("{host}: {e}"),
                );
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
