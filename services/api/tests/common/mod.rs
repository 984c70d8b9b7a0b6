//! The API over the embedded mode's real stores (SQLite and a folder), for the API's tests.
//! Each test binary compiles this module and reads only some of its fields.
#![allow(dead_code)]

use pixelfarm_api::{ApiMetrics, BatchApi};
use pixelfarm_core::{BlobStore, JobStore, ModelName, TenantId};
use std::sync::Arc;

/// A `BatchApi` (3 attempts per job, `models` listed in `scheduler.models`) on a fresh SQLite
/// store and blob folder, with one tenant `t`.
pub struct Api {
    /// The API.
    pub api: BatchApi,
    /// Its store, to look at what was written.
    pub store: Arc<dyn JobStore>,
    /// The tenant `t`.
    pub tenant: TenantId,
    /// Holds the database and blobs: bind it (`dir: _dir`) for as long as the test runs.
    pub dir: tempfile::TempDir,
}

/// [`Api`] with `models` listed.
pub async fn api(models: &[&str]) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(
        pixelfarm_store::SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap(),
    );
    let blob: Arc<dyn BlobStore> = Arc::new(
        pixelfarm_blob::LocalBlob::open(dir.path().join("blobs"))
            .await
            .unwrap(),
    );
    let api = BatchApi::new(
        store.clone(),
        blob,
        3,
        models
            .iter()
            .map(|m| ModelName::parse(*m).unwrap())
            .collect(),
        ApiMetrics::register(&prometheus::Registry::new()),
    );
    let tenant = store.create_tenant("t", 1).await.unwrap();
    Api {
        api,
        store,
        tenant,
        dir,
    }
}
