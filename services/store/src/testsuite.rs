//! The [`JobStore`] conformance suite. Every implementation runs every case through
//! [`store_conformance!`](crate::store_conformance), each case on a fresh store.

use pixelfarm_core::*;
use std::sync::Arc;
use std::time::Duration;

/// Expand to one `#[tokio::test]` per case, each on a store made by `$make` (an async expression
/// giving a [`TestStore`](crate::testing::TestStore), which removes the store when the case
/// ends, also when it fails).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            tenants_and_keys, submit_and_read, idempotent_submit, tenant_isolation, claim_lifecycle,
            lease_guards, failures_retry_and_die, rescue_expired_leases, stale_queued_requeued,
            cancel_stops_unfinished, heartbeat_records_progress, priority_then_fair_share, backlog_and_finished_counts, leadership,
            worker_presence, quotas_refuse_submits, concurrent_submits_share_the_quota,
            key_lifecycle);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fresh: $crate::testing::TestStore = $make.await;
                $crate::testsuite::$case(fresh.store.clone()).await;
            }
        )*
    };
}

type Store = Arc<dyn JobStore>;

const LEASE: Duration = Duration::from_secs(60);

fn manifest(name: &str, n: u32, priority: u8, key: Option<&str>) -> BatchSpec {
    let mut text = format!(
        "name: {name}\nmodel: m1\npriority: {priority}\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"a {{c}}\"\nvars:\n  c: [x]\nseeds: {{base: 7, count: {n}}}\n"
    );
    if let Some(k) = key {
        text.push_str(&format!("idempotency_key: {k}\n"));
    }
    parse_manifest(&text).expect("test manifest parses")
}

async fn tenant(s: &Store, name: &str, weight: u32) -> TenantId {
    s.create_tenant(name, weight).await.expect("create tenant")
}

async fn all_jobs(s: &Store, t: TenantId, b: BatchId) -> Vec<JobRecord> {
    s.jobs(t, b, None, 100_000).await.expect("list jobs")
}

fn completion() -> Completion {
    Completion {
        object_key: "images/ab/x.png".into(),
        sha256: "a".repeat(64),
        timings: [("render".to_string(), 0.5)].into(),
        device_seconds: 0.5,
    }
}

#[allow(missing_docs)]
pub async fn tenants_and_keys(s: Store) {
    let t = tenant(&s, "acme", 1).await;
    assert_eq!(s.tenant_by_name("acme").await.unwrap(), Some(t));
    assert_eq!(s.tenant_by_name("nobody").await.unwrap(), None);
    let key = NewApiKey::new("secret", None, false);
    s.add_api_key(t, &key).await.unwrap();
    s.add_api_key(t, &key)
        .await
        .expect("adding the same key twice is harmless");
    assert_eq!(s.tenant_by_key(&key.key_sha256).await.unwrap(), Some(t));
    assert_eq!(s.tenant_by_key(&hash_api_key("other")).await.unwrap(), None);
    let dup = s.create_tenant("acme", 1).await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Conflict);
    let info = s.tenant(t).await.unwrap();
    assert_eq!(
        (info.id, info.name.as_str(), info.weight, info.quota),
        (t, "acme", 1, Quota::default()),
        "a new tenant is unlimited"
    );
    let unknown = s.tenant(TenantId::generate()).await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
}

/// A refused submit: `QuotaExceeded` by `limit`, with a message naming it.
fn refused(r: Result<SubmitOutcome>, limit: Limit) -> String {
    let e = r.expect_err("over quota");
    assert_eq!(
        (e.kind(), Limit::of(&e)),
        (ErrorKind::QuotaExceeded, Some(limit)),
        "{e}"
    );
    e.to_string()
}

