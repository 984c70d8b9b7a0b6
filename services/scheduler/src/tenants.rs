//! Tenants, their quotas, retention, API keys and webhooks: the config bootstrap and
//! `pixelfarm-scheduler tenant …`.

mod lookup;
pub mod webhooks;

use lookup::by_name;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use pixelfarm_core::{
    ApiKeyInfo, Error, ErrorKind, JobStore, NewApiKey, Priority, Result, Retention, TenantId,
    WebhookPolicy, hash_api_key,
};
use pixelfarm_runtime::settings::TenantBootstrap;
use rand::RngCore;

/// A new random API key: `pf_` and 32 random bytes in hex.
pub fn new_api_key() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("pf_{}", hex::encode(b))
}

/// Create the tenant if missing; returns it.
///
/// # Errors
/// Store errors.
pub async fn ensure(store: &dyn JobStore, name: &str, weight: u32) -> Result<TenantId> {
    match store.tenant_by_name(name).await? {
        Some(id) => Ok(id),
        None => match store.create_tenant(name, weight).await {
            Ok(id) => Ok(id),
            // Another scheduler replica created it at the same moment.
            Err(e) if e.kind() == ErrorKind::Conflict => store.tenant_by_name(name).await?.ok_or(e),
            Err(e) => Err(e),
        },
    }
}

/// Apply the configured tenant bootstrap: create missing tenants, register their keys as
/// config keys, and revoke every config key the config no longer lists (keys made with
/// `tenant key create` are not touched). Returns how many keys it revoked.
///
/// # Errors
/// Store errors.
pub async fn bootstrap(store: &dyn JobStore, tenants: &[TenantBootstrap]) -> Result<u64> {
    let mut listed = Vec::new();
    for t in tenants {
        let id = ensure(store, &t.name, t.weight).await?;
        for k in &t.api_keys {
            store
                .add_api_key(id, &NewApiKey::new(k, None, true))
                .await?;
            listed.push(hash_api_key(k));
        }
    }
    let revoked = store.revoke_config_keys_except(&listed).await?;
    if revoked > 0 {
        tracing::warn!(
            revoked,
            "revoked api keys that scheduler.tenants no longer lists"
        );
    }
    Ok(revoked)
}

/// `pixelfarm-scheduler tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (or reuse it) and print a new API key for it (shown once).
    Create {
        /// Tenant name.
        name: String,
        /// Fair-share weight relative to other tenants.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// The key expires this long from now (`90d`, `12h`, `30m`); never when absent.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<chrono::Duration>,
    },
    /// Print a tenant's quotas, its usage of them, and its keys.
    Show {
        /// Tenant name.
        name: String,
    },
    /// Change a tenant's quotas: each flag given sets that limit (`none` removes it); the
    /// others stay as they are.
    SetQuota(SetQuota),
    /// Set how long the job rows of the tenant's finished batches are kept after their last job
    /// finished; then they are deleted and the batch rows (name, tags, manifest) remain.
    SetRetention {
        /// Tenant name.
        name: String,
        /// `90d`, `12h`, `30m`, `45s`; `never` keeps them forever; `default` follows
        /// `scheduler.retention`.
        #[arg(value_parser = parse_retention)]
        retention: Setting<Retention>,
    },
    /// Set whether the tenant's images get content credentials (a signed C2PA manifest stating
    /// that a model made them, and the XMP digital source type) where a manifest's
    /// `output.content_credentials` does not say.
    SetContentCredentials {
        /// Tenant name.
        name: String,
        /// `on` (a new tenant's setting) or `off`.
        state: Switch,
    },
    /// Manage a tenant's API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage a tenant's webhooks and their signing secret.
    Webhook {
        #[command(subcommand)]
        command: webhooks::WebhookCommand,
    },
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `tenant set-quota` (see [`pixelfarm_core::Quota`] for what each limit counts).
#[derive(Debug, Args)]
pub struct SetQuota {
    /// Tenant name.
    name: String,
    /// Jobs not yet finished at once.
    #[arg(long, value_parser = parse_limit::<u64>)]
    max_queued_jobs: Option<Setting<u64>>,
    /// Jobs submitted in any 24 hours.
    #[arg(long, value_parser = parse_limit::<u64>)]
    max_jobs_per_day: Option<Setting<u64>>,
    /// Watch streams open at once (per scheduler replica).
    #[arg(long, value_parser = parse_limit::<u32>)]
    max_watches: Option<Setting<u32>>,
    /// Submits a minute (per scheduler replica).
    #[arg(long, value_parser = parse_limit::<u32>)]
    submits_per_minute: Option<Setting<u32>>,
    /// Highest batch priority, 0 to 9.
    #[arg(long, value_parser = parse_priority)]
    max_priority: Option<Setting<Priority>>,
}

