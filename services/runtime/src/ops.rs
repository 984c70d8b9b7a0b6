//! The ops HTTP surface every process exposes: `/metrics`, `/healthz`, `/readyz`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, Verdict};

#[derive(Clone)]
struct Ops {
    registry: Registry,
    health: Arc<Health>,
}

/// `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz` (readiness) as
/// `health` judges them (200 or 503, the body listing every check and why it fails).
pub fn router(registry: Registry, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, health })
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    match enc.encode(&ops.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, enc.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn answer(v: Verdict) -> (StatusCode, String) {
    let status = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, v.body)
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    answer(ops.health.readiness())
}

async fn healthz(State(ops): State<Ops>) -> impl IntoResponse {
    answer(ops.health.liveness())
}

/// Bind `addr` (port 0 picks a free port).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serve `app` on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // With the peer's address: the API limits failed authentications per address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}
