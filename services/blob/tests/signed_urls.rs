//! [`S3UrlSigner`] against a real SeaweedFS: what a plain HTTP client holding only the URL can
//! and cannot do with it.

use bytes::Bytes;
use pixelfarm_blob::testing::s3_store;
use pixelfarm_blob::{MAX_SIGNED_URL_SECONDS, S3UrlSigner};
use pixelfarm_core::{BlobStore, ErrorKind, UrlSigner};
use std::time::Duration;

async fn get(url: &str) -> (u16, Bytes) {
    let r = reqwest::get(url).await.expect("the store answers");
    (r.status().as_u16(), r.bytes().await.expect("a body"))
}

#[tokio::test]
async fn a_signed_url_downloads_the_object_without_credentials_until_it_expires() {
    let (s, cfg, _guard) = s3_store("pixelfarm-conformance").await;
    let bytes = Bytes::from_static(b"\x89PNG signed url bytes");
    s.put("a/b/image.png", bytes.clone(), "image/png")
        .await
        .unwrap();
    let signer = S3UrlSigner::connect(&cfg, "").await.unwrap();

    let before = chrono::Utc::now();
    let long = signer
        .signed_get("a/b/image.png", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(long.url.starts_with(&cfg.endpoint), "{}", long.url);
    assert!(long.url.contains("X-Amz-Signature="), "{}", long.url);
    assert!(!long.url.contains(&cfg.secret_access_key), "{}", long.url);
    let valid_for = long.expires_at - before;
    assert!(
        (599..=600).contains(&valid_for.num_seconds()),
        "expires {} after signing",
        valid_for
    );
    assert_eq!(get(&long.url).await, (200, bytes.clone()));

    // The signature covers the key: the same query on another key is refused.
    let other = long.url.replace("image.png", "other.png");
    assert_eq!(get(&other).await.0, 403, "{other}");

    // A URL for a key with no object is made (signing makes no request); its GET is a 404.
    let missing = signer
        .signed_get("a/b/missing.png", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(get(&missing.url).await.0, 404);

    // Past its expiry the store refuses it.
    let short = signer
        .signed_get("a/b/image.png", Duration::from_secs(1))
        .await
        .unwrap();
    let wait = (short.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1500)).await;
    assert_eq!(get(&short.url).await.0, 403, "an expired URL");
}

#[tokio::test]
async fn the_urls_name_the_public_endpoint_and_it_signs_for_that_host() {
    let (s, cfg, _guard) = s3_store("pixelfarm-conformance").await;
    s.put("k.png", Bytes::from_static(b"public"), "image/png")
        .await
        .unwrap();
    // The same store reached by another name, as users outside the cluster would.
    let public = cfg.endpoint.replace("127.0.0.1", "localhost");
    assert_ne!(public, cfg.endpoint, "the test endpoint names 127.0.0.1");
    let signer = S3UrlSigner::connect(&cfg, &public).await.unwrap();
    let u = signer
        .signed_get("k.png", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(u.url.starts_with(&public), "{}", u.url);
    assert_eq!(get(&u.url).await, (200, Bytes::from_static(b"public")));
    // Sent to the other name, the signed host no longer matches.
    let moved = u.url.replacen(&public, &cfg.endpoint, 1);
    assert_eq!(get(&moved).await.0, 403, "{moved}");
}

#[tokio::test]
async fn bad_keys_and_expiries_are_refused_naming_what_is_accepted() {
    let (_s, cfg, _guard) = s3_store("pixelfarm-conformance").await;
    let signer = S3UrlSigner::connect(&cfg, "").await.unwrap();
    let e = signer
        .signed_get("../etc/passwd", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let e = signer
        .signed_get("k.png", Duration::from_secs(MAX_SIGNED_URL_SECONDS + 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("1 to {MAX_SIGNED_URL_SECONDS} s")),
        "{e}"
    );
}