/// `tenant key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new key for the tenant and print it (shown once: only its hash is stored).
    Create {
        /// Tenant name.
        name: String,
        /// The key expires this long from now (`90d`, `12h`, `30m`); never when absent.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<chrono::Duration>,
    },
    /// List the tenant's keys: prefix, created, last used, expires, revoked, origin.
    List {
        /// Tenant name.
        name: String,
    },
    /// Revoke the tenant's key with this prefix (as `list` shows it).
    Revoke {
        /// Tenant name.
        name: String,
        /// The key's prefix.
        prefix: String,
    },
}

/// A limit given on the command line: `Some` value, or `None` for `none` (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T>(Option<T>);

impl<T: Copy> Setting<T> {
    /// The new value of a limit whose flag was `given`, `old` when it was not.
    fn or_keep(given: Option<Setting<T>>, old: Option<T>) -> Option<T> {
        given.map_or(old, |s| s.0)
    }
}

/// A limit value: a number, or `none` for unlimited.
fn parse_limit<T: std::str::FromStr>(v: &str) -> std::result::Result<Setting<T>, String> {
    if v == "none" {
        return Ok(Setting(None));
    }
    v.parse().map(|n| Setting(Some(n))).map_err(|_| {
        format!("`{v}` is not a limit; accepted: a whole number, or `none` for unlimited")
    })
}

fn parse_priority(v: &str) -> std::result::Result<Setting<Priority>, String> {
    parse_limit::<u8>(v)?
        .0
        .map(|p| Priority::parse(p).map_err(|e| format!("priority {e}")))
        .transpose()
        .map(Setting)
}

/// A retention: a lifetime, `never`, or `default` (`None`: the scheduler's).
fn parse_retention(v: &str) -> std::result::Result<Setting<Retention>, String> {
    match v {
        "default" => Ok(Setting(None)),
        "never" => Ok(Setting(Some(Retention::Forever))),
        _ => {
            let d = parse_lifetime(v).map_err(|_| {
                format!(
                    "`{v}` is not a retention; accepted: a positive number followed by d, h, m or s (e.g. 90d), `never`, or `default`"
                )
            })?;
            Ok(Setting(Some(Retention::from_seconds(
                d.num_seconds().unsigned_abs(),
            ))))
        }
    }
}

/// `90d`, `12h`, `30m` or `45s`.
fn parse_lifetime(v: &str) -> std::result::Result<chrono::Duration, String> {
    let bad = || {
        format!(
            "`{v}` is not a lifetime; accepted: a positive number followed by d, h, m or s (e.g. 90d)"
        )
    };
    let split = v
        .len()
        .checked_sub(1)
        .filter(|&i| v.is_char_boundary(i))
        .ok_or_else(bad)?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    // At most a hundred years: far enough for "never", near enough for every clock.
    chrono::Duration::try_seconds(secs)
        .filter(|d| *d <= chrono::Duration::days(36_500))
        .ok_or_else(bad)
}

