//! Object storage behind [`pixelfarm_core::BlobStore`].
//!
//! # Layout
//! - [`s3`]: [`S3Blob`], any S3-compatible store (AWS, SeaweedFS, MinIO, GCS interop), and
//!   [`S3UrlSigner`], presigned GET URLs of its objects.
//! - [`local`]: [`LocalBlob`], a directory (the embedded mode's output folder).
//! - [`testsuite`]: the conformance suite both pass.
//! - [`testing`]: [`testing::TestPrefix`] / [`testing::TestDir`], a test's objects, removed when it ends.
//! - `checks`: what both stores check: the keys accepted ([`validate_key`]), objects over a size
//!   limit.

mod checks;
pub mod local;
pub mod s3;
pub mod testing;
pub mod testsuite;

pub(crate) use checks::too_large;
pub use checks::validate_key;
pub use local::LocalBlob;
pub use s3::{MAX_SIGNED_URL_SECONDS, S3Blob, S3Config, S3UrlSigner};
