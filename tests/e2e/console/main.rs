//! The web console in a real headless Chromium (Debian's `chromium` driven through
//! `chromedriver`) against the real stack: sign in, submit a manifest with an error and then
//! fixed, watch it complete, filter the gallery by a variable, approve three images and reject
//! one, export the approved set, and a second tenant's session sees none of it. Screenshots of
//! every page go to `target/console-screenshots/`.
//!
//! Needs `cargo build --workspace --bins` first, and `chromium` with `chromium-driver`
//! (`PIXELFARM_CHROMIUM`, `PIXELFARM_CHROMEDRIVER` name others).

mod form;
mod gallery_bench;
mod handoff;
mod sessions;

use fantoccini::Locator;
use pixelfarm_e2e::browser::{
    Shots, assert_accessible, browser, click, count, driver, element, select, sign_in, text, until,
};
use pixelfarm_e2e::{KEY_A, KEY_B, Stack, StackOptions, bin};
use serde_json::{Value, json};
use tokio::process::Command;

const MANIFEST: &str = "name: console-review
model: test
defaults: {width: 32, height: 32, steps: 2}
prompt: \"a {color} {shape}\"
vars:
  color: [red, blue]
  shape: [circle, square]
seeds: {base: 3, count: 2}
";

/// The flows of issue 36 in one browser session per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_batch_in_the_browser() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions {
        unserved_models: vec!["parked".into()],
        ..StackOptions::default()
    })
    .await;
    let base = format!("http://{}", stack.scheduler.http);
    let driver = driver().await;
    let c = browser(&driver).await;
    let mut shots = Shots::fresh();

    // Sign in: a wrong key is refused on the form, the tenant's key opens the console.
    c.goto(&format!("{base}/console/login")).await.unwrap();
    element(&c, "#key")
        .await
        .send_keys("not-a-key")
        .await
        .unwrap();
    click(&c, ".login button[type=submit]").await;
    let refused = text(&c, "#login-error").await;
    assert!(
        refused.contains("unknown, revoked or expired api key"),
        "{refused}"
    );
    shots.take(&c, "login-refused").await;
    assert_accessible(&c, "login-refused").await;
    sign_in(&c, &base, KEY_A).await;
    let cookie = c.get_named_cookie("pixelfarm_session").await.unwrap();
    assert_eq!(
        cookie.http_only(),
        Some(true),
        "the script cannot read the session"
    );
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()),
        Some("Strict".to_string())
    );
    assert!(
        !c.source().await.unwrap().contains(KEY_A),
        "the key is never written back to the page"
    );

    // Submit with an error: the message names the field and its line, the text is kept.
    c.goto(&format!("{base}/console/submit")).await.unwrap();
    let broken = MANIFEST.replace("steps: 2", "steps: 0");
    form::set_manifest(&c, &broken).await;
    click(&c, "button.primary").await;
    let error = text(&c, "#submit-error").await;
    assert!(
        error.contains("defaults.steps") && error.contains("line 3"),
        "{error}"
    );
    let kept = c
        .execute("return document.getElementById('manifest').value", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(broken), "the manifest is kept as typed");
    shots.take(&c, "submit-error").await;

    // Fixed: the check shows the product before anything is submitted.
    form::set_manifest(&c, MANIFEST).await;
    let preview = form::check(&c).await;
    assert_eq!(
        preview, "console-review on test: 2 × 2 × 1 × 2 = 8 jobs",
        "variables × sizes × seeds"
    );
    shots.take(&c, "submit-preview").await;
    assert_accessible(&c, "submit-preview").await;
    click(&c, "button.primary").await;
    let batch = until(
        &c,
        "the batch page",
        "const m = location.pathname.match(/^\\/console\\/batches\\/([0-9a-f-]{36})$/); return m && m[1]",
        vec![],
    )
    .await;
    let batch = batch.as_str().unwrap().to_string();

    // Watch it complete: progress is pushed, then the gallery holds every image.
    until(
        &c,
        "the batch done",
        "return document.getElementById('batch-progress').dataset.done === 'true'",
        vec![],
    )
    .await;
    until(
        &c,
        "eight images in the gallery",
        "return document.querySelectorAll('#gallery figure[data-state=succeeded] img').length === 8",
        vec![],
    )
    .await;
    assert_eq!(
        text(&c, "#progress-text").await,
        "8 of 8 finished",
        "{}",
        stack.logs()
    );
    shots.take(&c, "batch-done").await;

    // Filter by a variable: the red half.
    select(&c, "select[data-var=color]", "red").await;
    assert_eq!(count(&c, "#gallery figure").await, 4);
    let captions: Vec<String> = {
        let mut v = Vec::new();
        for f in c
            .find_all(Locator::Css("#gallery figcaption"))
            .await
            .unwrap()
        {
            v.push(f.text().await.unwrap());
        }
        v
    };
    assert!(
        captions.iter().all(|t| t.starts_with("color=red · shape=")),
        "{captions:?}"
    );

    // Approve three (two selected in bulk, one by key) and reject one (by key).
    let tiles = c.find_all(Locator::Css("#gallery figure")).await.unwrap();
    let mut ids = Vec::new();
    for t in &tiles {
        ids.push(t.attr("data-job").await.unwrap().unwrap());
    }
    for id in &ids[..2] {
        click(&c, &format!("figure[data-job='{id}'] input.sel")).await;
    }
    assert_eq!(text(&c, "#selection-count").await, "2 selected");
    click(&c, "#approve-selected").await;
    until(
        &c,
        "two approved",
        "return document.querySelectorAll('#gallery figure[data-verdict=approved]').length === 2",
        vec![],
    )
    .await;
    for (id, key, verdict) in [(&ids[2], "a", "approved"), (&ids[3], "r", "rejected")] {
        let tile = element(&c, &format!("figure[data-job='{id}']")).await;
        c.execute("arguments[0].focus()", vec![json!(tile)])
            .await
            .unwrap();
        tile.send_keys(key).await.unwrap();
        until(
            &c,
            "the key's verdict",
            "return document.querySelector(`figure[data-job='${arguments[0]}']`).dataset.verdict === arguments[1]",
            vec![json!(id), json!(verdict)],
        )
        .await;
    }
    let status = text(&c, "#gallery-status").await;
    assert!(status.contains("3 approved · 1 rejected"), "{status}");
    shots.take(&c, "gallery-reviewed").await;
    assert_accessible(&c, "gallery-reviewed").await;

    // The comparison grid: rows by shape, columns by colour, every image in its cell.
    select(&c, "select[data-var=color]", "").await;
    select(&c, "#rows-by", "shape").await;
    select(&c, "#cols-by", "color").await;
    assert_eq!(count(&c, "#gallery table.grid tbody tr").await, 2);
    assert_eq!(count(&c, "#gallery table.grid tbody td").await, 4);
    assert_eq!(count(&c, "#gallery table.grid td figure").await, 8);
    shots.take(&c, "gallery-grid").await;
    assert_accessible(&c, "gallery-grid").await;

    // An image's detail: its parameters and its review.
    let tile = element(&c, &format!("figure[data-job='{}']", ids[0])).await;
    c.execute("arguments[0].focus()", vec![json!(tile)])
        .await
        .unwrap();
    tile.send_keys("\u{E007}").await.unwrap(); // Enter
    let fields = until(
        &c,
        "the detail dialog",
        "const d = document.getElementById('detail'); return d.open && document.getElementById('detail-fields').textContent",
        vec![],
    )
    .await;
    let fields = fields.as_str().unwrap();
    assert!(
        fields.contains("seed") && fields.contains("approved by sha256:"),
        "{fields}"
    );
    shots.take(&c, "image-detail").await;
    assert_accessible(&c, "image-detail").await;

    // Hand-off: thumbnails, the approved set's download, a re-render of the image just opened.
    handoff::check(&c, &base, &batch, &ids[..3], &mut shots).await;

    // The batches page, live counts of the finished batch.
    c.goto(&format!("{base}/console/batches")).await.unwrap();
    let row = text(&c, &format!("tr[data-batch='{batch}']")).await;
    assert!(
        row.contains("console-review") && row.contains("8 / 8"),
        "{row}"
    );
    shots.take(&c, "batches").await;
    assert_accessible(&c, "batches").await;
    // Sorted by name both ways, then filtered to the re-render.
    let names =
        "return [...document.querySelectorAll('#batches tbody tr th')].map((t) => t.textContent)";
    let sort = element(&c, "th button[data-sort=name]").await;
    sort.click().await.unwrap();
    let up = c.execute(names, vec![]).await.unwrap();
    assert_eq!(up, json!(["console-review", "console-review (re-render)"]));
    sort.click().await.unwrap();
    let down = c.execute(names, vec![]).await.unwrap();
    assert_eq!(
        down,
        json!(["console-review (re-render)", "console-review"])
    );
    element(&c, "#batch-filter")
        .await
        .send_keys("re-render")
        .await
        .unwrap();
    let filtered = c.execute(names, vec![]).await.unwrap();
    assert_eq!(filtered, json!(["console-review (re-render)"]));

    // Export the approved set: exactly the three approved images.
    let out = stack.dir.path().join("approved");
    let fetch = Command::new(bin("pixelfarm"))
        .args(["fetch", &batch, "--approved", "--out"])
        .arg(&out)
        .env("PIXELFARM_API_URL", &stack.grpc_url)
        .env("PIXELFARM_API_KEY", KEY_A)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&fetch.stdout);
    assert!(
        fetch.status.success() && said.starts_with("3 images, 3 lines"),
        "{said}{}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let mut exported: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|v| assert_eq!(v["review"]["verdict"], "approved", "{v}"))
        .map(|v| v["job_id"].as_str().unwrap().to_string())
        .collect();
    exported.sort();
    let mut approved = ids[..3].to_vec();
    approved.sort();
    assert_eq!(exported, approved);

    // Sign out; the second tenant sees none of it.
    click(&c, "header form button").await;
    until(
        &c,
        "the sign-in form after signing out",
        "return location.pathname === '/console/login'",
        vec![],
    )
    .await;
    sign_in(&c, &base, KEY_B).await;
    assert_eq!(count(&c, "#batches tbody tr").await, 0);
    let empty = element(&c, "#no-batches")
        .await
        .is_displayed()
        .await
        .unwrap();
    assert!(empty, "tenant b has no batches");
    shots.take(&c, "other-tenant-batches").await;
    let answers = c
        .execute_async(
            "const [ids, batch, done] = arguments;
             (async () => {
               const csrf = document.querySelector('meta[name=csrf-token]').content;
               const review = await fetch('/console/reviews', {method: 'POST',
                 headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
                 body: JSON.stringify({jobs: ids, verdict: 'rejected'})});
               const status = async (url) => (await fetch(url, {cache: 'no-store'})).status;
               done([review.status, (await review.json()).error.message,
                 await status(`/console/jobs/${ids[0]}/image`),
                 await status(`/console/jobs/${ids[0]}/thumbnail`),
                 await status(`/console/batches/${batch}/approved.tar`),
                 await status(`/console/submit?from=${ids[0]}`)]);
             })();",
            vec![json!(ids[..3]), json!(batch)],
        )
        .await
        .unwrap();
    assert_eq!(answers[0], json!(400), "{answers}");
    assert!(
        answers[1]
            .as_str()
            .unwrap()
            .contains("3 of the 3 jobs are not succeeded jobs of this tenant"),
        "{answers}"
    );
    assert_eq!(
        answers.as_array().unwrap()[2..],
        [json!(404), json!(404), json!(404), json!(404)],
        "a's image, thumbnail, approved set and re-render form: {answers}"
    );
    c.goto(&format!("{base}/console/batches/{batch}"))
        .await
        .unwrap();
    let refused = text(&c, "main").await;
    assert!(
        refused.contains("404") && refused.contains("not found"),
        "{refused}"
    );
    shots.take(&c, "other-tenant-batch").await;

    // Cancelled from its page: a batch of a model no worker serves shows why its tiles failed.
    cancelled_tiles(&c, &base, &mut shots).await;
    c.close().await.unwrap();

    // Tenant b's attempt changed nothing.
    let client = stack.client(KEY_A).await;
    let (jobs, _) = client
        .jobs(batch.parse().unwrap(), None, 100)
        .await
        .unwrap();
    let approved = jobs
        .iter()
        .filter(|j| {
            j.review
                .as_ref()
                .is_some_and(|r| r.verdict == pixelfarm_core::Verdict::Approved)
        })
        .count();
    assert_eq!(approved, 3);
}

/// Submit a batch no worker can render, cancel it from its page, and find its jobs under
/// "failed" with their reason.
async fn cancelled_tiles(c: &fantoccini::Client, base: &str, shots: &mut Shots) {
    c.goto(&format!("{base}/console/submit")).await.unwrap();
    form::set_manifest(c, &MANIFEST.replace("model: test", "model: parked")).await;
    click(c, "button.primary").await;
    let waiting = text(c, "#batch-progress").await;
    assert!(
        waiting.contains("no live worker serves this model"),
        "{waiting}"
    );
    click(c, "#cancel-form button").await;
    c.accept_alert().await.unwrap();
    until(
        c,
        "eight cancelled tiles",
        "return document.querySelectorAll('#gallery figure[data-state=cancelled]').length === 8",
        vec![],
    )
    .await;
    select(c, "#review-filter", "failed").await;
    assert_eq!(count(c, "#gallery figure.failed").await, 8);
    let reason = text(c, "#gallery figure.failed .reason").await;
    assert!(reason.starts_with("cancelled"), "{reason}");
    shots.take(c, "cancelled-tiles").await;
}