/// Run a `tenant` command; returns the lines to print. `default_retention` is
/// `scheduler.retention`, shown for tenants without their own.
///
/// # Errors
/// `NotFound` for an unknown tenant or key prefix; store errors.
pub async fn run(
    store: &dyn JobStore,
    default_retention: Retention,
    webhook_policy: &WebhookPolicy,
    command: TenantCommand,
) -> Result<Vec<String>> {
    match command {
        TenantCommand::Webhook { command } => webhooks::run(store, webhook_policy, command).await,
        TenantCommand::Create {
            name,
            weight,
            expires_in,
        } => {
            let tenant = ensure(store, &name, weight).await?;
            Ok(vec![create_key(store, tenant, expires_in).await?])
        }
        TenantCommand::Show { name } => show(store, &name, default_retention).await,
        TenantCommand::SetQuota(set) => {
            let tenant = by_name(store, &set.name).await?;
            let mut q = store.tenant(tenant).await?.quota;
            q.max_queued_jobs = Setting::or_keep(set.max_queued_jobs, q.max_queued_jobs);
            q.max_jobs_per_day = Setting::or_keep(set.max_jobs_per_day, q.max_jobs_per_day);
            q.max_watches = Setting::or_keep(set.max_watches, q.max_watches);
            q.submits_per_minute = Setting::or_keep(set.submits_per_minute, q.submits_per_minute);
            q.max_priority = Setting::or_keep(set.max_priority, q.max_priority);
            store.set_quota(tenant, &q).await?;
            show(store, &set.name, default_retention).await
        }
        TenantCommand::SetRetention { name, retention } => {
            let tenant = by_name(store, &name).await?;
            store.set_retention(tenant, retention.0).await?;
            show(store, &name, default_retention).await
        }
        TenantCommand::SetContentCredentials { name, state } => {
            let tenant = by_name(store, &name).await?;
            store
                .set_content_credentials(tenant, state == Switch::On)
                .await?;
            show(store, &name, default_retention).await
        }
        TenantCommand::Key { command } => match command {
            KeyCommand::Create { name, expires_in } => {
                let tenant = by_name(store, &name).await?;
                Ok(vec![create_key(store, tenant, expires_in).await?])
            }
            KeyCommand::List { name } => {
                let tenant = by_name(store, &name).await?;
                let mut lines = vec![format!(
                    "{:<20} {:<20} {:<20} {:<20} {:<20} origin",
                    "prefix", "created", "last used", "expires", "revoked"
                )];
                lines.extend(store.api_keys(tenant).await?.iter().map(key_line));
                Ok(lines)
            }
            KeyCommand::Revoke { name, prefix } => {
                let tenant = by_name(store, &name).await?;
                match store.revoke_api_keys(tenant, &prefix).await? {
                    0 => Err(Error::not_found(format!(
                        "tenant `{name}` has no unrevoked key with prefix `{prefix}`; accepted: a prefix from `tenant key list {name}`"
                    ))),
                    n => Ok(vec![format!(
                        "revoked {n} key(s) of tenant `{name}` with prefix `{prefix}`"
                    )]),
                }
            }
        },
    }
}

/// Register a new key for `tenant`; returns the key (the only time it is shown).
async fn create_key(
    store: &dyn JobStore,
    tenant: TenantId,
    expires_in: Option<chrono::Duration>,
) -> Result<String> {
    let key = new_api_key();
    let expires_at = expires_in.map(|d| Utc::now() + d);
    store
        .add_api_key(tenant, &NewApiKey::new(&key, expires_at, false))
        .await?;
    Ok(key)
}

