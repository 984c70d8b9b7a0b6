//! Retention: which finished batches lose their job rows, in chunks, and what remains of them.
//!
//! Retentions here are milliseconds, so the cases wait a few tens of milliseconds, not days; a
//! retention of an hour stands for "not yet".

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

/// The default retention of the cases: every batch finished before the pause is past it.
const SHORT: Retention = Retention::For(Duration::from_millis(20));
/// Longer than the pause: what it keeps, it keeps.
const HOUR: Retention = Retention::For(Duration::from_secs(3600));

/// Let [`SHORT`] pass.
async fn past_short() {
    tokio::time::sleep(Duration::from_millis(60)).await;
}

/// A batch of `n` jobs, every one final: the first succeeded, the others cancelled.
async fn finished(s: &Store, t: TenantId, name: &str, n: u32) -> BatchId {
    let spec = parse_manifest(&format!(
        "name: {name}\nmodel: m1\ntags: {{study: s-17}}\ndefaults: {{width: 16, height: 16, steps: 2}}\nprompt: \"a {{c}}\"\nvars:\n  c: [x]\nseeds: {{base: 7, count: {n}}}\n"
    ))
    .expect("test manifest parses");
    let b = s.submit(t, &spec, 2).await.unwrap().batch_id;
    let first = all_jobs(s, t, b).await[0].id;
    s.claim(first, "w1", LEASE).await.unwrap().unwrap();
    assert!(s.complete(first, "w1", 1, &completion()).await.unwrap());
    s.cancel(t, b).await.unwrap();
    assert!(s.batch(t, b).await.unwrap().is_done());
    b
}

fn purged(id: BatchId, tenant: &str, name: &str, jobs: u64) -> PurgedBatch {
    PurgedBatch {
        id,
        tenant: tenant.into(),
        name: name.into(),
        jobs,
    }
}

/// Only finished batches past their tenant's retention lose their rows, `limit` rows a call; the
/// batch row and its status remain, and its jobs are answered `Gone`.
#[allow(missing_docs)]
pub async fn retention_purges_finished_batches_past_it(s: Store) {
    let a = tenant(&s, "a", 1).await;
    let old = finished(&s, a, "old", 5).await;
    let old_job = all_jobs(&s, a, old).await[0].id;
    // Unfinished however old: one job succeeded, one still pending.
    let open = s
        .submit(a, &manifest("open", 2, 0, None), 2)
        .await
        .unwrap()
        .batch_id;
    let open_first = all_jobs(&s, a, open).await[0].id;
    s.claim(open_first, "w1", LEASE).await.unwrap().unwrap();
    s.complete(open_first, "w1", 1, &completion())
        .await
        .unwrap();
    past_short().await;

    let call = |limit| {
        let s = s.clone();
        async move { s.purge_expired(SHORT, limit).await.unwrap() }
    };
    assert_eq!(
        call(0).await,
        PurgeOutcome::default(),
        "a limit of 0 deletes nothing"
    );
    assert_eq!(
        call(2).await,
        PurgeOutcome {
            jobs: 2,
            batches: vec![]
        }
    );
    // Taken: its remaining rows are not listed, and the answer names retention.
    let st = s.batch(a, old).await.unwrap();
    let at = st
        .jobs_purged_at
        .expect("the batch says its jobs were purged");
    let e = s.jobs(a, old, None, 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Gone, "{e}");
    assert!(e.to_string().contains("by retention"), "{e}");
    let e = s.jobs(a, old, Some(old_job), 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Gone, "every page of it: {e}");

    assert_eq!(call(2).await.jobs, 2);
    assert_eq!(
        call(2).await,
        PurgeOutcome {
            jobs: 1,
            batches: vec![purged(old, "a", "old", 5)]
        },
        "the call deleting the last rows reports the batch"
    );
    assert_eq!(call(2).await, PurgeOutcome::default(), "nothing left");

    let st = s.batch(a, old).await.unwrap();
    assert_eq!(
        (st.name.as_str(), st.model.as_str(), st.jobs_purged_at),
        ("old", "m1", Some(at))
    );
    assert_eq!(st.tags.get("study").map(String::as_str), Some("s-17"));
    let e = s.job(a, old_job).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("retention"), "{e}");
    assert_eq!(s.cancel(a, old).await.unwrap(), 0, "nothing to cancel");
    // Another tenant still cannot see it.
    let b = tenant(&s, "b", 1).await;
    assert_eq!(
        s.batch(b, old).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.jobs(b, old, None, 10).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let st = s.batch(a, open).await.unwrap();
    assert_eq!((st.jobs_purged_at, st.counts.total()), (None, 2));
    assert_eq!(all_jobs(&s, a, open).await.len(), 2);
}

