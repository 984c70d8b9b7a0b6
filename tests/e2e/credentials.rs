//! What an image carries and what is stored beside it, on the real stack: a tenant's images carry
//! a C2PA manifest the `c2pa` crate validates, a tenant that turned them off gets none, and a
//! manifest's `output.content_credentials` wins over the tenant's setting; the provenance record
//! beside each image, or only beside those that do not carry it (`worker.provenance_records`).

use std::time::Duration;

use pixelfarm_core::*;
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::*;
use pixelfarm_image::verify::{read, xmp_digital_source_type};

const TEST_PATTERN: &str = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia";

/// The jobs of a batch of `manifest`, submitted as `client`, once every one has succeeded.
async fn succeeded(
    stack: &Stack,
    client: &pixelfarm_api::ApiClient,
    manifest: &str,
) -> Vec<JobRecord> {
    let out = client.submit(manifest.to_string()).await.unwrap();
    let v = wait_batch(stack, client, out.batch_id, Duration::from_secs(60), |v| {
        v.done
    })
    .await;
    assert_eq!(
        v.status.counts.succeeded,
        v.total,
        "{:?}\n{}",
        v.status.counts,
        stack.logs()
    );
    client.jobs(out.batch_id, None, 100).await.unwrap().0
}

/// The image and parameters of each job of a batch of `manifest`, submitted as `client`.
async fn images(
    stack: &Stack,
    client: &pixelfarm_api::ApiClient,
    manifest: &str,
) -> Vec<(JobParams, Vec<u8>)> {
    let mut out = Vec::new();
    for j in succeeded(stack, client, manifest).await {
        let bytes = client.image(j.id).await.unwrap().to_vec();
        out.push((j.params, bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_carry_credentials_unless_their_tenant_or_manifest_says_not() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let (a, b) = (stack.client(KEY_A).await, stack.client(KEY_B).await);
    let batch = |name: &str, output: &str| {
        format!(
            "name: {name}\nmodel: test\ndefaults: {{width: 32, height: 24, steps: 2{output}}}\nprompt: a lighthouse\nseeds: [1, 2]\n"
        )
    };

    // On by default, in every format; the worker signs with the development key (no key set).
    for output in [
        "",
        ", output: {format: jpeg}",
        ", output: {format: webp, quality: 80}",
    ] {
        for (params, bytes) in images(&stack, &a, &batch("on", output)).await {
            let format = params.output.format;
            assert_eq!(
                params.output.content_credentials, None,
                "on: nothing stored"
            );
            let v = read(&bytes, format, None).unwrap().expect("a manifest");
            assert_eq!(v.state, "Valid", "{format:?}: {v:?}");
            assert_eq!(v.action, "c2pa.created");
            assert_eq!(v.digital_source_type, TEST_PATTERN);
            assert_eq!(
                (v.model.as_str(), v.model_sha256.as_str()),
                ("test", "test-pattern/1")
            );
            assert!(v.signer.contains("TEST ONLY"), "{v:?}");
            assert_eq!(
                xmp_digital_source_type(&bytes).as_deref(),
                Some(TEST_PATTERN)
            );
        }
    }

    // Tenant b turns them off: its jobs say so and its images carry neither manifest nor XMP.
    let shown = stack
        .scheduler_cli(&["tenant", "set-content-credentials", "b", "off"])
        .await
        .unwrap();
    assert!(shown.contains("content credentials off"), "{shown}");
    for (params, bytes) in images(&stack, &b, &batch("off", "")).await {
        assert_eq!(params.output.content_credentials, Some(false));
        assert_eq!(read(&bytes, params.output.format, None).unwrap(), None);
        assert_eq!(xmp_digital_source_type(&bytes), None);
    }
    // A manifest that asks for them gets them all the same.
    for (params, bytes) in images(
        &stack,
        &b,
        &batch("asked", ", output: {content_credentials: true}"),
    )
    .await
    {
        assert_eq!(params.output.content_credentials, None);
        let v = read(&bytes, params.output.format, None)
            .unwrap()
            .expect("a manifest");
        assert_eq!(v.state, "Valid", "{v:?}");
    }
    // And tenant a's manifest can leave them out.
    for (params, bytes) in images(
        &stack,
        &a,
        &batch("left-out", ", output: {content_credentials: false}"),
    )
    .await
    {
        assert_eq!(params.output.content_credentials, Some(false));
        assert_eq!(read(&bytes, params.output.format, None).unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unless_embedded_stores_records_only_beside_images_that_do_not_carry_them() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        provenance_records: Some("unless_embedded"),
        ..Default::default()
    })
    .await;
    let (a, blob) = (stack.client(KEY_A).await, stack.blob().await);
    for (output, record) in [
        ("", false),
        (", output: {format: jpeg}", true),
        (", output: {format: webp}", true),
    ] {
        let manifest = format!(
            "name: records\nmodel: test\ndefaults: {{width: 32, height: 24, steps: 2{output}}}\nprompt: a lighthouse\nseeds: [1, 2]\n"
        );
        for j in succeeded(&stack, &a, &manifest).await {
            let key = j.object_key.unwrap();
            let (stem, _) = key.rsplit_once('.').unwrap();
            let got = blob.get(&format!("{stem}.json")).await;
            if record {
                let prov: serde_json::Value = serde_json::from_slice(&got.unwrap()).unwrap();
                assert_eq!(
                    (prov["job_id"].as_str(), prov["object_key"].as_str()),
                    (Some(&*j.id.to_string()), Some(&*key))
                );
            } else {
                assert_eq!(got.unwrap_err().kind(), ErrorKind::NotFound, "{key}");
                // The PNG carries the generation's provenance in its `pixelfarm` text chunk.
                let png = blob.get(&key).await.unwrap();
                let text = pixelfarm_image::decode_png_text(&png).unwrap();
                let (_, prov) = text.iter().find(|(k, _)| k == "pixelfarm").unwrap();
                let prov: serde_json::Value = serde_json::from_str(prov).unwrap();
                assert_eq!(prov["params"]["seed"], serde_json::json!(j.params.seed));
            }
        }
    }
}
