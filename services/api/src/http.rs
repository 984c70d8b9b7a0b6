//! HTTP/JSON + SSE routes over [`BatchApi`], for curl users.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | POST | `/v1/batches` | manifest (YAML or JSON) → `SubmitOutcome` (201 new, 200 existing) |
//! | GET | `/v1/batches/{id}` | → `BatchView` |
//! | GET | `/v1/batches/{id}/jobs?after=&limit=` | → `{jobs, next_after}` (limit 1..=10000, default 1000; `next_after` set while jobs follow) |
//! | POST | `/v1/batches/{id}/cancel` | → `{cancelled}` |
//! | GET | `/v1/batches/{id}/webhook-deliveries?after=&limit=` | → `{deliveries, next_after}`: the batch's webhook events and their attempts |
//! | GET | `/v1/batches/{id}/watch` | → `text/event-stream` of `batch` events (`BatchView`) |
//! | GET | `/v1/jobs/{id}/image` | → `image/png`, `image/jpeg` or `image/webp` |
//! | PUT | `/v1/inputs/{name}` | image bytes (≤ `MAX_INPUT_BYTES`) → `UploadedInput` (201), stored as `inputs/<tenant>/<name>.<ext>` |
//! | GET | `/v1/inputs/{name}` | → the upload `inputs/<tenant>/<name>` (`name` with its extension): `image/png`, `image/jpeg` or `image/webp` |
//! | POST | `/v1/inputs` | image bytes → `UploadedInput` (201), named by its sha256 |
//! | GET | `/v1/openapi.json` | → this API's OpenAPI document ([`openapi`]) |
//!
//! Every route but `/v1/openapi.json` needs `Authorization: Bearer <key>`; an address whose
//! requests failed to authenticate too often is answered `429 rate_limited` before any work.
//! Every error, the router's own included (unknown
//! route, wrong method, body over the limit, a malformed query), is
//! `{"error": {"code", "message", "request_id"}}` with the request id also in `x-request-id`
//! (codes in docs/security.md; what the message may say in [`crate::errors`]).
//!
//! The OpenAPI document is built from the same table as the router ([`routes`]): each route is
//! one `.routes(routes!(handler))` line there and a `#[utoipa::path]` on its handler; the error
//! answers every operation lists are [`ERRORS`]. `docs/openapi.json` is a checked-in copy.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use pixelfarm_core::{BatchId, Error, JobId, JobRecord, MAX_INPUT_BYTES, SubmitOutcome};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{BatchApi, BatchView, UploadedInput};

mod deliveries;
mod handling;
mod inputs;

use handling::{ApiError, ApiResult, image_response, observed, tenant};

/// The API routes (merge them with the ops routes on one port).
pub fn router(api: Arc<BatchApi>) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            api.clone(),
            failed_auth_guard,
        ))
        .layer(middleware::from_fn(json_errors))
        .with_state(api)
}

/// Every route with its OpenAPI operation, the one table [`router`] and [`openapi`] are built
/// from: a route is added here, one line, with a `#[utoipa::path]` on its handler.
fn routes() -> OpenApiRouter<Arc<BatchApi>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(submit))
        .routes(routes!(batch))
        .routes(routes!(jobs))
        .routes(routes!(cancel))
        .routes(routes!(deliveries::deliveries))
        .routes(routes!(watch))
        .routes(routes!(image))
        .routes(routes!(upload_unnamed))
        .routes(routes!(upload_named, inputs::input))
        .routes(routes!(openapi_json))
}

/// The error answers of every operation that lists none of its own: status, and when. Each has
/// the [`ErrorBody`] shape, with its code in `error.code` (docs/security.md).
pub const ERRORS: &[(StatusCode, &str)] = &[
    (
        StatusCode::BAD_REQUEST,
        "`invalid_argument`: a bad manifest, id, query parameter or body; the message names the field and what is accepted",
    ),
    (
        StatusCode::UNAUTHORIZED,
        "`unauthenticated`: no or an unknown API key",
    ),
    (
        StatusCode::NOT_FOUND,
        "`not_found`: an unknown batch or job, or another tenant's",
    ),
    (
        StatusCode::CONFLICT,
        "`conflict`: the request conflicts with the stored state",
    ),
    (
        StatusCode::GONE,
        "`gone`: the jobs of a finished batch were deleted by retention (the message says when); the batch's status remains",
    ),
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        "`payload_too_large`: a body over the request limit",
    ),
    (
        StatusCode::TOO_MANY_REQUESTS,
        "`quota_exceeded`: over one of the tenant's quotas (the message names it, its limit and the usage); `rate_limited`: too many submits a minute, or too many failed authentications from this address",
    ),
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "`internal`: a bug or a broken dependency; the message quotes the request id",
    ),
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "`unavailable`: a dependency is down or the scheduler is busy; retry later",
    ),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pixelfarm scheduler HTTP API",
        description = "Batches of image-generation jobs: submit a manifest, follow it, fetch the images. Every error answer is an `ErrorBody` with a stable `error.code` (docs/security.md)."
    ),
    security(("api_key" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// This API's OpenAPI 3.1 document, built from [`routes`] (`docs/openapi.json` is a copy).
pub fn openapi() -> Document {
    let (_, mut doc) = routes().split_for_parts();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let lists_errors = op.responses.responses.keys().any(|s| !s.starts_with('2'));
            if lists_errors {
                continue;
            }
            for (status, when) in ERRORS {
                let response = ResponseBuilder::new()
                    .description(*when)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build();
                op.responses
                    .responses
                    .insert(status.as_u16().to_string(), response.into());
            }
        }
    }
    doc
}