#[allow(missing_docs)]
pub async fn quotas_refuse_submits(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let other = tenant(&s, "b", 1).await;
    let quota = Quota {
        max_queued_jobs: Some(5),
        max_jobs_per_day: Some(8),
        max_watches: Some(2),
        submits_per_minute: Some(10),
        max_priority: Some(Priority::parse(3).unwrap()),
    };
    s.set_quota(t, &quota).await.unwrap();
    assert_eq!(s.tenant(t).await.unwrap().quota, quota);
    let missing = s.set_quota(TenantId::generate(), &quota).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    let first = s
        .submit(t, &manifest("b1", 3, 3, Some("k1")), 3)
        .await
        .unwrap();
    let m = refused(
        s.submit(t, &manifest("b2", 3, 0, None), 3).await,
        Limit::QueuedJobs,
    );
    assert!(
        m.contains("`max_queued_jobs` is 5")
            && m.contains("3 jobs are not finished and this batch adds 3"),
        "{m}"
    );
    let m = refused(
        s.submit(t, &manifest("b3", 1, 4, None), 3).await,
        Limit::Priority,
    );
    assert!(
        m.contains("`max_priority` is 3") && m.contains("priority 4"),
        "{m}"
    );
    assert_eq!(
        s.usage(t).await.unwrap(),
        Usage {
            queued_jobs: 3,
            jobs_last_day: 3
        },
        "refused batches store nothing"
    );
    let again = s
        .submit(t, &manifest("b1", 3, 3, Some("k1")), 3)
        .await
        .unwrap();
    assert_eq!(
        (again.batch_id, again.created),
        (first.batch_id, false),
        "an idempotent resubmit is answered, not counted"
    );
    s.submit(other, &manifest("o", 20, 9, None), 3)
        .await
        .expect("another tenant's quota is its own");

    // Finished jobs leave the queued count, not the day's.
    assert_eq!(s.cancel(t, first.batch_id).await.unwrap(), 3);
    s.submit(t, &manifest("b4", 5, 0, None), 3).await.unwrap();
    let m = refused(
        s.submit(t, &manifest("b5", 1, 0, None), 3).await,
        Limit::QueuedJobs,
    );
    assert!(m.contains("5 jobs are not finished"), "{m}");
    s.set_quota(
        t,
        &Quota {
            max_queued_jobs: None,
            ..quota.clone()
        },
    )
    .await
    .unwrap();
    let m = refused(
        s.submit(t, &manifest("b6", 1, 0, None), 3).await,
        Limit::JobsPerDay,
    );
    assert!(
        m.contains("`max_jobs_per_day` is 8")
            && m.contains("8 jobs were submitted in the last 24 hours and this batch adds 1"),
        "{m}"
    );
    let by_name: std::collections::BTreeMap<String, Usage> =
        s.usage_by_tenant().await.unwrap().into_iter().collect();
    assert_eq!(
        by_name["a"],
        Usage {
            queued_jobs: 5,
            jobs_last_day: 8
        }
    );
    assert_eq!(
        by_name["b"],
        Usage {
            queued_jobs: 20,
            jobs_last_day: 20
        }
    );
    s.set_quota(t, &Quota::default()).await.unwrap();
    s.submit(t, &manifest("b7", 1, 9, None), 3)
        .await
        .expect("an unset quota is unlimited");
}

#[allow(missing_docs)]
pub async fn concurrent_submits_share_the_quota(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let quota = Quota {
        max_queued_jobs: Some(4),
        ..Quota::default()
    };
    s.set_quota(t, &quota).await.unwrap();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..6 {
        let s = s.clone();
        submits.spawn(async move {
            s.submit(t, &manifest(&format!("b{i}"), 2, 0, None), 3)
                .await
        });
    }
    let mut created = 0;
    for r in submits.join_all().await {
        match r {
            Ok(out) => created += out.jobs,
            Err(e) => assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}"),
        }
    }
    assert_eq!(created, 4, "exactly the quota's room is used");
    assert_eq!(s.usage(t).await.unwrap().queued_jobs, 4);
}