/// Each tenant follows its own retention, the default when it has none; `Forever` keeps all.
#[allow(missing_docs)]
pub async fn retention_follows_each_tenants_setting(s: Store) {
    let dflt = tenant(&s, "default", 1).await;
    let keep = tenant(&s, "keep", 1).await;
    let hour = tenant(&s, "hour", 1).await;
    s.set_retention(keep, Some(Retention::Forever))
        .await
        .unwrap();
    s.set_retention(hour, Some(HOUR)).await.unwrap();
    assert_eq!(s.tenant(dflt).await.unwrap().retention, None);
    assert_eq!(
        s.tenant(keep).await.unwrap().retention,
        Some(Retention::Forever)
    );
    assert_eq!(s.tenant(hour).await.unwrap().retention, Some(HOUR));
    assert_eq!(
        s.set_retention(TenantId::generate(), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    let d = finished(&s, dflt, "d", 1).await;
    let k = finished(&s, keep, "k", 1).await;
    let h = finished(&s, hour, "h", 1).await;
    past_short().await;
    assert_eq!(
        s.purge_expired(Retention::Forever, 100).await.unwrap(),
        PurgeOutcome::default(),
        "a default of forever keeps the batches of tenants without a retention"
    );
    assert_eq!(
        s.purge_expired(SHORT, 100).await.unwrap(),
        PurgeOutcome {
            jobs: 1,
            batches: vec![purged(d, "default", "d", 1)]
        },
        "only the default tenant's batch is past its retention"
    );
    for (t, b) in [(keep, k), (hour, h)] {
        assert_eq!(all_jobs(&s, t, b).await.len(), 1);
        assert_eq!(s.batch(t, b).await.unwrap().jobs_purged_at, None);
    }
    // Back to the default: the hour tenant's batch is past it now.
    s.set_retention(hour, None).await.unwrap();
    assert_eq!(
        s.purge_expired(SHORT, 100).await.unwrap().batches,
        vec![purged(h, "hour", "h", 1)]
    );
    assert_eq!(all_jobs(&s, keep, k).await.len(), 1, "forever is forever");
}

/// A call's limit spans batches: the rest of one, then the next, oldest first.
#[allow(missing_docs)]
pub async fn retention_chunks_span_batches(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let first = finished(&s, t, "first", 3).await;
    let second = finished(&s, t, "second", 3).await;
    past_short().await;
    assert_eq!(
        s.purge_expired(SHORT, 4).await.unwrap(),
        PurgeOutcome {
            jobs: 4,
            batches: vec![purged(first, "a", "first", 3)]
        }
    );
    assert!(s.batch(t, second).await.unwrap().jobs_purged_at.is_some());
    assert_eq!(
        s.jobs(t, second, None, 10).await.unwrap_err().kind(),
        ErrorKind::Gone,
        "its last rows are not listed"
    );
    assert_eq!(
        s.purge_expired(SHORT, 4).await.unwrap(),
        PurgeOutcome {
            jobs: 2,
            batches: vec![purged(second, "a", "second", 3)]
        }
    );
    // A batch submitted again by its idempotency key after its jobs went is still that batch.
    let spec = manifest("again", 1, 0, Some("k1"));
    let b = s.submit(t, &spec, 1).await.unwrap().batch_id;
    s.cancel(t, b).await.unwrap();
    past_short().await;
    assert_eq!(s.purge_expired(SHORT, 10).await.unwrap().jobs, 1);
    let again = s.submit(t, &spec, 1).await.unwrap();
    assert_eq!((again.batch_id, again.created, again.jobs), (b, false, 1));
}
