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

/// `pixelfarm run` on `manifest`, written into a fresh folder: the folder (kept alive), the output
/// folder and how the process ended.
fn run_manifest(manifest: &str) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    run_manifest_with(manifest, &[])
}

/// [`run_manifest`] with `files` (path relative to the manifest's folder, bytes) beside it.
fn run_manifest_with(
    manifest: &str,
    files: &[(&str, &[u8])],
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let path = dir.path().join("manifest.yaml");
    std::fs::write(&path, manifest).unwrap();
    let out = dir.path().join("out");
    let r = std::process::Command::new(bin("pixelfarm"))
        .arg("run")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    (dir, out, r)
}

#[test]
fn a_bad_manifest_is_refused_before_anything_is_written() {
    let (_dir, out, r) =
        run_manifest("name: x\nmodel: m\ndefaults:\n  sampler: plms\nprompt: p\nseeds: [1]\n");
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`defaults.sampler` (line 4)") && err.contains("euler_a"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn output_settings_give_the_asked_for_formats_and_sizes() {
    let (_dir, out, r) = run_manifest(
        "name: formats\nmodel: test-pattern\ndefaults: {width: 64, height: 64, steps: 2}\njobs:
  - key: banner
    prompt: a banner
    output: {format: jpeg, quality: 85, resize: {width: 300, height: 250}}
  - key: web
    prompt: a web image
    output: {format: webp, resize: {width: 100, height: 40, fit: stretch}, sharpen: 0.5}
  - key: plain
    prompt: a plain image
",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let mut seen = Vec::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = v["file"].as_str().unwrap();
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert_eq!(sha256_hex(&bytes), v["sha256"].as_str().unwrap());
        let img = pixelfarm_image::output::decode_rgb(&bytes).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let (ext, size) = match key.as_str() {
            "banner" => ("jpg", (300, 250)),
            "web" => ("webp", (100, 40)),
            _ => ("png", (64, 64)),
        };
        assert!(file.ends_with(ext), "{key}: {file}");
        assert_eq!((img.width, img.height), size, "{key}");
        if key == "banner" {
            let comment = pixelfarm_image::output::jpeg_user_comment(&bytes).unwrap();
            assert!(
                comment.starts_with("a banner\n") && comment.contains("Seed: "),
                "{comment}"
            );
        }
        seen.push(key);
    }
    seen.sort();
    assert_eq!(seen, ["banner", "plain", "web"]);
    assert!(out.join("contact-sheet.png").is_file());
}

#[test]
fn init_images_are_files_beside_the_manifest_uploaded_into_the_output_folder() {
    let init =
        pixelfarm_image::testing::png(32, 32, |x, _| if x < 16 { [250, 20, 20] } else { [255; 3] });
    let manifest = |path: &str| {
        format!(
            "name: from-file\nmodel: shapes\ndefaults: {{width: 32, height: 32, steps: 4, sampler: euler}}\njobs:
  - {{key: kept, prompt: a large red circle on a white background, seed: 1, init: {{image: {{key: {path}}}, strength: 0.3}}}}
"
        )
    };
    let (_dir, out, r) = run_manifest_with(
        &manifest("photos/start.png"),
        &[("photos/start.png", &init)],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    let image = &v["params"]["init"]["image"];
    let key = image["key"].as_str().unwrap();
    assert_eq!(image["sha256"].as_str(), Some(sha256_hex(&init).as_str()));
    assert!(
        key.starts_with("inputs/") && key.ends_with(&format!("/{}.png", sha256_hex(&init))),
        "{key}"
    );
    assert_eq!(
        std::fs::read(out.join(key)).unwrap(),
        init,
        "uploaded into the output folder"
    );

    let (_dir, out, r) = run_manifest_with(&manifest("photos/nope.png"), &[]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("manifest field `init`: input `photos/nope.png` is not a file"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
