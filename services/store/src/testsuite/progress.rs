//! Batch progress kept as counters: equal to what the job rows say after any mix of writes, kept
//! without deadlocks under concurrent writes across batches, and announced on the change feed.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use pixelfarm_core::*;
use std::collections::BTreeMap;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

/// How long a case waits for an announcement before it calls the feed broken: a hang guard, not
/// a timing the feed must meet.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The reference the counters must equal: GROUP BYs over the job rows, as the stores counted
/// before they kept counters (`SELECT state, count(*), min(started_at), max(finished_at) FROM
/// jobs WHERE batch_id = $1 GROUP BY state`; `SELECT model, state, count(*) FROM jobs GROUP BY
/// model, state`; `SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state IN (open states)`).
#[derive(Default)]
struct FromRows {
    counts: BTreeMap<BatchId, StateCounts>,
    min_started: BTreeMap<BatchId, DateTime<Utc>>,
    max_finished: BTreeMap<BatchId, DateTime<Utc>>,
    per_model: BTreeMap<(String, &'static str), u64>,
    open_per_tenant: BTreeMap<TenantId, u64>,
}

impl FromRows {
    async fn read(s: &Store, batches: &[(TenantId, BatchId)]) -> Self {
        let mut r = FromRows::default();
        for &(t, b) in batches {
            r.open_per_tenant.entry(t).or_default();
            for j in all_jobs(s, t, b).await {
                r.counts.entry(b).or_default().add(j.state, 1);
                if let Some(at) = j.started_at {
                    let min = r.min_started.entry(b).or_insert(at);
                    *min = (*min).min(at);
                }
                if let Some(at) = j.finished_at {
                    let max = r.max_finished.entry(b).or_insert(at);
                    *max = (*max).max(at);
                }
                *r.per_model
                    .entry((j.model.as_str().to_owned(), j.state.as_str()))
                    .or_default() += 1;
                if !j.state.is_final() {
                    *r.open_per_tenant.entry(t).or_default() += 1;
                }
            }
        }
        r
    }

    fn rows(&self, finished: bool) -> Vec<(String, &'static str, u64)> {
        self.per_model
            .iter()
            .filter(|((_, state), _)| JobState::parse(state).unwrap().is_final() == finished)
            .map(|((model, state), n)| (model.clone(), *state, *n))
            .collect()
    }
}

fn sorted(rows: Vec<BacklogRow>) -> Vec<(String, &'static str, u64)> {
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|r| (r.model.as_str().to_owned(), r.state.as_str(), r.jobs))
        .collect();
    rows.sort();
    rows
}

/// `batch`, `backlog`, `finished` and `usage` equal the reference over the job rows.
async fn assert_counters_match(s: &Store, batches: &[(TenantId, BatchId)], when: &str) {
    let want = FromRows::read(s, batches).await;
    for &(t, b) in batches {
        let got = s.batch(t, b).await.unwrap();
        let counts = want.counts.get(&b).cloned().unwrap_or_default();
        assert_eq!(got.counts, counts, "{when}: counts of batch {}", got.name);
        assert_eq!(
            got.last_finished_at,
            want.max_finished.get(&b).copied(),
            "{when}: last_finished_at of batch {}",
            got.name
        );
        // The first claim ever: never later than the earliest claim the rows still show.
        match (got.first_started_at, want.min_started.get(&b)) {
            (Some(first), Some(min)) => assert!(first <= *min, "{when}: {first} > {min}"),
            (first, min) => assert_eq!(first.is_some(), min.is_some(), "{when}: started"),
        }
        let device = completion().device_seconds * counts.succeeded as f64;
        assert!(
            (got.device_seconds - device).abs() < 1e-9,
            "{when}: device seconds of batch {}: {} != {device}",
            got.name,
            got.device_seconds
        );
    }
    assert_eq!(
        sorted(s.backlog().await.unwrap()),
        want.rows(false),
        "{when}: backlog"
    );
    assert_eq!(
        sorted(s.finished().await.unwrap()),
        want.rows(true),
        "{when}: finished"
    );
    for (&t, &open) in &want.open_per_tenant {
        assert_eq!(s.usage(t).await.unwrap().queued_jobs, open, "{when}: usage");
    }
}

