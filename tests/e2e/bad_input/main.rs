//! Bad requests against the real scheduler, over HTTP and gRPC: each answers its status and a
//! stable error code with a message meant for the client (the JSON error shape on every HTTP
//! error, the router's own included), no internal detail, and stores nothing
//! (docs/security.md, "Errors" and "Text").
//!
//! One test binary; the cases are grouped by subject: `requests` (malformed calls of every
//! kind), `inputs` (uploads and the inputs a manifest names), `quotas`, `keys` (revoked, expired
//! and removed API keys) and `measure` (one tenant hurting another, a measurement).

mod inputs;
mod keys;
mod measure;
mod quotas;
mod requests;

use pixelfarm_e2e::*;
use serde_json::Value;

/// Text that must never reach a client: database, broker and storage internals.
const INTERNALS: &[&str] = &[
    "SQLSTATE",
    "sqlx",
    "postgres",
    "invalid byte sequence",
    "0x00",
    "relation",
    "bucket",
    BUCKET,
    "amqp",
    "seaweed",
];

fn assert_no_internals(text: &str, prefix: &str) {
    for s in INTERNALS.iter().chain([&prefix]) {
        assert!(
            !text.to_lowercase().contains(&s.to_lowercase()),
            "`{s}` leaks in {text}"
        );
    }
}

/// Status, `error.code` and `error.message` of an HTTP answer, after checking the JSON shape and
/// that `x-request-id` matches `error.request_id`.
async fn http_error(r: reqwest::Response, prefix: &str) -> (u16, String, String) {
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let ctype = r.headers()[reqwest::header::CONTENT_TYPE].clone();
    let text = r.text().await.unwrap();
    assert_eq!(ctype, "application/json", "{status} {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let err = &body["error"];
    let obj = err.as_object().unwrap_or_else(|| panic!("{text}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "request_id"], "{text}");
    let id = err["request_id"].as_str().unwrap();
    assert_eq!(
        Some(id),
        header.as_deref(),
        "x-request-id names the same request"
    );
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_no_internals(&text, prefix);
    (
        status,
        err["code"].as_str().unwrap().to_string(),
        err["message"].as_str().unwrap().to_string(),
    )
}

/// A manifest of model `test` with `extra` appended (YAML).
fn yaml(extra: &str) -> String {
    format!("model: test\ndefaults: {{width: 16, height: 16, steps: 2}}\nseeds: [1]\n{extra}")
}

/// A manifest of `n` jobs of model `test` at `priority`.
fn at_priority(name: &str, n: usize, priority: u8) -> String {
    manifest(name, n, None).replace(
        "model: test\n",
        &format!("model: test\npriority: {priority}\n"),
    )
}
