//! Malformed calls of every kind, over HTTP and gRPC.

use pixelfarm_e2e::*;
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_client::BatchServiceClient;
use serde_json::Value;

use super::{http_error, yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_a_stable_code_and_store_nothing() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        ..Default::default()
    })
    .await;
    let prefix = stack.prefix.clone();
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let http = format!("http://{}", stack.scheduler.http);
    let client = unpooled_client();
    let submit = |body: String| {
        client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(KEY_A)
            .body(body)
            .send()
    };

    // A good batch of 5 jobs, to page through and to check nothing else gets stored.
    let r = submit(manifest("good", 5, None)).await.unwrap();
    assert_eq!(r.status(), 201);
    let batch = r.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = stored(&db).await;
    assert_eq!(before, (1, 5));

    // Text the policy refuses, naming the field; NUL never reaches Postgres.
    let text_cases: Vec<(String, &str, &str)> = vec![
        (
            r#"{"name": "n", "model": "test", "prompt": "a\u0000b", "seeds": [1]}"#.into(),
            "manifest field `prompt`",
            "U+0000 (NUL)",
        ),
        (
            yaml("name: n\nprompt: \"a\\rb\"\n"),
            "manifest field `prompt`",
            "U+000D",
        ),
        (
            yaml("name: n\nprompt: p\ndefaults: {negative_prompt: \"x\\e[2J\"}\n")
                .replace("defaults: {width: 16, height: 16, steps: 2}\n", ""),
            "negative_prompt",
            "U+001B (escape)",
        ),
        (
            yaml("name: \"invoice\\u202Egnp.exe\"\nprompt: p\n"),
            "manifest field `name`",
            "U+202E",
        ),
        (
            yaml("name: \"a\\0b\"\nprompt: p\n"),
            "manifest field `name`",
            "U+0000 (NUL)",
        ),
        (
            yaml("name: n\nprompt: p\ntags: {team: \"ads\\nforged: line\"}\n"),
            "manifest field `tags.team`",
            "U+000A",
        ),
        (
            yaml("name: n\nprompt: p\nidempotency_key: \"k\\u2066\"\n"),
            "manifest field `idempotency_key`",
            "U+2066",
        ),
        (
            yaml("name: n\nprompt: \"a {c}\"\nvars: {c: [\"x\\ny\"]}\n"),
            "job key",
            "U+000A",
        ),
    ];
    let mut grpc = BatchServiceClient::connect(stack.grpc_url.clone())
        .await
        .unwrap();
    let authed = |m: v1::SubmitBatchRequest| {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
        r
    };
    for (body, field, what) in &text_cases {
        let (status, code, message) =
            http_error(submit(body.clone()).await.unwrap(), &prefix).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_argument"),
            "{message}"
        );
        assert!(
            message.contains(field) && message.contains(what),
            "{field} {what}: {message}"
        );
        let s = grpc
            .submit_batch(authed(v1::SubmitBatchRequest {
                manifest: body.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert_eq!(s.message(), message, "the same message over gRPC");
        assert!(s.metadata().get("x-request-id").is_some());
    }
    // A raw NUL byte in the body (not JSON-escaped).
    let (status, code, message) = http_error(
        submit(yaml("name: n\nprompt: \"a\0b\"\n")).await.unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_argument"),
        "{message}"
    );
    assert_eq!(stored(&db).await, before, "no bad manifest stored anything");

    // An init image that does not exist: the error names the key, not the bucket or prefix.
    let (status, code, message) = http_error(
        submit(yaml(
            "name: n\njobs: [{prompt: p, init: {image: {key: inputs/missing.png}, strength: 0.5}}]\n",
        ))
        .await
        .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_argument"),
        "{message}"
    );
    assert!(message.contains("inputs/missing.png"), "{message}");

    // The router's own errors are JSON too.
    let (status, code, message) = http_error(
        client
            .get(format!("{http}/v1/nope"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"), "{message}");
    let (status, code, _) = http_error(
        client
            .delete(format!("{http}/v1/batches"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let (status, code, message) =
        http_error(submit("x".repeat(3 << 20)).await.unwrap(), &prefix).await;
    assert_eq!(
        (status, code.as_str()),
        (413, "payload_too_large"),
        "{message}"
    );
    let (status, code, _) = http_error(
        client
            .post(format!("{http}/v1/batches"))
            .body(manifest("x", 5, None))
            .send()
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    let (status, code, _) = http_error(
        client
            .get(format!("{http}/v1/batches/not-an-id"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_argument"));
    let other = uuid::Uuid::new_v4();
    let (status, code, _) = http_error(
        client
            .get(format!("{http}/v1/batches/{other}"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(stored(&db).await, before, "nothing stored");

    // Paging: limit out of range is refused; every page but the last has a cursor.
    let jobs = |q: &str| {
        client
            .get(format!("{http}/v1/batches/{batch}/jobs?{q}"))
            .bearer_auth(KEY_A)
            .send()
    };
    for q in ["limit=0", "limit=10001", "limit=-1", "limit=abc"] {
        let (status, code, message) = http_error(jobs(q).await.unwrap(), &prefix).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_argument"),
            "{q}: {message}"
        );
        assert!(message.contains("limit"), "{q}: {message}");
    }
    let mut after = String::new();
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page: Value = jobs(&format!("limit=2&after={after}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        seen += page["jobs"].as_array().unwrap().len();
        match page["next_after"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!((seen, pages), (5, 3));
    let all: Value = jobs("").await.unwrap().json().await.unwrap();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 5);
    assert!(all["next_after"].is_null());

    // gRPC: 0 is proto3's unset (the default page), past the maximum is refused.
    let list = |limit: u32, after: String| {
        let mut r = tonic::Request::new(v1::ListJobsRequest {
            batch_id: batch.clone(),
            after,
            limit,
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
        r
    };
    let r = grpc
        .list_jobs(list(0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.jobs.len(), r.next_after.as_str()), (5, ""));
    let r = grpc
        .list_jobs(list(4, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.jobs.len(), 4);
    let last = grpc
        .list_jobs(list(4, r.next_after))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((last.jobs.len(), last.next_after.as_str()), (1, ""));
    let s = grpc
        .list_jobs(list(10_001, String::new()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        s.message(),
        "`limit` 10001 is out of range; accepted: 1 to 10000 (default 1000)"
    );
    assert_eq!(stored(&db).await, before, "nothing stored");
}
