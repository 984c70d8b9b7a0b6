//! Webhooks on the real stack: a batch's `webhook:` reaches a real HTTP receiver that is down
//! (nothing listening) when the batch completes and comes up later; the relay retries until it
//! answers, the delivery is signed with the tenant's secret (checked here by an HMAC computed
//! independently of the scheduler's code), and the delivery log and metrics say what happened.
//! With `blob.signed_urls`, `job.succeeded` events, the HTTP and gRPC job pages and
//! `results.jsonl` carry presigned URLs that download each image from the store with no
//! credentials.

use base64::Engine;
use hmac::{Hmac, Mac};
use pixelfarm_e2e::receiver::receiver;
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::*;
use sha2::Sha256;
use std::time::{Duration, Instant};

/// The batch's delivery log over HTTP.
async fn log(stack: &Stack, key: &str, batch: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/batches/{batch}/webhook-deliveries",
            stack.scheduler.http
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Poll the log until `done` holds of its first delivery, or fail after `within`.
async fn wait_log(
    stack: &Stack,
    batch: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = log(stack, KEY_A, batch).await;
        assert_eq!(status, 200, "{body}");
        if body["deliveries"].get(0).is_some_and(&done) {
            return body["deliveries"][0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the delivery log never got there: {body}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_webhook_reaches_a_receiver_that_was_down() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        webhooks: Some(
            "{allowed_hosts: [127.0.0.1], allow_private_networks: true, poll_ms: 100, \
             first_retry_seconds: 1, max_retry_seconds: 1, timeout_seconds: 2}"
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let secret = stack
        .scheduler_cli(&["tenant", "webhook", "secret", "a"])
        .await
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let a = stack.client(KEY_A).await;

    // A receiver outside the deployment's allow-list is refused at submit, naming the field.
    let refused = a
        .submit(format!(
            "{}webhook: {{url: \"http://169.254.169.254/latest/meta-data\"}}\n",
            manifest("metadata", 5, None)
        ))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("manifest field `webhook.url`")
            && refused.to_string().contains("allow-list"),
        "{refused}"
    );

    let port = free_port();
    let batch = a
        .submit(format!(
            "{}webhook: {{url: \"http://127.0.0.1:{port}/hook\"}}\n",
            manifest("hooked", 10, None)
        ))
        .await
        .unwrap()
        .batch_id
        .to_string();

    // Nothing listens yet: the attempts fail and are retried.
    let down = wait_log(&stack, &batch, Duration::from_secs(60), |d| {
        d["attempts"].as_array().is_some_and(|a| a.len() >= 2)
    })
    .await;
    assert_eq!(down["type"], "batch.completed", "{down}");
    assert_eq!(down["state"], "pending", "{down}");
    let first_error = down["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(first_error.contains("connect"), "{down}");

    // The receiver comes up: the next attempt is delivered.
    let got = receiver(port).await;
    let delivered = wait_log(&stack, &batch, Duration::from_secs(30), |d| {
        d["state"] == "delivered"
    })
    .await;
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["status"], 204, "{delivered}");
    assert!(attempts.len() >= 3, "{delivered}");
    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "delivered once");
    let (headers, body) = &received[0];
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let id = header("webhook-id");
    assert_eq!(id, delivered["id"].as_str().unwrap());
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{}.{body}", header("webhook-timestamp")).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(header("webhook-signature"), expected);
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["batch"]["id"].as_str().unwrap(), batch);
    assert_eq!(event["data"]["batch"]["counts"]["succeeded"], 10, "{event}");

    // The same log over gRPC, as `pixelfarm deliveries` prints it.
    let cli = |key: &'static str, json: bool| {
        let mut cmd = tokio::process::Command::new(bin("pixelfarm"));
        cmd.env_clear()
            .env("PIXELFARM_API_URL", &stack.grpc_url)
            .env("PIXELFARM_API_KEY", key)
            .args(["deliveries", &batch]);
        if json {
            cmd.arg("--json");
        }
        cmd.output()
    };
    let out = cli(KEY_A, false).await.unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(
        printed.contains(&format!(
            "{id} batch.completed http://127.0.0.1:{port}/hook delivered (attempt {}: 204)",
            attempts.len()
        )),
        "{printed}"
    );
    let out = cli(KEY_A, true).await.unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, delivered, "the gRPC log is the HTTP log");

    // Another tenant cannot read the log; the metrics count the attempts.
    let (status, _) = log(&stack, KEY_B, &batch).await;
    assert_eq!(status, 404);
    let out = cli(KEY_B, false).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scraped = scrape(stack.scheduler.http).await;
    assert_eq!(
        sample(
            &scraped,
            "pixelfarm_webhook_attempts_total{event=\"batch.completed\",outcome=\"delivered\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &scraped,
            "pixelfarm_webhook_attempts_total{event=\"batch.completed\",outcome=\"failed\"}"
        ) >= 2.0
    );
}

