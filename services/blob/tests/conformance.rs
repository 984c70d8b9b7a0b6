//! Every BlobStore implementation passes the same suite; S3 is a real SeaweedFS server.

use pixelfarm_blob::testing::{TestDir, TestPrefix};
use pixelfarm_blob::{LocalBlob, S3Blob, S3Config};
use pixelfarm_core::BlobStore;
use std::sync::Arc;

/// The S3 endpoint the tests use (`.ci/run` starts SeaweedFS there with these credentials).
pub fn test_s3_config(bucket: &str, prefix: &str) -> S3Config {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    S3Config {
        bucket: bucket.to_string(),
        endpoint: env("PIXELFARM_TEST_S3_ENDPOINT", "http://127.0.0.1:8333"),
        region: "us-east-1".into(),
        access_key_id: env("PIXELFARM_TEST_S3_ACCESS_KEY", "pixelfarm"),
        secret_access_key: env("PIXELFARM_TEST_S3_SECRET_KEY", "pixelfarm-secret"),
        path_style: true,
        prefix: prefix.to_string(),
        ..S3Config::default()
    }
}

/// A store under a prefix of its own, emptied when the case ends.
async fn s3() -> (Arc<dyn BlobStore>, TestPrefix) {
    let cfg = test_s3_config(
        "pixelfarm-conformance",
        &format!("t-{}", uuid::Uuid::new_v4().simple()),
    );
    let s = S3Blob::connect(&cfg).await.unwrap();
    s.ensure_bucket().await.unwrap_or_else(|e| {
        panic!(
            "S3 at {} is needed for this test (run .ci/run): {}",
            cfg.endpoint,
            e.chain()
        )
    });
    (Arc::new(s), TestPrefix::new(cfg))
}

/// A folder of its own, removed when the case ends.
async fn local() -> (Arc<dyn BlobStore>, TestDir) {
    let dir = TestDir::new();
    (Arc::new(LocalBlob::open(&dir.0).await.unwrap()), dir)
}

mod s3 {
    pixelfarm_blob::blob_conformance!(super::s3());
}

mod local_dir {
    pixelfarm_blob::blob_conformance!(super::local());
}
