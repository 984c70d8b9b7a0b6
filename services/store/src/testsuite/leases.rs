//! A job's lease: claim, heartbeat, complete, fail.

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

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
pub async fn grouped_claims_and_completions(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let b1 = s.submit(t, &manifest("b1", 5, 0, None), 3).await.unwrap();
    let b2 = s.submit(t, &manifest("b2", 1, 0, None), 3).await.unwrap();
    let ids: Vec<JobId> = all_jobs(&s, t, b1.batch_id)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let x = all_jobs(&s, t, b2.batch_id).await[0].id;

    s.claim(d, "w2", LEASE).await.unwrap().unwrap();
    let mut claimed: Vec<JobId> = s
        .claim_many(&[a, b, c, d, x, JobId::generate()], "w1", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(
                (c.job.state, c.job.attempt, c.tenant),
                (JobState::Running, 1, t)
            );
            c.job.id
        })
        .collect();
    claimed.sort();
    let mut expected = vec![a, b, c, x];
    expected.sort();
    assert_eq!(
        claimed, expected,
        "a running job and an unknown one are left out"
    );
    assert!(
        s.claim_many(&[], "w1", LEASE).await.unwrap().is_empty(),
        "an empty group claims nothing"
    );

    // c is already finished, x cancelled, b is asked with another attempt, d is another owner's.
    assert!(s.complete(c, "w1", 1, &completion()).await.unwrap());
    s.cancel(t, b2.batch_id).await.unwrap();
    let done = |n: u32| Completion {
        object_key: format!("images/{n}.png"),
        ..completion()
    };
    let group = [
        (a, 1, done(0)),
        (b, 2, done(1)),
        (c, 1, done(2)),
        (x, 1, done(3)),
        (d, 1, done(4)),
    ];
    assert_eq!(
        s.complete_many("w1", &group).await.unwrap(),
        [true, false, false, false, false],
        "each job changes only under its own lease"
    );
    let row = |id| {
        let s = s.clone();
        async move { s.job(t, id).await.unwrap() }
    };
    let ra = row(a).await;
    assert_eq!(
        (ra.state, ra.object_key.as_deref()),
        (JobState::Succeeded, Some("images/0.png"))
    );
    assert!(ra.finished_at.is_some());
    assert_eq!(row(b).await.state, JobState::Running);
    assert_eq!(
        row(c).await.object_key.as_deref(),
        Some("images/ab/x.png"),
        "a finished job keeps its first completion"
    );
    assert_eq!(row(x).await.state, JobState::Cancelled);
    assert_eq!(row(d).await.state, JobState::Running);
    assert!(s.complete_many("w1", &[]).await.unwrap().is_empty());

    // Claimed again: only the job still claimable.
    let again = s.claim_many(&[a, b, d, e], "w1", LEASE).await.unwrap();
    assert_eq!(again.iter().map(|c| c.job.id).collect::<Vec<_>>(), [e]);
}
