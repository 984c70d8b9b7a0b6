//! The dispatcher publishes the jobs of models a live worker serves, or that `scheduler.models`
//! lists; the others wait `pending`, with no message and no queue (docs/models.md).

use pixelfarm_core::{Broker, JobStore, ModelName, parse_manifest};
use pixelfarm_scheduler::SchedulerMetrics;
use pixelfarm_scheduler::dispatcher::Dispatcher;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn batch(model: &str) -> pixelfarm_core::BatchSpec {
    parse_manifest(&format!(
        "name: {model}\nmodel: {model}\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"a {{c}}\"\nvars:\n  c: [x]\nseeds: {{base: 7, count: 3}}\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn only_models_with_a_live_worker_or_listed_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(
        pixelfarm_store::SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap(),
    );
    let broker: Arc<dyn Broker> = Arc::new(pixelfarm_broker::InProcBroker::new());
    let t = store.create_tenant("t", 1).await.unwrap();
    for m in ["live", "gone", "listed"] {
        store.submit(t, &batch(m), 3).await.unwrap();
    }
    let m = |n: &str| ModelName::parse(n).unwrap();
    store
        .announce_worker("w1", &[m("live")], Duration::from_secs(60))
        .await
        .unwrap();
    store
        .announce_worker("w2", &[m("gone")], Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let metrics = Arc::new(SchedulerMetrics::register(&prometheus::Registry::new()));
    let d = Dispatcher::new(store.clone(), broker.clone(), 64, metrics)
        .publishing_unserved(&[m("listed")]);
    assert_eq!(d.run_once().await.unwrap().published, 6);

    let states: BTreeMap<(String, String), u64> = store
        .backlog()
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.model.to_string(), r.state.to_string()), r.jobs))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            (("gone".to_string(), "pending".to_string()), 3),
            (("listed".to_string(), "queued".to_string()), 3),
            (("live".to_string(), "queued".to_string()), 3),
        ])
    );
    assert_eq!(broker.depth(&m("live")).await.unwrap(), 3);
    assert_eq!(broker.depth(&m("listed")).await.unwrap(), 3);
    assert_eq!(broker.depth(&m("gone")).await.unwrap(), 0);
}
