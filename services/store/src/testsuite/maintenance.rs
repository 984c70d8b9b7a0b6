//! The leader's maintenance and the leadership itself.

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

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
pub async fn leadership(s: Store) {
    let mut lead = s.try_lead().await.unwrap().expect("first candidate leads");
    assert!(lead.still_leader().await);
}
