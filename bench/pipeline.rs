//! Pipeline benchmark on the real services (scripts/dev-services), with the release binaries:
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-pipeline [JOBS_E2E] [JOBS_SUBMIT] [JOBS_GPU_LIKE] [JOBS_NOOP] [SLOTS]
//! ```
//!
//! SLOTS: jobs each worker holds in the submit and end-to-end cases (default 16).
//!
//! A count of 0 skips its case (`bench-pipeline 0 0 0 100000`: the no-op case alone).
//!
//! 1. Submit: a 100k-job manifest through the gRPC API (parse + expand + one transaction), against
//!    a baseline measured in the same run: the same jobs inserted one row per statement.
//! 2. End to end: a 20k-job batch, 64×64 test-pattern images, one scheduler and two workers, from
//!    submit to the last job succeeded; against the object store's own ceiling measured in the same
//!    run: with `worker.provenance_records: always` each job costs two PUTs (image and provenance
//!    record), with `unless_embedded` one (the PNG carries the provenance); each on a fresh stack.
//! 3. A GPU-like worker: one worker with one slot whose renderer takes [`GPU_LIKE_RENDER_MS`] per
//!    image, a backlog of 300 jobs: the share of the worker's wall time spent inside the renderer,
//!    and the pipeline's time per job around it (claim, upload, state changes), against the
//!    renderer's own time as the baseline. One slot, so nothing of the pipeline overlaps a render:
//!    a lower bound for a GPU worker, whose other slots upload while the device renders.
//! 4. No-op jobs: the orchestration alone, as fast as it goes. 8×8 test-pattern images (the
//!    smallest the manifest accepts) into the local blob store, one scheduler and two workers;
//!    the baseline, one statement per claim and per completion (`worker.write_group.max` 1),
//!    against grouped writes, longer groups, and the defaults without the image's own work (no
//!    signature, no record file), in the same run, with the CPU each process spent per job.

use futures::StreamExt;
use pixelfarm_api::ApiClient;
use pixelfarm_core::{BlobStore, hash_api_key, parse_manifest};
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

fn manifest_64(name: &str, n: usize) -> String {
    manifest(name, n, None).replace("width: 32, height: 32", "width: 64, height: 64")
}

/// Naive baseline: one INSERT statement per job, in one transaction, rolled back.
async fn naive_insert_seconds(db_url: &str, text: &str) -> f64 {
    let spec = parse_manifest(text).unwrap();
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let tenant: uuid::Uuid =
        sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_sha256 = $1")
            .bind(hash_api_key(KEY_A))
            .fetch_one(&pool)
            .await
            .unwrap();
    let t = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    let batch = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO batches (id, tenant_id, name, model, priority, manifest, job_count) VALUES ($1, $2, 'naive', 'test', 0, $3, $4)")
        .bind(batch)
        .bind(tenant)
        .bind(text)
        .bind(spec.jobs.len() as i32)
        .execute(&mut *tx)
        .await
        .unwrap();
    for j in spec.jobs.iter() {
        sqlx::query("INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts) VALUES ($1, $2, $3, 'test', 0, $4, $5::jsonb, 5)")
            .bind(uuid::Uuid::now_v7())
            .bind(batch)
            .bind(tenant)
            .bind(&j.key)
            .bind(serde_json::to_string(&j.params).unwrap())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    tx.rollback().await.unwrap();
    secs
}

/// PUTs per second the object store takes at `concurrency`, with PNG-sized bodies.
async fn s3_put_rate(stack: &Stack, concurrency: usize, seconds: f64) -> f64 {
    let blob = stack.blob().await;
    let body = bytes::Bytes::from(vec![7u8; 6 * 1024]);
    let t = Instant::now();
    let done = futures::stream::iter(0..)
        .take_while(|_| futures::future::ready(t.elapsed().as_secs_f64() < seconds))
        .map(|i| {
            let (blob, body) = (blob.clone(), body.clone());
            async move {
                blob.put(
                    &format!("ceiling/{}/{i}.bin", i % 256),
                    body,
                    "application/octet-stream",
                )
                .await
                .unwrap()
            }
        })
        .buffer_unordered(concurrency)
        .count()
        .await;
    done as f64 / t.elapsed().as_secs_f64()
}

fn phase_means(scrapes: &[String]) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    let mut count: BTreeMap<String, f64> = BTreeMap::new();
    for s in scrapes {
        for line in s
            .lines()
            .filter(|l| l.starts_with("pixelfarm_job_phase_seconds_"))
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let phase = series
                .split("phase=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            let v: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("pixelfarm_job_phase_seconds_sum") {
                *sum.entry(phase).or_default() += v;
            } else if series.starts_with("pixelfarm_job_phase_seconds_count") {
                *count.entry(phase).or_default() += v;
            }
        }
    }
    sum.into_iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s / count.get(&k).copied().unwrap_or(1.0).max(1.0),
            )
        })
        .collect()
}

