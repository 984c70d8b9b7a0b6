//! The distributed stack on real Postgres, RabbitMQ and SeaweedFS.

use pixelfarm_core::{BlobStore, Broker, ErrorKind, ImageFormat, JobState, ModelName};
use pixelfarm_e2e::results::{verify_results, wait_batch};
use pixelfarm_e2e::*;
use pixelfarm_image::verify::read;
use std::collections::BTreeMap;
use std::time::Duration;

/// A 500-job batch survives a SIGKILLed worker: every job succeeds exactly once, the bucket holds
/// exactly the 500 images the results name, with those bytes, and the completion counter moved by 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_survives_a_killed_worker() {
    let mut stack = Stack::start(StackOptions {
        workers: 2,
        concurrency: 2,
        render_delay_ms: 25,
        ..Default::default()
    })
    .await;
    let client = stack.client(KEY_A).await;
    let before = scrape(stack.scheduler.http).await;
    let completed = "pixelfarm_jobs_completed_total{model=\"test\",outcome=\"succeeded\"}";
    let start = sample(&before, completed);

    let out = client.submit(manifest("big", 500, None)).await.unwrap();
    assert_eq!((out.created, out.jobs), (true, 500));
    wait_batch(
        &stack,
        &client,
        out.batch_id,
        Duration::from_secs(60),
        |v| v.status.counts.succeeded >= 100,
    )
    .await;
    stack.workers[0].signal("KILL");
    let status = stack.workers[0].child.wait().await.unwrap();
    assert!(!status.success(), "SIGKILL ends the worker abnormally");
    stack.add_worker().await;

    let done = wait_batch(
        &stack,
        &client,
        out.batch_id,
        Duration::from_secs(180),
        |v| v.done,
    )
    .await;
    let c = &done.status.counts;
    assert_eq!(
        (c.succeeded, done.total),
        (500, 500),
        "every job succeeded: {c:?}\n{}",
        stack.logs()
    );

    // results.jsonl names 500 images whose bytes match, and the bucket holds exactly those.
    let by_key = verify_results(&stack, &client, out.batch_id, 500).await;
    let blob = stack.blob().await;
    // Each image has its provenance record beside it, and carries its parameters.
    let (key, _) = by_key.iter().next().unwrap();
    let prov: serde_json::Value =
        serde_json::from_slice(&blob.get(&key.replace(".png", ".json")).await.unwrap()).unwrap();
    assert_eq!(prov["schema"], "pixelfarm.provenance/v1");
    assert_eq!(prov["model_identity"]["test_pattern"], true);
    assert!(prov["timings"]["render"].as_f64().unwrap() > 0.0);
    let text = pixelfarm_image::decode_png_text(&blob.get(key).await.unwrap()).unwrap();
    assert!(
        text.iter()
            .any(|(k, v)| k == "parameters" && v.contains("Seed: "))
    );

    // The counter comes from the job rows, so the killed worker's jobs count too.
    let mut moved = 0.0;
    for _ in 0..50 {
        moved = sample(&scrape(stack.scheduler.http).await, completed) - start;
        if moved >= 500.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(moved, 500.0);

    let dir = tempfile::tempdir().unwrap();
    // Every /metrics passes promtool, and every metric the dashboard and alerts use is exported.
    let mut files = Vec::new();
    for (i, p) in std::iter::once(&stack.scheduler)
        .chain(stack.workers.iter().skip(1))
        .enumerate()
    {
        let s = scrape(p.http).await;
        promtool_check(&s);
        let f = dir.path().join(format!("scrape-{i}.txt"));
        std::fs::write(&f, s).unwrap();
        files.push(f);
    }
    let root = repo();
    let status = std::process::Command::new("python3")
        .arg(root.join("scripts/check-dashboard-metrics.py"))
        .arg(root.join("deploy/monitoring/pixelfarm-dashboard.json"))
        .arg(root.join("deploy/monitoring/alerts.yaml"))
        .arg("--")
        .args(&files)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the dashboard or alerts use a metric the services do not export"
    );
}

