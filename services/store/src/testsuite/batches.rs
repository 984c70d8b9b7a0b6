//! Submitting, reading and cancelling batches.

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

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
    let mut want: Vec<_> = spec.jobs.iter().collect();
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