#[allow(missing_docs)]
pub async fn key_lifecycle(s: Store) {
    let a = tenant(&s, "a", 1).await;
    let b = tenant(&s, "b", 1).await;
    let generated = format!("pf_{}", "0123abcd".repeat(8));
    let live = NewApiKey::new(&generated, None, false);
    assert_eq!(live.prefix, "pf_0123abcd");
    let expired = NewApiKey::new(
        "old",
        Some(chrono::Utc::now() - chrono::Duration::minutes(1)),
        false,
    );
    let later = NewApiKey::new(
        "later",
        Some(chrono::Utc::now() + chrono::Duration::days(1)),
        false,
    );
    for k in [&live, &expired, &later] {
        s.add_api_key(a, k).await.unwrap();
    }
    // Another tenant's key with the same prefix is not touched by a's revoke.
    let twin = NewApiKey {
        key_sha256: hash_api_key("twin"),
        ..live.clone()
    };
    s.add_api_key(b, &twin).await.unwrap();

    assert_eq!(s.tenant_by_key(&live.key_sha256).await.unwrap(), Some(a));
    assert_eq!(s.tenant_by_key(&later.key_sha256).await.unwrap(), Some(a));
    assert_eq!(
        s.tenant_by_key(&expired.key_sha256).await.unwrap(),
        None,
        "an expired key is refused"
    );
    let listed = s.api_keys(a).await.unwrap();
    assert_eq!(listed.len(), 3);
    let entry = |p: &str| listed.iter().find(|k| k.prefix == p).unwrap().clone();
    let used = entry("pf_0123abcd");
    assert!(used.last_used_at.is_some() && used.revoked_at.is_none() && !used.from_config);
    assert!(
        entry(&expired.prefix).last_used_at.is_none(),
        "never authenticated"
    );
    let expires = entry(&later.prefix).expires_at.expect("kept");
    assert!(
        (expires - later.expires_at.unwrap())
            .num_milliseconds()
            .abs()
            < 1,
        "{expires}"
    );

    assert_eq!(s.revoke_api_keys(a, "pf_0123abcd").await.unwrap(), 1);
    assert_eq!(
        s.revoke_api_keys(a, "pf_0123abcd").await.unwrap(),
        0,
        "once"
    );
    assert_eq!(s.tenant_by_key(&live.key_sha256).await.unwrap(), None);
    assert_eq!(s.tenant_by_key(&twin.key_sha256).await.unwrap(), Some(b));
    s.add_api_key(a, &live).await.unwrap();
    assert_eq!(
        s.tenant_by_key(&live.key_sha256).await.unwrap(),
        None,
        "registering a revoked key again does not revive it"
    );
    assert!(
        s.api_keys(a)
            .await
            .unwrap()
            .iter()
            .any(|k| k.revoked_at.is_some())
    );

    let kept = NewApiKey::new("cfg-kept", None, true);
    let dropped = NewApiKey::new("cfg-dropped", None, true);
    s.add_api_key(a, &kept).await.unwrap();
    s.add_api_key(b, &dropped).await.unwrap();
    assert_eq!(
        s.revoke_config_keys_except(std::slice::from_ref(&kept.key_sha256))
            .await
            .unwrap(),
        1,
        "only config keys the config no longer lists"
    );
    assert_eq!(s.tenant_by_key(&kept.key_sha256).await.unwrap(), Some(a));
    assert_eq!(s.tenant_by_key(&dropped.key_sha256).await.unwrap(), None);
    // Listed again (a scheduler had started on the wrong config): restored, but only for its
    // own tenant; a config key the operator revoked stays revoked.
    s.add_api_key(a, &dropped).await.unwrap();
    assert_eq!(s.tenant_by_key(&dropped.key_sha256).await.unwrap(), None);
    s.add_api_key(b, &dropped).await.unwrap();
    assert_eq!(s.tenant_by_key(&dropped.key_sha256).await.unwrap(), Some(b));
    assert_eq!(s.revoke_api_keys(a, &kept.prefix).await.unwrap(), 1);
    s.add_api_key(a, &kept).await.unwrap();
    assert_eq!(s.tenant_by_key(&kept.key_sha256).await.unwrap(), None);
    assert_eq!(
        s.tenant_by_key(&later.key_sha256).await.unwrap(),
        Some(a),
        "cli keys stay"
    );
}