fn ids(jobs: &[JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// After claims, completions, failures, retries, rescues, requeues and a cancel across batches of
/// two tenants and two models, the counters say what the job rows say.
#[allow(missing_docs)]
pub async fn progress_matches_the_job_rows(s: Store) {
    let (ta, tb) = (tenant(&s, "a", 1).await, tenant(&s, "b", 1).await);
    let mut other_model = manifest("b", 10, 0, None);
    other_model.model = ModelName::parse("m2").unwrap();
    let a = s.submit(ta, &manifest("a", 12, 0, None), 2).await.unwrap();
    let b = s.submit(tb, &other_model, 2).await.unwrap();
    let c = s.submit(ta, &manifest("c", 4, 0, None), 2).await.unwrap();
    let batches = [(ta, a.batch_id), (tb, b.batch_id), (ta, c.batch_id)];
    assert_counters_match(&s, &batches, "submitted").await;
    let (ja, jb, jc) = (
        ids(&all_jobs(&s, ta, a.batch_id).await),
        ids(&all_jobs(&s, tb, b.batch_id).await),
        ids(&all_jobs(&s, ta, c.batch_id).await),
    );
    // One statement across both batches.
    let queue: Vec<JobId> = ja[..6].iter().chain(&jb[..5]).copied().collect();
    assert_eq!(s.mark_queued(&queue).await.unwrap(), 11);
    for &id in ja[..4].iter().chain(&jb[..3]).chain([&ja[6], &jc[0]]) {
        s.claim(id, "w", LEASE).await.unwrap().unwrap();
    }
    assert!(s.heartbeat(ja[0], "w", 1, LEASE, None).await.unwrap());
    for id in [ja[0], ja[1], jb[0]] {
        assert!(s.complete(id, "w", 1, &completion()).await.unwrap());
    }
    let retry = Failure::Retry {
        delay: Duration::ZERO,
        kind: ErrorKind::Transient,
        message: "device busy".into(),
    };
    let dead = Failure::Dead {
        kind: ErrorKind::Permanent,
        message: "bad prompt".into(),
    };
    assert!(s.fail(ja[2], "w", 1, &retry).await.unwrap());
    assert!(s.fail(jb[1], "w", 1, &dead).await.unwrap());
    assert_counters_match(&s, &batches, "claimed, completed, failed").await;
    // Expired leases in both batches, rescued by one statement.
    s.claim(ja[7], "w", Duration::ZERO).await.unwrap().unwrap();
    s.claim(jb[6], "w", Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.rescue_expired(100, 3).await.unwrap().to_pending, 2);
    // The retry: promoted, claimed again (a later started_at), completed.
    assert_eq!(s.promote_retryable(100).await.unwrap(), 1);
    s.claim(ja[2], "w", LEASE).await.unwrap().unwrap();
    assert!(s.complete(ja[2], "w", 2, &completion()).await.unwrap());
    // The queued jobs never claimed (a[4], a[5], b[3], b[4]) are requeued.
    assert_eq!(
        s.requeue_stale_queued(Duration::ZERO, 100).await.unwrap(),
        4
    );
    assert_eq!(s.cancel(ta, c.batch_id).await.unwrap(), 4);
    assert_counters_match(&s, &batches, "rescued, retried, requeued, cancelled").await;
}

/// Tasks writing jobs of two batches at once, half of them in one order and half in the other,
/// all finish: the counters' rows are locked in the same order by every statement.
#[allow(missing_docs)]
pub async fn concurrent_writes_across_batches(s: Store) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 5;
    let t = tenant(&s, "a", 1).await;
    let n = (TASKS * PER_TASK) as u32;
    let a = s.submit(t, &manifest("a", n, 0, None), 2).await.unwrap();
    let b = s.submit(t, &manifest("b", n, 0, None), 2).await.unwrap();
    let (ja, jb) = (
        ids(&all_jobs(&s, t, a.batch_id).await),
        ids(&all_jobs(&s, t, b.batch_id).await),
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (mine_a, mine_b) = (
                ja[i * PER_TASK..(i + 1) * PER_TASK].to_vec(),
                jb[i * PER_TASK..(i + 1) * PER_TASK].to_vec(),
            );
            let order: Vec<JobId> = if i % 2 == 0 {
                mine_a.into_iter().chain(mine_b).collect()
            } else {
                mine_b.into_iter().chain(mine_a).collect()
            };
            let s = s.clone();
            tokio::spawn(async move {
                assert_eq!(s.mark_queued(&order).await.unwrap(), order.len() as u64);
                for &id in &order {
                    s.claim(id, "w", LEASE).await.unwrap().unwrap();
                }
                for &id in &order {
                    assert!(s.complete(id, "w", 1, &completion()).await.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("no write failed (a deadlock is an error)");
    }
    for batch in [a.batch_id, b.batch_id] {
        let st = s.batch(t, batch).await.unwrap();
        assert_eq!(
            (st.counts.succeeded, st.counts.total()),
            (n as u64, n as u64)
        );
    }
    assert_counters_match(&s, &[(t, a.batch_id), (t, b.batch_id)], "all done").await;
}

/// A subscriber of the change feed hears of a completed job's batch, after the completion is
/// committed.
#[allow(missing_docs)]
pub async fn batch_changes_announce_a_completion(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let out = s.submit(t, &manifest("b1", 2, 0, None), 2).await.unwrap();
    let id = all_jobs(&s, t, out.batch_id).await[0].id;
    s.claim(id, "w", LEASE).await.unwrap().unwrap();
    let mut changes = s.batch_changes().await.unwrap();
    assert!(s.complete(id, "w", 1, &completion()).await.unwrap());
    let heard = tokio::time::timeout(HANG_GUARD, async {
        while let Some(change) = changes.next().await {
            if change == BatchChange::Batch(out.batch_id) {
                return true;
            }
        }
        false
    })
    .await
    .expect("hang guard: no announcement");
    assert!(heard, "the feed ended before announcing the batch");
    let st = s.batch(t, out.batch_id).await.unwrap();
    assert_eq!(st.counts.succeeded, 1, "announced after the commit");
}