/// A stack of `workers` workers with `concurrency` slots each, `render_delay_ms` per render, a
/// wide window.
async fn bench_stack(workers: usize, concurrency: usize, render_delay_ms: u64) -> Stack {
    Stack::start(StackOptions {
        workers,
        concurrency,
        render_delay_ms,
        window: 4096,
        ..Default::default()
    })
    .await
}

/// Submits `jobs` 64×64 test-pattern jobs as batch `name` and waits until all have succeeded:
/// seconds to the submit's answer and to the last success, both from the submit's start.
async fn run_batch(stack: &Stack, client: &ApiClient, name: &str, jobs: usize) -> (f64, f64) {
    let t = Instant::now();
    let out = client.submit(manifest_64(name, jobs)).await.unwrap();
    let submitted = t.elapsed().as_secs_f64();
    let done = wait_batch(
        stack,
        client,
        out.batch_id,
        Duration::from_secs(1800),
        |v| v.done,
    )
    .await;
    let total = t.elapsed().as_secs_f64();
    assert_eq!(
        done.status.counts.succeeded as usize, jobs,
        "{:?}",
        done.status.counts
    );
    (submitted, total)
}

/// Slots per worker in the no-op case: enough jobs in hand that the database round trips of one
/// overlap the others'.
const NOOP_CONCURRENCY: usize = 64;

/// One configuration of the no-op case.
struct NoopCase {
    label: &'static str,
    /// `worker.write_group` `(max, wait_ms)`.
    write_group: (usize, u64),
    /// Each image signed (content credentials) and its provenance record written beside it, as a
    /// job gets them by default; `false`: neither (the PNG carries the provenance), leaving the
    /// orchestration and one file per job.
    image_work: bool,
}

/// The no-op cases, in the order they run, each on a fresh stack: the per-job baseline, the
/// defaults, longer write groups, and the defaults without the image's own work.
const NOOP_CASES: [NoopCase; 4] = [
    NoopCase {
        label: "baseline: one statement per claim and per completion (write_group 1)",
        write_group: (1, 0),
        image_work: true,
    },
    NoopCase {
        label: "grouped writes (write_group 64 / 2 ms, the defaults)",
        write_group: (64, 2),
        image_work: true,
    },
    NoopCase {
        label: "longer groups (write_group 256 / 10 ms)",
        write_group: (256, 10),
        image_work: true,
    },
    NoopCase {
        label: "the defaults, images unsigned and no record file (orchestration + 1 file per job)",
        write_group: (64, 2),
        image_work: false,
    },
];

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) spent so far by the pipeline's processes, summed per role:
/// Postgres, RabbitMQ, the scheduler and the workers (all of them on this host: the shared
/// services serve other clients too), and by the whole host (`all`, from `/proc/stat`).
fn cpu_seconds() -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; the fields follow the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let role = match &stat[open + 1..close] {
            "postgres" => "postgres",
            "beam.smp" => "rabbitmq",
            c if c.starts_with("pixelfarm-sched") => "scheduler",
            c if c.starts_with("pixelfarm-worke") => "workers",
            _ => continue,
        };
        // utime and stime are fields 14 and 15; the state (field 3) comes first after ") ".
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
        });
        *out.entry(role).or_default() += ticks / USER_HZ;
    }
    let host = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    if let Some(cpu) = host.lines().next() {
        // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        let v: Vec<f64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let busy: f64 = v
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, x)| x)
            .sum();
        out.insert("all", busy / USER_HZ);
    }
    out
}

