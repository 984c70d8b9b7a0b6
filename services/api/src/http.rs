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
//! | PUT | `/v1/inputs/{name}` | image bytes (≤ `MAX_INPUT_BYTES`) → `UploadedInput` (201), stored as `inputs/<tenant>/<name>.<ext>` |
//! | POST | `/v1/inputs` | image bytes → `UploadedInput` (201), named by its sha256 |
//!
//! Every route needs `Authorization: Bearer <key>`; an address whose requests failed to
//! authenticate too often is answered `429 rate_limited` before any work. Every error, the router's own included (unknown
//! route, wrong method, body over the limit, a malformed query), is
//! `{"error": {"code", "message", "request_id"}}` with the request id also in `x-request-id`
//! (codes in docs/security.md; what the message may say in [`crate::errors`]).

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use pixelfarm_core::{Error, ErrorKind, ImageFormat, JobId, MAX_INPUT_BYTES, TenantId};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
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
        .route("/v1/inputs", post(upload_unnamed))
        .route("/v1/inputs/{name}", put(upload_named))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            api.clone(),
            failed_auth_guard,
        ))
        .layer(middleware::from_fn(json_errors))
        .with_state(api)
}

/// A failed call: its [`Error`] rides in the response's extensions to [`json_errors`], which
/// knows the request id.
struct ApiError(Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::QuotaExceeded | ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut res = status.into_response();
        res.extensions_mut().insert(Arc::new(self.0));
        res
    }
}

/// Refuse a client address that failed to authenticate too often before its request does any
/// work, and count each `401` against its address. The address is the TCP peer's
/// ([`ConnectInfo`], set by a server started with connect info; without it nothing is limited).
async fn failed_auth_guard(State(api): State<Arc<BatchApi>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(p) = peer
        && let Err(e) = api.admit_peer(p)
    {
        return ApiError(e).into_response();
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        api.auth_failed(peer);
    }
    res
}

/// The `error` object of every error answer.
fn error_body(code: &str, message: &str, request_id: &str) -> serde_json::Value {
    json!({"error": {"code": code, "message": message, "request_id": request_id}})
}

async fn unknown_route() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Give every request an id (`x-request-id`) and turn every error answer into the JSON error
/// shape: an [`ApiError`]'s through [`crate::errors::public_message`], the router's own
/// (unknown route, wrong method, body limit, extractor rejections) by status.
async fn json_errors(req: Request, next: Next) -> Response {
    let request_id = crate::errors::request_id();
    let call = format!("http {} {}", req.method(), req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let mut res = if !status.is_client_error() && !status.is_server_error() {
        res
    } else if let Some(e) = res.extensions().get::<Arc<Error>>().cloned() {
        let message = crate::errors::public_message(&e, &request_id, &call);
        let body = error_body(crate::errors::code(e.kind()), &message, &request_id);
        (status, axum::Json(body)).into_response()
    } else {
        let (code, mut message) = router_error(status, &method, &path, res).await;
        if status.is_server_error() {
            tracing::error!(request_id, call, %status, "request failed in the router");
            message = format!("internal error (request id {request_id})");
        }
        (status, axum::Json(error_body(code, &message, &request_id))).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Code and message of an error the router answered by itself.
async fn router_error(
    status: StatusCode,
    method: &Method,
    path: &str,
    res: Response,
) -> (&'static str, String) {
    match status {
        StatusCode::NOT_FOUND => ("not_found", format!("no route {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("method {method} is not allowed on {path}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE if path.starts_with("/v1/inputs") => {
            ("payload_too_large", crate::service::upload_too_large(None))
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the scheduler accepts".to_string(),
        ),
        s if s.is_client_error() => {
            // axum's rejections (query, path, body) describe the client's request in plain text.
            let text = axum::body::to_bytes(res.into_body(), 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            let text = if text.is_empty() {
                s.canonical_reason().unwrap_or("bad request").to_lowercase()
            } else {
                text
            };
            ("invalid_argument", text)
        }
        _ => ("internal", String::new()),
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
    let views = observed(&api, "watch", api.clone().watch(t, id).await)?;
    let events = views.map(|r| {
        Ok::<_, std::convert::Infallible>(match r {
            Ok(v) => Event::default()
                .event("batch")
                .json_data(&v)
                .unwrap_or_else(|_| Event::default().event("error")),
            Err(e) => {
                let id = crate::errors::request_id();
                let message = crate::errors::public_message(&e, &id, "http watch");
                Event::default()
                    .event("error")
                    .json_data(error_body(crate::errors::code(e.kind()), &message, &id))
                    .unwrap_or_else(|_| Event::default().event("error"))
            }
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

/// Authenticate, then read the body: a client without a valid key never makes the scheduler
/// read (up to [`MAX_INPUT_BYTES`] of) what it sends.
async fn upload(
    api: &BatchApi,
    headers: &HeaderMap,
    name: Option<&str>,
    body: Body,
) -> ApiResult<Response> {
    let t = tenant(api, headers).await?;
    let Ok(body) = axum::body::to_bytes(body, MAX_INPUT_BYTES as usize).await else {
        // Over the limit (or the client went away): `json_errors` words the 413.
        return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    let out = observed(api, "upload", api.upload(t, name, body).await)?;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn upload_named(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    upload(&api, &headers, Some(&name), body).await
}

async fn upload_unnamed(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    upload(&api, &headers, None, body).await
}
