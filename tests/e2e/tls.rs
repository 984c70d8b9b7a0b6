//! TLS on the scheduler's listeners, against the real processes: a private CA and certificates
//! made at test time, the scheduler serving `scheduler.tls`, the `pixelfarm` CLI with
//! `https://` and `--ca-file`, clients that must be refused, and a certificate rotated on disk
//! while the scheduler runs.

use pixelfarm_e2e::results::verify_results;
use pixelfarm_e2e::tls::{self, ServerFiles, TestCa};
use pixelfarm_e2e::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// `pixelfarm ARGS` against the stack's scheduler as tenant `a`, with `url` and, when given,
/// `--ca-file`.
async fn cli(url: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin("pixelfarm"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIXELFARM_API_URL", url)
        .env("PIXELFARM_API_KEY", KEY_A)
        .args(args)
        .kill_on_drop(true);
    if let Some(ca) = ca {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd.output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "pixelfarm failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output) -> String {
    assert!(!o.status.success(), "accepted: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copy `from`'s pair over the files the scheduler serves (key first, as a careless rotation
/// might: for a moment the pair does not match).
fn install(from: &ServerFiles, live: &ServerFiles) {
    std::fs::copy(&from.key_file, &live.key_file).unwrap();
    std::fs::copy(&from.cert_file, &live.cert_file).unwrap();
}

fn scheduler_log(stack: &Stack) -> String {
    std::fs::read_to_string(&stack.scheduler.log).unwrap()
}

/// Poll until the listener at `addr` serves the certificate of `cert_file`.
async fn wait_served(stack: &Stack, addr: SocketAddr, ca: &Path, cert_file: &Path) {
    let want = tls::leaf_der(cert_file);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tls::served_certificate(addr, ca).await.unwrap() != want {
        assert!(
            Instant::now() < deadline,
            "{addr} does not serve {}\n{}",
            cert_file.display(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_cli_over_tls_and_a_rotation_without_restart() {
    let ca = TestCa::new();
    let (first, second) = (ca.issue("first"), ca.issue("second"));
    let live = ca.issue("live");
    install(&first, &live);
    let stack = Stack::start(StackOptions {
        workers: 1,
        tls: Some(live.clone()),
        ..Default::default()
    })
    .await;
    let url = stack.grpc_url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let grpc: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let http = stack.scheduler.http;
    let ca_file = live.ca_file.as_path();

    // Submit, wait and fetch through the CLI over TLS.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.yaml");
    std::fs::write(&file, manifest("over-tls", 10, None)).unwrap();
    let out = cli(
        &url,
        Some(ca_file),
        &["submit", file.to_str().unwrap(), "--wait"],
    )
    .await;
    let batch: pixelfarm_core::BatchId = stdout(&out).trim().parse().unwrap();
    let results = dir.path().join("results");
    let out = cli(
        &url,
        Some(ca_file),
        &[
            "fetch",
            &batch.to_string(),
            "--out",
            results.to_str().unwrap(),
        ],
    )
    .await;
    assert!(stdout(&out).starts_with("10 images, 10 lines"), "{out:?}");
    // The images the CLI fetched are the bucket's, byte for byte (a TLS client of the API).
    let client = stack.client(KEY_A).await;
    verify_results(&stack, &client, batch, 10).await;

    // The HTTP API, /metrics and health are on the TLS port too.
    let (status, body) = tls::https_get(http, ca_file, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = tls::https_get(http, ca_file, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("pixelfarm_"), "{body:.200}");

    // Plain text to either port is refused: plain HTTP is told to use https://, and the gRPC
    // client fails on that answer (tonic connects lazily: at the first call).
    let plain = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(
        plain.text().await.unwrap(),
        "this port serves TLS: use https://\n"
    );
    let err = refused(
        &cli(
            &format!("http://{grpc}"),
            None,
            &["status", &batch.to_string()],
        )
        .await,
    );
    assert!(err.starts_with("Error: "), "{err}");

    // A client that does not trust the CA is refused, and told why and what to do.
    let err = refused(&cli(&url, None, &["status", &batch.to_string()]).await);
    assert!(
        err.contains(&format!(
            "cannot verify the scheduler at {url} (trusting the system's root certificates): invalid peer certificate: UnknownIssuer"
        )),
        "{err}"
    );
    assert!(err.contains("--ca-file"), "{err}");
    // Nor does one trusting another CA.
    let other = TestCa::new();
    let err = refused(&cli(&url, Some(&other.ca_file), &["status", &batch.to_string()]).await);
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A CA file that holds no certificate is named.
    let err = refused(&cli(&url, Some(&live.key_file), &["status", &batch.to_string()]).await);
    assert!(
        err.contains(&format!(
            "--ca-file {}: holds no PEM CERTIFICATE block",
            live.key_file.display()
        )),
        "{err}"
    );

    // A broken rotation (a key that is no key) is logged and the served certificate stays.
    std::fs::write(&live.key_file, "not a key\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        let log = scheduler_log(&stack);
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("the previous certificate stays"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no refusal logged\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(refusal.contains("scheduler.tls.key_file"), "{refusal}");
    assert_eq!(
        tls::served_certificate(grpc, ca_file).await.unwrap(),
        tls::leaf_der(&first.cert_file)
    );
    stdout(&cli(&url, Some(ca_file), &["status", &batch.to_string()]).await);

    // A good one is served on both ports without a restart, and the CLI goes on working.
    install(&second, &live);
    wait_served(&stack, grpc, ca_file, &second.cert_file).await;
    wait_served(&stack, http, ca_file, &second.cert_file).await;
    let out = stdout(&cli(&url, Some(ca_file), &["status", &batch.to_string()]).await);
    assert!(out.contains("done, 10 jobs"), "{out}");
    assert!(
        scheduler_log(&stack).contains("serving the new tls certificate"),
        "{}",
        stack.logs()
    );

    // Failed authentications are limited per address over TLS too (last: the address is then
    // refused for a while). Requests without a key fail; after the burst they get 429.
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let (status, _) = tls::https_get(http, ca_file, &format!("/v1/batches/{batch}"))
            .await
            .unwrap();
        statuses.push(status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