/// What one no-op run measured.
struct NoopRun {
    /// Seconds from the submit's start to the last job's success (the store's clock).
    end_to_end: f64,
    /// Seconds from the first job's start to the last one's success.
    pipeline: f64,
    /// Mean jobs per claim and per completion statement.
    groups: (f64, f64),
    /// CPU seconds each role spent over the run.
    cpu: BTreeMap<&'static str, f64>,
    /// Wall seconds of the run (submit to done, as the benchmark saw it).
    wall: f64,
}

/// Mean of a worker histogram's series with `label`, over the scrapes.
fn histogram_mean(scrapes: &[String], name: &str, label: &str) -> f64 {
    let total = |suffix: &str| -> f64 {
        let series = format!("{name}_{suffix}{{{label}}}");
        scrapes.iter().map(|s| sample(s, &series)).sum()
    };
    total("sum") / total("count").max(1.0)
}

/// `jobs` 8×8 test-pattern jobs on a stack with the local blob store, configured as `case` says.
async fn noop_run(name: &str, jobs: usize, case: &NoopCase) -> NoopRun {
    let stack = Stack::start(StackOptions {
        workers: 2,
        concurrency: NOOP_CONCURRENCY,
        render_delay_ms: 0,
        window: 4096,
        local_blob: true,
        write_group: Some(case.write_group),
        provenance_records: (!case.image_work).then_some("unless_embedded"),
        ..Default::default()
    })
    .await;
    let client = stack.client(KEY_A).await;
    let size = if case.image_work {
        "width: 8, height: 8"
    } else {
        "width: 8, height: 8, output: {content_credentials: false}"
    };
    let text = manifest(name, jobs, None).replace("width: 32, height: 32", size);
    let cpu_before = cpu_seconds();
    let wall = Instant::now();
    let start = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as i64;
    let batch = client.submit(text).await.unwrap().batch_id;
    // Polled once a second: the figures come from the rows' own times, not from the polling.
    let view = loop {
        let v = client.batch(batch).await.unwrap();
        if v.done {
            break v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let wall = wall.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds();
    let cpu: BTreeMap<&'static str, f64> = cpu_after
        .iter()
        .map(|(role, after)| (*role, after - cpu_before.get(role).unwrap_or(&0.0)))
        .collect();
    assert_eq!(
        view.status.counts.succeeded as usize, jobs,
        "{:?}",
        view.status.counts
    );
    // The API leaves the rows' times out: read them from the stack's database.
    let db = sqlx::PgPool::connect(&stack.db_url).await.unwrap();
    let (first, last): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM min(started_at))::float8 * 1000, extract(epoch FROM max(finished_at))::float8 * 1000
         FROM jobs WHERE batch_id = $1",
    )
    .bind(batch.as_uuid())
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    let mut scrapes = Vec::new();
    for w in &stack.workers {
        scrapes.push(scrape(w.http).await);
    }
    let group = |write| {
        histogram_mean(
            &scrapes,
            "pixelfarm_worker_write_group_size",
            &format!("write=\"{write}\""),
        )
    };
    NoopRun {
        end_to_end: (last - start as f64) / 1000.0,
        pipeline: (last - first) / 1000.0,
        groups: (group("claim"), group("complete")),
        cpu,
        wall,
    }
}

