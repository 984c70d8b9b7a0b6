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
            list_by_prefix_sorted, bad_keys_refused, large_object, concurrent_puts_same_key,
            get_limited_reads_up_to_the_limit, get_limited_refuses_larger_objects);
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

#[allow(missing_docs)]
pub async fn get_limited_reads_up_to_the_limit(s: S) {
    let data: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 253) as u8).collect();
    s.put("in/exact", Bytes::from(data.clone()), "image/png")
        .await
        .unwrap();
    let n = data.len() as u64;
    assert!(
        s.get_limited("in/exact", n).await.unwrap() == data,
        "at the limit"
    );
    assert!(s.get_limited("in/exact", n * 2).await.unwrap() == data);
    s.put("in/empty", Bytes::new(), "image/png").await.unwrap();
    assert!(s.get_limited("in/empty", 0).await.unwrap().is_empty());
    assert_eq!(
        s.get_limited("in/missing", n).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.get_limited("../in/exact", n).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[allow(missing_docs)]
pub async fn get_limited_refuses_larger_objects(s: S) {
    let data = vec![7u8; (12 << 20) + 1];
    s.put("in/big", Bytes::from(data), "image/png")
        .await
        .unwrap();
    for max in [0, 1, 12 << 20] {
        let e = s.get_limited("in/big", max).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{max}: {e}");
        assert_eq!(
            e.to_string(),
            format!(
                "object `in/big` is {} bytes; accepted: at most {max} bytes",
                (12 << 20) + 1
            )
        );
    }
    assert_eq!(
        s.get_limited("in/big", (12 << 20) + 1).await.unwrap().len(),
        (12 << 20) + 1
    );
}
