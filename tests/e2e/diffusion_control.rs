//! ControlNets in the real worker: one stored in S3 beside the model, downloaded into the
//! worker's cache and verified; control images uploaded by the tenant, pinned at submit and
//! preprocessed by the worker; a batch sweeping LoRA weights × control images.

use pixelfarm_blob::S3Blob;
use pixelfarm_core::{BlobStore, sha256_hex};
use pixelfarm_e2e::results::{render_batch, wait_batch};
use pixelfarm_e2e::{BUCKET, KEY_B, Stack};
use pixelfarm_image::testing::png;
use std::path::Path;
use std::time::Duration;

/// Write a random ControlNet for the tiny model (`edges`) into `dir`, store it in S3 under
/// `prefix`, and return the registry's `controlnets:` section naming it.
pub async fn upload(root: &S3Blob, prefix: &str, dir: &Path) -> String {
    let path = dir.join("edges.safetensors");
    let entry = pixelfarm_diffusion::tiny::write_random_controlnet(
        &path,
        pixelfarm_diffusion::Family::Tiny,
        3,
    )
    .unwrap();
    let key = format!("{prefix}/controlnets/edges.safetensors");
    root.put(
        &key,
        std::fs::read(&path).unwrap().into(),
        "application/octet-stream",
    )
    .await
    .unwrap();
    format!(
        "controlnets:\n    edges:\n      family: tiny\n      source: \"s3://{BUCKET}/{key}\"\n      sha256: \"{}\"\n",
        entry.sha256
    )
}

/// Two LoRA weights × two control images (one made into canny edges by the worker), each
/// image its own render naming the ControlNet's file in its provenance and A1111 text; what
/// cannot be rendered is refused at submit, naming the field.
pub async fn controlnets_steer_with_uploaded_images(
    stack: &Stack,
    a: &pixelfarm_api::ApiClient,
    cache: &Path,
) {
    let controlnet = cache.join(".controlnets/edges.safetensors");
    assert!(controlnet.is_file(), "the s3:// ControlNet is in the cache");
    let sha = sha256_hex(&std::fs::read(&controlnet).unwrap());
    let layout = png(64, 64, |x, y| {
        if (16..48).contains(&x) && (20..44).contains(&y) {
            [255; 3]
        } else {
            [0; 3]
        }
    });
    let photo = png(96, 96, |x, y| [(x * 2) as u8, (y * 2) as u8, 90]);
    let layout_key = a
        .upload(Some("layout"), layout.clone().into())
        .await
        .unwrap()
        .key;
    let photo_key = a.upload(Some("photo"), photo.into()).await.unwrap().key;
    let job = |key: &str, weight: f64, image: &str, preprocess: &str| {
        format!(
            "  - {{key: {key}, prompt: a red house, seed: 1, loras: [{{name: style, weight: {weight}}}], control: [{{model: edges, image: {{key: {image}}}, preprocess: {preprocess}}}]}}\n"
        )
    };
    let manifest = format!(
        "name: control-sweep\nmodel: tiny\ndefaults: {{width: 64, height: 64, steps: 3, guidance: 3.0, sampler: euler}}\njobs:\n{}{}{}{}",
        job("layout-half", 0.5, &layout_key, "none"),
        job("layout-full", 1.0, &layout_key, "none"),
        job("photo-half", 0.5, &photo_key, "canny"),
        job("photo-full", 1.0, &photo_key, "canny"),
    );
    let (_, jobs) = render_batch(stack, a, manifest.clone(), 4).await;
    let shas: std::collections::BTreeSet<_> = jobs.iter().map(|j| j.sha256.clone()).collect();
    assert_eq!(shas.len(), 4, "each weight and each image its own render");

    let half = jobs.iter().find(|j| j.key == "photo-half").unwrap();
    let pinned = half
        .params
        .control
        .iter()
        .next()
        .unwrap()
        .image
        .sha256
        .clone();
    assert!(pinned.is_some(), "the control image is pinned at submit");
    let png_bytes = a.image(half.id).await.unwrap();
    let text = pixelfarm_image::decode_png_text(&png_bytes).unwrap();
    let params = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.contains(&format!(
            "ControlNet 0: \"Module: canny, Model: edges [{}], Weight: 1, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 1\"",
            &sha[..8]
        )),
        "{params}"
    );
    let prov: serde_json::Value =
        serde_json::from_str(&text.iter().find(|(k, _)| k == "pixelfarm").unwrap().1).unwrap();
    assert_eq!(
        prov["controlnets"],
        serde_json::json!([{"name": "edges", "sha256": sha}])
    );
    assert_eq!(
        prov["params"]["control"][0]["image"]["sha256"].as_str(),
        pinned.as_deref()
    );

    // The same jobs in another batch: the same bytes.
    let again = a
        .submit(manifest.replace("control-sweep", "control-again"))
        .await
        .unwrap();
    wait_batch(stack, a, again.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    let (jobs2, _) = a.jobs(again.batch_id, None, 10).await.unwrap();
    let shas2: std::collections::BTreeSet<_> = jobs2.iter().map(|j| j.sha256.clone()).collect();
    assert_eq!(shas, shas2);

    // Refused at submit, naming the field: a ControlNet no worker has, another tenant's image.
    let e = a
        .submit(manifest.replacen("model: edges", "model: pose", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`control[0].model` is `pose`; accepted for model `tiny`: edges"),
        "{e}"
    );
    let b = stack.client(KEY_B).await;
    let theirs = b.upload(Some("layout"), layout.into()).await.unwrap().key;
    let e = a
        .submit(manifest.replacen(&layout_key, &theirs, 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`control.image`"), "{e}");
    let blob = stack.blob().await;
    assert!(blob.get(&theirs).await.is_ok(), "b's upload stays b's");
}
