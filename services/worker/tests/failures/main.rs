//! Failure handling of the real worker loop over the real embedded seams (SQLite, in-process
//! broker, local folder), with faults injected by wrapping the blob store and the renderer.
//!
//! The fakes are in `fakes`, the worker and scheduler they run under in `harness`.

mod fakes;
mod harness;

use bytes::Bytes;
use pixelfarm_core::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fakes::{BatchingRenderer, CHANGING, KnowsSomeModels, SteppingRenderer, seed_colour};
use harness::{harness, harness_timed, harness_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_after_backoff_and_succeeds() {
    let jobs = harness(1, 3).await.run("test").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Succeeded, 2), "{j:?}");
    assert_eq!(
        j.error_kind.as_deref(),
        Some("transient"),
        "the first failure stays on record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_dies_at_once_with_the_reason() {
    let jobs = harness(0, 3).await.run("missing").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(j.error_kind.as_deref(), Some("permanent"));
    assert!(
        j.last_error.as_deref().unwrap().contains("unknown model"),
        "{j:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_die_when_attempts_run_out() {
    let jobs = harness(100, 2).await.run("test").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 2), "{j:?}");
    assert!(
        j.last_error
            .as_deref()
            .unwrap()
            .contains("attempts exhausted (2 of 2)"),
        "{j:?}"
    );
}

