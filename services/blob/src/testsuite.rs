//! The [`BlobStore`] conformance suite, run against every implementation via
//! [`blob_conformance!`](crate::blob_conformance), each case on a fresh bucket prefix or directory.

use bytes::Bytes;
use pixelfarm_core::{BlobStore, ErrorKind};
use std::sync::Arc;

/// One `#[tokio::test]` per case, each on a store made by `$make` (async, giving
/// `(Arc<dyn BlobStore>, cleanup)`; the cleanup guard, e.g. a
/// [`TestPrefix`](crate::testing::TestPrefix), is dropped when the case ends, also when it fails).
#[macro_export]
macro_rules! blob_conformance {
    ($make:expr) => {
        $crate::blob_conformance!(@cases $make;
            put_get_round_trip, overwrite_replaces, missing_get_is_not_found, delete_is_idempotent,
            list_by_prefix_sorted, bad_keys_refused, large_object, concurrent_puts_same_key);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _cleanup) = $make.await;
                $crate::testsuite::$case(store).await;
            }
        )*
    };
}

type S = Arc<dyn BlobStore>;

#[allow(missing_docs)]
pub async fn put_get_round_trip(s: S) {
    s.put(
        "images/ab/x.png",
        Bytes::from_static(b"\x89PNG data"),
        "image/png",
    )
    .await
    .unwrap();
    assert_eq!(
        &s.get("images/ab/x.png").await.unwrap()[..],
        b"\x89PNG data"
    );
}

#[allow(missing_docs)]
pub async fn overwrite_replaces(s: S) {
    s.put("k/a", Bytes::from_static(b"one"), "text/plain")
        .await
        .unwrap();
    s.put("k/a", Bytes::from_static(b"two"), "text/plain")
        .await
        .unwrap();
    assert_eq!(&s.get("k/a").await.unwrap()[..], b"two");
    assert_eq!(s.list("k/").await.unwrap(), vec!["k/a".to_string()]);
}

#[allow(missing_docs)]
pub async fn missing_get_is_not_found(s: S) {
    assert_eq!(
        s.get("nope/x").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[allow(missing_docs)]
pub async fn delete_is_idempotent(s: S) {
    s.put("d/x", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap();
    s.delete("d/x").await.unwrap();
    s.delete("d/x").await.expect("deleting a missing key is ok");
    assert_eq!(s.get("d/x").await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[allow(missing_docs)]
pub async fn list_by_prefix_sorted(s: S) {
    for k in ["a/2", "a/1", "a/sub/3", "b/1"] {
        s.put(k, Bytes::from_static(b"."), "text/plain")
            .await
            .unwrap();
    }
    assert_eq!(s.list("a/").await.unwrap(), vec!["a/1", "a/2", "a/sub/3"]);
    assert_eq!(s.list("").await.unwrap().len(), 4);
    assert!(s.list("zzz/").await.unwrap().is_empty());
}

#[allow(missing_docs)]
pub async fn bad_keys_refused(s: S) {
    for k in ["../escape", "/abs", "a//b", ""] {
        assert_eq!(
            s.put(k, Bytes::new(), "x").await.unwrap_err().kind(),
            ErrorKind::Invalid,
            "{k:?}"
        );
    }
}

#[allow(missing_docs)]
pub async fn large_object(s: S) {
    let data: Vec<u8> = (0..(12 << 20)).map(|i: u32| (i % 251) as u8).collect();
    s.put(
        "big/blob",
        Bytes::from(data.clone()),
        "application/octet-stream",
    )
    .await
    .unwrap();
    assert!(s.get("big/blob").await.unwrap() == data);
}

#[allow(missing_docs)]
pub async fn concurrent_puts_same_key(s: S) {
    // Atomic puts: whatever wins, the object is one of the written values, never a mix.
    let a = vec![b'a'; 1 << 20];
    let b = vec![b'b'; 1 << 20];
    let (r1, r2) = tokio::join!(
        s.put("race/k", Bytes::from(a.clone()), "x"),
        s.put("race/k", Bytes::from(b.clone()), "x")
    );
    r1.unwrap();
    r2.unwrap();
    let got = s.get("race/k").await.unwrap();
    assert!(got == a || got == b);
}
