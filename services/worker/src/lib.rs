//! The worker: takes job messages for the models it serves, claims each job under a lease,
//! renders it, uploads the PNG under a content-addressed key with a provenance record beside it,
//! and records the outcome while it still holds the lease.
//!
//! # Layout
//! - [`worker`]: [`Worker`], the consume → claim → render → upload → complete loop.
//! - [`batcher`]: micro-batching of concurrent renders ([`batcher::Batcher`]).
//! - [`group`]: grouping of concurrent store writes ([`group::GroupWriter`]).
//! - [`job`]: one job's execution and its provenance record.
//! - [`metrics`]: the worker's counters ([`WorkerMetrics`]).
//! - [`check`]: `check-config`, every settings check without connecting or loading weights.
//! - [`app`]: [`app::start`] wires settings into a running worker with its ops server.

pub mod app;
pub mod batcher;
pub mod check;
pub mod group;
pub mod job;
pub mod metrics;
pub mod worker;

pub use metrics::WorkerMetrics;
pub use worker::{Worker, WorkerConfig};