async fn show(
    store: &dyn JobStore,
    name: &str,
    default_retention: Retention,
) -> Result<Vec<String>> {
    let tenant = by_name(store, name).await?;
    let info = store.tenant(tenant).await?;
    let usage = store.usage(tenant).await?;
    let keys = store.api_keys(tenant).await?;
    let limit = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    let q = &info.quota;
    let now = Utc::now();
    let valid = keys
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now))
        .count();
    Ok(vec![
        format!("tenant {} (weight {})", info.name, info.weight),
        format!(
            "max_queued_jobs     {:<10} in use: {} jobs not finished",
            limit(q.max_queued_jobs),
            usage.queued_jobs
        ),
        format!(
            "max_jobs_per_day    {:<10} in use: {} jobs in the last 24 hours",
            limit(q.max_jobs_per_day),
            usage.jobs_last_day
        ),
        format!(
            "max_watches         {} (per scheduler replica)",
            limit(q.max_watches.map(u64::from))
        ),
        format!(
            "submits_per_minute  {} (per scheduler replica)",
            limit(q.submits_per_minute.map(u64::from))
        ),
        format!(
            "max_priority        {}",
            q.max_priority
                .map_or("unlimited (9)".to_string(), |p| p.get().to_string())
        ),
        match info.retention {
            Some(r) => format!("job retention       {r} after a batch finished"),
            None => format!(
                "job retention       {default_retention} after a batch finished (scheduler.retention)"
            ),
        },
        format!(
            "content credentials {} (unless a manifest's output.content_credentials says)",
            if info.content_credentials {
                "on"
            } else {
                "off"
            }
        ),
        format!("api keys            {valid} valid of {}", keys.len()),
    ])
}

fn key_line(k: &ApiKeyInfo) -> String {
    let t = |v: Option<DateTime<Utc>>| {
        v.map_or("-".to_string(), |t| t.format("%Y-%m-%dT%H:%MZ").to_string())
    };
    format!(
        "{:<20} {:<20} {:<20} {:<20} {:<20} {}",
        k.prefix,
        t(Some(k.created_at)),
        t(k.last_used_at),
        t(k.expires_at),
        t(k.revoked_at),
        if k.from_config { "config" } else { "cli" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_limits_parse() {
        assert_eq!(parse_lifetime("90d"), Ok(chrono::Duration::days(90)));
        assert_eq!(parse_lifetime("30m"), Ok(chrono::Duration::minutes(30)));
        for bad in ["", "d", "0d", "-1d", "10w", "99999999999d", "1é"] {
            let e = parse_lifetime(bad).unwrap_err();
            assert!(e.contains("accepted"), "{bad}: {e}");
        }
        assert_eq!(parse_limit::<u64>("none"), Ok(Setting(None)));
        assert_eq!(parse_limit::<u64>("12"), Ok(Setting(Some(12))));
        assert!(parse_limit::<u32>("-1").unwrap_err().contains("`none`"));
        assert!(
            parse_priority("10")
                .unwrap_err()
                .contains("0 (lowest) to 9")
        );
        assert_eq!(parse_retention("default"), Ok(Setting(None)));
        assert_eq!(
            parse_retention("never"),
            Ok(Setting(Some(Retention::Forever)))
        );
        assert_eq!(
            parse_retention("30d"),
            Ok(Setting(Some(Retention::For(
                std::time::Duration::from_secs(30 * 86_400)
            ))))
        );
        for bad in ["0d", "forever", "-3d", ""] {
            let e = parse_retention(bad).unwrap_err();
            assert!(e.contains("`never`, or `default`"), "{bad}: {e}");
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TenantCommand,
    }

    #[test]
    fn set_quota_changes_only_the_flags_given() {
        use clap::Parser;
        let Cli {
            command: TenantCommand::SetQuota(set),
        } = Cli::try_parse_from([
            "t",
            "set-quota",
            "acme",
            "--max-queued-jobs",
            "7",
            "--max-priority",
            "none",
        ])
        .unwrap()
        else {
            panic!("set-quota parses as such")
        };
        assert_eq!(Setting::or_keep(set.max_queued_jobs, Some(1)), Some(7));
        assert_eq!(
            Setting::or_keep(set.max_priority, Priority::parse(5).ok()),
            None
        );
        assert_eq!(Setting::or_keep(set.max_watches, Some(3)), Some(3));
        let e = Cli::try_parse_from(["t", "set-quota", "acme", "--max-watches", "x"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--max-watches") && e.contains("accepted"), "{e}");
    }
}
