//! `pixelfarm-test-sweep`: remove what earlier test runs left in the shared services -- test
//! databases (`pixelfarm_test_*`), RabbitMQ queues and exchanges (`e2e-*`, `pixelfarm-test-*`)
//! and the objects of the test buckets. Every test removes its own when it ends; this backstop
//! (run by `scripts/test` before the tests) finds what killed runs left. It assumes no other
//! test run is using the services meanwhile.
//!
//! RabbitMQ names are listed with `rabbitmqctl` (AMQP cannot list), so they are swept only
//! where it reaches the broker; deletion goes over AMQP (`PIXELFARM_TEST_AMQP_URL`).
//!
//! `pixelfarm-test-sweep PREFIX...` removes only the RabbitMQ names starting with one of the
//! PREFIXes (e.g. one kept with `PIXELFARM_TEST_KEEP=1`), leaving the rest alone.

use pixelfarm_blob::testing::delete_prefix;
use pixelfarm_broker::testing::{delete_names, test_amqp_url};
use pixelfarm_store::testing::{DEFAULT_ADMIN_URL, TEST_DB_PREFIX};
use std::process::Command;

/// Name prefixes of the suites' RabbitMQ exchanges and queues (e2e stacks, broker conformance).
const BROKER_PREFIXES: &[&str] = &["e2e-", "pixelfarm-test-"];
/// Buckets only tests write to (e2e stacks, blob conformance).
const TEST_BUCKETS: &[&str] = &[pixelfarm_e2e::BUCKET, "pixelfarm-conformance"];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    if !only.is_empty() {
        let prefixes: Vec<&str> = only.iter().map(String::as_str).collect();
        println!("rabbitmq: {}", sweep_broker(&prefixes).await?);
        return Ok(());
    }
    let mut failed = false;
    match sweep_broker(BROKER_PREFIXES).await {
        Ok(msg) => println!("rabbitmq: {msg}"),
        Err(e) => {
            eprintln!("rabbitmq: {e}");
            failed = true;
        }
    }
    match sweep_databases().await {
        Ok(n) => println!("postgres: dropped {n} test database(s)"),
        Err(e) => {
            eprintln!("postgres: {e}");
            failed = true;
        }
    }
    for bucket in TEST_BUCKETS {
        let cfg = pixelfarm_blob::S3Config {
            bucket: (*bucket).to_string(),
            prefix: String::new(),
            ..pixelfarm_e2e::s3_config("")
        };
        match delete_prefix(&cfg).await {
            Ok(n) => println!("s3: deleted {n} object(s) from test bucket {bucket}"),
            Err(e) => {
                eprintln!("s3: bucket {bucket}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err("some leftovers could not be removed (see above)".into());
    }
    Ok(())
}

fn rabbitmqctl_names(what: &str, prefixes: &[&str]) -> Result<Vec<String>, String> {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", what, "name"])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .map(String::from)
        .collect())
}

async fn sweep_broker(prefixes: &[&str]) -> Result<String, String> {
    let (queues, exchanges) = match (
        rabbitmqctl_names("list_queues", prefixes),
        rabbitmqctl_names("list_exchanges", prefixes),
    ) {
        (Ok(q), Ok(x)) => (q, x),
        (Err(e), _) | (_, Err(e)) => {
            return Ok(format!("not swept, cannot list names ({e})"));
        }
    };
    delete_names(&test_amqp_url(), &queues, &exchanges).await?;
    Ok(format!(
        "deleted {} queue(s) and {} exchange(s) named {}*",
        queues.len(),
        exchanges.len(),
        prefixes.join("* / ")
    ))
}

async fn sweep_databases() -> Result<usize, String> {
    let admin = std::env::var("PIXELFARM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .map_err(|e| format!("cannot connect to {admin}: {e}"))?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(TEST_DB_PREFIX)
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?;
    for n in &names {
        // Names come from pg_database and carry the test prefix; quoted as identifiers.
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            n.replace('"', "\"\"")
        ))
        .execute(&pool)
        .await
        .map_err(|e| format!("drop {n}: {e}"))?;
    }
    pool.close().await;
    Ok(names.len())
}
