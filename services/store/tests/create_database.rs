//! `pixelfarm-scheduler migrate` on a fresh server: the database named by `database.url` is
//! created when it is missing.

use pixelfarm_store::PgStore;
use pixelfarm_store::testing::{DEFAULT_ADMIN_URL, TEST_DB_PREFIX};

#[tokio::test]
async fn a_missing_database_is_created_once() {
    let admin =
        std::env::var("PIXELFARM_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let name = format!("{TEST_DB_PREFIX}create_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);

    let missing = PgStore::connect(&url, 1)
        .await
        .unwrap_err()
        .chain()
        .to_string();
    assert!(missing.contains("does not exist"), "{missing}");
    let created = PgStore::create_database_if_missing(&url).await;
    let again = PgStore::create_database_if_missing(&url).await;
    let migrated = match PgStore::connect(&url, 1).await {
        Ok(s) => {
            let r = s.migrate().await;
            s.pool().close().await;
            r
        }
        Err(e) => Err(e),
    };
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
    assert!(created.unwrap(), "created the first time");
    assert!(!again.unwrap(), "left alone once it exists");
    migrated.unwrap();
}
