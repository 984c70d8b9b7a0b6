//! `pixelfarm-scheduler check-config`: every check of the settings the scheduler relies on,
//! connecting to nothing. CI runs it on each shipped configuration (scripts/check-deploy).

use pixelfarm_core::{ChainResult, Retention};
use pixelfarm_runtime::{Settings, check};
use std::collections::HashSet;

/// Check `settings` as the scheduler reads them; on success, the report to print (no secrets:
/// URLs by scheme, API keys by count).
///
/// # Errors
/// The first bad field, named (`scheduler.max_attempts: …`), with what is accepted.
pub fn settings(settings: &Settings) -> anyhow::Result<Vec<String>> {
    check::common(settings).chained()?;
    let s = &settings.scheduler;
    check::listen_addr("scheduler.grpc_addr", &s.grpc_addr).chained()?;
    check::listen_addr("scheduler.http_addr", &s.http_addr).chained()?;
    check::tls("scheduler.tls", &s.tls).chained()?;
    // The jobs table refuses max_attempts < 1 (attempts_bounded).
    anyhow::ensure!(
        s.max_attempts >= 1,
        "scheduler.max_attempts: is 0; accepted: 1 or more"
    );
    let retention = crate::retention::Config::from_settings(&s.retention);
    retention.validate().chained()?;
    s.webhooks.validate().map_err(anyhow::Error::msg)?;
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, t) in s.tenants.iter().enumerate() {
        let field = format!("scheduler.tenants[{i}]");
        anyhow::ensure!(
            !t.name.trim().is_empty(),
            "{field}.name: is empty; accepted: a tenant name"
        );
        anyhow::ensure!(
            names.insert(t.name.as_str()),
            "{field}.name: tenant `{}` is listed twice",
            t.name
        );
        anyhow::ensure!(t.weight >= 1, "{field}.weight: is 0; accepted: 1 or more");
        for (j, k) in t.api_keys.iter().enumerate() {
            anyhow::ensure!(
                !k.trim().is_empty(),
                "{field}.api_keys[{j}]: is empty; accepted: a key (`pixelfarm-scheduler tenant create` makes one)"
            );
            anyhow::ensure!(
                keys.insert(k.as_str()),
                "{field}.api_keys[{j}]: the same key is listed twice"
            );
        }
    }
    let mut report = check::describe(settings);
    let transport = if s.tls.enabled() {
        format!(
            "TLS from {} and {}",
            s.tls.cert_file.display(),
            s.tls.key_file.display()
        )
    } else {
        "plain TCP".to_string()
    };
    report.push(format!(
        "scheduler: grpc {}, http {} ({transport}), max_attempts {}",
        s.grpc_addr, s.http_addr, s.max_attempts
    ));
    let kept = match retention.default {
        Retention::Forever => "forever".to_string(),
        r => format!("{r} after their last job finished"),
    };
    report.push(format!(
        "scheduler.retention: job rows of finished batches kept {kept} (tenants may set their own), {} rows per statement",
        retention.chunk
    ));
    let hooks = &s.webhooks;
    report.push(format!(
        "scheduler.webhooks: to {}{}, {} attempt(s) at once, given up after {} h",
        if hooks.allowed_hosts.is_empty() {
            "any host".to_string()
        } else {
            hooks.allowed_hosts.join(", ")
        },
        if hooks.allow_private_networks {
            " (private addresses allowed)"
        } else {
            " at public addresses"
        },
        hooks.concurrency,
        hooks.give_up_after_hours
    ));
    report.push(format!(
        "scheduler.tenants: {} tenant(s), {} bootstrap api key(s)",
        s.tenants.len(),
        keys.len()
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_runtime::settings::TenantBootstrap;

    #[test]
    fn defaults_pass_and_report_no_keys() {
        let r = settings(&Settings::default()).unwrap();
        assert!(
            r.iter()
                .any(|l| l.ends_with("0 tenant(s), 0 bootstrap api key(s)")),
            "{r:?}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = Settings::default();
        s.scheduler.max_attempts = 0;
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.max_attempts"), "{e}");

        let mut s = Settings::default();
        s.scheduler.retention.chunk = 0;
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.retention.chunk"), "{e}");
        s.scheduler.retention.chunk = 500;
        s.scheduler.webhooks.allowed_hosts = vec!["https://x".into()];
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.webhooks.allowed_hosts"), "{e}");
        s.scheduler.webhooks.allowed_hosts = vec!["*.example.com".into()];
        s.scheduler.retention.days = 30;
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.contains("kept 30d after their last job")),
            "{r:?}"
        );

        let mut s = Settings::default();
        s.scheduler.http_addr = "8080".into();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.http_addr"), "{e}");

        let mut s = Settings::default();
        s.scheduler.tls.key_file = "/tls/tls.key".into();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.tls.cert_file"), "{e}");
        s.scheduler.tls.cert_file = "/tls/tls.crt".into();
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.contains("(TLS from /tls/tls.crt and /tls/tls.key)")),
            "{r:?}"
        );

        let mut s = Settings::default();
        let t = TenantBootstrap {
            name: "dev".into(),
            weight: 1,
            api_keys: vec!["k".into(), "k".into()],
        };
        s.scheduler.tenants = vec![t];
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("scheduler.tenants[0].api_keys[1]"), "{e}");
        assert!(!e.contains("`k`"), "keys are not printed: {e}");
    }
}
