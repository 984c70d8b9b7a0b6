//! The embedded mode, through the real `pixelfarm` binary as a user runs it.

use pixelfarm_core::{ImageFormat, sha256_hex};
use pixelfarm_e2e::{bin, repo};
use pixelfarm_image::credentials::DigitalSource;
use pixelfarm_image::verify::read;

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
        // Content credentials out of the box, signed by the development key.
        let c = read(&png, ImageFormat::Png, None)
            .unwrap()
            .expect("a manifest");
        assert_eq!((c.state.as_str(), c.model.as_str()), ("Valid", "shapes"));
        assert_eq!(
            c.digital_source_type,
            DigitalSource::TrainedAlgorithmicMedia.uri()
        );
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
fn run_serves_the_shipped_lora_and_sweeps_its_weight() {
    let out = tempfile::tempdir().unwrap();
    let r = std::process::Command::new(bin("pixelfarm"))
        .args(["run", "examples/shapes-lora.yaml", "--out"])
        .arg(out.path())
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.path().join("results.jsonl")).unwrap();
    // Per LoRA weight: images the analytic checker grades as what the caption asks for.
    let mut matched = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let weight = v["params"]["loras"][0]["weight"]
            .as_f64()
            .unwrap()
            .to_string();
        let png = std::fs::read(out.path().join(v["file"].as_str().unwrap())).unwrap();
        let image = pixelfarm_image::output::decode_rgb(&png).unwrap();
        let want =
            pixelfarm_shapes::data::Attributes::parse(v["params"]["prompt"].as_str().unwrap())
                .unwrap();
        let n = matched.entry(weight.clone()).or_default();
        n.0 += usize::from(pixelfarm_shapes::checker::check(&image.rgb, &want).matches());
        n.1 += 1;
        let text = pixelfarm_image::decode_png_text(&png).unwrap();
        let parameters = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
        // Every weight as the job asked, 0 included (the model as it is), as AUTOMATIC1111
        // keeps a `<lora:name:0>` tag.
        let tag = format!("<lora:purple:{weight}>");
        assert!(parameters.contains(&tag), "{parameters}");
    }
    println!("matched per LoRA weight: {matched:?}");
    assert_eq!(matched.len(), 3, "{matched:?}");
    assert!(matched.values().all(|(_, n)| *n == 12), "{matched:?}");
    assert!(
        matched["0"].0 <= 1,
        "the base model draws purple: {matched:?}"
    );
    assert!(
        matched["1"].0 >= 8,
        "the LoRA draws purple too rarely: {matched:?}"
    );
}

/// `pixelfarm run` on `manifest`, written into a fresh folder: the folder (kept alive), the output
/// folder and how the process ended.
fn run_manifest(manifest: &str) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    run_manifest_with(manifest, &[], &[])
}

/// [`run_manifest`] with more arguments to `pixelfarm run`.
fn run_manifest_args(
    manifest: &str,
    args: &[&str],
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    run_manifest_with(manifest, &[], args)
}

