//! One tenant hurting another: a measurement, ignored by default.

use pixelfarm_e2e::*;
use serde_json::Value;

use super::at_priority;

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// Measures one tenant hurting another (docs/security.md, "Quotas and rate limits"), on the
/// binaries of `PIXELFARM_E2E_BIN_DIR` when set (an older build has no `tenant set-quota`: then
/// no quota is set). Tenant a runs 600 jobs at priority 9 while b submits 10 at priority 0, then
/// a opens 50 watches while b reads its batch. Prints `MEASURE` lines; asserts nothing of time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run with --run-ignored only --no-capture"]
async fn measure_priority_starvation_and_watches() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        render_delay_ms: 200,
        ..Default::default()
    })
    .await;
    // `MEASURE_MAX_WATCHES=none` measures the shared watch polls without the cap.
    let cap = std::env::var("MEASURE_MAX_WATCHES").unwrap_or_else(|_| "10".into());
    let quotas = stack
        .scheduler_cli(&[
            "tenant",
            "set-quota",
            "a",
            "--max-priority",
            "0",
            "--max-watches",
            &cap,
        ])
        .await
        .is_ok();
    let http = format!("http://{}", stack.scheduler.http);
    let client = reqwest::Client::new();
    let submit = |key: &'static str, body: String| {
        client
            .post(format!("{http}/v1/batches"))
            .bearer_auth(key)
            .body(body)
            .send()
    };
    let mut r = submit(KEY_A, at_priority("hog", 600, 9)).await.unwrap();
    let first = r.status().as_u16();
    if first == 429 {
        r = submit(KEY_A, at_priority("hog", 600, 0)).await.unwrap();
    }
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let hog = r.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = submit(KEY_B, at_priority("small", 10, 0)).await.unwrap();
    let small = r.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = stack.client(KEY_B).await;
    let t0 = std::time::Instant::now();
    let mut done = 0;
    while t0.elapsed() < std::time::Duration::from_secs(30) {
        let v = b.batch(small.parse().unwrap()).await.unwrap();
        done = v.status.counts.succeeded;
        if v.done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "MEASURE starvation quotas={quotas} a's priority-9 submit: {first}; b's 10 priority-0 jobs: {done} done after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // b's reads while a holds watches open.
    let get_b = || async {
        let t = std::time::Instant::now();
        let r = client
            .get(format!("{http}/v1/batches/{small}"))
            .bearer_auth(KEY_B)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        t.elapsed().as_secs_f64() * 1000.0
    };
    let latency = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[ms.len() - 1])
    };
    // Transactions committed in the stack's database in 5 s (the leader's loops run too).
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let commits_per_second = || async {
        let q = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
        let read = || async {
            sqlx::query_scalar::<_, i64>(q)
                .fetch_one(&db)
                .await
                .unwrap()
        };
        let before = read().await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        (read().await - before) / 5
    };
    let quiet_commits = commits_per_second().await;
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(get_b().await);
    }
    let mut watches = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..50 {
        let w = client
            .get(format!("{http}/v1/batches/{hog}/watch"))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap();
        *statuses.entry(w.status().as_u16()).or_default() += 1;
        watches.push(w);
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut loaded = Vec::new();
    for _ in 0..20 {
        loaded.push(get_b().await);
    }
    let loaded_commits = commits_per_second().await;
    let ((q50, qmax), (l50, lmax)) = (latency(quiet), latency(loaded));
    let pid = stack.scheduler.child.id().unwrap();
    let cap = if quotas { cap } else { "unsupported".into() };
    println!(
        "MEASURE watches quotas={quotas} max_watches={cap} 50 watch requests of a: {statuses:?}; b's GET: median {q50:.1} ms (max {qmax:.1}) without, median {l50:.1} ms (max {lmax:.1}) with them; database commits/s {quiet_commits} without, {loaded_commits} with them; scheduler VmHWM {} MiB",
        peak_rss_mib(pid)
    );
    drop(watches);
}