/// The no-op cases ([`NOOP_CASES`]), each on a fresh stack.
async fn noop_case(jobs: usize) {
    let mut runs = Vec::new();
    for (i, case) in NOOP_CASES.iter().enumerate() {
        runs.push((case.label, noop_run(&format!("noop-{i}"), jobs, case).await));
    }
    println!(
        "\n## no-op jobs ({jobs} jobs, 8x8 test pattern, local blob store, 1 scheduler + 2 workers x {NOOP_CONCURRENCY} slots)"
    );
    println!(
        "| case | submit to last success | jobs/s | first start to last success | jobs/s | jobs per claim / completion statement |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, r) in &runs {
        println!(
            "| {label} | {:.1} s | {:.0} | {:.1} s | {:.0} | {:.1} / {:.1} |",
            r.end_to_end,
            jobs as f64 / r.end_to_end,
            r.pipeline,
            jobs as f64 / r.pipeline,
            r.groups.0,
            r.groups.1
        );
    }
    println!(
        "\ncores busy over the run (CPU seconds / wall seconds; `all`: the whole host, 2 cores):"
    );
    println!(
        "| case | all | postgres | rabbitmq | scheduler | workers |\n|---|---|---|---|---|---|"
    );
    for (label, r) in &runs {
        println!("| {label} | {} |", roles(&r.cpu, 1.0 / r.wall, 2));
    }
    println!(
        "\nCPU milliseconds per job (`all`: the whole host, whatever ran on it):\n| case | all | postgres | rabbitmq | scheduler | workers |\n|---|---|---|---|---|---|"
    );
    for (label, r) in &runs {
        println!("| {label} | {} |", roles(&r.cpu, 1000.0 / jobs as f64, 3));
    }
}

/// The roles' values times `scale` as table cells: all, postgres, rabbitmq, scheduler, workers.
fn roles(values: &BTreeMap<&'static str, f64>, scale: f64, decimals: usize) -> String {
    ["all", "postgres", "rabbitmq", "scheduler", "workers"]
        .map(|role| {
            format!(
                "{:.decimals$}",
                scale * values.get(role).copied().unwrap_or(0.0)
            )
        })
        .join(" | ")
}

/// Milliseconds an image holds the GPU-like renderer: diffusers' SD 1.5 at 512², batch 8, on an
/// H200 (4.38 images/s; docs/benchmarks.md, "GPU runs"), rounded up.
const GPU_LIKE_RENDER_MS: u64 = 250;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("job counts"))
        .collect();
    let e2e_jobs = args.first().copied().unwrap_or(20_000);
    let submit_jobs = args.get(1).copied().unwrap_or(100_000);
    let gpu_like_jobs = args.get(2).copied().unwrap_or(300);
    let noop_jobs = args.get(3).copied().unwrap_or(100_000);
    let concurrency = args.get(4).copied().unwrap_or(16);

    if submit_jobs > 0 {
        submit_case(submit_jobs, concurrency).await;
    }
    if e2e_jobs > 0 {
        e2e_case(e2e_jobs, concurrency).await;
    }
    if gpu_like_jobs > 0 {
        gpu_like_case(gpu_like_jobs).await;
    }
    if noop_jobs > 0 {
        noop_case(noop_jobs).await;
    }
}

