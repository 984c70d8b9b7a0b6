//! Test support: a test's objects under a bucket prefix of its own, or a folder of its own,
//! removed when the test ends ([`TestPrefix`] / [`TestDir`] drop, also when the test fails), so
//! the suites leave nothing behind in the shared object store. `PIXELFARM_TEST_KEEP=1` keeps
//! them for a post-mortem.

use pixelfarm_core::BlobStore;
use std::path::PathBuf;

use crate::{S3Blob, S3Config};

fn keep() -> bool {
    std::env::var("PIXELFARM_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn env(k: &str, default: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| default.to_string())
}

/// S3 settings of the test SeaweedFS (`scripts/dev-services` starts it with these credentials;
/// `PIXELFARM_TEST_S3_ENDPOINT`, `_ACCESS_KEY` and `_SECRET_KEY` point elsewhere).
pub fn s3_config(bucket: &str, prefix: &str) -> S3Config {
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

/// A store under a new prefix of `bucket` (created if missing), its settings, and the guard
/// that empties the prefix.
///
/// # Panics
/// When the test store cannot be reached, saying where it was looked for.
pub async fn s3_store(bucket: &str) -> (S3Blob, S3Config, TestPrefix) {
    let cfg = s3_config(bucket, &format!("t-{}", uuid::Uuid::new_v4().simple()));
    let s = S3Blob::connect(&cfg).await.expect("settings are complete");
    s.ensure_bucket().await.unwrap_or_else(|e| {
        panic!(
            "S3 at {} is needed for this test (run .ci/run): {}",
            cfg.endpoint,
            e.chain()
        )
    });
    (s, cfg.clone(), TestPrefix::new(cfg))
}

/// Every object under `cfg.prefix` in `cfg.bucket`, deleted on drop.
pub struct TestPrefix {
    cfg: S3Config,
}

impl TestPrefix {
    /// A guard for the objects under `cfg.prefix` (which must not be empty: that would be the
    /// whole bucket).
    ///
    /// # Panics
    /// When `cfg.prefix` is empty.
    pub fn new(cfg: S3Config) -> Self {
        assert!(
            !cfg.prefix.trim_matches('/').is_empty(),
            "a test prefix must not be empty"
        );
        TestPrefix { cfg }
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        if keep() {
            eprintln!(
                "PIXELFARM_TEST_KEEP: keeping s3://{}/{}",
                self.cfg.bucket, self.cfg.prefix
            );
            return;
        }
        let cfg = self.cfg.clone();
        // A runtime of its own on a thread of its own: drop may run inside a runtime (or while
        // a test panics), where blocking on this one is not allowed.
        let r = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(delete_prefix(&cfg))
        })
        .join()
        .unwrap_or_else(|_| Err("cleanup thread panicked".into()));
        if let Err(e) = r {
            eprintln!(
                "warning: cannot delete s3://{}/{}: {e}",
                self.cfg.bucket, self.cfg.prefix
            );
        }
    }
}

/// Delete every object under `cfg.prefix` (the whole bucket when it is empty); returns how many.
///
/// # Errors
/// When the store is unreachable or refuses a listing or a deletion.
pub async fn delete_prefix(cfg: &S3Config) -> Result<usize, String> {
    let s = S3Blob::connect(cfg).await.map_err(|e| e.to_string())?;
    let keys = match s.list("").await {
        Ok(keys) => keys,
        // No bucket, nothing to delete.
        Err(e) if e.kind() == pixelfarm_core::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let s = std::sync::Arc::new(s);
    // 32 at a time: a fault-suite stack holds thousands of objects.
    for chunk in keys.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for k in chunk {
            let (s, k) = (s.clone(), k.clone());
            set.spawn(async move {
                s.delete(&k)
                    .await
                    .map_err(|e| format!("cannot delete {k}: {e}"))
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
    }
    Ok(keys.len())
}

/// A folder of a test's own, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A new, not yet created, folder under the temp dir.
    pub fn new() -> Self {
        TestDir(
            std::env::temp_dir().join(format!("pixelfarm-blob-{}", uuid::Uuid::new_v4().simple())),
        )
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !keep() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
