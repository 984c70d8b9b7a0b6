//! HTTP/JSON + SSE routes over [`BatchApi`], for curl users.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | POST | `/v1/batches` | manifest (YAML or JSON) → `SubmitOutcome` (201 new, 200 existing) |
//! | GET | `/v1/batches/{id}` | → `BatchView` |
//! | GET | `/v1/batches/{id}/jobs?after=&limit=` | → `{jobs, next_after}` (limit 1..=10000, default 1000; `next_after` set while jobs follow) |
//! | POST | `/v1/batches/{id}/cancel` | → `{cancelled}` |
//! | GET | `/v1/batches/{id}/watch` | → `text/event-stream` of `batch` events (`BatchView`) |
//! | GET | `/v1/jobs/{id}/image` | → `image/png`, `image/jpeg` or `image/webp` |
//!
//! Every route needs `Authorization: Bearer <key>`. Errors are `{"error": {"kind", "message"}}`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use pixelfarm_core::{Error, ErrorKind, ImageFormat, JobId, TenantId};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use crate::BatchApi;

/// The API routes (merge them with the ops routes on one port).
pub fn router(api: Arc<BatchApi>) -> Router {
    Router::new()
        .route("/v1/batches", post(submit))
        .route("/v1/batches/{id}", get(batch))
        .route("/v1/batches/{id}/jobs", get(jobs))
        .route("/v1/batches/{id}/cancel", post(cancel))
        .route("/v1/batches/{id}/watch", get(watch))
        .route("/v1/jobs/{id}/image", get(image))
        .with_state(api)
}

struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.0.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"error": {"kind": self.0.kind().as_str(), "message": self.0.chain()}});
        (code, axum::Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn tenant(api: &BatchApi, headers: &HeaderMap) -> ApiResult<TenantId> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(api.authenticate(auth).await?)
}

fn observed<T>(api: &BatchApi, method: &str, r: pixelfarm_core::Result<T>) -> ApiResult<T> {
    api.metrics().observe("http", method, &r);
    Ok(r?)
}

async fn submit(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    body: String,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let out = observed(&api, "submit", api.submit(t, body).await)?;
    let code = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(out)).into_response())
}

async fn batch(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let view = observed(&api, "get", api.batch(t, id.parse()?).await)?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<u32>,
}

async fn jobs(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let after: Option<JobId> = p
        .after
        .filter(|a| !a.is_empty())
        .map(|a| a.parse())
        .transpose()?;
    let page = observed(&api, "list", api.page(t, id.parse()?, after, p.limit).await)?;
    Ok(
        axum::Json(json!({"jobs": page.jobs, "next_after": page.next.map(|n| n.to_string())}))
            .into_response(),
    )
}

async fn cancel(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let n = observed(&api, "cancel", api.cancel(t, id.parse()?).await)?;
    Ok(axum::Json(json!({"cancelled": n})).into_response())
}

async fn watch(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let id = id.parse()?;
    observed(&api, "watch", api.batch(t, id).await)?;
    let events = api.clone().watch(t, id).map(|r| {
        Ok::<_, std::convert::Infallible>(match r {
            Ok(v) => Event::default()
                .event("batch")
                .json_data(&v)
                .unwrap_or_else(|_| Event::default().event("error")),
            Err(e) => Event::default().event("error").data(e.chain()),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn image(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let bytes = observed(&api, "image", api.image(t, id.parse()?).await)?;
    let format = ImageFormat::sniff(&bytes).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}
