//! The scheduler: serves the batch API and, on the one leader, moves jobs along.
//!
//! # Layout
//! - [`dispatcher`]: publishes pending jobs (priority, fair share, bounded window per model).
//! - [`maintenance`]: the rescuer, the retry promoter and the stale-queue check.
//! - [`retention`]: the purge of finished batches' job rows past their retention.
//! - [`leader`]: the advisory-lock leader loop that runs the three above.
//! - [`metrics`]: [`SchedulerMetrics`] (backlog, completions, dispatch, maintenance).
//! - [`app`]: [`app::start`] wires settings into running servers and loops.
//! - [`check`]: `check-config`, every settings check without connecting.
//! - [`webhooks`]: the outbox relay that delivers webhooks, signed, under the address policy.
//! - [`tenants`]: tenant bootstrap, quotas and the API key lifecycle (`tenant …` commands).

pub mod app;
pub mod check;
pub mod dispatcher;
pub mod leader;
pub mod maintenance;
pub mod metrics;
pub mod retention;
pub mod tenants;
pub mod webhooks;

pub use metrics::SchedulerMetrics;
