//! What is published next, and the backlog.

use pixelfarm_core::*;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

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
