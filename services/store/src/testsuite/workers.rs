//! Which workers serve which models.

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store};

fn live(presence: &[ModelPresence]) -> Vec<(String, u64)> {
    presence
        .iter()
        .map(|p| (p.model.to_string(), p.live_workers))
        .collect()
}

#[allow(missing_docs)]
pub async fn worker_presence(s: Store) {
    let m = |n: &str| ModelName::parse(n).expect("model name");
    let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    };
    assert!(s.model_presence().await.expect("presence").is_empty());

    s.announce_worker("w1", &[m("m2"), m("m1")], LEASE)
        .await
        .expect("announce");
    s.announce_worker("w2", &[m("m1")], LEASE)
        .await
        .expect("announce");
    // Announcing again is a heartbeat, not another worker.
    s.announce_worker("w2", &[m("m1")], LEASE)
        .await
        .expect("announce");
    let p = s.model_presence().await.expect("presence");
    assert_eq!(live(&p), pairs(&[("m1", 2), ("m2", 1)]));

    // A worker restarted with other models serves only those.
    s.announce_worker("w1", &[m("m2")], LEASE)
        .await
        .expect("announce");
    assert_eq!(
        live(&s.model_presence().await.expect("presence")),
        pairs(&[("m1", 1), ("m2", 1)])
    );

    // A withdrawn worker, or one whose announcement expired, is not live; its models stay known.
    s.withdraw_worker("w2").await.expect("withdraw");
    s.announce_worker("w3", &[m("m3")], Duration::ZERO)
        .await
        .expect("announce");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let p = s.model_presence().await.expect("presence");
    assert_eq!(live(&p), pairs(&[("m1", 0), ("m2", 1), ("m3", 0)]));
    assert!(
        p.iter()
            .all(|r| r.last_seen_at <= chrono::Utc::now() + chrono::Duration::seconds(5))
    );
    // Withdrawing an unknown worker is fine.
    s.withdraw_worker("nobody").await.expect("withdraw");

    // Limits: none until a worker sets them; the latest setting wins; a model set before any
    // announcement is known (and not live).
    assert!(p.iter().all(|r| r.limits.is_none()), "{p:?}");
    let limits = |steps| ModelLimits {
        max_width: 1024,
        max_height: 768,
        max_steps: steps,
        max_output_side: 4096,
        max_batch: 4,
        loras: None,
        controlnets: None,
    };
    s.set_model_limits(&[(m("m1"), limits(50)), (m("m4"), limits(20))])
        .await
        .expect("set limits");
    s.set_model_limits(&[(m("m1"), limits(60))])
        .await
        .expect("set limits");
    let p = s.model_presence().await.expect("presence");
    let of = |n: &str| {
        p.iter()
            .find(|r| r.model.as_str() == n)
            .expect(n)
            .limits
            .clone()
    };
    assert_eq!(of("m1"), Some(limits(60)));
    assert_eq!(of("m4"), Some(limits(20)));
    assert_eq!(of("m2"), None);
    assert_eq!(
        live(&p),
        pairs(&[("m1", 0), ("m2", 1), ("m3", 0), ("m4", 0)])
    );
    // An announcement keeps the limits.
    s.announce_worker("w1", &[m("m1")], LEASE)
        .await
        .expect("announce");
    let p = s.model_presence().await.expect("presence");
    assert_eq!(
        p.iter().find(|r| r.model.as_str() == "m1").unwrap().limits,
        Some(limits(60))
    );
}
