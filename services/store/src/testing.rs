//! Fresh, isolated stores for tests: a new Postgres database or a new SQLite file per call,
//! each removed when its guard ([`TestDatabase`], [`TestStore`]) is dropped -- at the end of the
//! test, also when it fails -- so tests leave nothing behind in the shared server.
//! `PIXELFARM_TEST_KEEP=1` keeps them for a post-mortem (their names are printed).

use pixelfarm_core::JobStore;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{PgStore, SqliteStore};

/// Admin URL used to create test databases; override with `PIXELFARM_TEST_DATABASE_URL`.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of every database tests create (CI drops them at start).
pub const TEST_DB_PREFIX: &str = "pixelfarm_test_";

/// Whether tests keep what they made (`PIXELFARM_TEST_KEEP` set to anything but `0`).
pub fn keep() -> bool {
    std::env::var("PIXELFARM_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Run `f` to completion on a runtime of its own, on a thread of its own: for cleanup in `Drop`,
/// which may run inside (or outside) any other runtime, also while a test panics.
///
/// # Errors
/// What `f` returns, or that the thread panicked.
pub fn block_on_own_runtime<F, T>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|_| Err("cleanup thread panicked".into()))
}

/// A Postgres database made for one test; dropping it drops the database (its connections
/// are terminated first), unless [`keep`].
pub struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name (`pixelfarm_test_…`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if keep() {
            eprintln!("PIXELFARM_TEST_KEEP: keeping database {}", self.url);
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let r = block_on_own_runtime(async move {
            let pool = sqlx::PgPool::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            // The name is ours (prefix + uuid), not input: safe to splice.
            let r = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            pool.close().await;
            r
        });
        if let Err(e) = r {
            eprintln!("warning: cannot drop test database {}: {e}", self.name);
        }
    }
}

/// Create an empty, migrated Postgres database, dropped when the returned guard is.
///
/// # Panics
/// When Postgres is unreachable: tests need the real server (`.ci/run` starts it).
pub async fn fresh_postgres_db() -> TestDatabase {
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
    // From here on the guard drops the database, also if migrating fails.
    let db = TestDatabase { admin, name, url };
    PgStore::connect(&db.url, 4)
        .await
        .expect("connect test db")
        .migrate()
        .await
        .expect("migrate test db");
    db
}

/// A store for one test and what to remove when it ends: the conformance suites' `$make`.
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn JobStore>,
    /// Removed when this is dropped.
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { _db: TestDatabase },
    Sqlite(PathBuf),
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Cleanup::Sqlite(path) = &self.cleanup {
            if keep() {
                eprintln!("PIXELFARM_TEST_KEEP: keeping {}", path.display());
                return;
            }
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// A migrated Postgres store on a fresh database, dropped with the returned [`TestStore`].
pub async fn fresh_postgres_store() -> TestStore {
    let db = fresh_postgres_db().await;
    let store = Arc::new(
        PgStore::connect(db.url(), 8)
            .await
            .expect("connect test db"),
    );
    TestStore {
        store,
        cleanup: Cleanup::Postgres { _db: db },
    }
}

/// A SQLite store in a new file under the temp dir, removed with the returned [`TestStore`].
pub async fn fresh_sqlite_store() -> TestStore {
    let path = std::env::temp_dir().join(format!(
        "pixelfarm-test-{}.sqlite",
        uuid::Uuid::new_v4().simple()
    ));
    let store = Arc::new(SqliteStore::open(&path).await.expect("open sqlite test db"));
    TestStore {
        store,
        cleanup: Cleanup::Sqlite(path),
    }
}