#[allow(missing_docs)]
pub async fn submit_and_read(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let spec = manifest("b1", 12, 0, None);
    let out = s.submit(t, &spec, 3).await.unwrap();
    assert!(out.created);
    assert_eq!(out.jobs, 12);
    let st = s.batch(t, out.batch_id).await.unwrap();
    assert_eq!(
        (st.name.as_str(), st.counts.pending, st.counts.total()),
        ("b1", 12, 12)
    );
    assert!(!st.is_done());
    let first = s.jobs(t, out.batch_id, None, 5).await.unwrap();
    let second = s
        .jobs(t, out.batch_id, Some(first[4].id), 100)
        .await
        .unwrap();
    assert_eq!((first.len(), second.len()), (5, 7));
    let mut all: Vec<_> = first.into_iter().chain(second).collect();
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let mut want: Vec<_> = spec.jobs.clone();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    for (got, want) in all.iter().zip(&want) {
        assert_eq!(got.key, want.key);
        assert_eq!(got.params, want.params);
        assert_eq!(
            (got.state, got.attempt, got.max_attempts),
            (JobState::Pending, 0, 3)
        );
    }
    let one = s.job(t, all[0].id).await.unwrap();
    assert_eq!(one.key, all[0].key);
}

#[allow(missing_docs)]
pub async fn idempotent_submit(s: Store) {
    let a = tenant(&s, "a", 1).await;
    let b = tenant(&s, "b", 1).await;
    let spec = manifest("b1", 3, 0, Some("k1"));
    let first = s.submit(a, &spec, 3).await.unwrap();
    let again = s.submit(a, &spec, 3).await.unwrap();
    assert_eq!(
        (again.batch_id, again.created, again.jobs),
        (first.batch_id, false, 3)
    );
    assert_eq!(
        all_jobs(&s, a, first.batch_id).await.len(),
        3,
        "no jobs added by the resubmit"
    );
    let other = s.submit(b, &spec, 3).await.unwrap();
    assert!(
        other.created && other.batch_id != first.batch_id,
        "keys are per tenant"
    );
}

#[allow(missing_docs)]
pub async fn tenant_isolation(s: Store) {
    let a = tenant(&s, "a", 1).await;
    let b = tenant(&s, "b", 1).await;
    let out = s.submit(a, &manifest("b1", 2, 0, None), 3).await.unwrap();
    let job = all_jobs(&s, a, out.batch_id).await[0].id;
    assert_eq!(
        s.batch(b, out.batch_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.jobs(b, out.batch_id, None, 10).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.job(b, job).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        s.cancel(b, out.batch_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.batch(a, out.batch_id).await.unwrap().counts.pending,
        2,
        "b's cancel touched nothing"
    );
}

#[allow(missing_docs)]
pub async fn claim_lifecycle(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 3, 0, None), 3).await.unwrap();
    let model = ModelName::parse("m1").unwrap();
    let msgs = s.dispatchable(&model, 10).await.unwrap();
    assert_eq!(msgs.len(), 3);
    assert!(
        msgs.iter()
            .all(|m| m.batch_id == out.batch_id && m.model == model)
    );
    assert!(
        s.dispatchable(&ModelName::parse("m2").unwrap(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let ids: Vec<JobId> = msgs.iter().map(|m| m.job_id).collect();
    assert_eq!(s.mark_queued(&ids).await.unwrap(), 3);
    assert_eq!(
        s.mark_queued(&ids).await.unwrap(),
        0,
        "only pending jobs move"
    );
    assert!(s.dispatchable(&model, 10).await.unwrap().is_empty());

    let c = s
        .claim(ids[0], "w1", LEASE)
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!(
        (c.job.state, c.job.attempt, c.tenant),
        (JobState::Running, 1, t)
    );
    assert!(c.queued_at.is_some());
    assert!(
        s.claim(ids[0], "w2", LEASE).await.unwrap().is_none(),
        "a running job is not claimed twice"
    );
    assert!(s.heartbeat(ids[0], "w1", 1, LEASE, None).await.unwrap());
    assert!(s.complete(ids[0], "w1", 1, &completion()).await.unwrap());
    let done = s.job(t, ids[0]).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.object_key.as_deref(), Some("images/ab/x.png"));
    assert_eq!(done.timings.get("render"), Some(&0.5));
    assert!(done.finished_at.is_some());
    assert!(
        s.claim(ids[0], "w1", LEASE).await.unwrap().is_none(),
        "a duplicate message is dropped"
    );
    assert!(
        s.claim(JobId::generate(), "w1", LEASE)
            .await
            .unwrap()
            .is_none(),
        "unknown job"
    );
    // A pending job (duplicate message racing the dispatcher) is claimable too.
    let pending = s.submit(t, &manifest("b2", 1, 0, None), 3).await.unwrap();
    let pj = all_jobs(&s, t, pending.batch_id).await[0].id;
    assert!(s.claim(pj, "w1", LEASE).await.unwrap().is_some());
}

#[allow(missing_docs)]
pub async fn lease_guards(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 1, 0, None), 3).await.unwrap();
    let id = all_jobs(&s, t, out.batch_id).await[0].id;
    s.claim(id, "w1", LEASE).await.unwrap().unwrap();
    assert!(
        !s.heartbeat(id, "w2", 1, LEASE, None).await.unwrap(),
        "other owner"
    );
    assert!(
        !s.heartbeat(id, "w1", 2, LEASE, None).await.unwrap(),
        "other attempt"
    );
    assert!(!s.complete(id, "w2", 1, &completion()).await.unwrap());
    let dead = Failure::Dead {
        kind: ErrorKind::Permanent,
        message: "x".into(),
    };
    assert!(!s.fail(id, "w2", 1, &dead).await.unwrap());
    assert_eq!(s.job(t, id).await.unwrap().state, JobState::Running);
}

