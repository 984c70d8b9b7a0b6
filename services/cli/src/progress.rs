//! A progress bar over a stream of batch views.

use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pixelfarm_api::BatchView;
use pixelfarm_core::{Error, Result};
use std::time::Duration;

/// Follow `views` until the batch is done, drawing counts, rate and ETA; returns the last view.
///
/// # Errors
/// The stream's first error, or `Transient` if it ends before the batch is done.
pub async fn follow(views: impl Stream<Item = Result<BatchView>>) -> Result<BatchView> {
    track(views, ProgressBar::new(0)).await
}

/// [`follow`] without drawing anything.
///
/// # Errors
/// As [`follow`].
pub async fn follow_quietly(views: impl Stream<Item = Result<BatchView>>) -> Result<BatchView> {
    track(views, ProgressBar::hidden()).await
}

async fn track(
    views: impl Stream<Item = Result<BatchView>>,
    bar: ProgressBar,
) -> Result<BatchView> {
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut views = std::pin::pin!(views);
    let mut last = None;
    while let Some(v) = views.next().await {
        let v = v?;
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