/// The first pixel of a stored PNG.
fn first_pixel(png_bytes: &[u8]) -> [u8; 3] {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).unwrap();
    [buf[0], buf[1], buf[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_render_in_micro_batches_and_each_gets_its_own_image() {
    let renderer = BatchingRenderer::new(4, usize::MAX);
    let mut h = harness_with(0, 3, renderer.clone(), 4).await;
    let jobs = h.run_seeds("test", 12).await;
    let calls = renderer.calls();
    assert_eq!(
        calls.iter().sum::<usize>(),
        12,
        "every job rendered once: {calls:?}"
    );
    assert!(
        calls.iter().all(|&n| n <= 4),
        "batches respect max_batch: {calls:?}"
    );
    assert!(
        calls.iter().any(|&n| n > 1),
        "some jobs shared a batch: {calls:?}"
    );
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        let png = h.blob.get(j.object_key.as_deref().unwrap()).await.unwrap();
        let c = seed_colour(j.params.seed);
        assert_eq!(
            first_pixel(&png),
            [c, c, c],
            "job {} got another job's image",
            j.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_out_of_device_memory_is_retried_in_smaller_batches() {
    // Batches of more than one job fail like a GPU out of memory; singles work.
    let renderer = BatchingRenderer::new(4, 1);
    let mut h = harness_with(0, 5, renderer.clone(), 4).await;
    let jobs = h.run_seeds("test", 8).await;
    let calls = renderer.calls();
    let first_oom = calls
        .iter()
        .position(|&n| n > 1)
        .unwrap_or_else(|| panic!("no batch formed: {calls:?}"));
    // After a failed batch of n, no batch is bigger than n / 2.
    let mut cap = usize::MAX;
    for &n in &calls[first_oom..] {
        assert!(
            n <= cap,
            "batch of {n} after the limit fell to {cap}: {calls:?}"
        );
        if n > 1 {
            cap = n / 2;
        }
    }
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    }
    assert!(
        jobs.iter()
            .any(|j| j.attempt > 1 && j.error_kind.as_deref() == Some("transient")),
        "the failed batch's jobs were retried: {jobs:?}"
    );
}

/// An 8x8 grey PNG.
fn small_png() -> Bytes {
    let image = RgbImage {
        width: 8,
        height: 8,
        rgb: vec![90; 8 * 8 * 3],
    };
    let meta = pixelfarm_image::PngMetadata {
        parameters: String::new(),
        provenance_json: String::new(),
    };
    pixelfarm_image::output::encode(&image, &OutputSpec::default(), &meta)
        .unwrap()
        .into()
}

/// A one-job manifest starting from the input `key`.
fn img2img(key: &str) -> String {
    format!(
        "name: b\nmodel: test\ndefaults: {{width: 16, height: 16}}\njobs:\n  - {{prompt: p, seed: 1, init: {{image: {{key: {key}}}, strength: 0.5}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_image_replaced_after_submit_is_refused_permanently() {
    let mut h = harness(0, 3).await;
    let up = h
        .core
        .api
        .upload(h.tenant, Some(CHANGING), small_png())
        .await
        .unwrap();
    // Submit reads (and pins) the image; the worker's read sees other bytes.
    let jobs = h.run_manifest(img2img(&up.key)).await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("changed since the batch was submitted") && err.contains(&up.key),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_no_input_outside_the_jobs_tenant() {
    let mut h = harness(0, 3).await;
    let other = h.store.create_tenant("other", 1).await.unwrap();
    let theirs = h
        .core
        .api
        .upload(other, Some("theirs"), small_png())
        .await
        .unwrap();
    // A job row naming another tenant's input, written past the API's check (as a bug or a
    // hand-edited row would): the worker refuses to read it.
    let spec = parse_manifest(&img2img(&theirs.key)).unwrap();
    let out = h.store.submit(h.tenant, &spec, 3).await.unwrap();
    let jobs = h.finish(out.batch_id).await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(
        j.last_error.as_deref(),
        Some(
            format!(
                "init image `{}` is not an input of the job's tenant",
                theirs.key
            )
            .as_str()
        ),
        "{j:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_reports_progress_and_cancel_stops_it_between_steps() {
    let renderer = Arc::new(SteppingRenderer::default());
    let h = harness_with(0, 3, renderer.clone(), 1).await;
    let m = "name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 200}\nprompt: p\nseeds: [1]\n";
    let out = h.core.api.submit(h.tenant, m.into()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Progress reaches the job record through the heartbeats.
    let seen = loop {
        let jobs = h
            .core
            .api
            .jobs(h.tenant, out.batch_id, None, 10)
            .await
            .unwrap();
        if let Some(p) = jobs[0].progress.filter(|p| p.done >= 3) {
            assert_eq!(jobs[0].state, JobState::Running);
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", jobs[0]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(seen.total, 200);
    assert_eq!(h.core.api.cancel(h.tenant, out.batch_id).await.unwrap(), 1);
    renderer.stopped_early(200, deadline).await;
    // The worker records nothing over the cancellation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = h.core.api.batch(h.tenant, out.batch_id).await.unwrap();
    assert!(view.done);
    assert_eq!(view.status.counts.cancelled, 1);
    let j = &h
        .core
        .api
        .jobs(h.tenant, out.batch_id, None, 10)
        .await
        .unwrap()[0];
    assert_eq!(
        (j.state, j.object_key.as_deref()),
        (JobState::Cancelled, None)
    );
    h.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_models_limits_dies_before_rendering() {
    let renderer = Arc::new(SteppingRenderer {
        limits: Some(ModelLimits {
            max_width: 64,
            max_height: 64,
            max_steps: 5,
            max_output_side: 64,
            max_batch: 1,
            loras: None,
            controlnets: None,
        }),
        ..Default::default()
    });
    let mut h = harness_with(0, 3, renderer.clone(), 1).await;
    let jobs = h
        .run_manifest("name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 6}\nprompt: p\nseeds: [1]\n".into())
        .await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(j.error_kind.as_deref(), Some("invalid"));
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("`steps` is 6") && err.contains("at most 5"),
        "{err}"
    );
    assert_eq!(
        renderer.steps_taken.load(Ordering::SeqCst),
        0,
        "never rendered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_the_timeout_stops_and_its_job_dies_without_retries() {
    let renderer = Arc::new(SteppingRenderer::default());
    let mut h = harness_timed(
        0,
        3,
        renderer.clone(),
        1,
        Duration::from_millis(300),
        Duration::from_millis(2),
    )
    .await;
    // 200 steps of 20 ms: 4 s, far past the 300 ms timeout.
    let jobs = h
        .run_manifest("name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 200}\nprompt: p\nseeds: [1]\n".into())
        .await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("worker.render_timeout_seconds") && err.contains("of 200"),
        "{err}"
    );
    // The render thread stops at its next step.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    renderer.stopped_early(200, deadline).await;
    assert_eq!(j.object_key, None);
}

#[tokio::test]
async fn a_worker_with_one_job_in_hand_never_waits_for_its_write_groups() {
    // Write groups that would wait an hour for company: with one slot, no other job can join a
    // claim or a completion, so each is written at once (the harness gives the batch 20 s).
    let renderer = Arc::new(KnowsSomeModels(Default::default()));
    let mut h = harness_timed(
        0,
        3,
        renderer,
        1,
        Duration::from_secs(60),
        Duration::from_secs(3600),
    )
    .await;
    let jobs = h.run_seeds("test", 3).await;
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        assert_eq!((j.state, j.attempt), (JobState::Succeeded, 1), "{j:?}");
    }
}
