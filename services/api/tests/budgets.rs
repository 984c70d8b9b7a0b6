//! Hostile manifests through the API's submit: each is refused as `Invalid` with an error that
//! names the field and what is accepted, and nothing reaches the store.

mod common;

use pixelfarm_core::{ErrorKind, ModelName};

#[tokio::test]
async fn hostile_manifests_are_refused_and_store_nothing() {
    let m = ModelName::parse("m").unwrap();
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["m"]).await;
    for pixelfarm_core::hostile::Hostile {
        name,
        manifest: text,
        refusal: expected,
    } in pixelfarm_core::hostile::manifests("m")
    {
        let Err(e) = api.submit(t, text).await else {
            panic!("{name}: accepted");
        };
        assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(expected), "{name}: {msg}");
        assert!(
            store.dispatchable(&m, 10).await.unwrap().is_empty(),
            "{name}: a job was stored"
        );
    }
    // The store works: a plain manifest is stored.
    api.submit(t, "name: ok\nmodel: m\nprompt: p\nseeds: [1]\n".into())
        .await
        .unwrap();
    assert_eq!(store.dispatchable(&m, 10).await.unwrap().len(), 1);
}
