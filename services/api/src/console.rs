//! The web console: reviewers sign in with an API key, follow their batches, submit manifests,
//! look through a batch's images and approve or reject them. Served by the scheduler's HTTP
//! listener beside the API ([`router`]), every asset included in the binary.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/console` | → `/console/batches` |
//! | GET, POST | `/console/login` | the sign-in form; an API key exchanged for a session cookie |
//! | POST | `/console/logout` | end the session |
//! | GET | `/console/batches?before=` | the tenant's batches, newest first, live |
//! | GET | `/console/batches/watch?ids=` | `text/event-stream` of `batch` events of up to [`MAX_WATCHED`] batches |
//! | GET | `/console/batches/{id}` | a batch: progress, gallery, review |
//! | GET | `/console/batches/{id}/jobs?after=` | a page of its jobs as JSON, each with its variables |
//! | POST | `/console/batches/{id}/cancel` | cancel it |
//! | GET | `/console/batches/{id}/approved.tar` | its approved images, each with its job record |
//! | GET, POST | `/console/submit?from=` | the submit form (with a job's manifest to re-render it); submitting |
//! | POST | `/console/submit/preview` | a manifest's job count and axes, checked as a submit checks it |
//! | POST | `/console/reviews` | `{jobs, verdict}`: approve, reject or clear |
//! | GET | `/console/jobs/{id}/image` | a job's image |
//! | GET | `/console/jobs/{id}/thumbnail` | its thumbnail (WebP, ≤ 256 px a side) |
//! | GET | `/console/assets/{name}` | the stylesheet and the script |
//!
//! Sessions: the key is checked and forgotten; the browser holds a random token in an
//! `HttpOnly`, `SameSite=Strict` cookie scoped to `/console`, the store its sha256
//! ([`BatchApi::sign_in`]). Every state change carries the session's CSRF token (a form field
//! or the `x-csrf-token` header) and is refused from another origin.
//!
//! Here: the routes and their handlers. `session` holds the cookie, the session lookup and the
//! origin and CSRF checks; `pages` the HTML and the assets; `files` the images, thumbnails and
//! the approved set's download.

mod files;
mod pages;
mod session;

use pages::Fail;
use session::{Peer, check_csrf, same_origin, session_cookie, signed_in};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use futures::StreamExt;
use pixelfarm_core::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::BatchApi;

/// Most batches one live listing follows (each holds one of the tenant's `max_watches`).
pub const MAX_WATCHED: usize = 20;

/// Batches per page of the listing.
const BATCHES_PER_PAGE: u32 = 50;

/// Jobs per page the gallery reads.
const JOBS_PER_PAGE: u32 = 500;

/// The console's routes (merge them with the API's on one port).
pub fn router(api: Arc<BatchApi>) -> Router {
    // A manifest form-encoded grows up to three times its size.
    let submit_body = 3 * pixelfarm_core::manifest::MAX_MANIFEST_BYTES + 64 * 1024;
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/batches") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/batches", get(batches_page))
        .route("/console/batches/watch", get(watch_batches))
        .route("/console/batches/{id}", get(batch_page))
        .route("/console/batches/{id}/jobs", get(jobs))
        .route("/console/batches/{id}/cancel", post(cancel))
        .route(
            "/console/submit",
            get(submit_page)
                .post(submit)
                .layer(DefaultBodyLimit::max(submit_body)),
        )
        .route(
            "/console/submit/preview",
            post(preview).layer(DefaultBodyLimit::max(submit_body)),
        )
        .route("/console/reviews", post(review))
        .route("/console/batches/{id}/approved.tar", get(files::approved))
        .route("/console/jobs/{id}/image", get(files::image))
        .route("/console/jobs/{id}/thumbnail", get(files::thumbnail))
        .route("/console/assets/{name}", get(asset))
        .layer(middleware::from_fn(security_headers))
        .with_state(api)
}

