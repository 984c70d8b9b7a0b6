//! The batch API, written once and served twice.
//!
//! # Layout
//! - [`service`]: [`BatchApi`], the tenant-scoped implementation (submit, upload, get, list,
//!   watch, cancel, image) over a [`pixelfarm_core::JobStore`] and a [`pixelfarm_core::BlobStore`].
//! - [`grpc`]: the tonic `BatchService` over [`BatchApi`].
//! - [`http`]: the axum HTTP/JSON + SSE routes over [`BatchApi`].
//! - [`console`]: the web console (sign-in, batches, submit, gallery, review) over [`BatchApi`].
//! - [`limits`]: what a replica counts in memory: failed authentications per address, submits
//!   per tenant and minute, open watches per tenant.
//! - [`errors`]: what a client is told when a call fails (code, message, request id).
//! - [`convert`]: domain ↔ protobuf records.
//! - [`client`]: [`ApiClient`], the gRPC client the CLI uses (plain or TLS, [`CaCertificates`]).
//! - [`metrics`]: the API's counters ([`ApiMetrics`]).

pub mod client;
pub mod console;
pub mod convert;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod service;

pub use client::{ApiClient, CaCertificates};
pub use metrics::ApiMetrics;
pub use service::{BatchApi, BatchView, DEFAULT_WATCH_FALLBACK, JobPage, UploadedInput};
