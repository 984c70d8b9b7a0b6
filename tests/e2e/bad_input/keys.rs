//! Revoked, expired and removed API keys.

use pixelfarm_e2e::*;

use super::http_error;

/// The key lifecycle on the real scheduler (docs/security.md, "API keys"): a key made with
/// `tenant key create` works until revoked or expired, then is `401`; a config key removed from
/// the config is revoked when the scheduler starts; failed authentications from one address
/// are refused with `429` before the key lookup once the address spent its burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_expired_and_removed_keys_are_refused() {
    let mut stack = Stack::start(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let prefix = stack.prefix.clone();
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::new();
    // An unknown batch: `404` proves the key authenticated, `401` that it did not.
    let probe = |key: String| {
        client
            .get(format!("{http}/v1/batches/{}", uuid::Uuid::new_v4()))
            .bearer_auth(key)
            .send()
    };
    let key = stack
        .scheduler_cli(&["tenant", "key", "create", "a"])
        .await
        .unwrap();
    let key = key.trim().to_string();
    assert_eq!(probe(key.clone()).await.unwrap().status(), 404);
    let listed = stack
        .scheduler_cli(&["tenant", "key", "list", "a"])
        .await
        .unwrap();
    let line = listed
        .lines()
        .find(|l| l.starts_with(&key[..11]))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        !line.contains(&key[11..]),
        "only the prefix is shown: {line}"
    );
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (fields[2] != "-", fields[3], fields[4], fields[5]),
        (true, "-", "-", "cli"),
        "used, no expiry, not revoked: {line}"
    );
    assert!(
        listed.contains("config"),
        "the config key of a is listed: {listed}"
    );

    let out = stack
        .scheduler_cli(&["tenant", "key", "revoke", "a", &key[..11]])
        .await
        .unwrap();
    assert!(out.contains("revoked 1 key"), "{out}");
    let (status, code, message) = http_error(probe(key.clone()).await.unwrap(), &prefix).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthenticated"),
        "{message}"
    );

    let short = stack
        .scheduler_cli(&["tenant", "key", "create", "a", "--expires-in", "1s"])
        .await
        .unwrap();
    let short = short.trim().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, code, _) = http_error(probe(short).await.unwrap(), &prefix).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"), "expired");

    // b's config key leaves the config; a key of b made with the CLI stays valid.
    let cli_key_b = stack
        .scheduler_cli(&["tenant", "key", "create", "b"])
        .await
        .unwrap();
    let config = stack.dir.path().join("config/base.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&format!("api_keys: [{KEY_B}]"), "api_keys: []"),
    )
    .unwrap();
    stack.restart_scheduler().await;
    let (status, code, _) = http_error(probe(KEY_B.into()).await.unwrap(), &prefix).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthenticated"),
        "removed from the config"
    );
    assert_eq!(probe(cli_key_b.trim().into()).await.unwrap().status(), 404);
    assert_eq!(probe(KEY_A.into()).await.unwrap().status(), 404);
    // Listed again: the config's revocation ends with it (an operator's would not).
    std::fs::write(&config, &text).unwrap();
    stack.restart_scheduler().await;
    assert_eq!(probe(KEY_B.into()).await.unwrap().status(), 404);
    std::fs::write(
        &config,
        text.replace(&format!("api_keys: [{KEY_B}]"), "api_keys: []"),
    )
    .unwrap();
    stack.restart_scheduler().await;
    assert_eq!(probe(KEY_B.into()).await.unwrap().status(), 401);

    // A flood of wrong keys: after the burst (20, one spent on KEY_B above), refused before any
    // lookup, over both transports.
    let mut statuses = Vec::new();
    for i in 0..25 {
        statuses.push(probe(format!("guess-{i}")).await.unwrap().status().as_u16());
    }
    assert!(statuses[..19].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let failed = statuses.iter().filter(|s| **s == 401).count();
    let (status, code, message) = http_error(probe(KEY_A.into()).await.unwrap(), &prefix).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{message}");
    assert!(
        message.contains("too many failed authentications"),
        "{message}"
    );
    let e = pixelfarm_api::ApiClient::connect(&stack.grpc_url, "guess")
        .await
        .unwrap()
        .batch(pixelfarm_core::BatchId::generate())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pixelfarm_core::ErrorKind::QuotaExceeded, "{e}");
    let scrape = scrape(stack.scheduler.http).await;
    let unauthenticated = sample(
        &scrape,
        "pixelfarm_auth_failures_total{outcome=\"unauthenticated\"}",
    );
    let limited = sample(
        &scrape,
        "pixelfarm_auth_failures_total{outcome=\"rate_limited\"}",
    );
    assert_eq!(
        (unauthenticated, limited),
        ((1 + failed) as f64, (25 - failed + 2) as f64),
        "refused requests never reach the key lookup\n{scrape}"
    );
}