#[allow(missing_docs)]
pub async fn failures_retry_and_die(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 2, 0, None), 2).await.unwrap();
    let jobs = all_jobs(&s, t, out.batch_id).await;
    let (a, b) = (jobs[0].id, jobs[1].id);

    s.claim(a, "w1", LEASE).await.unwrap().unwrap();
    let retry = Failure::Retry {
        delay: Duration::from_secs(3600),
        kind: ErrorKind::Transient,
        message: "s3 down".into(),
    };
    assert!(s.fail(a, "w1", 1, &retry).await.unwrap());
    let r = s.job(t, a).await.unwrap();
    assert_eq!(
        (r.state, r.error_kind.as_deref(), r.last_error.as_deref()),
        (JobState::Retryable, Some("transient"), Some("s3 down"))
    );
    assert_eq!(
        s.promote_retryable(100).await.unwrap(),
        0,
        "backoff not elapsed"
    );
    assert!(
        s.claim(a, "w1", LEASE).await.unwrap().is_none(),
        "retryable is not claimable"
    );

    s.claim(b, "w1", LEASE).await.unwrap().unwrap();
    let soon = Failure::Retry {
        delay: Duration::ZERO,
        kind: ErrorKind::Transient,
        message: "db blip".into(),
    };
    assert!(s.fail(b, "w1", 1, &soon).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.promote_retryable(100).await.unwrap(), 1);
    let c = s
        .claim(b, "w2", LEASE)
        .await
        .unwrap()
        .expect("promoted job is claimable");
    assert_eq!(c.job.attempt, 2);
    let dead = Failure::Dead {
        kind: ErrorKind::Permanent,
        message: "unknown model".into(),
    };
    assert!(s.fail(b, "w2", 2, &dead).await.unwrap());
    let d = s.job(t, b).await.unwrap();
    assert_eq!(
        (d.state, d.last_error.as_deref()),
        (JobState::Dead, Some("unknown model"))
    );
    assert!(d.finished_at.is_some());
}

