//! Every BlobStore implementation passes the same suite; S3 is a real SeaweedFS server.

use pixelfarm_blob::LocalBlob;
use pixelfarm_blob::testing::{TestDir, TestPrefix, s3_store};
use pixelfarm_core::BlobStore;
use std::sync::Arc;

/// A store under a prefix of its own, emptied when the case ends.
async fn s3() -> (Arc<dyn BlobStore>, TestPrefix) {
    let (s, _, guard) = s3_store("pixelfarm-conformance").await;
    (Arc::new(s), guard)
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