/// [`run_manifest`] with `files` (path relative to the manifest's folder, bytes) beside it and
/// `args` after the usual ones.
fn run_manifest_with(
    manifest: &str,
    files: &[(&str, &[u8])],
    args: &[&str],
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
        .args(args)
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
  - key: big
    prompt: a big image
    output: {upscale: 2.5}
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
            "big" => ("png", (160, 160)),
            _ => ("png", (64, 64)),
        };
        assert!(file.ends_with(ext), "{key}: {file}");
        let format = ImageFormat::sniff(&bytes).unwrap();
        let c = read(&bytes, format, None).unwrap().expect("a manifest");
        assert_eq!(
            (c.state.as_str(), c.action.as_str()),
            ("Valid", "c2pa.created")
        );
        assert_eq!((img.width, img.height), size, "{key}");
        if key == "banner" {
            let comment = pixelfarm_image::output::jpeg_user_comment(&bytes).unwrap();
            assert!(
                comment.starts_with("a banner\n") && comment.contains("Seed: "),
                "{comment}"
            );
        }
        if key == "big" {
            let text = pixelfarm_image::decode_png_text(&bytes).unwrap();
            let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
            assert!(
                params.contains("Size: 64x64")
                    && params
                        .ends_with("Postprocess upscale by: 2.5, Postprocess upscaler: Lanczos"),
                "{params}"
            );
        }
        seen.push(key);
    }
    seen.sort();
    assert_eq!(seen, ["banner", "big", "plain", "web"]);
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
        &[],
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

    let (_dir, out, r) = run_manifest_with(&manifest("photos/nope.png"), &[], &[]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("manifest field `init.image`: input `photos/nope.png` is not a file"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");

    // Control images are files beside the manifest too; a missing one is named by its field,
    // and the shipped shapes model takes no ControlNet.
    let controlled = |path: &str| {
        format!(
            "name: controlled\nmodel: shapes\ndefaults: {{width: 32, height: 32, steps: 4}}\njobs:\n  - {{prompt: a red circle, control: [{{model: edges, image: {{key: {path}}}}}]}}\n"
        )
    };
    let (_dir, out, r) = run_manifest_with(&controlled("photos/edges.png"), &[], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("manifest field `control.image`: input `photos/edges.png` is not a file"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    let files: &[(&str, &[u8])] = &[("photos/edges.png", &init)];
    let (_dir, out, r) = run_manifest_with(&controlled("photos/edges.png"), files, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`control[0].model` is `edges`; accepted for model `shapes`: none (the worker registry's `controlnets` of its family)"),
        "{err}"
    );
    assert!(!out.join("results.jsonl").exists(), "no job rendered");
}

#[test]
fn the_hires_fix_delivers_the_enlarged_size_and_says_so() {
    let (_dir, out, r) = run_manifest(
        "name: hires\nmodel: shapes\ndefaults: {width: 32, height: 32, steps: 6, sampler: euler}\njobs:\n  - {key: big, prompt: a large red circle on a white background, seed: 1, hires: {scale: 2, steps: 6, strength: 0.4}}\n",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert_eq!(v["params"]["hires"]["scale"], 2.0, "{v}");
    let png = std::fs::read(out.join(v["file"].as_str().unwrap())).unwrap();
    // The IHDR chunk's width and height, right after the signature and the chunk's header.
    let side = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((side(16), side(20)), (64, 64));
    let text = pixelfarm_image::encode::decode_png_text(&png).unwrap();
    let parameters = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        parameters.contains("Size: 32x32")
            && parameters.contains("Hires upscale: 2, Hires steps: 6, Hires upscaler: Lanczos"),
        "{parameters}"
    );
}

/// A CA and a signer it issued (Ed25519, as C2PA wants a signer), made with the openssl CLI in
/// `dir`: the CA's certificate, the signer's chain and its key.
fn signing_pair(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ssl = |args: &[&str]| pixelfarm_e2e::tls::openssl(dir, args);
    ssl(&["genpkey", "-algorithm", "ed25519", "-out", "ca.key"]);
    ssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/O=pixelfarm tests/CN=e2e CA",
        "-days",
        "2",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    ssl(&["genpkey", "-algorithm", "ed25519", "-out", "signer.key"]);
    ssl(&[
        "req",
        "-new",
        "-key",
        "signer.key",
        "-subj",
        "/O=pixelfarm tests/CN=e2e signer",
        "-out",
        "signer.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=1.3.6.1.5.5.7.3.36,emailProtection\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "signer.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "signer.pem",
    ]);
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let signer = std::fs::read_to_string(dir.join("signer.pem")).unwrap();
    std::fs::write(dir.join("chain.pem"), format!("{signer}{ca}")).unwrap();
    (ca, dir.join("chain.pem"), dir.join("signer.key"))
}

#[test]
fn run_signs_with_the_key_it_is_given_and_refuses_a_mismatched_one_before_writing() {
    let keys = tempfile::tempdir().unwrap();
    let (ca, chain, key) = signing_pair(keys.path());
    let (chain, key) = (chain.to_str().unwrap(), key.to_str().unwrap());
    let manifest = "name: signed\nmodel: shapes\ndefaults: {width: 32, height: 32, steps: 4}\nprompt: a red circle\nseeds: [1]\n";
    let (_dir, out, r) =
        run_manifest_args(manifest, &["--signing-cert", chain, "--signing-key", key]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    let png = std::fs::read(out.join(v["file"].as_str().unwrap())).unwrap();
    let c = read(&png, ImageFormat::Png, Some(&ca))
        .unwrap()
        .expect("a manifest");
    assert_eq!(
        (c.state.as_str(), c.signer.as_str()),
        ("Trusted", "e2e signer"),
        "{c:?}"
    );

    // The CA's key does not match the signer's certificate: refused, nothing written.
    let ca_key = keys.path().join("ca.key");
    let (_dir, out, r) = run_manifest_args(
        manifest,
        &[
            "--signing-cert",
            chain,
            "--signing-key",
            ca_key.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("--signing-cert / --signing-key") && err.contains("does not match"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

/// A manifest of two test-pattern jobs whose `webhook:` posts to `port`.
fn hooked_manifest(port: u16) -> String {
    format!(
        "name: hooked\nmodel: test-pattern\nprompt: p\nseeds: [1, 2]\n\
         defaults: {{width: 32, height: 32, steps: 2}}\n\
         webhook: {{url: \"http://127.0.0.1:{port}/hook\", events: [batch.completed, job.succeeded]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_the_manifests_webhook_and_keeps_what_it_could_not() {
    // The receiver listens: the batch's events arrive, signed, before the run ends.
    let port = pixelfarm_e2e::free_port();
    let got = pixelfarm_e2e::receiver::receiver(port).await;
    let manifest = hooked_manifest(port);
    let (_dir, _out, r) = tokio::task::spawn_blocking(move || run_manifest(&manifest))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        stdout.contains("webhooks: 3 delivered, 0 failed, 0 pending"),
        "{stdout}"
    );
    let received = got.lock().unwrap().clone();
    let mut types: Vec<String> = received
        .iter()
        .map(|(headers, body)| {
            assert!(headers.contains_key("webhook-signature"), "{headers:?}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    types.sort();
    assert_eq!(types, ["batch.completed", "job.succeeded", "job.succeeded"]);

    // Nothing listens: the run ends after --webhook-wait and says what is left to retry.
    let port = pixelfarm_e2e::free_port();
    let (_dir, _out, r) = run_manifest_args(&hooked_manifest(port), &["--webhook-wait", "1"]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        stdout.contains(
            "webhooks: 0 delivered, 0 failed, 3 pending (the next run in this folder retries them)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_registry_file_serves_sd_models_with_loras_and_controlnets_and_the_sheet_shows_control_images()
{
    use pixelfarm_diffusion::{Family, RegistryConfig, tiny, tiny_lora};
    let models = tempfile::tempdir().unwrap();
    let dir = models.path();
    let entry = tiny::write_tiny_model(&dir.join("tiny"), 4).unwrap();
    let lora = tiny_lora::write_random_lora(
        &dir.join("tiny"),
        Family::Tiny,
        &dir.join("style.safetensors"),
        tiny_lora::LoraLayout::Peft,
        4,
        7,
    )
    .unwrap();
    let edges =
        tiny::write_random_controlnet(&dir.join("edges.safetensors"), Family::Tiny, 3).unwrap();
    let name = |s: &str| pixelfarm_core::ModelName::parse(s).unwrap();
    let mut cfg: RegistryConfig = serde_yaml::from_str("models: {}").unwrap();
    cfg.models.insert(name("tiny"), entry);
    cfg.loras.insert(name("style"), lora);
    cfg.controlnets.insert(name("edges"), edges.clone());
    let registry = dir.join("registry.yaml");
    std::fs::write(&registry, serde_yaml::to_string(&cfg).unwrap()).unwrap();

    // Two LoRA weights × two control images, one made into canny edges.
    let layout = pixelfarm_image::testing::png(64, 64, |x, y| {
        if (16..48).contains(&x) && (16..40).contains(&y) {
            [255; 3]
        } else {
            [0; 3]
        }
    });
    let photo = pixelfarm_image::testing::png(80, 80, |x, y| [(x * 3) as u8, (y * 3) as u8, 60]);
    let job = |w: f64, image: &str, pre: &str| {
        format!(
            "  - {{key: '{image}-{w}', prompt: a red house, seed: 1, loras: [{{name: style, weight: {w}}}], control: [{{model: edges, image: {{key: {image}}}, preprocess: {pre}}}]}}\n"
        )
    };
    let manifest = format!(
        "name: sweep\nmodel: tiny\ndefaults: {{width: 64, height: 64, steps: 3, guidance: 3.0, sampler: euler}}\njobs:\n{}{}{}{}",
        job(0.5, "layout.png", "none"),
        job(1.0, "layout.png", "none"),
        job(0.5, "photo.png", "canny"),
        job(1.0, "photo.png", "canny"),
    );
    let files: &[(&str, &[u8])] = &[("layout.png", &layout), ("photo.png", &photo)];
    let args = ["--registry", registry.to_str().unwrap()];
    let (_dir, out, r) = run_manifest_with(&manifest, files, &args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let shas: std::collections::BTreeSet<String> = results
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], "succeeded", "{l}");
            v["sha256"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        shas.len(),
        4,
        "each weight and each control image its own render"
    );
    // The sheet: each control image in a cell of its own, then the images it steered.
    let sheet =
        pixelfarm_image::output::decode_rgb(&std::fs::read(out.join("contact-sheet.png")).unwrap())
            .unwrap();
    let cell = (
        pixelfarm_core::RgbImage::filled(1, 1, [0; 3]),
        String::new(),
    );
    let six = pixelfarm_shapes::contact_sheet(&vec![cell; 6]);
    assert_eq!((sheet.width, sheet.height), (six.width, six.height));

    // A registry naming s3:// sources is refused: this mode has no object store.
    let mut remote = cfg.clone();
    remote.controlnets.get_mut(&name("edges")).unwrap().source =
        serde_yaml::from_str("s3://models/edges.safetensors").unwrap();
    std::fs::write(&registry, serde_yaml::to_string(&remote).unwrap()).unwrap();
    let (_dir, _out, r) = run_manifest_with(&manifest, files, &args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`edges` is at s3://models/edges.safetensors; accepted in `pixelfarm run`: file:// sources"),
        "{err}"
    );
}