/// An expired lease returns the job without spending its attempt; the `max_crashes`-th expiry
/// makes it dead as the job that crashes its workers.
#[allow(missing_docs)]
pub async fn rescue_expired_leases(s: Store) {
    const MAX_CRASHES: u32 = 3;
    let t = tenant(&s, "a", 1).await;
    // One attempt only: expiries must not spend it.
    let out = s.submit(t, &manifest("b1", 1, 0, None), 1).await.unwrap();
    let id = all_jobs(&s, t, out.batch_id).await[0].id;
    for (crash, worker) in ["w1", "w2"].into_iter().enumerate() {
        let c = s.claim(id, worker, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(c.job.attempt, 1, "crash {crash} spent no attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            s.rescue_expired(100, MAX_CRASHES).await.unwrap(),
            RescueOutcome {
                to_pending: 1,
                to_dead: 0
            }
        );
        let r = s.job(t, id).await.unwrap();
        assert_eq!(
            (r.state, r.attempt, r.error_kind.as_deref()),
            (JobState::Pending, 0, Some("lease_expired"))
        );
        assert!(r.last_error.unwrap().contains(worker));
        assert!(
            !s.complete(id, worker, 1, &completion()).await.unwrap(),
            "the old owner lost the lease"
        );
    }
    s.claim(id, "w3", Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.rescue_expired(100, MAX_CRASHES).await.unwrap(),
        RescueOutcome {
            to_pending: 0,
            to_dead: 1
        },
        "the third expiry"
    );
    let r = s.job(t, id).await.unwrap();
    assert_eq!(
        (r.state, r.error_kind.as_deref()),
        (JobState::Dead, Some("crashed_worker"))
    );
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .starts_with("crashed the worker: its lease expired 3 times (last on worker w3)"),
        "{r:?}"
    );
    assert!(r.finished_at.is_some());
    // A live lease is left alone.
    let out = s.submit(t, &manifest("b2", 1, 0, None), 2).await.unwrap();
    let live = all_jobs(&s, t, out.batch_id).await[0].id;
    s.claim(live, "w4", LEASE).await.unwrap().unwrap();
    assert_eq!(
        s.rescue_expired(100, MAX_CRASHES).await.unwrap(),
        RescueOutcome::default()
    );
}

#[allow(missing_docs)]
pub async fn stale_queued_requeued(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 2, 0, None), 2).await.unwrap();
    let ids: Vec<JobId> = all_jobs(&s, t, out.batch_id)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    s.mark_queued(&ids).await.unwrap();
    assert_eq!(
        s.requeue_stale_queued(Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.requeue_stale_queued(Duration::from_millis(1), 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.batch(t, out.batch_id).await.unwrap().counts.pending, 2);
}

#[allow(missing_docs)]
pub async fn cancel_stops_unfinished(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 4, 0, None), 2).await.unwrap();
    let ids: Vec<JobId> = all_jobs(&s, t, out.batch_id)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    s.mark_queued(&ids[1..2]).await.unwrap();
    s.claim(ids[2], "w1", LEASE).await.unwrap().unwrap();
    s.claim(ids[3], "w1", LEASE).await.unwrap().unwrap();
    s.complete(ids[3], "w1", 1, &completion()).await.unwrap();
    assert_eq!(s.cancel(t, out.batch_id).await.unwrap(), 3);
    let st = s.batch(t, out.batch_id).await.unwrap();
    assert_eq!(
        (st.counts.cancelled, st.counts.running, st.counts.succeeded),
        (3, 0, 1)
    );
    assert!(st.is_done());
    assert!(
        s.claim(ids[0], "w1", LEASE).await.unwrap().is_none(),
        "cancelled jobs are not claimed"
    );
    // The running job's worker loses its lease: its heartbeat and outcome change nothing.
    assert!(
        !s.heartbeat(ids[2], "w1", 1, LEASE, None).await.unwrap(),
        "the cancelled job's lease is gone"
    );
    assert!(!s.complete(ids[2], "w1", 1, &completion()).await.unwrap());
    let retry = Failure::Retry {
        delay: Duration::from_secs(1),
        kind: ErrorKind::Transient,
        message: "late".into(),
    };
    assert!(!s.fail(ids[2], "w1", 1, &retry).await.unwrap());
    assert_eq!(s.job(t, ids[2]).await.unwrap().state, JobState::Cancelled);
    assert_eq!(s.job(t, ids[3]).await.unwrap().state, JobState::Succeeded);
    assert_eq!(s.cancel(t, out.batch_id).await.unwrap(), 0);
    let rescued = s.rescue_expired(10, 3).await.unwrap();
    assert_eq!(rescued.to_pending + rescued.to_dead, 0, "nothing to rescue");
}

