//! A progress bar over a stream of batch views.

use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pixelfarm_api::BatchView;
use pixelfarm_core::{Error, Result};
use std::time::Duration;

/// Follow `views` until the batch is done, drawing counts, rate and ETA; returns the last view.
/// While jobs wait and no live worker serves the batch's model it says so on stderr, once, and
/// again when one does: without a worker they would wait forever.
///
/// # Errors
/// The stream's first error, or `Transient` if it ends before the batch is done.
pub async fn follow(views: impl Stream<Item = Result<BatchView>>) -> Result<BatchView> {
    track(views, ProgressBar::new(0), true).await
}

/// [`follow`] without drawing anything.
///
/// # Errors
/// As [`follow`].
pub async fn follow_quietly(views: impl Stream<Item = Result<BatchView>>) -> Result<BatchView> {
    track(views, ProgressBar::hidden(), false).await
}

async fn track(
    views: impl Stream<Item = Result<BatchView>>,
    bar: ProgressBar,
    narrate: bool,
) -> Result<BatchView> {
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut views = std::pin::pin!(views);
    let mut last = None;
    let mut unserved = false;
    while let Some(v) = views.next().await {
        let v = v?;
        if narrate && waiting_for_worker(&v) != unserved {
            unserved = !unserved;
            let line = if unserved {
                no_worker_note(&v)
            } else {
                format!("a worker serving model `{}` is live", v.status.model)
            };
            // A line of its own, also where no bar is drawn (stderr not a terminal).
            bar.suspend(|| eprintln!("{line}"));
        }
        bar.set_length(v.total);
        bar.set_position(v.status.counts.finished());
        bar.set_message(describe(&v));
        let done = v.done;
        last = Some(v);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    match last {
        Some(v) if v.done => Ok(v),
        _ => Err(Error::new(
            pixelfarm_core::ErrorKind::Transient,
            "the watch ended before the batch was done",
        )),
    }
}

/// Jobs of the batch wait, and no live worker serves its model.
pub fn waiting_for_worker(v: &BatchView) -> bool {
    let c = &v.status.counts;
    !v.done && v.live_workers == Some(0) && c.pending + c.queued + c.retryable > 0
}

/// What a user sees while [`waiting_for_worker`]: which model, and what would serve it.
pub fn no_worker_note(v: &BatchView) -> String {
    let c = &v.status.counts;
    format!(
        "waiting: no live worker serves model `{m}`; its {n} unfinished jobs wait until a worker with `{m}` in worker.models starts",
        m = v.status.model,
        n = c.total() - c.finished(),
    )
}

/// `ok 10 · running 2 · dead 1 · 3.2/s · eta 12s`
pub fn describe(v: &BatchView) -> String {
    let c = &v.status.counts;
    let mut parts = vec![format!("ok {}", c.succeeded)];
    for (name, n) in [
        ("running", c.running),
        ("queued", c.queued + c.pending),
        ("retrying", c.retryable),
        ("dead", c.dead),
        ("cancelled", c.cancelled),
    ] {
        if n > 0 {
            parts.push(format!("{name} {n}"));
        }
    }
    if v.rate_per_second > 0.0 {
        parts.push(format!("{:.1}/s", v.rate_per_second));
    }
    if let Some(eta) = v.eta_seconds.filter(|_| !v.done) {
        parts.push(format!("eta {}s", eta.ceil() as u64));
    }
    parts.join(" · ")
}
