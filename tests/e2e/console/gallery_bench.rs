//! How the gallery behaves with 10,000 jobs against 100 in the same run: load time, the cost of a
//! filter change and of a review key, DOM size and script heap. A measurement, run by hand:
//!
//! cargo nextest run -p pixelfarm-e2e --test console --run-ignored only --no-capture -E 'test(gallery)'

use fantoccini::Client;
use pixelfarm_core::BatchId;
use pixelfarm_e2e::browser::{browser, driver, sign_in};
use pixelfarm_e2e::results::wait_batch;
use pixelfarm_e2e::{KEY_A, Stack, StackOptions};
use serde_json::Value;
use std::time::Duration;

/// A batch of `side`² jobs: two variables of `side` values each, one seed, 8×8 pixels.
fn manifest(side: usize) -> String {
    let values = |p: &str| {
        (0..side)
            .map(|i| format!("{p}{i:03}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "name: gallery-{n}\nmodel: test\ndefaults: {{width: 8, height: 8, steps: 1}}\n\
         prompt: \"{{a}} {{b}}\"\nvars:\n  a: [{}]\n  b: [{}]\nseeds: [1]\n",
        values("a"),
        values("b"),
        n = side * side
    )
}

/// The page of `batch` measured, each until the browser painted the result: milliseconds from
/// navigation to every job loaded and shown, of a filter change, of a review key; DOM elements; heap MB;
/// then the same with every tile shown.
async fn measure(c: &Client, base: &str, batch: BatchId) -> Value {
    c.goto(&format!("{base}/console/batches/{batch}"))
        .await
        .unwrap();
    c.execute_async(
        "const done = arguments[0];
         const status = document.getElementById('gallery-status');
         const loaded = () => status.textContent && !status.textContent.includes('loading');
         // Until the browser has painted what the script changed (layout and style included).
         const painted = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
         const finish = async () => {
           await painted();
           const load = performance.now();
           const sel = document.querySelector('select[data-var=a]');
           let t = performance.now();
           sel.value = sel.options[1].value;
           sel.dispatchEvent(new Event('change'));
           await painted();
           const filter = performance.now() - t;
           sel.value = '';
           sel.dispatchEvent(new Event('change'));
           // A review key on the n-th tile: milliseconds until the tile shows the verdict.
           const review = async (n, verdict) => {
             const fig = document.querySelectorAll('#gallery figure[data-state=succeeded]')[n];
             const id = fig.dataset.job;
             fig.focus();
             const t = performance.now();
             fig.dispatchEvent(new KeyboardEvent('keydown', {key: verdict[0], bubbles: true}));
             while (document.querySelector(`figure[data-job='${id}']`).dataset.verdict !== verdict) {
               await new Promise((r) => setTimeout(r, 1));
             }
             await painted();
             return performance.now() - t;
           };
           const paged = {load, filter, review: await review(0, 'approved'),
             elements: document.getElementsByTagName('*').length,
             heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null};
           // Every tile shown (what the gallery did before it showed them a page at a time).
           t = performance.now();
           const more = document.getElementById('gallery-more');
           while (!more.hidden) document.getElementById('show-more').click();
           await painted();
           const show_all = performance.now() - t;
           done({...paged, show_all, review_all: await review(1, 'rejected'),
                 elements_all: document.getElementsByTagName('*').length});
         };
         if (loaded()) finish();
         else new MutationObserver((_, o) => { if (loaded()) { o.disconnect(); finish(); } })
           .observe(status, {childList: true, characterData: true, subtree: true});",
        vec![],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run by hand"]
async fn gallery_of_10000_jobs_against_100() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions {
        concurrency: 16,
        local_blob: true,
        ..StackOptions::default()
    })
    .await;
    let client = stack.client(KEY_A).await;
    let mut batches = Vec::new();
    for side in [10, 100] {
        let id = client.submit(manifest(side)).await.unwrap().batch_id;
        let started = std::time::Instant::now();
        wait_batch(&stack, &client, id, Duration::from_secs(1800), |v| v.done).await;
        println!("{} jobs rendered in {:.1?}", side * side, started.elapsed());
        batches.push((side * side, id));
    }
    let base = format!("http://{}", stack.scheduler.http);
    let driver = driver().await;
    let c = browser(&driver).await;
    sign_in(&c, &base, KEY_A).await;
    let mut rows = Vec::new();
    for &(jobs, id) in &batches {
        // Twice each: the first visit warms the server's and the browser's caches.
        measure(&c, &base, id).await;
        let m = measure(&c, &base, id).await;
        println!("{jobs} jobs: {m}");
        rows.push(m);
    }
    let ratio = |k: &str| rows[1][k].as_f64().unwrap() / rows[0][k].as_f64().unwrap();
    println!(
        "10,000 / 100 jobs: load {:.1}×, filter {:.2}×, review {:.2}×, DOM {:.2}×, heap {:.2}×",
        ratio("load"),
        ratio("filter"),
        ratio("review"),
        ratio("elements"),
        ratio("heap_mb"),
    );
    let all = &rows[1];
    println!(
        "10,000 jobs, every tile shown / a page shown: review {:.1}×, DOM {:.1}×",
        all["review_all"].as_f64().unwrap() / all["review"].as_f64().unwrap(),
        all["elements_all"].as_f64().unwrap() / all["elements"].as_f64().unwrap(),
    );
    c.close().await.unwrap();
}
