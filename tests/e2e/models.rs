//! Jobs that nothing can serve (docs/models.md): a model no worker ever served is refused at
//! submit, with nothing written and no queue declared; the jobs of a known model whose workers are
//! gone wait, and `pixelfarm submit --wait` says so, then finishes once a worker serves it.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use pixelfarm_core::ErrorKind;
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::*;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

fn amqp_url() -> String {
    std::env::var("PIXELFARM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Whether RabbitMQ has a queue called `name` (a passive declare creates nothing).
async fn queue_exists(name: &str) -> bool {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("rabbitmq is needed for this test");
    let channel = conn.create_channel().await.unwrap();
    let found = channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = conn.close(200, "done").await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_no_worker_serves_is_refused_at_submit() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let a = stack.client(KEY_A).await;
    let typo = manifest("typo", 5, None).replace("model: test", "model: tset");

    // gRPC (the CLI's path): INVALID_ARGUMENT naming the field, its line and what is accepted.
    let e = a.submit(typo.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("manifest field `model` (line 2): `tset` is served by no worker")
            && msg.contains("accepted: shapes, test"),
        "{msg}"
    );

    // HTTP: 400 with the same message.
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/batches", stack.scheduler.http))
        .bearer_auth(KEY_A)
        .body(typo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("`tset` is served by no worker")
    );

    // Nothing was written, and no queue exists for the typed name (the served model's does).
    let pool = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(batches, 0);
    tokio::time::sleep(Duration::from_millis(500)).await; // a dispatcher pass or ten
    assert!(!queue_exists(&format!("{}.jobs.tset", stack.prefix)).await);
    assert!(queue_exists(&format!("{}.jobs.test", stack.prefix)).await);

    // The served model is accepted as usual.
    let out = a.submit(manifest("ok", 5, None)).await.unwrap();
    let v = wait_batch(&stack, &a, out.batch_id, Duration::from_secs(60), |v| {
        v.done
    })
    .await;
    assert_eq!(v.status.counts.succeeded, 5);
    assert_eq!(
        sample(
            &scrape(stack.scheduler.http).await,
            "pixelfarm_model_live_workers{model=\"test\"}"
        ),
        1.0
    );
}

/// Read `pixelfarm`'s stderr lines until one contains `needle`, or panic after `timeout`.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    seen: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return;
                }
            }
            other => panic!("no `{needle}` on stderr ({other:?}); stderr so far:\n{seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_wait_says_when_no_live_worker_serves_the_model() {
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    // The only worker drains and withdraws: `test` is known, but nothing serves it now.
    stack.workers[0].signal("TERM");
    let status = stack.workers[0].child.wait().await.unwrap();
    assert!(status.success(), "{}", stack.workers[0].tail());
    let live = "pixelfarm_model_live_workers{model=\"test\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&scrape(stack.scheduler.http).await, live) != 0.0 {
        assert!(Instant::now() < deadline, "the gauge shows no live worker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Exactly what a user types, as a child process.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.yaml");
    std::fs::write(&file, manifest("stranded", 10, None)).unwrap();
    let mut cli = tokio::process::Command::new(bin("pixelfarm"))
        .args(["submit", file.to_str().unwrap(), "--wait"])
        .env("PIXELFARM_API_URL", &stack.grpc_url)
        .env("PIXELFARM_API_KEY", KEY_A)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(cli.stdout.take().unwrap()).lines();
    let batch: pixelfarm_core::BatchId =
        stdout.next_line().await.unwrap().unwrap().parse().unwrap();
    let mut stderr = BufReader::new(cli.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    read_until(
        &mut stderr,
        &mut seen,
        "waiting: no live worker serves model `test`; its 10 unfinished jobs wait until a worker with `test` in worker.models starts",
        Duration::from_secs(20),
    )
    .await;

    // The jobs wait as `pending` (not published), and `status` says why too.
    let a = stack.client(KEY_A).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = a.batch(batch).await.unwrap();
    assert_eq!(
        (
            v.status.counts.pending,
            v.status.counts.queued,
            v.live_workers
        ),
        (10, 0, Some(0)),
        "{:?}",
        v.status.counts
    );
    let status = tokio::process::Command::new(bin("pixelfarm"))
        .args(["status", &batch.to_string()])
        .env("PIXELFARM_API_URL", &stack.grpc_url)
        .env("PIXELFARM_API_KEY", KEY_A)
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("waiting: no live worker serves model `test`"),
        "{status:?}"
    );

    // A worker serving `test` starts: the wait says so and ends with every job done.
    stack.add_worker().await;
    read_until(
        &mut stderr,
        &mut seen,
        "a worker serving model `test` is live",
        Duration::from_secs(20),
    )
    .await;
    let exit = tokio::time::timeout(Duration::from_secs(60), cli.wait())
        .await
        .expect("submit --wait ends once the batch is done")
        .unwrap();
    read_until(
        &mut stderr,
        &mut seen,
        "done: ok 10",
        Duration::from_secs(5),
    )
    .await;
    assert!(exit.success(), "{exit:?}\n{seen:#?}\n{}", stack.logs());
}
