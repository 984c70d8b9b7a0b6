//! Hostile manifests against the real scheduler, over HTTP and gRPC: each is refused before the
//! work it would cause (docs/security.md, "Budgets"), names the budget, and stores nothing. The
//! scheduler's peak RSS (VmHWM) after each is printed (`--no-capture`), not asserted.

use pixelfarm_core::hostile::{Hostile, manifests};
use pixelfarm_e2e::*;
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_client::BatchServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_manifests_are_refused_before_the_work_and_store_nothing() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let pid = stack.scheduler.child.id().expect("the scheduler runs");
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::new();
    let mut grpc = BatchServiceClient::connect(stack.grpc_url.clone())
        .await
        .unwrap()
        .max_encoding_message_size(4 << 20);
    eprintln!("scheduler peak RSS at start: {} MiB", vm_hwm_mib(pid));
    for Hostile {
        name,
        manifest: body,
        refusal: expected,
    } in manifests("test")
    {
        let t0 = std::time::Instant::now();
        let r = client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(KEY_A)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{name}: {text}");
        assert!(text.contains(expected), "{name}: {text}");
        let http_secs = t0.elapsed().as_secs_f64();
        let mut req = tonic::Request::new(v1::SubmitBatchRequest {
            manifest: body.clone(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
        let s = grpc.submit_batch(req).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{name}: {s:?}");
        assert!(s.message().contains(expected), "{name}: {}", s.message());
        assert_eq!(stored(&db).await, (0, 0), "{name}: nothing stored");
        eprintln!(
            "{name}: {} KiB, HTTP {status} in {http_secs:.2} s, scheduler peak RSS {} MiB",
            body.len() / 1024,
            vm_hwm_mib(pid)
        );
    }
}

/// The figures of docs/security.md's "Budgets" table on the real scheduler: each hostile
/// manifest on a fresh scheduler process (peak RSS is per process), answer, time and VmHWM,
/// without asserting what a build does with it. Measures another build with
/// `PIXELFARM_E2E_BIN_DIR=<its target/debug>`:
///
/// ```sh
/// cargo nextest run -p pixelfarm-e2e --test budgets --run-ignored only --no-capture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run by hand"]
async fn measure_the_scheduler_under_hostile_manifests() {
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    for Hostile {
        name,
        manifest: body,
        ..
    } in manifests("test")
    {
        stack.restart_scheduler().await;
        let pid = stack.scheduler.child.id().expect("the scheduler runs");
        let start = vm_hwm_mib(pid);
        let t0 = std::time::Instant::now();
        let answer = match client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(KEY_A)
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "no answer in 60 s".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        let alive = stack.scheduler.child.try_wait().ok().flatten().is_none();
        eprintln!(
            "MEASURE\t{name}\t{} KiB\t{answer}\t{:.2} s\tpeak RSS {} MiB (start {start} MiB){}",
            body.len() / 1024,
            t0.elapsed().as_secs_f64(),
            vm_hwm_mib(pid),
            if alive { "" } else { "\tscheduler died" }
        );
    }
}

/// The figures of docs/security.md's "Inputs" table on the real scheduler: each hostile input
/// request on a fresh scheduler process, answer, time and VmHWM, without asserting what a build
/// does with it. The objects are put into the bucket directly (where an older build, which has no
/// upload API, reads any key), under tenant `a`'s upload prefix. Measures another build with
/// `PIXELFARM_E2E_BIN_DIR=<its target/debug>`:
///
/// ```sh
/// cargo nextest run -p pixelfarm-e2e --test budgets --run-ignored only --no-capture -E 'test(inputs)'
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run by hand"]
async fn measure_the_scheduler_under_hostile_inputs() {
    use pixelfarm_core::BlobStore;
    use pixelfarm_image::testing::{png, png_bomb};

    let mut stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let a: String = sqlx::query_scalar("SELECT id::text FROM tenants WHERE name = 'a'")
        .fetch_one(&db)
        .await
        .unwrap();
    let blob = stack.blob().await;
    let bomb = png_bomb(13_000);
    let objects = [
        ("secret.png", png(48, 48, |x, y| [x as u8, y as u8, 200])),
        ("bomb.png", bomb.clone()),
        ("huge.png", vec![0u8; 256 << 20]),
    ];
    for (name, bytes) in objects {
        blob.put(&format!("inputs/{a}/{name}"), bytes.into(), "image/png")
            .await
            .unwrap();
    }
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let submit = |key: &str| {
        format!(
            "name: n\nmodel: test\ndefaults: {{width: 16, height: 16, steps: 2}}\nseeds: [1]\njobs: [{{prompt: p, init: {{image: {{key: \"inputs/{a}/{key}\"}}, strength: 0.0}}}}]\n"
        )
        .into_bytes()
    };
    // (case, method, path, api key, body)
    let cases = [
        (
            "PNG bomb 13000² at submit",
            "POST",
            "/v1/batches",
            KEY_A,
            submit("bomb.png"),
        ),
        (
            "PNG bomb 13000² upload",
            "PUT",
            "/v1/inputs/bomb",
            KEY_A,
            bomb,
        ),
        (
            "256 MiB object at submit",
            "POST",
            "/v1/batches",
            KEY_A,
            submit("huge.png"),
        ),
        (
            "tenant b names a's input",
            "POST",
            "/v1/batches",
            KEY_B,
            submit("secret.png"),
        ),
        (
            "tenant b names a missing key",
            "POST",
            "/v1/batches",
            KEY_B,
            submit("nothing.png"),
        ),
    ];
    for (name, method, path, key, body) in cases {
        stack.restart_scheduler().await;
        let pid = stack.scheduler.child.id().expect("the scheduler runs");
        let start = vm_hwm_mib(pid);
        let t0 = std::time::Instant::now();
        let answer = match client
            .request(method.parse().unwrap(), format!("{http}{path}"))
            .bearer_auth(key)
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| text.chars().take(80).collect());
                format!("{status} {}", message.replace(&a, "<a>"))
            }
            Err(e) if e.is_timeout() => "no answer in 60 s".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        let alive = stack.scheduler.child.try_wait().ok().flatten().is_none();
        eprintln!(
            "MEASURE\t{name}\t{} KiB\t{answer}\t{:.2} s\tpeak RSS {} MiB (start {start} MiB){}",
            body.len() / 1024,
            t0.elapsed().as_secs_f64(),
            vm_hwm_mib(pid),
            if alive { "" } else { "\tscheduler died" }
        );
    }
}
