//! Tenants, quotas and API keys.

use pixelfarm_core::*;

use super::fixtures::{Store, manifest, tenant};

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

    assert!(info.content_credentials, "on for a new tenant");
    s.set_content_credentials(t, false).await.unwrap();
    assert!(!s.tenant(t).await.unwrap().content_credentials);
    s.set_content_credentials(t, true).await.unwrap();
    assert!(s.tenant(t).await.unwrap().content_credentials);
    let unknown = s
        .set_content_credentials(TenantId::generate(), false)
        .await
        .unwrap_err();
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