/// What every console answer carries: a strict content security policy (only this origin's
/// script, style and images; no framing), no MIME sniffing, no referrer to other sites; pages are
/// not cached.
async fn security_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `no-referrer` would make the browser send `Origin: null` with the console's own forms,
    // which the origin check refuses; `same-origin` sends nothing to other sites.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn login_page(State(api): State<Arc<BatchApi>>, headers: HeaderMap) -> Response {
    if signed_in(&api, &headers).await.is_ok() {
        return see_other("/console/batches");
    }
    pages::login(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(
    State(api): State<Arc<BatchApi>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, Fail> {
    same_origin(&headers).map_err(Fail::Page)?;
    match api.sign_in(peer, &form.key).await {
        Ok((token, _)) => {
            let mut res = see_other("/console/batches");
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&headers, Some(&token)));
            Ok(res)
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Unauthenticated | ErrorKind::RateLimited
            ) =>
        {
            let status = crate::errors::http_status(e.kind());
            Ok((status, pages::login(Some(&e.to_string()))).into_response())
        }
        Err(e) => Err(Fail::Page(e)),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    check_csrf(&headers, &s.session, Some(&form.csrf)).map_err(Fail::Page)?;
    api.sign_out(&s.token).await.map_err(Fail::Page)?;
    let mut res = see_other("/console/login");
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&headers, None));
    Ok(res)
}

#[derive(Deserialize)]
struct BeforeQuery {
    before: Option<String>,
}

async fn batches_page(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Query(q): Query<BeforeQuery>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    let page = async {
        let before = q.before.as_deref().map(str::parse).transpose()?;
        let mut views = api
            .batches(s.session.tenant, before, BATCHES_PER_PAGE + 1)
            .await?;
        let older = (views.len() > BATCHES_PER_PAGE as usize).then(|| {
            views.truncate(BATCHES_PER_PAGE as usize);
            views.last().map(|v| v.status.id)
        });
        Ok::<_, Error>(pages::batches(&s.session, &views, older.flatten()))
    };
    Ok(page.await.map_err(Fail::Page)?.into_response())
}

#[derive(Deserialize)]
struct IdsQuery {
    ids: String,
}

async fn watch_batches(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Query(q): Query<IdsQuery>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Json)?;
    let ids: Vec<BatchId> = q
        .ids
        .split(',')
        .filter(|i| !i.is_empty())
        .map(str::parse)
        .collect::<Result<_>>()
        .map_err(Fail::Json)?;
    if ids.len() > MAX_WATCHED {
        return Err(Fail::Json(Error::invalid(format!(
            "`ids` names {} batches; accepted: at most {MAX_WATCHED}",
            ids.len()
        ))));
    }
    let mut streams = Vec::with_capacity(ids.len());
    for id in ids {
        let views = api.clone().watch(s.session.tenant, id).await;
        streams.push(views.map_err(Fail::Json)?.boxed());
    }
    let events = futures::stream::select_all(streams).filter_map(|r| async move {
        let event = Event::default().event("batch").json_data(r.ok()?).ok()?;
        Some(Ok::<_, std::convert::Infallible>(event))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn batch_page(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    let page = async {
        let id: BatchId = id.parse()?;
        let view = api.batch(s.session.tenant, id).await?;
        let manifest = api.manifest(s.session.tenant, id).await?;
        Ok::<_, Error>(pages::batch(&s.session, &view, &manifest))
    };
    Ok(page.await.map_err(Fail::Page)?.into_response())
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
}

/// A job as the gallery reads it: the record and its variables.
#[derive(Serialize)]
struct GalleryJob<'a> {
    #[serde(flatten)]
    job: &'a JobRecord,
    vars: BTreeMap<&'a str, &'a str>,
}

async fn jobs(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Json)?;
    let page = async {
        let id: BatchId = id.parse()?;
        let after = q.after.as_deref().map(str::parse).transpose()?;
        api.page(s.session.tenant, id, after, Some(JOBS_PER_PAGE))
            .await
    };
    let page = page.await.map_err(Fail::Json)?;
    let jobs: Vec<GalleryJob> = page
        .jobs
        .iter()
        .map(|job| GalleryJob {
            job,
            vars: job.vars().unwrap_or_default().into_iter().collect(),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "jobs": jobs,
        "next_after": page.next.map(|j| j.to_string()),
    }))
    .into_response())
}

