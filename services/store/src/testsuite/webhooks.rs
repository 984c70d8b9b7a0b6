//! Webhooks: events written with the change that causes them (a batch's last job final, a job
//! dead or succeeded), for the webhooks that asked, to their own tenant only; claims, attempts and the
//! delivery log; secrets and their rotation.

use chrono::Utc;
use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

fn spec(url: &str, events: &[EventKind]) -> WebhookSpec {
    WebhookSpec {
        url: WebhookUrl::parse(url).unwrap(),
        events: EventSet::of(events.iter().copied()).unwrap(),
    }
}

fn dead() -> Failure {
    Failure::Dead {
        kind: ErrorKind::Permanent,
        message: "bad weights".into(),
    }
}

/// Run every job of the batch: the first `dead` of them die, the others succeed.
async fn finish(s: &Store, t: TenantId, b: BatchId, dead_ones: usize) {
    for (i, j) in all_jobs(s, t, b).await.into_iter().enumerate() {
        s.claim(j.id, "w1", LEASE).await.unwrap().unwrap();
        if i < dead_ones {
            assert!(s.fail(j.id, "w1", 1, &dead()).await.unwrap());
        } else {
            assert!(s.complete(j.id, "w1", 1, &completion()).await.unwrap());
        }
    }
}

/// Every due event, claimed (a long lease: each is claimed once here).
async fn due(s: &Store) -> Vec<DueEvent> {
    let mut out = s
        .claim_webhook_events(1000, Duration::from_secs(3600))
        .await
        .unwrap();
    out.sort_by_key(|e| (e.kind.as_str(), e.created_at));
    out
}

#[allow(missing_docs)]
pub async fn webhook_events_follow_their_changes(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let other = tenant(&s, "b", 1).await;
    let tenant_hook = s
        .add_webhook(
            t,
            &spec(
                "https://hooks.example.com/all",
                &[EventKind::JobFailed, EventKind::JobSucceeded],
            ),
        )
        .await
        .unwrap();
    assert_eq!(s.list_webhooks(t).await.unwrap().len(), 1);
    assert!(s.list_webhooks(other).await.unwrap().is_empty());

    // A batch with its own webhook (the outcome only) beside the tenant's (each job's end).
    let mut m = manifest("b1", 3, 0, None);
    m.webhook = Some(spec(
        "https://example.com/b1",
        &[EventKind::BatchCompleted, EventKind::BatchFailed],
    ));
    let b1 = s.submit(t, &m, 1).await.unwrap().batch_id;
    // Another tenant's failures reach none of these.
    let ob = s
        .submit(other, &manifest("o", 1, 0, None), 1)
        .await
        .unwrap()
        .batch_id;
    finish(&s, other, ob, 1).await;
    assert!(due(&s).await.is_empty(), "no webhook of tenant b");

    finish(&s, t, b1, 1).await;
    let events = due(&s).await;
    let kinds: Vec<(&str, &str, bool)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.url.as_str(), e.job.is_some()))
        .collect();
    let all = "https://hooks.example.com/all";
    assert_eq!(
        kinds,
        [
            ("batch.failed", "https://example.com/b1", false),
            ("job.failed", all, true),
            ("job.succeeded", all, true),
            ("job.succeeded", all, true),
        ]
    );
    let mut succeeded: Vec<JobId> = events[2..].iter().filter_map(|e| e.job).collect();
    succeeded.sort();
    let mut expected: Vec<JobId> = all_jobs(&s, t, b1)
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Succeeded)
        .map(|j| j.id)
        .collect();
    expected.sort();
    assert_eq!(succeeded, expected, "one event per stored image");
    assert!(events.iter().all(|e| e.tenant == t && e.batch == b1));
    assert!(events.iter().all(|e| e.attempt == 1 && e.body.is_none()));
    assert_eq!(events[0].secrets.len(), 1, "the tenant's secret signs");
    assert_eq!(
        events[0].secrets[0],
        s.webhook_secret(t, false).await.unwrap()
    );
    assert!(
        due(&s).await.is_empty(),
        "claimed events wait for their lease"
    );
    assert_eq!(s.pending_webhook_events().await.unwrap(), 4);

    // A batch that all succeeds is completed; removing the tenant's webhook stops its events.
    let mut m2 = manifest("b2", 2, 0, None);
    m2.webhook = m.webhook.clone();
    let b2 = s.submit(t, &m2, 1).await.unwrap().batch_id;
    assert!(s.remove_webhook(t, tenant_hook.id).await.unwrap());
    assert!(!s.remove_webhook(other, tenant_hook.id).await.unwrap());
    finish(&s, t, b2, 0).await;
    let events = due(&s).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].batch),
        (EventKind::BatchCompleted, b2)
    );
}

