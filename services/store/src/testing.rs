//! Fresh, isolated stores for tests: a new Postgres database or a new SQLite file per call.

use pixelfarm_core::JobStore;
use std::sync::Arc;

use crate::{PgStore, SqliteStore};

/// Admin URL used to create test databases; override with `PIXELFARM_TEST_DATABASE_URL`.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of every database tests create (CI drops them at start).
pub const TEST_DB_PREFIX: &str = "pixelfarm_test_";

/// Create an empty, migrated Postgres database and return its URL.
///
/// # Panics
/// When Postgres is unreachable: tests need the real server (`.ci/run` starts it).
pub async fn fresh_postgres_url() -> String {
    let admin = std::env::var("PIXELFARM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
        panic!("postgres at {admin} is needed for this test (run .ci/run): {e}")
    });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    let (base, _) = admin
        .rsplit_once('/')
        .expect("admin url has a database path");
    let url = format!("{base}/{name}");
    PgStore::connect(&url, 4)
        .await
        .expect("connect test db")
        .migrate()
        .await
        .expect("migrate test db");
    url
}

/// A migrated Postgres store on a fresh database.
pub async fn fresh_postgres_store() -> Arc<dyn JobStore> {
    let url = fresh_postgres_url().await;
    Arc::new(PgStore::connect(&url, 8).await.expect("connect test db"))
}

/// A SQLite store in a new file under the temp dir.
pub async fn fresh_sqlite_store() -> Arc<dyn JobStore> {
    let path = std::env::temp_dir().join(format!(
        "pixelfarm-test-{}.sqlite",
        uuid::Uuid::new_v4().simple()
    ));
    Arc::new(SqliteStore::open(&path).await.expect("open sqlite test db"))
}
