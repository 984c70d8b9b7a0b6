//! `pixelfarm-scheduler tenant webhook …`: a tenant's webhooks (every batch of it) and its
//! signing secret.

use clap::Subcommand;
use pixelfarm_core::{
    Error, EventKind, EventSet, JobStore, Result, WebhookId, WebhookPolicy, WebhookSpec, WebhookUrl,
};

use super::lookup::by_name;

/// `tenant webhook …`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Send the events of every batch of the tenant to URL (checked against
    /// `scheduler.webhooks`); prints the webhook.
    Add {
        /// Tenant name.
        name: String,
        /// Receiver: an http:// or https:// URL.
        url: String,
        /// Comma-separated events: batch.completed, batch.failed, job.failed, job.succeeded (one
        /// per image).
        #[arg(long, default_value = "batch.completed,batch.failed", value_parser = parse_events)]
        events: EventSet,
    },
    /// List the tenant's webhooks.
    List {
        /// Tenant name.
        name: String,
    },
    /// Remove a webhook; its undelivered events are given up.
    Remove {
        /// Tenant name.
        name: String,
        /// The webhook's id (from `list`).
        id: WebhookId,
    },
    /// Print the tenant's signing secret (made on first use); receivers verify the
    /// `webhook-signature` header with it.
    Secret {
        /// Tenant name.
        name: String,
        /// Replace it; the old one keeps signing beside the new one for a day.
        #[arg(long)]
        rotate: bool,
    },
}

fn parse_events(v: &str) -> std::result::Result<EventSet, String> {
    let kinds = v
        .split(',')
        .map(|k| EventKind::parse(k.trim()))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| format!("--events: {e}"))?;
    EventSet::of(kinds).map_err(|e| format!("--events: {e}"))
}

/// Run a `tenant webhook` command under `policy`; returns the lines to print.
///
/// # Errors
/// `Invalid` for a URL the policy refuses; `NotFound` for an unknown tenant or webhook.
pub async fn run(
    store: &dyn JobStore,
    policy: &WebhookPolicy,
    command: WebhookCommand,
) -> Result<Vec<String>> {
    match command {
        WebhookCommand::Add { name, url, events } => {
            let tenant = by_name(store, &name).await?;
            let url = WebhookUrl::parse(&url)
                .and_then(|u| policy.check(&u).map(|()| u))
                .map_err(|e| Error::invalid(format!("url: {e}")))?;
            let hook = store
                .add_webhook(tenant, &WebhookSpec { url, events })
                .await?;
            Ok(vec![line(&hook)])
        }
        WebhookCommand::List { name } => {
            let tenant = by_name(store, &name).await?;
            Ok(store
                .list_webhooks(tenant)
                .await?
                .iter()
                .map(line)
                .collect())
        }
        WebhookCommand::Remove { name, id } => {
            let tenant = by_name(store, &name).await?;
            if store.remove_webhook(tenant, id).await? {
                Ok(vec![format!("removed webhook {id}")])
            } else {
                Err(Error::not_found(format!(
                    "tenant {name} has no webhook {id}"
                )))
            }
        }
        WebhookCommand::Secret { name, rotate } => {
            let tenant = by_name(store, &name).await?;
            let secret = store.webhook_secret(tenant, rotate).await?;
            Ok(vec![secret.expose().to_owned()])
        }
    }
}

fn line(hook: &pixelfarm_core::Webhook) -> String {
    let events: Vec<&str> = hook.events.iter().map(EventKind::as_str).collect();
    format!("{}  {}  {}", hook.id, hook.url, events.join(","))
}
