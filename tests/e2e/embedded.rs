//! The embedded mode, through the real `pixelfarm` binary as a user runs it.

use pixelfarm_core::sha256_hex;
use pixelfarm_e2e::{bin, repo};

#[test]
fn run_renders_the_example_batch_into_a_folder_and_resumes() {
    let out = tempfile::tempdir().unwrap();
    let run = || {
        std::process::Command::new(bin("pixelfarm"))
            .args(["run", "examples/shapes.yaml", "--out"])
            .arg(out.path())
            .current_dir(repo())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("ok 48"), "{stdout}");
    assert!(out.path().join("contact-sheet.png").is_file());
    let results = std::fs::read_to_string(out.path().join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 48);
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let png = std::fs::read(out.path().join(v["file"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&png), v["sha256"].as_str().unwrap());
    }
    // Same idempotency key: the second run finds the batch done and rewrites nothing else.
    let second = run();
    assert!(second.status.success());
    assert_eq!(
        std::fs::read_to_string(out.path().join("results.jsonl"))
            .unwrap()
            .lines()
            .count(),
        48
    );
}

#[test]
fn a_bad_manifest_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bad.yaml");
    std::fs::write(
        &manifest,
        "name: x\nmodel: m\ndefaults:\n  sampler: plms\nprompt: p\nseeds: [1]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let r = std::process::Command::new(bin("pixelfarm"))
        .arg("run")
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`defaults.sampler` (line 4)") && err.contains("euler_a"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
