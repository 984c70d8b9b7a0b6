//! Batches of growing size on the real services (scripts/dev-services), with the release binaries:
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-scale [JOBS...]   # default 1000 100000 1000000
//! ```
//!
//! One scheduler and two workers of 64 slots (test-pattern renders of 8×8 pixels, no delay, the
//! local blob store: the orchestration, not the object store, is measured) take batches of each
//! size in turn, smallest first. For each batch: the submit's time and the scheduler's peak
//! memory after it, the time from submit to the last job succeeded, then the time of `status`,
//! `watch` (to its first event) and `pixelfarm fetch` of that batch and of the first batch again
//! (which must not grow with the size of the others). Then the peak memory of every process over
//! the run and the Postgres tables' and indexes' sizes.

use futures::StreamExt;
use pixelfarm_api::ApiClient;
use pixelfarm_core::BatchId;
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A manifest of `n` 8×8 jobs (`n` a multiple of 5).
fn manifest_8(name: &str, n: usize) -> String {
    manifest(name, n, None).replace("width: 32, height: 32", "width: 8, height: 8")
}

/// Resident memory of a process in MiB: its proportional share (Pss) when the kernel gives it,
/// so processes sharing memory (Postgres's shared buffers) are not counted once per process.
fn pss_mib(pid: u32) -> f64 {
    let read = |file: &str, field: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    read("smaps_rollup", "Pss:")
        .or_else(|| read("status", "VmRSS:"))
        .unwrap_or(0.0)
        / 1024.0
}

/// Pids of the processes whose command name is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// The highest memory of each process group seen by a sampler every 250 ms.
#[derive(Clone, Default)]
struct Peaks(Arc<Mutex<BTreeMap<String, f64>>>);

impl Peaks {
    fn sample(&self, groups: &[(String, Vec<u32>)]) {
        let mut peaks = self.0.lock().unwrap();
        for (name, pids) in groups {
            let now: f64 = pids.iter().map(|p| pss_mib(*p)).sum();
            let peak = peaks.entry(name.clone()).or_default();
            *peak = peak.max(now);
        }
    }

    /// Sample the stack's processes, Postgres's and RabbitMQ's until the returned handle aborts.
    fn start(&self, stack: &Stack) -> tokio::task::JoinHandle<()> {
        let mut fixed = vec![(
            "scheduler".to_string(),
            vec![stack.scheduler.child.id().unwrap()],
        )];
        for (i, w) in stack.workers.iter().enumerate() {
            fixed.push((format!("worker-{i}"), vec![w.child.id().unwrap()]));
        }
        let peaks = self.clone();
        tokio::spawn(async move {
            loop {
                let mut groups = fixed.clone();
                groups.push(("postgres (all backends)".into(), pids_named("postgres")));
                groups.push(("rabbitmq".into(), pids_named("beam.smp")));
                peaks.sample(&groups);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }
}

/// Median seconds of `runs` runs of `f`.
async fn median<F, Fut>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// Seconds of `pixelfarm fetch` of `batch` into a fresh folder (removed after).
fn fetch_seconds(stack: &Stack, batch: BatchId) -> f64 {
    let out = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let status = std::process::Command::new(bin("pixelfarm"))
        .args(["fetch", &batch.to_string(), "--out"])
        .arg(out.path())
        .env("PIXELFARM_API_URL", &stack.grpc_url)
        .env("PIXELFARM_API_KEY", KEY_A)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pixelfarm fetch failed");
    t.elapsed().as_secs_f64()
}

/// Times of `status` (median of 21), `watch` to its first event (median of 5) and `fetch` of
/// `batch`, in seconds.
async fn reads(stack: &Stack, client: &ApiClient, batch: BatchId) -> (f64, f64, f64) {
    let status = median(21, || async {
        client.batch(batch).await.unwrap();
    })
    .await;
    let watch = median(5, || async {
        let mut w = client.watch(batch).await.unwrap();
        w.next().await.unwrap().unwrap();
    })
    .await;
    (status, watch, fetch_seconds(stack, batch))
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("job counts"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    let stack = Stack::start(StackOptions {
        workers: 2,
        concurrency: 64,
        render_delay_ms: 0,
        window: 4096,
        local_blob: true,
        ..Default::default()
    })
    .await;
    let client = stack.client(KEY_A).await;
    let peaks = Peaks::default();
    let sampler = peaks.start(&stack);
    let scheduler_pid = stack.scheduler.child.id().unwrap();

    println!(
        "## batches of growing size (1 scheduler + 2 workers x 64 slots, 8x8 test pattern, local blob store)\n"
    );
    println!(
        "| jobs | submit s | scheduler peak MiB after submit | submit to done s | jobs/s | status ms | watch ms | fetch s | first batch: status ms | watch ms | fetch s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut first: Option<BatchId> = None;
    for n in sizes {
        let t = Instant::now();
        let out = client
            .submit(manifest_8(&format!("scale-{n}"), n))
            .await
            .unwrap();
        let submitted = t.elapsed().as_secs_f64();
        let hwm = vm_hwm_mib(scheduler_pid);
        let done = wait_batch(
            &stack,
            &client,
            out.batch_id,
            Duration::from_secs(7200),
            |v| v.done,
        )
        .await;
        let total = t.elapsed().as_secs_f64();
        assert_eq!(done.status.counts.succeeded as usize, n);
        let (status, watch, fetch) = reads(&stack, &client, out.batch_id).await;
        let first_id = *first.get_or_insert(out.batch_id);
        let (f_status, f_watch, f_fetch) = reads(&stack, &client, first_id).await;
        println!(
            "| {n} | {submitted:.2} | {hwm} | {total:.1} | {:.0} | {:.2} | {:.2} | {fetch:.2} | {:.2} | {:.2} | {f_fetch:.2} |",
            n as f64 / (total - submitted),
            status * 1e3,
            watch * 1e3,
            f_status * 1e3,
            f_watch * 1e3,
        );
    }
    sampler.abort();

    println!("\n## peak memory over the run (Pss, MiB)\n");
    println!("| process | peak MiB |\n|---|---|");
    for (name, mib) in peaks.0.lock().unwrap().iter() {
        println!("| {name} | {mib:.0} |");
    }

    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    // Fresh statistics, for the row counts below.
    sqlx::query("ANALYZE jobs, batches, batch_progress")
        .execute(&db)
        .await
        .unwrap();
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname IN ('jobs', 'batches', 'batch_progress')
         ORDER BY c.relname",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    println!("\n## Postgres tables\n");
    println!("| table | rows (estimate) | table MiB | indexes MiB |\n|---|---|---|---|");
    for (name, tuples, table, indexes) in rows {
        println!(
            "| {name} | {tuples} | {:.0} | {:.0} |",
            table as f64 / 1048576.0,
            indexes as f64 / 1048576.0
        );
    }
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT indexrelname::text, pg_relation_size(indexrelid) FROM pg_stat_user_indexes
         WHERE relname = 'jobs' ORDER BY 2 DESC",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    println!("\n| index on jobs | MiB |\n|---|---|");
    for (name, bytes) in indexes {
        println!("| {name} | {:.1} |", bytes as f64 / 1048576.0);
    }
}
