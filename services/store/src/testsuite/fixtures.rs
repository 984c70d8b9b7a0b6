//! What the cases share: the store type, a lease, a manifest, a tenant, a completion.

use pixelfarm_core::*;
use std::sync::Arc;
use std::time::Duration;

pub(super) type Store = Arc<dyn JobStore>;

pub(super) const LEASE: Duration = Duration::from_secs(60);

pub(super) fn manifest(name: &str, n: u32, priority: u8, key: Option<&str>) -> BatchSpec {
    let mut text = format!(
        "name: {name}\nmodel: m1\npriority: {priority}\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"a {{c}}\"\nvars:\n  c: [x]\nseeds: {{base: 7, count: {n}}}\n"
    );
    if let Some(k) = key {
        text.push_str(&format!("idempotency_key: {k}\n"));
    }
    parse_manifest(&text).expect("test manifest parses")
}

pub(super) async fn tenant(s: &Store, name: &str, weight: u32) -> TenantId {
    s.create_tenant(name, weight).await.expect("create tenant")
}

pub(super) async fn all_jobs(s: &Store, t: TenantId, b: BatchId) -> Vec<JobRecord> {
    s.jobs(t, b, None, 100_000).await.expect("list jobs")
}

pub(super) fn completion() -> Completion {
    Completion {
        object_key: "images/ab/x.png".into(),
        sha256: "a".repeat(64),
        timings: [("render".to_string(), 0.5)].into(),
        device_seconds: 0.5,
    }
}