async fn submit_case(submit_jobs: usize, concurrency: usize) {
    let stack = bench_stack(0, concurrency, 0).await;
    let client = stack.client(KEY_A).await;
    let naive_n = 10_000;
    let naive = naive_insert_seconds(&stack.db_url, &manifest_64("naive", naive_n)).await;
    let t = Instant::now();
    client
        .submit(manifest_64("same-10k", naive_n))
        .await
        .unwrap();
    let ours_10k = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let big = client
        .submit(manifest_64("big", submit_jobs))
        .await
        .unwrap();
    let ours_big = t.elapsed().as_secs_f64();
    assert_eq!(big.jobs as usize, submit_jobs);
    println!("## submit (gRPC: parse + expand + one transaction)");
    println!("| case | jobs | seconds | jobs/s |\n|---|---|---|---|");
    println!(
        "| baseline: one INSERT per job | {naive_n} | {naive:.2} | {:.0} |",
        naive_n as f64 / naive
    );
    println!(
        "| pixelfarm submit | {naive_n} | {ours_10k:.2} | {:.0} |",
        naive_n as f64 / ours_10k
    );
    println!(
        "| pixelfarm submit | {submit_jobs} | {ours_big:.2} | {:.0} |",
        submit_jobs as f64 / ours_big
    );
    println!(
        "speed-up over the baseline at {naive_n} jobs: {:.1}x\n",
        naive / ours_10k
    );
    drop(stack);
}

/// `worker.provenance_records` of the end-to-end runs, with the PUTs each job then costs.
const E2E_RECORDS: [(&str, f64); 2] = [("always", 2.0), ("unless_embedded", 1.0)];

async fn e2e_case(e2e_jobs: usize, concurrency: usize) {
    println!(
        "## end to end ({e2e_jobs} jobs, 64x64 test pattern, 1 scheduler + 2 workers x {concurrency} slots)"
    );
    println!(
        "| worker.provenance_records | PUTs per job | submit | submit to last success | pipeline | S3 PUTs/s at {} in flight (baseline) | ceiling from S3 alone | pipeline / ceiling |",
        2 * concurrency
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut phases = Vec::new();
    for (records, puts) in E2E_RECORDS {
        let mut stack = Stack::start(StackOptions {
            workers: 2,
            concurrency,
            render_delay_ms: 0,
            window: 4096,
            provenance_records: Some(records),
            ..Default::default()
        })
        .await;
        let client = stack.client(KEY_A).await;
        // The object store's own rate, measured on each stack just before its batch.
        let ceiling = s3_put_rate(&stack, 2 * concurrency, 5.0).await;
        let (submitted, total) = run_batch(&stack, &client, records, e2e_jobs).await;
        let rate = e2e_jobs as f64 / total;
        let mut scrapes = Vec::new();
        for w in &stack.workers {
            scrapes.push(scrape(w.http).await);
        }
        println!(
            "| {records} | {puts} | {submitted:.2} s | {total:.2} s | {rate:.0} jobs/s | {ceiling:.0} | {:.0} jobs/s | {:.2} |",
            ceiling / puts,
            rate / (ceiling / puts)
        );
        phases.push((records, phase_means(&scrapes)));
        stack.workers.clear();
    }
    for (records, means) in phases {
        println!("\nmean seconds per phase (workers, {records}):");
        for (phase, mean) in means {
            println!("- {phase}: {mean:.4}");
        }
    }
}

async fn gpu_like_case(gpu_like_jobs: usize) {
    let mut stack = bench_stack(1, 1, GPU_LIKE_RENDER_MS).await;
    let client = stack.client(KEY_A).await;
    let (_, wall) = run_batch(&stack, &client, "gpu-like", gpu_like_jobs).await;
    let inside = gpu_like_jobs as f64 * GPU_LIKE_RENDER_MS as f64 / 1000.0;
    println!(
        "\n## a GPU-like worker ({gpu_like_jobs} jobs, 1 worker x 1 slot, {GPU_LIKE_RENDER_MS} ms a render)"
    );
    println!("| measure | value |\n|---|---|");
    println!("| submit to last success | {wall:.2} s |");
    println!("| baseline: the renderer's own time | {inside:.2} s |");
    println!(
        "| share of wall time inside the renderer | {:.1} % |",
        100.0 * inside / wall
    );
    println!(
        "| pipeline time per job around the render | {:.1} ms |",
        1000.0 * (wall - inside) / gpu_like_jobs as f64
    );
    stack.workers.clear();
}