/// [`openapi`], built once.
static OPENAPI: LazyLock<Document> = LazyLock::new(openapi);

/// This API's OpenAPI document (no API key needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    security(()),
    responses(
        (status = 200, description = "the OpenAPI 3.1 document of this API", content_type = "application/json", body = serde_json::Value),
        (status = 500, description = "`internal`", body = ErrorBody)
    )
)]
async fn openapi_json() -> Response {
    axum::Json(&*OPENAPI).into_response()
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

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_argument`, `unauthenticated`, `not_found`, `method_not_allowed`,
    /// `conflict`, `gone`, `payload_too_large`, `quota_exceeded`, `rate_limited`, `unavailable` or
    /// `internal` (docs/security.md).
    pub code: String,
    /// For the client: the field and what is accepted, or a fixed text with the request id for
    /// the server's own failures.
    pub message: String,
    /// This request's id, also in the `x-request-id` header and in the scheduler's log.
    pub request_id: String,
}

pub(crate) fn error_body(code: &str, message: &str, request_id: &str) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
            request_id: request_id.to_string(),
        },
    }
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

/// Submit a batch: parse and expand the manifest, store the batch and its jobs.
#[utoipa::path(
    post,
    path = "/v1/batches",
    operation_id = "submit",
    request_body(
        description = "a manifest (the README's Concepts section), YAML or JSON (JSON when it starts with `{`), at most 2 MiB",
        content(
            (String = "application/yaml"),
            (serde_json::Value = "application/json")
        )
    ),
    responses(
        (status = 201, description = "a new batch", body = SubmitOutcome),
        (status = 200, description = "the batch already submitted with this `idempotency_key`", body = SubmitOutcome)
    )
)]
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

/// A batch with its progress.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    operation_id = "get_batch",
    params(("id" = BatchId, Path, description = "the batch")),
    responses((status = 200, description = "the batch", body = BatchView))
)]
async fn batch(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let view = observed(&api, "get", api.batch(t, id.parse()?).await)?;
    Ok(axum::Json(view).into_response())
}

/// The query of a page of jobs.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// The `next_after` of the previous page (a job id); the first page when absent or empty.
    #[param(format = Uuid)]
    after: Option<String>,
    /// Jobs on the page: 1 to 10000, 1000 when absent.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// One page of a batch's jobs.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct JobsPage {
    /// The jobs, in id order.
    pub jobs: Vec<JobRecord>,
    /// The `after` of the next page; absent (null) on the last page.
    pub next_after: Option<JobId>,
}

/// What a cancel did.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    /// Jobs cancelled by this call.
    pub cancelled: u64,
}

/// A page of a batch's jobs, in id order.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/jobs",
    operation_id = "list_jobs",
    params(("id" = BatchId, Path, description = "the batch"), Page),
    responses((status = 200, description = "a page of jobs; `next_after` is set while more follow", body = JobsPage))
)]
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
    Ok(axum::Json(JobsPage {
        jobs: page.jobs,
        next_after: page.next,
    })
    .into_response())
}

/// Cancel the batch's jobs not yet finished; running ones stop at their next denoising step.
#[utoipa::path(
    post,
    path = "/v1/batches/{id}/cancel",
    operation_id = "cancel",
    params(("id" = BatchId, Path, description = "the batch")),
    responses((status = 200, description = "the jobs cancelled", body = Cancelled))
)]
async fn cancel(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let n = observed(&api, "cancel", api.cancel(t, id.parse()?).await)?;
    Ok(axum::Json(Cancelled { cancelled: n }).into_response())
}

/// The batch now and on every change, as server-sent events, until it is done.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/watch",
    operation_id = "watch",
    params(("id" = BatchId, Path, description = "the batch")),
    responses((
        status = 200,
        description = "`text/event-stream`: `batch` events whose data is a `BatchView`, `error` events whose data is an `ErrorBody`",
        content_type = "text/event-stream",
        body = String
    ))
)]
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

/// The image of a succeeded job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/image",
    operation_id = "image",
    params(("id" = JobId, Path, description = "the job")),
    responses((
        status = 200,
        description = "the image, in the job's output format",
        content(
            (String = "image/png"),
            (String = "image/jpeg"),
            (String = "image/webp")
        )
    ))
)]
async fn image(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let bytes = observed(&api, "image", api.image(t, id.parse()?).await)?;
    Ok(image_response(bytes))
}

/// The body of an upload: the image's bytes.
const UPLOAD_BODY: &str =
    "the image (PNG, JPEG or WebP), at most 32 MiB (`MAX_INPUT_BYTES`), at most 4096 pixels a side";

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

#[utoipa::path(
    put,
    path = "/v1/inputs/{name}",
    operation_id = "upload_input",
    params(("name" = String, Path, description = "the input's name: letters, digits, `.`, `_` and `-`, not starting with `.`")),
    request_body(description = UPLOAD_BODY, content((Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "stored as `inputs/<tenant>/<name>.<ext>`", body = UploadedInput))
)]
async fn upload_named(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    upload(&api, &headers, Some(&name), body).await
}

#[utoipa::path(
    post,
    path = "/v1/inputs",
    operation_id = "upload_input_by_hash",
    request_body(description = UPLOAD_BODY, content((Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "stored as `inputs/<tenant>/<sha256>.<ext>`", body = UploadedInput))
)]
async fn upload_unnamed(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    upload(&api, &headers, None, body).await
}
