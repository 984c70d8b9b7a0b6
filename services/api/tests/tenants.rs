//! Tenant quotas and keys through the API (docs/security.md, "Quotas and rate limits" and "API
//! keys"): refusals carry the limit and the usage and are counted per tenant; watches hold a place
//! until dropped; revoked and expired keys are `Unauthenticated`; an address that failed too often
//! is refused before the key lookup; a watch wakes on the store's announcement of a change.

mod common;

use futures::StreamExt;
use pixelfarm_core::{ErrorKind, Limit, NewApiKey, Quota};
use std::net::IpAddr;
use std::sync::Arc;

const MANIFEST: &str = "name: b\nmodel: m\ndefaults: {width: 16, height: 16, steps: 2}\nprompt: p\nseeds: {base: 1, count: 5}\n";

#[tokio::test]
async fn watches_hold_a_place_until_dropped() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
    } = common::api(&["m"]).await;
    let api = Arc::new(api);
    let quota = Quota {
        max_watches: Some(1),
        ..Quota::default()
    };
    store.set_quota(t, &quota).await.unwrap();
    let b = api.submit(t, MANIFEST.into()).await.unwrap().batch_id;
    let mut first = Box::pin(api.clone().watch(t, b).await.unwrap());
    let view = first.next().await.unwrap().unwrap();
    assert_eq!(view.total, 5);
    let e = api
        .clone()
        .watch(t, b)
        .await
        .err()
        .expect("over max_watches");
    assert_eq!(
        (e.kind(), Limit::of(&e)),
        (ErrorKind::QuotaExceeded, Some(Limit::Watches))
    );
    assert!(e.to_string().contains("1 watches are open"), "{e}");
    let m = api.metrics();
    assert_eq!(m.tenant_watches.with_label_values(&["t"]).get(), 1);
    assert_eq!(
        m.tenant_refusals
            .with_label_values(&["t", "max_watches"])
            .get(),
        1
    );
    drop(first);
    assert_eq!(m.tenant_watches.with_label_values(&["t"]).get(), 0);
    let mut again = Box::pin(
        api.clone()
            .watch(t, b)
            .await
            .expect("the dropped watch freed its place"),
    );
    assert_eq!(again.next().await.unwrap().unwrap().total, 5);
}

#[tokio::test]
async fn submits_over_the_rate_are_refused_before_parsing() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
    } = common::api(&["m"]).await;
    let quota = Quota {
        submits_per_minute: Some(1),
        ..Quota::default()
    };
    store.set_quota(t, &quota).await.unwrap();
    api.submit(t, MANIFEST.into()).await.unwrap();
    // Not even parsed: a manifest that would be refused as invalid is refused for the rate.
    let e = api.submit(t, "not: [a manifest".into()).await.unwrap_err();
    assert_eq!(
        (e.kind(), Limit::of(&e)),
        (ErrorKind::RateLimited, Some(Limit::SubmitRate)),
        "{e}"
    );
    assert_eq!(
        api.metrics()
            .tenant_refusals
            .with_label_values(&["t", "submits_per_minute"])
            .get(),
        1
    );
}

#[tokio::test]
async fn revoked_keys_and_failing_addresses_are_refused() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
    } = common::api(&["m"]).await;
    let key = NewApiKey::new("k-1", None, false);
    store.add_api_key(t, &key).await.unwrap();
    let peer: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(
        api.authenticate_from(Some(peer), Some("Bearer k-1"))
            .await
            .unwrap(),
        t
    );
    assert_eq!(store.revoke_api_keys(t, &key.prefix).await.unwrap(), 1);
    let e = api
        .authenticate_from(Some(peer), Some("Bearer k-1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(e.to_string(), "unknown, revoked or expired api key");
    for _ in 1..pixelfarm_api::limits::FAILED_AUTH_BURST as usize {
        let e = api
            .authenticate_from(Some(peer), Some("Bearer nope"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    // The burst is spent: refused, even with a good key, before the lookup.
    store
        .add_api_key(t, &NewApiKey::new("k-2", None, false))
        .await
        .unwrap();
    let e = api
        .authenticate_from(Some(peer), Some("Bearer k-2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    let failures = &api.metrics().auth_failures;
    assert_eq!(
        (
            failures.with_label_values(&["unauthenticated"]).get(),
            failures.with_label_values(&["rate_limited"]).get()
        ),
        (20, 1)
    );
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    assert_eq!(
        api.authenticate_from(Some(other), Some("Bearer k-2"))
            .await
            .unwrap(),
        t,
        "other addresses are not refused"
    );
}

#[tokio::test]
async fn watches_of_one_batch_share_its_poll_and_all_see_each_change() {
    let common::Api {
        api,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["m"]).await;
    let api = Arc::new(api);
    let b = api.submit(t, MANIFEST.into()).await.unwrap().batch_id;
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut w = Box::pin(api.clone().watch(t, b).await.unwrap());
        let first = w.next().await.unwrap().unwrap();
        assert_eq!((first.status.counts.pending, first.done), (5, false));
        watches.push(w);
    }
    assert_eq!(api.cancel(t, b).await.unwrap(), 5);
    for mut w in watches {
        let last = w.next().await.unwrap().unwrap();
        assert_eq!((last.status.counts.cancelled, last.done), (5, true));
        assert!(w.next().await.is_none(), "a watch ends after the done view");
    }
    // The poll ended with the batch: a new watch starts another and sees the final view.
    let mut late = Box::pin(api.clone().watch(t, b).await.unwrap());
    assert!(late.next().await.unwrap().unwrap().done);
    assert!(late.next().await.is_none());
}

/// A watch wakes on the store's announcement of a change: its fallback re-read is an hour away,
/// so nothing else can show it the claimed job.
#[tokio::test]
async fn a_watch_wakes_on_an_announced_change() {
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
    } = common::api(&["m"]).await;
    let api = Arc::new(api.with_watch_fallback(std::time::Duration::from_secs(3600)));
    let b = api.submit(t, MANIFEST.into()).await.unwrap().batch_id;
    let mut w = Box::pin(api.clone().watch(t, b).await.unwrap());
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(
        (first.status.counts.pending, first.status.counts.running),
        (5, 0)
    );
    let job = store.jobs(t, b, None, 1).await.unwrap()[0].id;
    let lease = std::time::Duration::from_secs(60);
    store.claim(job, "w", lease).await.unwrap().unwrap();
    // A hang guard only: the fallback would take an hour.
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), w.next())
        .await
        .expect("the announcement woke the watch")
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.status.counts.pending, next.status.counts.running),
        (4, 1)
    );
}
