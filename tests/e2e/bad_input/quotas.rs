//! Tenant quotas.

use pixelfarm_e2e::*;
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_client::BatchServiceClient;
use serde_json::Value;

use super::{at_priority, http_error};

/// Tenant quotas (docs/security.md, "Quotas and rate limits"): over a limit a submit or watch is
/// `429` (`RESOURCE_EXHAUSTED`) naming the limit and the usage, nothing is stored, other tenants
/// are not affected, and the refusals are counted per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_quotas_refuse_with_429_and_store_nothing() {
    // Renders that outlast the test: every job submitted stays unfinished.
    let stack = Stack::start(StackOptions {
        workers: 1,
        render_delay_ms: 600_000,
        ..Default::default()
    })
    .await;
    let prefix = stack.prefix.clone();
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let http = format!("http://{}", stack.scheduler.http);
    let shown = stack
        .scheduler_cli(&[
            "tenant",
            "set-quota",
            "a",
            "--max-queued-jobs",
            "15",
            "--max-priority",
            "3",
            "--submits-per-minute",
            "5",
            "--max-watches",
            "1",
        ])
        .await
        .unwrap();
    assert!(shown.contains("max_queued_jobs     15"), "{shown}");
    let client = reqwest::Client::new();
    let submit = |key: &'static str, body: String| {
        client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(key)
            .body(body)
            .send()
    };
    let r = submit(KEY_A, at_priority("first", 10, 3)).await.unwrap();
    assert_eq!(r.status(), 201);
    let batch = r.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = stored(&db).await;
    assert_eq!(before, (1, 10));

    let (status, code, message) = http_error(
        submit(KEY_A, manifest("over", 10, None)).await.unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (429, "quota_exceeded"),
        "{message}"
    );
    assert!(
        message.contains("`max_queued_jobs` is 15")
            && message.contains("10 jobs are not finished and this batch adds 10"),
        "{message}"
    );
    let mut grpc = BatchServiceClient::connect(stack.grpc_url.clone())
        .await
        .unwrap();
    let mut req = tonic::Request::new(v1::SubmitBatchRequest {
        manifest: manifest("over", 10, None),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
    let s = grpc.submit_batch(req).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    assert_eq!(s.message(), message, "the same message over gRPC");

    let (status, code, message) = http_error(
        submit(KEY_A, at_priority("urgent", 5, 9)).await.unwrap(),
        &prefix,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (429, "quota_exceeded"),
        "{message}"
    );
    assert!(
        message.contains("`max_priority` is 3") && message.contains("priority 9"),
        "{message}"
    );
    assert_eq!(stored(&db).await, before, "refused submits store nothing");

    // Another tenant has no quota: it submits at priority 9 meanwhile.
    assert_eq!(
        submit(KEY_B, at_priority("b", 10, 9))
            .await
            .unwrap()
            .status(),
        201
    );

    // Five submits counted this minute (refused ones too): the sixth is rate limited.
    assert_eq!(
        submit(KEY_A, manifest("fits", 5, None))
            .await
            .unwrap()
            .status(),
        201
    );
    let (status, code, message) = http_error(
        submit(KEY_A, manifest("fast", 5, None)).await.unwrap(),
        &prefix,
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
    assert!(
        message.contains("`submits_per_minute` is 5; 5 submits were made in this minute"),
        "{message}"
    );

    // One watch open: the second is refused until it closes.
    let watch = || {
        client
            .get(format!("{http}/v1/batches/{batch}/watch"))
            .bearer_auth(KEY_A)
            .send()
    };
    let open = watch().await.unwrap();
    assert_eq!(open.status(), 200);
    let (status, code, message) = http_error(watch().await.unwrap(), &prefix).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "quota_exceeded"),
        "{message}"
    );
    assert!(
        message.contains("`max_watches` is 1; 1 watches are open"),
        "{message}"
    );

    let shown = stack.scheduler_cli(&["tenant", "show", "a"]).await.unwrap();
    assert!(
        shown.contains("in use: 15 jobs not finished")
            && shown.contains("in use: 15 jobs in the last 24 hours"),
        "{shown}"
    );
    let scrape = scrape(stack.scheduler.http).await;
    for (reason, n) in [
        ("max_queued_jobs", 2.0),
        ("max_priority", 1.0),
        ("submits_per_minute", 1.0),
        ("max_watches", 1.0),
    ] {
        let series = format!("pixelfarm_tenant_refusals_total{{reason=\"{reason}\",tenant=\"a\"}}");
        assert_eq!(sample(&scrape, &series), n, "{series}\n{scrape}");
    }
    assert_eq!(
        sample(&scrape, "pixelfarm_tenant_watches{tenant=\"a\"}"),
        1.0
    );
    promtool_check(&scrape);
    drop(open);
}
