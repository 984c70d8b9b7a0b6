//! Pipeline benchmark on the real services (scripts/dev-services), with the release binaries:
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-pipeline [JOBS_E2E] [JOBS_SUBMIT] [JOBS_GPU_LIKE]
//! ```
//!
//! 1. Submit: a 100k-job manifest through the gRPC API (parse + expand + one transaction), against
//!    a baseline measured in the same run: the same jobs inserted one row per statement.
//! 2. End to end: a 20k-job batch, 64×64 test-pattern images, one scheduler and two workers, from
//!    submit to the last job succeeded; against the object store's own ceiling measured in the same
//!    run (each job costs two PUTs: image and provenance).
//! 3. A GPU-like worker: one worker with one slot whose renderer takes [`GPU_LIKE_RENDER_MS`] per
//!    image, a backlog of 300 jobs: the share of the worker's wall time spent inside the renderer,
//!    and the pipeline's time per job around it (claim, upload, state changes), against the
//!    renderer's own time as the baseline. One slot, so nothing of the pipeline overlaps a render:
//!    a lower bound for a GPU worker, whose other slots upload while the device renders.

use futures::StreamExt;
use pixelfarm_api::ApiClient;
use pixelfarm_core::{BlobStore, hash_api_key, parse_manifest};
use pixelfarm_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    let concurrency = 16;

    // --- submit ---------------------------------------------------------------------------
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

    // --- end to end -----------------------------------------------------------------------
    let mut stack = bench_stack(2, concurrency, 0).await;
    let client = stack.client(KEY_A).await;
    let ceiling = s3_put_rate(&stack, 2 * concurrency, 5.0).await;
    let (submitted, total) = run_batch(&stack, &client, "e2e", e2e_jobs).await;
    let rate = e2e_jobs as f64 / total;
    let mut scrapes = Vec::new();
    for w in &stack.workers {
        scrapes.push(scrape(w.http).await);
    }
    println!(
        "## end to end ({e2e_jobs} jobs, 64x64 test pattern, 1 scheduler + 2 workers x {concurrency} slots)"
    );
    println!("| measure | value |\n|---|---|");
    println!("| submit | {submitted:.2} s |");
    println!("| submit to last success | {total:.2} s |");
    println!("| pipeline | {rate:.0} jobs/s |");
    println!(
        "| baseline: S3 PUTs/s at {} in flight | {ceiling:.0} |",
        2 * concurrency
    );
    println!(
        "| ceiling from S3 alone (2 PUTs per job) | {:.0} jobs/s |",
        ceiling / 2.0
    );
    println!("| pipeline / S3 ceiling | {:.2} |", rate / (ceiling / 2.0));
    println!("\nmean seconds per phase (workers):");
    for (phase, mean) in phase_means(&scrapes) {
        println!("- {phase}: {:.4}", mean);
    }
    stack.workers.clear();
    drop(stack);

    // --- a GPU-like worker ----------------------------------------------------------------
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
