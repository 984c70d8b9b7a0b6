//! The README's "Running the services" quick start, command by command, on the real services: a
//! database that does not exist yet, the shipped settings (`config/`, environment `local`), the
//! shipped model, `submit --wait` and `fetch`. Only what must differ on a shared machine is set:
//! free ports, a fresh database name, and broker and bucket prefixes of its own.

use pixelfarm_e2e::*;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The commands of the README's quick start, comments and `cargo run` wrappers aside.
const QUICK_START: [&str; 7] = [
    "scripts/dev-services",
    "pixelfarm-scheduler migrate",
    "pixelfarm-scheduler",
    "pixelfarm-worker",
    "export PIXELFARM_API_KEY=dev-key",
    "pixelfarm submit examples/shapes.yaml --wait",
    "pixelfarm fetch <batch> --out results/",
];

/// The quick start as the README shows it, each line reduced to its command.
fn readme_quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split_once("## Running the services")
        .expect("README has a `Running the services` section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section opens with a sh block")
        .0;
    block
        .lines()
        .map(|l| {
            let cmd = l.split_once(" #").map_or(l, |(c, _)| c).trim();
            cmd.replace("cargo run -p pixelfarm-scheduler --", "pixelfarm-scheduler")
                .replace("cargo run -p pixelfarm-scheduler", "pixelfarm-scheduler")
                .replace("cargo run -p pixelfarm-worker", "pixelfarm-worker")
                .replace("cargo run -p pixelfarm-cli --", "pixelfarm")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The server's maintenance database (`PIXELFARM_TEST_DATABASE_URL`, as for every test).
fn admin_url() -> String {
    std::env::var("PIXELFARM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| pixelfarm_store::testing::DEFAULT_ADMIN_URL.into())
}

fn amqp_url() -> String {
    std::env::var("PIXELFARM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// One process of the quick start: run from the repository root with the shipped settings, and
/// only `extra` on top of a clean environment.
fn command(binary: &str, extra: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin(binary));
    cmd.current_dir(repo())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("RUST_LOG", "info,sqlx=warn,lapin=warn,aws=warn,h2=warn")
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start a service with its log in `log`, and wait for its `/readyz`.
async fn serve(binary: &str, env: &[(String, String)], http: u16, log: &Path) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command(binary, env)
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{binary} exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{binary} not ready in 120 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Proc {
        child,
        log: log.to_path_buf(),
        http: format!("127.0.0.1:{http}").parse().unwrap(),
    }
}

/// Drops the database `migrate` created, even when the test fails (the broker names and the
/// objects have guards of their own).
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if pixelfarm_store::testing::keep() {
            eprintln!("PIXELFARM_TEST_KEEP: keeping database {}", self.0);
            return;
        }
        let db = self.0.clone();
        let dropped = pixelfarm_store::testing::block_on_own_runtime(async move {
            let pool = sqlx::PgPool::connect(&admin_url())
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        if let Err(e) = dropped {
            eprintln!("cannot drop database {}: {e}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_quick_start_works_as_written() {
    assert_eq!(
        readme_quick_start(),
        QUICK_START,
        "the README's quick start changed: make this test run what it says"
    );

    // scripts/dev-services: idempotent, leaves running services alone.
    let out = Command::new(repo().join("scripts/dev-services"))
        .current_dir(repo())
        .output()
        .await
        .unwrap();
    ok("scripts/dev-services", &out);

    let uid = uuid::Uuid::new_v4().simple().to_string();
    let db = format!("{}qs_{uid}", pixelfarm_store::testing::TEST_DB_PREFIX);
    let prefix = format!("e2e-qs-{uid}");
    // Dropped after the processes (declared before them), so nothing re-declares behind them.
    let _database = DropDatabase(db.clone());
    let _names = pixelfarm_broker::testing::TestTopology::new(&amqp_url(), &prefix, &["shapes"]);
    let _objects = pixelfarm_blob::testing::TestPrefix::new(pixelfarm_blob::S3Config {
        bucket: "pixelfarm".into(),
        ..s3_config(&prefix)
    });
    let (grpc, http, worker_http) = (free_port(), free_port(), free_port());
    let env: Vec<(String, String)> = [
        (
            "PIXELFARM__DATABASE__URL",
            format!("{}/{db}", admin_url().rsplit_once('/').unwrap().0),
        ),
        (
            "PIXELFARM__SCHEDULER__GRPC_ADDR",
            format!("127.0.0.1:{grpc}"),
        ),
        (
            "PIXELFARM__SCHEDULER__HTTP_ADDR",
            format!("127.0.0.1:{http}"),
        ),
        (
            "PIXELFARM__WORKER__HTTP_ADDR",
            format!("127.0.0.1:{worker_http}"),
        ),
        ("PIXELFARM__BROKER__PREFIX", prefix.clone()),
        ("PIXELFARM__BLOB__PREFIX", prefix.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let dir = tempfile::tempdir().unwrap();

    // pixelfarm-scheduler migrate: creates the missing database, then migrates it.
    let out = command("pixelfarm-scheduler", &env)
        .arg("migrate")
        .output()
        .await
        .unwrap();
    ok("pixelfarm-scheduler migrate", &out);

    let scheduler = serve(
        "pixelfarm-scheduler",
        &env,
        http,
        &dir.path().join("scheduler.log"),
    )
    .await;
    let worker = serve(
        "pixelfarm-worker",
        &env,
        worker_http,
        &dir.path().join("worker.log"),
    )
    .await;
    let logs = || {
        format!(
            "--- scheduler ---\n{}\n--- worker ---\n{}",
            scheduler.tail(),
            worker.tail()
        )
    };

    // export PIXELFARM_API_KEY=dev-key; pixelfarm submit examples/shapes.yaml --wait
    let mut cli_env = env.clone();
    cli_env.push(("PIXELFARM_API_KEY".into(), "dev-key".into()));
    cli_env.push((
        "PIXELFARM_API_URL".into(),
        format!("http://127.0.0.1:{grpc}"),
    ));
    let submit = tokio::time::timeout(
        Duration::from_secs(300),
        command("pixelfarm", &cli_env)
            .args(["submit", "examples/shapes.yaml", "--wait"])
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("submit --wait did not end in 300 s\n{}", logs()))
    .unwrap();
    let batch = ok("pixelfarm submit --wait", &submit).trim().to_string();
    let stderr = String::from_utf8_lossy(&submit.stderr);
    assert!(
        stderr.contains("48 jobs") && stderr.contains("done: ok 48"),
        "{stderr}\n{}",
        logs()
    );

    // pixelfarm fetch <batch> --out results/
    let results = dir.path().join("results");
    let fetch = command("pixelfarm", &cli_env)
        .args(["fetch", &batch, "--out", results.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let said = ok("pixelfarm fetch", &fetch);
    assert!(said.starts_with("48 images, 48 lines"), "{said}");
    let lines = std::fs::read_to_string(results.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 48);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["state"], "succeeded", "{line}");
        let png = std::fs::read(results.join(v["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            pixelfarm_core::sha256_hex(&png),
            v["sha256"].as_str().unwrap()
        );
    }

    // The same batch as a dataset, over the API: every image, split by variant.
    let shards = dir.path().join("shards");
    let fetch = command("pixelfarm", &cli_env)
        .args(["fetch", &batch, "--format", "webdataset", "--out"])
        .arg(&shards)
        .output()
        .await
        .unwrap();
    let said = ok("pixelfarm fetch --format webdataset", &fetch);
    assert!(said.starts_with("48 samples (train "), "{said}");
    let mut pngs = 0;
    for shard in std::fs::read_dir(&shards).unwrap() {
        let name = shard.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with("-000000.tar"), "one shard per split: {name}");
        let tar = std::fs::read(shards.join(&name)).unwrap();
        pngs += tar
            .windows(8)
            .filter(|w| *w == b"\x89PNG\r\n\x1a\n")
            .count();
    }
    assert_eq!(pngs, 48);
}