#[allow(missing_docs)]
pub async fn heartbeat_records_progress(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 1, 0, None), 3).await.unwrap();
    let id = all_jobs(&s, t, out.batch_id).await[0].id;
    assert_eq!(s.job(t, id).await.unwrap().progress, None);
    s.claim(id, "w1", LEASE).await.unwrap().unwrap();
    let p = |done, total| Some(StepProgress { done, total });
    assert!(s.heartbeat(id, "w1", 1, LEASE, p(5, 20)).await.unwrap());
    assert_eq!(s.job(t, id).await.unwrap().progress, p(5, 20));
    assert!(s.heartbeat(id, "w1", 1, LEASE, None).await.unwrap());
    assert_eq!(s.job(t, id).await.unwrap().progress, p(5, 20), "kept");
    assert!(!s.heartbeat(id, "w2", 1, LEASE, p(9, 20)).await.unwrap());
    assert_eq!(
        s.job(t, id).await.unwrap().progress,
        p(5, 20),
        "not the owner"
    );
    // A retry starts its progress afresh.
    let retry = Failure::Retry {
        delay: Duration::ZERO,
        kind: ErrorKind::Transient,
        message: "oom".into(),
    };
    assert!(s.fail(id, "w1", 1, &retry).await.unwrap());
    s.promote_retryable(10).await.unwrap();
    s.claim(id, "w2", LEASE).await.unwrap().unwrap();
    assert_eq!(s.job(t, id).await.unwrap().progress, None);
}

#[allow(missing_docs)]
pub async fn priority_then_fair_share(s: Store) {
    let a = tenant(&s, "a", 1).await;
    let b = tenant(&s, "b", 2).await;
    let model = ModelName::parse("m1").unwrap();
    let low_a = s.submit(a, &manifest("la", 30, 0, None), 2).await.unwrap();
    let low_b = s.submit(b, &manifest("lb", 30, 0, None), 2).await.unwrap();
    let picked = s.dispatchable(&model, 30).await.unwrap();
    let from_b = picked
        .iter()
        .filter(|m| m.batch_id == low_b.batch_id)
        .count();
    let from_a = picked
        .iter()
        .filter(|m| m.batch_id == low_a.batch_id)
        .count();
    assert_eq!(from_a + from_b, 30);
    assert!(
        (19..=21).contains(&from_b),
        "weight 2 gets about two thirds: a={from_a} b={from_b}"
    );
    let high = s.submit(a, &manifest("ha", 5, 9, None), 2).await.unwrap();
    let picked = s.dispatchable(&model, 8).await.unwrap();
    assert!(
        picked[..5]
            .iter()
            .all(|m| m.batch_id == high.batch_id && m.priority.get() == 9),
        "priority first"
    );
}

#[allow(missing_docs)]
pub async fn backlog_and_finished_counts(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 3, 0, None), 2).await.unwrap();
    let ids: Vec<JobId> = all_jobs(&s, t, out.batch_id)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    s.mark_queued(&ids[..1]).await.unwrap();
    s.claim(ids[1], "w", LEASE).await.unwrap().unwrap();
    let find = |rows: &[BacklogRow], st: JobState| {
        rows.iter().find(|r| r.state == st).map_or(0, |r| r.jobs)
    };
    let bl = s.backlog().await.unwrap();
    assert_eq!(
        (
            find(&bl, JobState::Pending),
            find(&bl, JobState::Queued),
            find(&bl, JobState::Running)
        ),
        (1, 1, 1)
    );
    assert!(bl.iter().all(|r| r.model.as_str() == "m1"));
    s.complete(ids[1], "w", 1, &completion()).await.unwrap();
    let fin = s.finished().await.unwrap();
    assert_eq!(find(&fin, JobState::Succeeded), 1);
}

#[allow(missing_docs)]
pub async fn leadership(s: Store) {
    let mut lead = s.try_lead().await.unwrap().expect("first candidate leads");
    assert!(lead.still_leader().await);
}

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
    };
    s.set_model_limits(&[(m("m1"), limits(50)), (m("m4"), limits(20))])
        .await
        .expect("set limits");
    s.set_model_limits(&[(m("m1"), limits(60))])
        .await
        .expect("set limits");
    let p = s.model_presence().await.expect("presence");
    let of = |n: &str| p.iter().find(|r| r.model.as_str() == n).expect(n).limits;
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