/// Cancel, idempotency, tenant isolation, manifest errors, HTTP + SSE, dead letters, and the
/// distributed stack giving the same bytes as the embedded mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_semantics_on_the_real_stack() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        concurrency: 2,
        render_delay_ms: 30,
        ..Default::default()
    })
    .await;
    let a = stack.client(KEY_A).await;
    let b = stack.client(KEY_B).await;
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let batches = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batches")
            .fetch_one(&db)
            .await
            .unwrap()
    };

    // A malformed manifest names the field and writes nothing.
    let bad = manifest("bad", 5, None).replace("width: 32", "width: 33");
    let e = a.submit(bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(
        e.to_string().contains("`defaults.width` (line 3)")
            && e.to_string().contains("multiple of 8"),
        "{e}"
    );
    assert_eq!(batches().await, 0);

    // Cancel mid-batch: what had not finished is cancelled (running jobs stop), the rest finishes.
    let out = a
        .submit(manifest("cancel-me", 300, Some("cancel-key")))
        .await
        .unwrap();
    wait_batch(&stack, &a, out.batch_id, Duration::from_secs(60), |v| {
        v.status.counts.succeeded >= 10
    })
    .await;
    let cancelled = a.cancel(out.batch_id).await.unwrap();
    assert!(cancelled > 0);
    let done = wait_batch(&stack, &a, out.batch_id, Duration::from_secs(60), |v| {
        v.done
    })
    .await;
    let c = &done.status.counts;
    assert_eq!(
        (c.cancelled, c.succeeded + c.cancelled, c.dead),
        (cancelled, 300, 0),
        "{c:?}"
    );
    let (jobs, _) = a.jobs(out.batch_id, None, 10_000).await.unwrap();
    assert!(
        jobs.iter()
            .all(|j| matches!(j.state, JobState::Succeeded | JobState::Cancelled))
    );

    // Same idempotency key: same batch, nothing new written.
    let again = a
        .submit(manifest("cancel-me", 300, Some("cancel-key")))
        .await
        .unwrap();
    assert_eq!((again.batch_id, again.created), (out.batch_id, false));
    assert_eq!(batches().await, 1);

    // Tenant b cannot see tenant a's batch, over gRPC or HTTP.
    assert_eq!(
        b.batch(out.batch_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.jobs(out.batch_id, None, 10).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.cancel(out.batch_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.image(jobs[0].id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::new();
    let get = |key: Option<&str>| {
        let mut r = client.get(format!("{http}/v1/batches/{}", out.batch_id));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(get(Some(KEY_B)).await.unwrap().status(), 404);
    assert_eq!(get(None).await.unwrap().status(), 401);
    let view: serde_json::Value = get(Some(KEY_A)).await.unwrap().json().await.unwrap();
    assert_eq!(
        (view["done"].as_bool(), view["counts"]["cancelled"].as_u64()),
        (Some(true), Some(cancelled))
    );

    // HTTP submit (JSON manifest) and SSE watch until done.
    let json = r#"{"name": "http", "model": "test", "prompt": "over http {n}", "vars": {"n": ["1", "2"]}, "seeds": [1, 2], "defaults": {"width": 16, "height": 16}}"#;
    let r = client
        .post(format!("{http}/v1/batches"))
        .bearer_auth(KEY_A)
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sse = client
        .get(format!("{http}/v1/batches/{id}/watch"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(60), sse.text())
        .await
        .expect("the stream ends when the batch is done")
        .unwrap();
    assert!(
        body.contains("event: batch") && body.contains("\"done\":true"),
        "{body}"
    );
    let bad = client
        .post(format!("{http}/v1/batches"))
        .bearer_auth(KEY_A)
        .body("name: x\nmodel: test\nprompt: p\nseeds: {base: 1, count: 0}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("seeds.count"));

    // An undecodable message goes to the dead-letter queue, and the worker counts it.
    let broker = pixelfarm_broker::RabbitBroker::connect(
        &std::env::var("PIXELFARM_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        pixelfarm_broker::Topology::new(stack.prefix.clone()),
    )
    .await
    .unwrap();
    broker
        .publish_raw(
            &ModelName::parse("test").unwrap(),
            bytes::Bytes::from_static(b"garbage"),
        )
        .await
        .unwrap();
    let mut dead = 0;
    for _ in 0..100 {
        dead = broker.dead_letter_depth().await.unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1);
    assert_eq!(
        sample(
            &scrape(stack.workers[0].http).await,
            "pixelfarm_dead_letters_total"
        ),
        1.0
    );
}

/// The shipped model through a real worker process gives the same bytes as the embedded mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_model_gives_the_same_bytes_distributed_and_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = pixelfarm_shapes::shipped_registry(&repo().join("models")).unwrap();
    let path = dir.path().join("registry.yaml");
    std::fs::write(&path, serde_yaml::to_string(&registry).unwrap()).unwrap();
    let stack = Stack::start(StackOptions {
        workers: 1,
        concurrency: 2,
        renderer: "diffusion".into(),
        models: vec!["shapes".into()],
        registry: Some(path),
        ..Default::default()
    })
    .await;
    let a = stack.client(KEY_A).await;
    let shapes = std::fs::read_to_string(repo().join("examples/shapes.yaml")).unwrap();
    let out = a.submit(shapes.clone()).await.unwrap();
    let v = wait_batch(&stack, &a, out.batch_id, Duration::from_secs(300), |v| {
        v.done
    })
    .await;
    assert_eq!(
        v.status.counts.succeeded,
        v.total,
        "{:?}\n{}",
        v.status.counts,
        stack.logs()
    );
    let (jobs, _) = a.jobs(out.batch_id, None, 1000).await.unwrap();
    // Signed content credentials, part of the bytes compared below.
    let image = a.image(jobs[0].id).await.unwrap();
    let c = read(&image, ImageFormat::Png, None)
        .unwrap()
        .expect("a manifest");
    assert_eq!((c.state.as_str(), c.model.as_str()), ("Valid", "shapes"));
    let distributed: BTreeMap<String, String> = jobs
        .into_iter()
        .map(|j| (j.key, j.sha256.unwrap()))
        .collect();
    let local = tempfile::tempdir().unwrap();
    pixelfarm_cli::embedded::run(
        shapes,
        &repo().join("examples"),
        local.path(),
        pixelfarm_cli::embedded::RunOptions {
            workers: 2,
            progress: false,
            dataset: None,
            webhook_wait: std::time::Duration::ZERO,
            signing: &Default::default(),
            registry: None,
        },
    )
    .await
    .unwrap();
    let embedded: BTreeMap<String, String> =
        std::fs::read_to_string(local.path().join("results.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    assert_eq!(distributed.len(), 48);
    assert_eq!(distributed, embedded);
}

/// SIGTERM: the worker stops consuming, finishes the jobs in hand, and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_jobs_in_hand() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        concurrency: 2,
        render_delay_ms: 700,
        lease_seconds: 30,
        ..Default::default()
    })
    .await;
    let a = stack.client(KEY_A).await;
    let out = a.submit(manifest("drain", 20, None)).await.unwrap();
    wait_batch(&stack, &a, out.batch_id, Duration::from_secs(30), |v| {
        v.status.counts.running >= 1
    })
    .await;
    let mut stack = stack;
    stack.workers[0].signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), stack.workers[0].child.wait())
        .await
        .expect("exits within the grace")
        .unwrap();
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        stack.workers[0].tail()
    );
    let v = a.batch(out.batch_id).await.unwrap();
    assert_eq!(
        v.status.counts.running, 0,
        "nothing left running after the drain: {:?}",
        v.status.counts
    );
    assert!(v.status.counts.succeeded >= 1);
}

/// Crash isolation: a job whose worker dies under it three times (the test kills whichever worker
/// renders it, as an OOM kill would) ends `dead` as `crashed_worker`, and the jobs that were in
/// flight beside it spend no attempt: they succeed on their first. After the first crash every
/// job that was in flight is a suspect and renders alone, so the later crashes are the poison
/// job's only, although the four suspects come back to the next worker together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_keeps_crashing_its_worker_dies_alone() {
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        concurrency: 4,
        render_delay_ms: 1500,
        lease_seconds: 3,
        ..Default::default()
    })
    .await;
    let client = stack.client(KEY_A).await;
    let out = client.submit(manifest("poison", 10, None)).await.unwrap();
    let (jobs, _) = client.jobs(out.batch_id, None, 10).await.unwrap();
    let poison = jobs[0].id;
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let mut killed = Vec::new();
    for crash in 1..=3 {
        // Wait until the poison job renders on a live worker, then kill that worker.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let owner: String = loop {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT state::text, lease_owner FROM jobs WHERE id = $1")
                    .bind(poison.as_uuid())
                    .fetch_optional(&db)
                    .await
                    .unwrap();
            if let Some((state, Some(owner))) = row
                && state == "running"
                && !killed.contains(&owner)
            {
                break owner;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "crash {crash}: the poison job never ran\n{}",
                stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let victim: usize = owner
            .strip_prefix("worker-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("worker ids are worker-N: {owner}"));
        stack.workers[victim].signal("KILL");
        let _ = stack.workers[victim].child.wait().await;
        killed.push(owner);
        stack.add_worker().await;
    }
    let done = wait_batch(
        &stack,
        &client,
        out.batch_id,
        Duration::from_secs(120),
        |v| v.done,
    )
    .await;
    let c = &done.status.counts;
    assert_eq!((c.succeeded, c.dead), (9, 1), "{c:?}\n{}", stack.logs());
    let (jobs, _) = client.jobs(out.batch_id, None, 10).await.unwrap();
    let mut bystanders_rescued = 0;
    for j in &jobs {
        if j.id == poison {
            assert_eq!(j.state, JobState::Dead);
            assert_eq!(j.error_kind.as_deref(), Some("crashed_worker"), "{j:?}");
            assert!(
                j.last_error
                    .as_deref()
                    .unwrap()
                    .starts_with("crashed the worker: its lease expired 3 times"),
                "{j:?}"
            );
        } else {
            assert_eq!(
                (j.state, j.attempt),
                (JobState::Succeeded, 1),
                "a bystander spent no attempt: {j:?}"
            );
            bystanders_rescued += usize::from(j.error_kind.as_deref() == Some("lease_expired"));
        }
    }
    assert!(
        bystanders_rescued >= 1,
        "some jobs were in flight beside the poison job when its workers died"
    );
}

/// Retention on the real scheduler: once a finished batch is older than the retention (2 s here)
/// the leader deletes its job rows, counts them and logs the batch once; the batch still answers
/// with its name and `jobs_purged_at`, its jobs answer `gone` over gRPC and HTTP, its images stay
/// in the bucket, and tenant `b`, set to keep its job rows forever, keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_the_job_rows_of_finished_batches() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        retention_seconds: Some(2),
        ..Default::default()
    })
    .await;
    let shown = stack
        .scheduler_cli(&["tenant", "set-retention", "b", "never"])
        .await
        .unwrap();
    assert!(shown.contains("job retention       never"), "{shown}");
    let shown = stack.scheduler_cli(&["tenant", "show", "a"]).await.unwrap();
    assert!(
        shown.contains("2s after a batch finished (scheduler.retention)"),
        "{shown}"
    );
    let (a, b) = (stack.client(KEY_A).await, stack.client(KEY_B).await);
    let expires = a
        .submit(manifest("expires", 20, None))
        .await
        .unwrap()
        .batch_id;
    let job = a.jobs(expires, None, 1).await.unwrap().0[0].id;
    let kept = b.submit(manifest("kept", 5, None)).await.unwrap().batch_id;
    wait_batch(&stack, &b, kept, Duration::from_secs(60), |v| v.done).await;

    let purged = wait_batch(&stack, &a, expires, Duration::from_secs(60), |v| {
        v.status.jobs_purged_at.is_some()
    })
    .await;
    assert_eq!(
        (purged.status.name.as_str(), purged.done),
        ("expires", true)
    );
    let e = a.jobs(expires, None, 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Gone, "{e}");
    assert!(e.to_string().contains("by retention"), "{e}");
    let e = a.image(job).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("retention"), "{e}");
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/batches/{expires}/jobs",
            stack.scheduler.http
        ))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gone", "{body}");

    // The rows go right after the batch is taken; the batch row and its manifest stay.
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE batch_id = $1")
            .bind(expires.as_uuid())
            .fetch_one(&db)
            .await
            .unwrap();
        let counted = sample(
            &scrape(stack.scheduler.http).await,
            "pixelfarm_retention_jobs_purged_total",
        );
        if rows == 0 && counted == 20.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{rows} rows left, {counted} counted\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let manifest_kept: String = sqlx::query_scalar("SELECT manifest FROM batches WHERE id = $1")
        .bind(expires.as_uuid())
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(manifest_kept.contains("name: expires"), "{manifest_kept}");
    let scraped = scrape(stack.scheduler.http).await;
    assert_eq!(
        sample(&scraped, "pixelfarm_retention_batches_purged_total"),
        1.0
    );
    let log = std::fs::read_to_string(&stack.scheduler.log).unwrap();
    let logged = log
        .lines()
        .filter(|l| l.contains("past its retention") && l.contains(&expires.to_string()))
        .count();
    assert_eq!(logged, 1, "the batch is logged once:\n{log}");

    // Tenant b keeps its job rows; the images of both tenants stay in the bucket.
    assert_eq!(b.jobs(kept, None, 10).await.unwrap().0.len(), 5);
    assert_eq!(b.batch(kept).await.unwrap().status.jobs_purged_at, None);
    let images = stack.blob().await.list("images/").await.unwrap();
    assert_eq!(
        images.iter().filter(|k| k.ends_with(".png")).count(),
        25,
        "{images:?}"
    );
}
