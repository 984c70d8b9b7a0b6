//! Webhooks on the real stack: a batch's `webhook:` reaches a real HTTP receiver that is down
//! (nothing listening) when the batch completes and comes up later; the relay retries until it
//! answers, the delivery is signed with the tenant's secret (checked here by an HMAC computed
//! independently of the scheduler's code), and the delivery log and metrics say what happened.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use pixelfarm_e2e::*;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on `port` that records each request and answers 204.
async fn receiver(port: u16) -> Received {
    let got: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |headers: HeaderMap, body: String| async move {
                got.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

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

    // Another tenant cannot read the log; the metrics count the attempts.
    let (status, _) = log(&stack, KEY_B, &batch).await;
    assert_eq!(status, 404);
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