/// GET `url` with no credentials: the status and the sha256 of the body.
async fn download(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        pixelfarm_core::sha256_hex(&r.bytes().await.unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_events_job_pages_and_results_carry_signed_urls_of_the_images() {
    // The store as users outside the deployment reach it: another name for the same server, so
    // a URL signed for the internal endpoint would be refused there.
    let public = s3_config("any").endpoint.replace("127.0.0.1", "localhost");
    let stack = Stack::start(StackOptions {
        workers: 1,
        webhooks: Some(
            "{allowed_hosts: [127.0.0.1], allow_private_networks: true, poll_ms: 100}".into(),
        ),
        signed_urls: Some(format!(
            "{{expiry_seconds: 3600, public_endpoint: \"{public}\"}}"
        )),
        ..Default::default()
    })
    .await;
    let port = free_port();
    let got = receiver(port).await;
    let a = stack.client(KEY_A).await;
    let batch = a
        .submit(format!(
            "{}webhook: {{url: \"http://127.0.0.1:{port}/hook\", events: [job.succeeded, batch.completed]}}\n",
            manifest("signed", 5, None)
        ))
        .await
        .unwrap()
        .batch_id;
    wait_batch(&stack, &a, batch, Duration::from_secs(60), |v| v.done).await;

    // One job.succeeded per image and the batch's outcome reach the receiver.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events: Vec<serde_json::Value> = loop {
        let received = got.lock().unwrap().clone();
        if received.len() >= 6 {
            break received
                .iter()
                .map(|(_, body)| serde_json::from_str(body).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of 6 events delivered\n{}",
            received.len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let jobs: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "job.succeeded")
        .map(|e| &e["data"]["job"])
        .collect();
    assert_eq!(jobs.len(), 5, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "batch.completed")
            .count(),
        1
    );
    for job in &jobs {
        let url = job["image_url"]["url"].as_str().unwrap();
        assert!(url.starts_with(&public), "{url}");
        assert_eq!(
            download(url).await,
            (200, job["sha256"].as_str().unwrap().to_owned()),
            "{job}"
        );
    }

    // The HTTP job page: each succeeded job with its URL, the expiry an hour on.
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/batches/{batch}/jobs",
            stack.scheduler.http
        ))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = page["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    for job in listed {
        let expires: chrono::DateTime<chrono::Utc> = job["image_url"]["expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let left = (expires - chrono::Utc::now()).num_seconds();
        assert!((3500..=3600).contains(&left), "{left} s left: {job}");
        assert_eq!(
            download(job["image_url"]["url"].as_str().unwrap()).await,
            (200, job["sha256"].as_str().unwrap().to_owned())
        );
    }

    // results.jsonl, written from the gRPC job pages.
    let dir = tempfile::tempdir().unwrap();
    pixelfarm_cli::export::export(&a, batch, dir.path())
        .await
        .unwrap();
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 5);
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let url = v["image_url"].as_str().unwrap();
        assert!(url.starts_with(&public), "{line}");
        assert!(v["image_url_expires_at"].is_string(), "{line}");
        assert_eq!(
            download(url).await,
            (200, v["sha256"].as_str().unwrap().to_owned())
        );
    }
}
