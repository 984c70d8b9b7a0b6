//! `pixelfarm-worker check-config`: every check of the settings the worker relies on, connecting
//! to nothing and loading no weights: the shared sections, the worker tunables
//! ([`crate::app::config`]), the renderer name and, for `diffusion`, the model registry file
//! (parsed and validated exactly as at start, without downloading its `s3://` models). CI runs
//! it on each shipped configuration (scripts/check-deploy).

use pixelfarm_core::ChainResult;
use pixelfarm_runtime::{Settings, check};

use crate::app::registry;

/// Check `settings` as the worker reads them; on success, the report to print (no secrets) with
/// `warning:` lines for what starts but cannot serve (a model missing from the registry).
///
/// # Errors
/// The first bad field, named, with what is accepted.
pub fn settings(settings: &Settings) -> anyhow::Result<Vec<String>> {
    check::common(settings).chained()?;
    let w = &settings.worker;
    check::listen_addr("worker.http_addr", &w.http_addr).chained()?;
    let cfg = crate::app::config(settings)?;
    let registry = registry(settings)?;
    let models: Vec<&str> = cfg.models.iter().map(|m| m.as_str()).collect();
    let mut report = check::describe(settings);
    report.push(format!(
        "worker: id `{}`, models {}, renderer {}, concurrency {}, prefetch {}, lease {} s, heartbeat {} s",
        cfg.id,
        models.join(","),
        w.renderer,
        cfg.concurrency,
        cfg.prefetch,
        w.lease_seconds,
        w.heartbeat_seconds
    ));
    report.push(if cfg.signer.is_development() {
        "warning: worker.content_credentials: no key configured; images are signed with the TEST ONLY development key, which no verifier trusts".to_string()
    } else {
        format!(
            "worker.content_credentials: signer certificate sha256 {}",
            cfg.signer.fingerprint()
        )
    });
    if let Some((reg, source)) = &registry {
        let listed: Vec<&str> = reg.models.keys().map(|m| m.as_str()).collect();
        report.push(format!(
            "worker.registry: {source} lists {} model(s) [{}]",
            listed.len(),
            listed.join(", ")
        ));
        for m in models.iter().filter(|m| !listed.contains(m)) {
            report.push(format!(
                "warning: worker.models serves `{m}`, which the registry does not list: its jobs fail"
            ));
        }
        if !reg.loras.is_empty() {
            let loras: Vec<String> = reg
                .loras
                .iter()
                .map(|(name, l)| format!("{name} ({})", l.family))
                .collect();
            report.push(format!(
                "worker.registry: {} LoRA(s) [{}], {} set(s) kept merged",
                loras.len(),
                loras.join(", "),
                reg.max_lora_sets
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass() {
        settings(&Settings::default()).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = Settings::default();
        s.worker.renderer = "dall-e".into();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("worker.renderer: is `dall-e`"), "{e}");

        s.worker.renderer = "diffusion".into();
        s.worker.registry = Some("/nonexistent/registry.yaml".into());
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("worker.registry: cannot read"), "{e}");

        let mut s = Settings::default();
        s.worker.heartbeat_seconds = s.worker.lease_seconds;
        let e = format!("{:#}", settings(&s).unwrap_err());
        assert!(e.contains("worker.heartbeat_seconds"), "{e}");
    }

    #[test]
    fn diffusion_without_a_registry_file_serves_the_shipped_models() {
        let mut s = Settings::default();
        s.worker.renderer = "diffusion".into();
        s.worker.models = vec!["shapes".into()];
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.contains("the shipped models") && l.contains("[shapes]")),
            "{r:?}"
        );
        assert!(
            !r.iter()
                .any(|l| l.starts_with("warning:") && l.contains("worker.models")),
            "{r:?}"
        );
    }

    #[test]
    fn content_credentials_keys_are_checked() {
        let r = settings(&Settings::default()).unwrap();
        assert!(
            r.iter()
                .any(|l| l.starts_with("warning:") && l.contains("TEST ONLY development key")),
            "{r:?}"
        );
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/credentials");
        let mut s = Settings::default();
        s.worker.content_credentials.cert_file = shipped.join("cert-chain.pem");
        let e = settings(&s).unwrap_err().to_string();
        assert!(
            e.starts_with("worker.content_credentials.key_file: is empty"),
            "{e}"
        );
        s.worker.content_credentials.key_file = shipped.join("nonexistent.pem");
        let e = format!("{:#}", settings(&s).unwrap_err());
        assert!(
            e.starts_with("worker.content_credentials.key_file: cannot read"),
            "{e}"
        );
        s.worker.content_credentials.key_file = shipped.join("cert-chain.pem");
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.contains("not a PEM PKCS#8 Ed25519 key"), "{e}");
        s.worker.content_credentials.key_file = shipped.join("key.pem");
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.starts_with("worker.content_credentials: signer certificate sha256")),
            "{r:?}"
        );
    }

    #[test]
    fn registry_is_validated_and_models_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.yaml");
        let mut s = Settings::default();
        s.worker.renderer = "diffusion".into();
        s.worker.registry = Some(path.clone());
        s.worker.models = vec!["shapes".into(), "sd15".into()];
        std::fs::write(&path, "models: {}\nmax_batch: 0\n").unwrap();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.contains("max_batch is 0"), "{e}");
        std::fs::write(&path, "models: {}\nbogus: 1\n").unwrap();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        std::fs::write(&path, "models: {}\n").unwrap();
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.starts_with("warning:") && l.contains("`sd15`")),
            "{r:?}"
        );

        // LoRAs are reported with their family; a malformed sha256 is refused, naming the LoRA.
        let lora = |family: &str, sha: &str| {
            format!(
                "models: {{}}\nloras:\n  brand:\n    family: {family}\n    source: file:///l/brand.safetensors\n    sha256: \"{sha}\"\n"
            )
        };
        std::fs::write(&path, lora("sd15", &"a".repeat(64))).unwrap();
        let r = settings(&s).unwrap();
        assert!(
            r.iter()
                .any(|l| l.contains("1 LoRA(s) [brand (sd15)], 2 set(s) kept merged")),
            "{r:?}"
        );
        std::fs::write(&path, lora("sd15", "abc")).unwrap();
        let e = settings(&s).unwrap_err().to_string();
        assert!(e.contains("loras `brand`: sha256 is `abc`"), "{e}");
        // The shapes family takes LoRAs but has no ControlNet architecture.
        std::fs::write(&path, lora("shapes", &"a".repeat(64))).unwrap();
        settings(&s).unwrap();
        std::fs::write(
            &path,
            lora("shapes", &"a".repeat(64)).replace("loras:", "controlnets:"),
        )
        .unwrap();
        let e = settings(&s).unwrap_err().to_string();
        assert!(
            e.contains("controlnets `brand`: family `shapes` takes no ControlNets"),
            "{e}"
        );
    }
}
