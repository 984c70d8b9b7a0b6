//! The built binaries' `check-config` on the configurations in the repository: each accepts
//! them, and each refuses a layer the settings reject, naming the field. (scripts/check-deploy
//! also runs it on every rendered Kubernetes and chart configuration.)

use pixelfarm_e2e::{bin, repo};
use std::path::Path;
use std::process::{Command, Output};

const BINARIES: [&str; 2] = ["pixelfarm-scheduler", "pixelfarm-worker"];

fn check_config(binary: &str, dir: &Path, env: &str) -> Output {
    Command::new(bin(binary))
        .arg("check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIXELFARM_CONFIG_DIR", dir)
        .env("PIXELFARM_ENV", env)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_layer_in_the_repository_loads() {
    let mut layers = vec![(repo().join("config"), "local".to_string())];
    let mut roots = Vec::new();
    for dir in ["deploy/k8s/base/config", "deploy/k8s/overlays/dev/config"] {
        // The image's base.yaml with the Kubernetes layer beside it, as the pods mount it.
        roots.push(tempfile::tempdir().unwrap());
        let root = roots.last().unwrap().path().to_path_buf();
        std::fs::copy(repo().join("config/base.yaml"), root.join("base.yaml")).unwrap();
        std::fs::copy(
            repo().join(dir).join("kubernetes.yaml"),
            root.join("kubernetes.yaml"),
        )
        .unwrap();
        layers.push((root, "kubernetes".to_string()));
    }
    for (dir, env) in &layers {
        for binary in BINARIES {
            let o = check_config(binary, dir, env);
            assert!(
                o.status.success(),
                "{binary} check-config refused {}/{env}.yaml:\n{}",
                dir.display(),
                text(&o)
            );
        }
    }
}

#[test]
fn a_misplaced_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("config/base.yaml"),
        dir.path().join("base.yaml"),
    )
    .unwrap();
    // What the shipped Kubernetes config once said: attempts are a scheduler setting.
    std::fs::write(
        dir.path().join("kubernetes.yaml"),
        "worker:\n  max_attempts: 3\n",
    )
    .unwrap();
    for binary in BINARIES {
        let o = check_config(binary, dir.path(), "kubernetes");
        let t = text(&o);
        assert!(!o.status.success(), "{binary} accepted it:\n{t}");
        assert!(
            t.contains("unknown field `max_attempts`") && t.contains("for key `worker`"),
            "{binary}: {t}"
        );
    }
}

#[test]
fn a_bad_value_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("config/base.yaml"),
        dir.path().join("base.yaml"),
    )
    .unwrap();
    for (binary, layer, field) in [
        (
            "pixelfarm-scheduler",
            "scheduler:\n  max_attempts: 0\n",
            "scheduler.max_attempts",
        ),
        (
            "pixelfarm-worker",
            "worker:\n  renderer: dall-e\n",
            "worker.renderer",
        ),
        (
            "pixelfarm-worker",
            "database:\n  url: mysql://db/x\n",
            "database.url",
        ),
        (
            "pixelfarm-worker",
            "worker:\n  provenance_records: sometimes\n",
            "worker.provenance_records",
        ),
    ] {
        std::fs::write(dir.path().join("bad.yaml"), layer).unwrap();
        let o = check_config(binary, dir.path(), "bad");
        let t = text(&o);
        assert!(!o.status.success(), "{binary} accepted {layer}:\n{t}");
        assert!(t.contains(field), "{binary} on {layer}: {t}");
    }
}