async fn cancel(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    check_csrf(&headers, &s.session, Some(&form.csrf)).map_err(Fail::Page)?;
    let id: BatchId = id.parse().map_err(Fail::Page)?;
    api.cancel(s.session.tenant, id).await.map_err(Fail::Page)?;
    Ok(see_other(&format!("/console/batches/{id}")))
}

#[derive(Deserialize)]
struct SubmitQuery {
    /// A job to render again: the form starts with its one-job manifest.
    from: Option<String>,
}

async fn submit_page(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Query(q): Query<SubmitQuery>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    let Some(from) = q.from else {
        return Ok(pages::submit(&s.session, "", None).into_response());
    };
    let manifest = async {
        let job = api.job(s.session.tenant, from.parse()?).await?;
        let batch = api.batch(s.session.tenant, job.batch_id).await?.status;
        Ok::<_, Error>(pixelfarm_core::manifest::rerender_manifest(
            &batch.name,
            &job.model,
            &batch.tags,
            &job.params,
        ))
    };
    let manifest = manifest.await.map_err(Fail::Page)?;
    Ok(pages::submit(&s.session, &manifest, None).into_response())
}

#[derive(Deserialize)]
struct SubmitForm {
    csrf: String,
    manifest: String,
}

async fn submit(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Form(form): Form<SubmitForm>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    check_csrf(&headers, &s.session, Some(&form.csrf)).map_err(Fail::Page)?;
    match api.submit(s.session.tenant, form.manifest.clone()).await {
        Ok(out) => Ok(see_other(&format!("/console/batches/{}", out.batch_id))),
        // The client's own mistakes and limits are shown beside the manifest, kept as typed.
        Err(e) if !matches!(e.kind(), ErrorKind::Transient | ErrorKind::Permanent) => {
            let status = crate::errors::http_status(e.kind());
            let page = pages::submit(&s.session, &form.manifest, Some(&e.to_string()));
            Ok((status, page).into_response())
        }
        Err(e) => Err(Fail::Page(e)),
    }
}

#[derive(Deserialize)]
struct PreviewBody {
    manifest: String,
}

/// What a manifest would submit: its job count and, for a template, its axes.
#[derive(Serialize)]
struct Preview<'a> {
    name: &'a str,
    model: &'a str,
    jobs: usize,
    vars: Vec<PreviewVar<'a>>,
    sizes: usize,
    seeds: usize,
    explicit: usize,
}

#[derive(Serialize)]
struct PreviewVar<'a> {
    name: &'a str,
    values: &'a [String],
}

async fn preview(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Json(body): Json<PreviewBody>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Json)?;
    check_csrf(&headers, &s.session, None).map_err(Fail::Json)?;
    let spec = api.preview(body.manifest).await.map_err(Fail::Json)?;
    let product = spec.jobs.product();
    let preview = Preview {
        name: &spec.name,
        model: spec.model.as_str(),
        jobs: spec.jobs.len(),
        vars: product
            .as_ref()
            .map(|p| {
                p.vars
                    .iter()
                    .map(|&(name, values)| PreviewVar { name, values })
                    .collect()
            })
            .unwrap_or_default(),
        sizes: product.as_ref().map_or(0, |p| p.sizes.len()),
        seeds: product.as_ref().map_or(0, |p| p.seeds),
        explicit: spec.jobs.explicit(),
    };
    Ok(Json(preview).into_response())
}

#[derive(Deserialize)]
struct ReviewBody {
    jobs: Vec<String>,
    verdict: Option<String>,
}

async fn review(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Json(body): Json<ReviewBody>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Json)?;
    check_csrf(&headers, &s.session, None).map_err(Fail::Json)?;
    let decided = async {
        let jobs: Vec<JobId> = body.jobs.iter().map(|j| j.parse()).collect::<Result<_>>()?;
        let verdict = body.verdict.as_deref().map(Verdict::parse).transpose()?;
        api.review(s.session.tenant, &jobs, verdict, &s.session.who)
            .await
    };
    let reviewed = decided.await.map_err(Fail::Json)?;
    Ok(Json(serde_json::json!({ "reviewed": reviewed, "by": s.session.who })).into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "console.css" => (pages::CSS, "text/css; charset=utf-8"),
        "console.js" => (pages::JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
