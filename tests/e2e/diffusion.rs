//! The candle engine inside the real worker: a tiny random-weight model of the SD architecture,
//! with a LoRA and a ControlNet, stored in S3 (SeaweedFS), downloaded into the worker's cache,
//! verified and rendered.

use pixelfarm_core::{BlobStore, JobState, sha256_hex};
use pixelfarm_e2e::results::{render_batch, wait_batch};
use pixelfarm_e2e::*;
use pixelfarm_image::testing::png;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

mod diffusion_control;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_renders_with_a_model_from_s3_and_refuses_tampered_weights() {
    let local = tempfile::tempdir().unwrap();
    let entry = pixelfarm_diffusion::tiny::write_tiny_model(local.path(), 4).unwrap();
    let models_prefix = format!("models-{}", uuid::Uuid::new_v4().simple());
    // The uploaded model goes when the test ends.
    let _models = pixelfarm_blob::testing::TestPrefix::new(s3_config(&models_prefix));
    let root = pixelfarm_blob::S3Blob::connect(&s3_config(""))
        .await
        .unwrap();
    root.ensure_bucket().await.unwrap();
    for rel in entry.files.keys() {
        let bytes = std::fs::read(local.path().join(rel)).unwrap();
        root.put(
            &format!("{models_prefix}/tiny/{rel}"),
            bytes.into(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    }
    // A LoRA for the model, in S3 beside it, and one registered with a sha256 its file lacks.
    let lora = pixelfarm_diffusion::tiny_lora::write_random_lora(
        local.path(),
        pixelfarm_diffusion::Family::Tiny,
        &local.path().join("style.safetensors"),
        pixelfarm_diffusion::tiny_lora::LoraLayout::Kohya,
        4,
        7,
    )
    .unwrap();
    root.put(
        &format!("{models_prefix}/loras/style.safetensors"),
        std::fs::read(local.path().join("style.safetensors"))
            .unwrap()
            .into(),
        "application/octet-stream",
    )
    .await
    .unwrap();
    let files = |tamper: bool| {
        let mut s = String::new();
        for (rel, sha) in &entry.files {
            let sha = if tamper && rel.starts_with("unet/") {
                "0".repeat(64)
            } else {
                sha.clone()
            };
            writeln!(s, "        {rel}: \"{sha}\"").unwrap();
        }
        s
    };
    let controlnets = diffusion_control::upload(&root, &models_prefix, local.path()).await;
    let cache = local.path().join("cache");
    let registry = local.path().join("registry.yaml");
    let mut text = format!(
        "cache_dir: \"{cache}\"\nmodels:\n    tiny:\n      family: tiny\n      source: \"s3://{BUCKET}/{models_prefix}/tiny\"\n      files:\n{ok}    tampered:\n      family: tiny\n      source: \"s3://{BUCKET}/{models_prefix}/tiny\"\n      files:\n{bad}loras:\n    style:\n      family: tiny\n      source: \"s3://{BUCKET}/{models_prefix}/loras/style.safetensors\"\n      sha256: \"{sha}\"\n    stale:\n      family: tiny\n      source: \"file://{style}\"\n      sha256: \"{zeros}\"\n",
        cache = cache.display(),
        ok = files(false),
        bad = files(true),
        sha = lora.sha256,
        style = local.path().join("style.safetensors").display(),
        zeros = "0".repeat(64),
    );
    text.push_str(&controlnets);
    std::fs::write(&registry, text).unwrap();
    let stack = Stack::start(StackOptions {
        workers: 1,
        concurrency: 1,
        renderer: "diffusion".into(),
        models: vec!["tiny".into(), "tampered".into()],
        registry: Some(registry),
        ..Default::default()
    })
    .await;
    assert!(
        cache
            .join("tiny")
            .join("unet/diffusion_pytorch_model.safetensors")
            .is_file(),
        "downloaded into the cache"
    );
    let a = stack.client(KEY_A).await;
    let manifest = |name: &str, model: &str| {
        format!(
            "name: {name}\nmodel: {model}\ndefaults: {{width: 64, height: 64, steps: 2, guidance: 3.0, sampler: euler}}\nprompt: \"a {{c}} circle\"\nvars:\n  c: [red, blue]\nseeds: {{base: 5, count: 2}}\n"
        )
    };

    // The worker set its models' limits when it started: a job over them (the tiny family's
    // default, twice its native 64 pixels) is refused at submit, naming the job and the limit.
    let e = a
        .submit(manifest("too-wide", "tiny").replace("width: 64", "width: 256"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`width` is 256; accepted for model `tiny`: at most 128")
            && e.contains("3 more jobs"),
        "{e}"
    );

    let out = a.submit(manifest("tiny", "tiny")).await.unwrap();
    let v = wait_batch(&stack, &a, out.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    assert_eq!(
        v.status.counts.succeeded,
        4,
        "{:?}\n{}",
        v.status.counts,
        stack.logs()
    );
    let (jobs, _) = a.jobs(out.batch_id, None, 100).await.unwrap();
    let png = a.image(jobs[0].id).await.unwrap();
    let text = pixelfarm_image::decode_png_text(&png).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.contains("Renderer: candle-sd/1") && params.contains("Sampler: Euler"),
        "{params}"
    );
    let prov: serde_json::Value =
        serde_json::from_str(&text.iter().find(|(k, _)| k == "pixelfarm").unwrap().1).unwrap();
    assert_eq!(prov["model_identity"]["test_pattern"], false);
    let shas: BTreeMap<String, String> = jobs
        .iter()
        .map(|j| (j.key.clone(), j.sha256.clone().unwrap()))
        .collect();
    assert_eq!(
        shas.values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4,
        "four seeds, four images"
    );

    // Same parameters in another batch: the same bytes (seeded per job, content-addressed).
    let again = a.submit(manifest("tiny-again", "tiny")).await.unwrap();
    wait_batch(&stack, &a, again.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    let (jobs2, _) = a.jobs(again.batch_id, None, 100).await.unwrap();
    let shas2: BTreeMap<String, String> = jobs2
        .iter()
        .map(|j| (j.key.clone(), j.sha256.clone().unwrap()))
        .collect();
    assert_eq!(shas, shas2);

    // Another tenant rendering the same parameters gets the same pixels under keys of its own:
    // neither tenant's images or provenance records are overwritten or readable by the other,
    // and each recorded sha256 is that of the object under the recorded key.
    let b = stack.client(KEY_B).await;
    let other = b.submit(manifest("tiny", "tiny")).await.unwrap();
    wait_batch(&stack, &b, other.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    let (jobs_b, _) = b.jobs(other.batch_id, None, 100).await.unwrap();
    let blob = stack.blob().await;
    let keys_a: BTreeMap<&str, &str> = jobs
        .iter()
        .map(|j| (j.key.as_str(), j.object_key.as_deref().unwrap()))
        .collect();
    for j in &jobs_b {
        let key = j.object_key.as_deref().unwrap();
        assert_eq!(
            shas[&j.key],
            *j.sha256.as_ref().unwrap(),
            "same pixels, same bytes"
        );
        // `images/<tenant>/<ab>/<hash>.png`: the same hash under each tenant's own segment.
        let (ka, kb) = (
            keys_a[j.key.as_str()].split('/').collect::<Vec<_>>(),
            key.split('/').collect::<Vec<_>>(),
        );
        assert_ne!(ka[1], kb[1], "tenants never share an object: {key}");
        assert_eq!(
            ka[2..],
            kb[2..],
            "the hash covers the content, not the tenant"
        );
        let prov: serde_json::Value =
            serde_json::from_slice(&blob.get(&key.replace(".png", ".json")).await.unwrap())
                .unwrap();
        assert_eq!(prov["batch_id"], other.batch_id.to_string(), "{key}");
        assert!(b.image(j.id).await.is_ok());
    }
    for j in &jobs {
        let key = j.object_key.as_deref().unwrap();
        assert_eq!(
            &sha256_hex(&blob.get(key).await.unwrap()),
            j.sha256.as_ref().unwrap()
        );
        let prov: serde_json::Value =
            serde_json::from_slice(&blob.get(&key.replace(".png", ".json")).await.unwrap())
                .unwrap();
        assert_ne!(prov["batch_id"], other.batch_id.to_string(), "{key}");
    }
    assert!(
        b.image(jobs[0].id).await.is_err(),
        "another tenant's job has no image for b"
    );

    // Weights whose sha256 does not match the registry are refused: the jobs die, naming the file.
    let bad = a.submit(manifest("tampered", "tampered")).await.unwrap();
    let v = wait_batch(&stack, &a, bad.batch_id, Duration::from_secs(120), |v| {
        v.done
    })
    .await;
    assert_eq!(v.status.counts.dead, 4, "{:?}", v.status.counts);
    let (dead, _) = a.jobs(bad.batch_id, None, 10).await.unwrap();
    let err = dead[0].last_error.clone().unwrap();
    assert!(
        dead.iter()
            .all(|j| j.state == JobState::Dead && j.attempt == 1),
        "permanent: no retries"
    );
    assert!(
        err.contains("sha256") && err.contains("unet/diffusion_pytorch_model.safetensors"),
        "{err}"
    );

    loras_sweep_their_weights(&stack, &a, &lora.sha256, &cache).await;
    img2img_and_inpainting_start_from_uploaded_images(&stack, &a).await;
    diffusion_control::controlnets_steer_with_uploaded_images(&stack, &a, &cache).await;
}

/// A batch sweeping a LoRA's weight: each weight its own image, each image naming the LoRA's
/// sha256 in its provenance and A1111 text; a LoRA whose file does not match the registry kills
/// its job, naming it.
async fn loras_sweep_their_weights(
    stack: &Stack,
    a: &pixelfarm_api::ApiClient,
    sha: &str,
    cache: &std::path::Path,
) {
    assert!(
        cache.join(".loras/style.safetensors").is_file(),
        "the s3:// LoRA was downloaded into the cache"
    );
    let manifest = "name: lora-sweep\nmodel: tiny\ndefaults: {width: 64, height: 64, steps: 3, guidance: 3.0, sampler: euler}\njobs:
  - {key: none, prompt: a red house, seed: 1}
  - {key: half, prompt: a red house, seed: 1, loras: [{name: style, weight: 0.5}]}
  - {key: full, prompt: a red house, seed: 1, loras: [{name: style, weight: 1.0}]}
  - {key: zero, prompt: a red house, seed: 1, loras: [{name: style, weight: 0}]}
  - {key: stale, prompt: a red house, seed: 1, loras: [{name: stale, weight: 1.0}]}
";
    // A LoRA no worker of the model has is refused at submit (the workers announce theirs with
    // the model's limits), naming the job, the field and the names accepted.
    let e = a
        .submit(manifest.replace("name: stale", "name: nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "job `stale`: `loras[0].name` is `nope`; accepted for model `tiny`: stale, style"
        ),
        "{e}"
    );
    let out = a.submit(manifest.to_string()).await.unwrap();
    let v = wait_batch(stack, a, out.batch_id, Duration::from_secs(300), |v| v.done).await;
    assert_eq!(
        (v.status.counts.succeeded, v.status.counts.dead),
        (4, 1),
        "{:?}\n{}",
        v.status.counts,
        stack.logs()
    );
    let (jobs, _) = a.jobs(out.batch_id, None, 10).await.unwrap();
    let job = |key: &str| jobs.iter().find(|j| j.key == key).unwrap();
    let stale = job("stale").last_error.clone().unwrap();
    assert!(
        stale.contains("LoRA `stale`") && stale.contains("sha256 mismatch"),
        "{stale}"
    );
    let shas: std::collections::BTreeSet<_> = ["none", "half", "full"]
        .iter()
        .map(|k| job(k).sha256.clone().unwrap())
        .collect();
    assert_eq!(shas.len(), 3, "each weight its own image");
    // Weight 0 renders the base model's pixels; its file still says what was asked.
    let pixels = |png: &[u8]| pixelfarm_image::input::decode_input(png).unwrap().1.rgb;
    assert_eq!(
        pixels(&a.image(job("zero").id).await.unwrap()),
        pixels(&a.image(job("none").id).await.unwrap())
    );
    let png = a.image(job("half").id).await.unwrap();
    let text = pixelfarm_image::decode_png_text(&png).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.starts_with("a red house <lora:style:0.5>\n")
            && params.contains(&format!("Lora hashes: \"style: {}\"", &sha[..12])),
        "{params}"
    );
    let prov: serde_json::Value =
        serde_json::from_str(&text.iter().find(|(k, _)| k == "pixelfarm").unwrap().1).unwrap();
    assert_eq!(
        prov["loras"],
        serde_json::json!([{"name": "style", "weight": 0.5, "sha256": sha}])
    );

    // The same sweep as a template: the weight is a variable of the product, and each of its
    // jobs renders the pixels of the explicit job with that weight.
    let template = "name: lora-vars\nmodel: tiny\ndefaults: {width: 64, height: 64, steps: 3, guidance: 3.0, sampler: euler, loras: [{name: style, weight: {w}}]}\nprompt: a red house\nvars:\n  w: [0, 0.5, 1.0]\nseeds: [1]\n";
    let swept = a.submit(template.to_string()).await.unwrap();
    let v = wait_batch(stack, a, swept.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    assert_eq!(v.status.counts.succeeded, 3, "{:?}", v.status.counts);
    let (swept_jobs, _) = a.jobs(swept.batch_id, None, 10).await.unwrap();
    for (w, explicit) in [("0", "none"), ("0.5", "half"), ("1.0", "full")] {
        let key = format!("w={w}@64x64#0");
        let j = swept_jobs.iter().find(|j| j.key == key).unwrap();
        assert_eq!(
            pixels(&a.image(j.id).await.unwrap()),
            pixels(&a.image(job(explicit).id).await.unwrap()),
            "{key}"
        );
    }
}

async fn img2img_and_inpainting_start_from_uploaded_images(
    stack: &Stack,
    a: &pixelfarm_api::ApiClient,
) {
    let blob = stack.blob().await;
    let init = png(48, 48, |x, y| [(x * 5) as u8, (y * 5) as u8, 128]);
    let upload = |name: &'static str, bytes: Vec<u8>| async move {
        a.upload(Some(name), bytes.into()).await.unwrap().key
    };
    let init_key = upload("init", init.clone()).await;
    let mask_key = upload(
        "mask",
        png(48, 48, |x, _| if x < 24 { [0; 3] } else { [255; 3] }),
    )
    .await;
    let small_mask_key = upload("small-mask", png(16, 16, |_, _| [255; 3])).await;
    let manifest = |img2img_init: &str| {
        format!(
            "name: from-images\nmodel: tiny\ndefaults: {{width: 64, height: 64, steps: 4, guidance: 3.0, sampler: euler}}\njobs:
  - {{key: img2img, prompt: a fox, seed: 1, init: {img2img_init}}}
  - {{key: inpaint, prompt: a fox, seed: 1, init: {{image: {{key: {init_key}}}, mask: {{key: {mask_key}}}, strength: 1.0}}}}
  - {{key: txt2img, prompt: a fox, seed: 1}}
"
        )
    };
    let good = format!("{{image: {{key: {init_key}}}, strength: 0.5}}");
    let (batch, jobs) = render_batch(stack, a, manifest(&good), 3).await;
    let shas: std::collections::BTreeSet<_> = jobs.iter().map(|j| j.sha256.clone()).collect();
    assert_eq!(shas.len(), 3, "img2img, inpainting and txt2img differ");
    let img2img = jobs.iter().find(|j| j.key == "img2img").unwrap();
    let pinned = img2img.params.init.as_ref().unwrap().image.sha256.clone();
    assert_eq!(
        pinned,
        Some(pixelfarm_core::sha256_hex(&init)),
        "pinned at submit"
    );
    let key = img2img.object_key.clone().unwrap();
    let prov: serde_json::Value =
        serde_json::from_slice(&blob.get(&key.replace(".png", ".json")).await.unwrap()).unwrap();
    assert_eq!(
        prov["params"]["init"]["image"]["sha256"].as_str(),
        pinned.as_deref(),
        "the audit trail names the exact input"
    );

    // A dataset fetched over the API pairs each output with its init image and mask, read back
    // from the uploads (and checked against the pinned sha256).
    let dir = tempfile::tempdir().unwrap();
    let opts = pixelfarm_cli::dataset::Options::new(pixelfarm_cli::dataset::Format::ImageFolder);
    pixelfarm_cli::dataset::export(a, batch, dir.path(), &opts)
        .await
        .unwrap();
    let mut files = BTreeMap::new();
    for split in std::fs::read_dir(dir.path()).unwrap() {
        for f in std::fs::read_dir(split.unwrap().path()).unwrap() {
            let f = f.unwrap();
            files.insert(
                f.file_name().into_string().unwrap(),
                std::fs::read(f.path()).unwrap(),
            );
        }
    }
    let inpaint = jobs.iter().find(|j| j.key == "inpaint").unwrap();
    assert_eq!(files[&format!("{}_init.png", img2img.id)], init);
    assert_eq!(files[&format!("{}_init.png", inpaint.id)], init);
    assert_eq!(
        sha256_hex(&files[&format!("{}_mask.png", inpaint.id)]),
        inpaint
            .params
            .init
            .as_ref()
            .unwrap()
            .mask
            .as_ref()
            .unwrap()
            .sha256
            .clone()
            .unwrap()
    );
    assert!(!files.keys().any(|f| f.starts_with(&format!(
        "{}_",
        jobs.iter().find(|j| j.key == "txt2img").unwrap().id
    ))));

    // Uploads are read back by their tenant only; another tenant's key answers as a missing one.
    let name = init_key.rsplit('/').next().unwrap();
    let get = |key: &'static str, name: String| async move {
        let r = reqwest::Client::new()
            .get(format!("http://{}/v1/inputs/{name}", stack.scheduler.http))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    };
    assert_eq!(get(KEY_A, name.to_owned()).await, (200, init.clone()));
    assert_eq!(get(KEY_B, name.to_owned()).await.0, 404);
    let b = stack.client(KEY_B).await;
    let theirs = b.input(&init_key).await.unwrap_err();
    let missing = b
        .input(&init_key.replace(name, "missing.png"))
        .await
        .unwrap_err();
    assert_eq!(theirs.kind(), pixelfarm_core::ErrorKind::NotFound);
    assert_eq!(
        theirs.to_string().replace(name, "X"),
        missing.to_string().replace("missing.png", "X"),
        "another tenant's upload is answered as a missing one"
    );

    // Refused at submit, naming the field: a missing object, a wrong pin, a mask of another size.
    let refused =
        |init: String| async move { a.submit(manifest(&init)).await.unwrap_err().to_string() };
    let e = refused("{image: {key: inputs/nope.png}, strength: 0.5}".into()).await;
    assert!(
        e.contains("`init.image`") && e.contains("inputs/nope.png"),
        "{e}"
    );
    let e = refused(format!(
        "{{image: {{key: {init_key}, sha256: \"{}\"}}, strength: 0.5}}",
        "0".repeat(64)
    ))
    .await;
    assert!(
        e.contains("`init.image.sha256`") && e.contains("pins"),
        "{e}"
    );
    let e = refused(format!(
        "{{image: {{key: {init_key}}}, mask: {{key: {small_mask_key}}}, strength: 0.5}}"
    ))
    .await;
    assert!(e.contains("`init.mask`") && e.contains("48x48"), "{e}");
    let e = refused(format!("{{image: {{key: {init_key}}}, strength: 1.5}}")).await;
    assert!(
        e.contains("init.strength") && e.contains("0 (keep the image) to 1"),
        "{e}"
    );
}