#[allow(missing_docs)]
pub async fn webhook_attempts_settle_and_log(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let mut m = manifest("b1", 1, 0, None);
    m.webhook = Some(spec("https://example.com/x", &[EventKind::BatchCompleted]));
    let b = s.submit(t, &m, 1).await.unwrap().batch_id;
    finish(&s, t, b, 0).await;
    let lease = Duration::from_millis(50);
    let first = s.claim_webhook_events(10, lease).await.unwrap();
    assert_eq!(first.len(), 1);
    let e = first[0].clone();
    let failed = AttemptOutcome::Failed {
        status: Some(503),
        error: "the receiver answered 503".into(),
        retry_at: Some(Utc::now()),
    };
    s.record_webhook_attempt(e.id, 1, "{\"a\":1}", &failed, Duration::from_millis(7))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = s.claim_webhook_events(10, lease).await.unwrap();
    assert_eq!(second.len(), 1, "due again at its retry time");
    assert_eq!(
        (second[0].attempt, second[0].body.as_deref()),
        (2, Some("{\"a\":1}")),
        "the first attempt's body is sent again"
    );
    // The second claim's lease runs out: a third claim takes it, and the second attempt's late
    // answer does not settle it.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let third = s.claim_webhook_events(10, lease).await.unwrap();
    assert_eq!(third[0].attempt, 3);
    let ok = AttemptOutcome::Delivered { status: 204 };
    s.record_webhook_attempt(e.id, 2, "{\"a\":1}", &ok, Duration::from_millis(3))
        .await
        .unwrap();
    assert_eq!(s.pending_webhook_events().await.unwrap(), 1);
    s.record_webhook_attempt(e.id, 3, "{\"a\":1}", &ok, Duration::from_millis(3))
        .await
        .unwrap();
    assert_eq!(s.pending_webhook_events().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(s.claim_webhook_events(10, lease).await.unwrap().is_empty());

    let log = s.webhook_deliveries(t, b, None, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].kind.as_str(), log[0].state.as_str()),
        ("batch.completed", "delivered")
    );
    let attempts: Vec<(u32, Option<u16>)> = log[0]
        .attempts
        .iter()
        .map(|a| (a.attempt, a.status))
        .collect();
    assert_eq!(attempts, [(1, Some(503)), (2, Some(204)), (3, Some(204))]);
    assert_eq!(
        log[0].attempts[0].error.as_deref(),
        Some("the receiver answered 503")
    );
    // Another tenant reads no log of this batch.
    let other = tenant(&s, "b", 1).await;
    assert!(
        s.webhook_deliveries(other, b, None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // A failure without a retry time gives the event up.
    let mut m2 = manifest("b2", 1, 0, None);
    m2.webhook = m.webhook.clone();
    let b2 = s.submit(t, &m2, 1).await.unwrap().batch_id;
    finish(&s, t, b2, 0).await;
    let e2 = s.claim_webhook_events(10, lease).await.unwrap().remove(0);
    let gave_up = AttemptOutcome::Failed {
        status: None,
        error: "cannot connect".into(),
        retry_at: None,
    };
    s.record_webhook_attempt(e2.id, 1, "{}", &gave_up, Duration::ZERO)
        .await
        .unwrap();
    let log = s.webhook_deliveries(t, b2, None, 100).await.unwrap();
    assert_eq!(
        (log[0].state.as_str(), log[0].next_attempt_at),
        ("failed", None)
    );
}

#[allow(missing_docs)]
pub async fn webhook_secrets_rotate(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let first = s.webhook_secret(t, false).await.unwrap();
    assert_eq!(s.webhook_secret(t, false).await.unwrap(), first, "stable");
    let second = s.webhook_secret(t, true).await.unwrap();
    assert_ne!(second, first);
    let mut m = manifest("b1", 1, 0, None);
    m.webhook = Some(spec("https://example.com/x", &[EventKind::BatchCompleted]));
    let b = s.submit(t, &m, 1).await.unwrap().batch_id;
    finish(&s, t, b, 0).await;
    let e = s.claim_webhook_events(10, LEASE).await.unwrap().remove(0);
    assert_eq!(
        e.secrets,
        [second, first],
        "the rotated-out secret signs too, for a day"
    );
}
