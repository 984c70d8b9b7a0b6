//! Submit accepts a model some worker serves or served, or one `scheduler.models` lists; any
//! other is refused before anything is written (docs/models.md).

mod common;

use pixelfarm_core::{ErrorKind, ModelLimits, ModelName};
use std::time::Duration;

fn manifest(model: &str) -> String {
    format!(
        "name: b\nmodel: {model}\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"a {{c}}\"\nvars:\n  c: [x]\nseeds: {{base: 7, count: 2}}\n"
    )
}

#[tokio::test]
async fn submit_accepts_served_and_listed_models_only() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["sdxl"]).await;

    // Nothing served yet: only the listed model is accepted.
    let e = api.submit(t, manifest("sd15")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.to_string(),
        "manifest field `model` (line 2): `sd15` is served by no worker; accepted: sdxl (served by workers, or listed in scheduler.models)"
    );
    let out = api.submit(t, manifest("sdxl")).await.unwrap();
    assert_eq!(
        api.batch(t, out.batch_id).await.unwrap().live_workers,
        Some(0),
        "listed, accepted, and waiting for a worker"
    );

    // A worker announces sd15: accepted, with a live worker; withdrawn, still accepted.
    let sd15 = ModelName::parse("sd15").unwrap();
    store
        .announce_worker("w", std::slice::from_ref(&sd15), Duration::from_secs(60))
        .await
        .unwrap();
    let out = api.submit(t, manifest("sd15")).await.unwrap();
    assert_eq!(
        api.batch(t, out.batch_id).await.unwrap().live_workers,
        Some(1)
    );
    store.withdraw_worker("w").await.unwrap();
    assert_eq!(
        api.batch(t, out.batch_id).await.unwrap().live_workers,
        Some(0)
    );
    assert!(
        api.submit(t, manifest("sd15").replace("name: b", "name: c"))
            .await
            .is_ok()
    );

    let e = api
        .submit(t, manifest("sd16"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("accepted: sd15, sdxl"), "{e}");
}

#[tokio::test]
async fn a_job_over_its_models_limits_is_refused_at_submit_naming_it() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&[]).await;
    let sd15 = ModelName::parse("sd15").unwrap();
    store
        .announce_worker("w", std::slice::from_ref(&sd15), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .set_model_limits(&[(
            sd15.clone(),
            ModelLimits {
                max_width: 1024,
                max_height: 1024,
                max_steps: 40,
                max_output_side: 2048,
                max_batch: 4,
                loras: None,
                controlnets: None,
            },
        )])
        .await
        .unwrap();

    let over = "name: big\nmodel: sd15\ndefaults: {width: 512, height: 512}\njobs:\n  - {key: ok, prompt: p, seed: 1, steps: 40}\n  - {key: slow, prompt: p, seed: 2, steps: 200}\n  - {key: slower, prompt: p, seed: 3, steps: 180}\n  - {key: wide, prompt: p, seed: 4, steps: 20, width: 4096}\n";
    let e = api.submit(t, over.into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.to_string(),
        "manifest job `slow`: `steps` is 200; accepted for model `sd15`: at most 40 (the worker registry's `limits`) (2 more jobs are over the limits too)"
    );
    assert!(
        store.dispatchable(&sd15, 10).await.unwrap().is_empty(),
        "nothing was stored"
    );

    let within = "name: fits\nmodel: sd15\ndefaults: {width: 1024, height: 1024, steps: 40, output: {resize: {width: 2048, height: 2048}}}\nprompt: p\nseeds: [1]\n";
    api.submit(t, within.into()).await.unwrap();
    assert_eq!(store.dispatchable(&sd15, 10).await.unwrap().len(), 1);
}
