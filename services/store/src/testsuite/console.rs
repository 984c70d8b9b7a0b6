//! What the web console stores: the batch listing, reviews, sign-in sessions.

use pixelfarm_core::*;
use std::time::Duration;

use super::fixtures::{LEASE, Store, all_jobs, completion, manifest, tenant};

#[allow(missing_docs)]
pub async fn batches_are_listed_newest_first(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let other = tenant(&s, "b", 1).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let spec = manifest(&format!("b{i}"), 2, 0, None);
        ids.push(s.submit(t, &spec, 1).await.unwrap().batch_id);
    }
    s.submit(other, &manifest("theirs", 1, 0, None), 1)
        .await
        .unwrap();
    ids.reverse();
    let first = s.batches(t, None, 3).await.unwrap();
    let rest = s.batches(t, Some(first[2].id), 3).await.unwrap();
    let listed: Vec<BatchId> = first.iter().chain(&rest).map(|b| b.id).collect();
    assert_eq!(
        listed, ids,
        "newest first, paged, none of the other tenant's"
    );
    assert_eq!((first[0].name.as_str(), first[0].counts.pending), ("b4", 2));
    assert!(s.batches(other, Some(ids[0]), 10).await.unwrap().is_empty());

    let text = s.batch_manifest(t, ids[0]).await.unwrap();
    assert!(text.starts_with("name: b4\n"), "{text}");
    let e = s.batch_manifest(other, ids[0]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[allow(missing_docs)]
pub async fn reviews_decide_all_or_none(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let other = tenant(&s, "b", 1).await;
    let b = s.submit(t, &manifest("b", 4, 0, None), 1).await.unwrap();
    let jobs = all_jobs(&s, t, b.batch_id).await;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    for &id in &ids[..3] {
        s.claim(id, "w", LEASE).await.unwrap().expect("claimable");
        assert!(s.complete(id, "w", 1, &completion()).await.unwrap());
    }
    let by = "pf_0123abcd";
    assert_eq!(
        s.review(t, &ids[..2], Some(Verdict::Approved), by)
            .await
            .unwrap(),
        2
    );
    // The pending job is refused, and with it the succeeded one beside it.
    let e = s
        .review(t, &[ids[2], ids[3]], Some(Verdict::Rejected), by)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("1 of the 2 jobs"), "{e}");
    assert_eq!(s.job(t, ids[2]).await.unwrap().review, None);
    // Another tenant cannot review them, nor learn whether they exist.
    let e = s
        .review(other, &ids[..1], Some(Verdict::Rejected), "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    // Asking twice for one job counts it once.
    assert_eq!(
        s.review(t, &[ids[2], ids[2]], Some(Verdict::Rejected), "pf_99")
            .await
            .unwrap(),
        1
    );
    let listed = all_jobs(&s, t, b.batch_id).await;
    let review = |id: JobId| {
        listed
            .iter()
            .find(|j| j.id == id)
            .and_then(|j| j.review.clone())
    };
    let approved = review(ids[0]).expect("reviewed");
    assert_eq!(
        (approved.verdict, approved.by.as_str()),
        (Verdict::Approved, by)
    );
    assert!((chrono::Utc::now() - approved.at).num_seconds().abs() < 600);
    assert_eq!(review(ids[2]).map(|r| r.verdict), Some(Verdict::Rejected));
    assert_eq!(review(ids[3]), None);
    // Clearing a review removes who and when with it.
    assert_eq!(s.review(t, &ids[..1], None, by).await.unwrap(), 1);
    assert_eq!(s.job(t, ids[0]).await.unwrap().review, None);
    let batch = s.batch(t, b.batch_id).await.unwrap();
    assert_eq!(batch.counts.succeeded, 3, "a review changes no counts");
}

#[allow(missing_docs)]
pub async fn sessions_end_with_their_key(s: Store) {
    let t = tenant(&s, "a", 1).await;
    let key = NewApiKey::new("pf_console-key", None, false);
    s.add_api_key(t, &key).await.unwrap();
    let open = |token: &str, key_sha256: &str, ttl: Duration| NewSession {
        token_sha256: sha256_hex(token.as_bytes()),
        key_sha256: key_sha256.to_string(),
        csrf: format!("csrf-{token}"),
        ttl,
    };
    let unknown = open("t0", &hash_api_key("nobody's"), SESSION_TTL);
    assert_eq!(s.open_session(&unknown).await.unwrap(), None);

    let new = open("t1", &key.key_sha256, SESSION_TTL);
    let session = s.open_session(&new).await.unwrap().expect("a valid key");
    assert_eq!(
        (session.tenant, session.who.as_str(), session.csrf.as_str()),
        (t, key.prefix.as_str(), "csrf-t1")
    );
    assert_eq!(s.session(&new.token_sha256).await.unwrap(), Some(session));
    assert_eq!(s.session(&sha256_hex(b"t2")).await.unwrap(), None);

    let short = open("t3", &key.key_sha256, Duration::from_millis(1));
    s.open_session(&short).await.unwrap().expect("opened");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.session(&short.token_sha256).await.unwrap(),
        None,
        "expired"
    );

    let other = open("t4", &key.key_sha256, SESSION_TTL);
    s.open_session(&other).await.unwrap().expect("opened");
    s.close_session(&other.token_sha256).await.unwrap();
    assert_eq!(
        s.session(&other.token_sha256).await.unwrap(),
        None,
        "signed out"
    );
    s.close_session(&other.token_sha256).await.unwrap();

    assert_eq!(s.revoke_api_keys(t, &key.prefix).await.unwrap(), 1);
    assert_eq!(
        s.session(&new.token_sha256).await.unwrap(),
        None,
        "key revoked"
    );
    let again = open("t5", &key.key_sha256, SESSION_TTL);
    assert_eq!(s.open_session(&again).await.unwrap(), None);
}
