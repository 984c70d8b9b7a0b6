//! The console's pages: HTML shells rendered here, with the data a page's script needs in a
//! JSON island, and the one stylesheet and script (`assets/`) every page loads. Text from the
//! store or the client is escaped wherever it is written ([`esc`], [`island`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use pixelfarm_core::{BatchId, Error, ErrorKind, Session};
use serde::Serialize;

use crate::BatchView;
use crate::http::error_body;

/// The stylesheet.
pub(super) const CSS: &str = include_str!("assets/console.css");
/// The script: each page's part starts from the `data-page` of its `<body>`.
pub(super) const JS: &str = include_str!("assets/console.js");

/// `s` as HTML text or a quoted attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` as a JSON island the page's script reads: `<`, `>` and `&` escaped, so no text in
/// it can close the element.
fn island<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).expect("page data serializes");
    let json = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!(r#"<script type="application/json" id="page-data">{json}</script>"#)
}

/// A whole page: `page` names the script's part, `session` the signed-in header.
fn layout(title: &str, page: &str, session: Option<&Session>, body: &str) -> Html<String> {
    let header = match session {
        Some(s) => format!(
            r#"<header class="top">
  <a class="brand" href="/console/batches">pixelfarm</a>
  <nav aria-label="main"><a href="/console/batches">Batches</a><a href="/console/submit">Submit</a></nav>
  <span class="who" title="the API key you signed in with">{who}</span>
  <form method="post" action="/console/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form>
</header>"#,
            who = esc(&s.who),
            csrf = esc(&s.csrf),
        ),
        None => r#"<header class="top"><span class="brand">pixelfarm</span></header>"#.into(),
    };
    let csrf = session.map(|s| esc(&s.csrf)).unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · pixelfarm</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body data-page="{page}">
{header}
<main id="main">
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    ))
}

/// The sign-in form, with why the last try failed.
pub(super) fn login(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="login-error">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<section class="login">
<h1>Sign in</h1>
<p>Paste an API key of your tenant. The console keeps a session; the key itself is not stored.</p>
{error}
<form method="post" action="/console/login">
  <label for="key">API key</label>
  <input id="key" name="key" type="password" autocomplete="off" required autofocus>
  <button type="submit">Sign in</button>
</form>
</section>"#
    );
    layout("Sign in", "login", None, &body)
}

#[derive(Serialize)]
struct BatchesData<'a> {
    batches: &'a [BatchView],
    older: Option<BatchId>,
}

/// The tenant's batches, live.
pub(super) fn batches(s: &Session, views: &[BatchView], older: Option<BatchId>) -> Html<String> {
    let body = format!(
        r#"<h1>Batches</h1>
<div class="toolbar" role="search">
  <label>Filter <input id="batch-filter" type="search" placeholder="name, tag or state"></label>
  <label>State <select id="state-filter">
    <option value="">any</option><option value="active">in progress</option>
    <option value="done">done</option><option value="failed">with dead jobs</option>
  </select></label>
</div>
<table id="batches" class="batches">
<caption class="sr-only">Your batches, newest first; sort by a column's button</caption>
<thead><tr>
  <th scope="col"><button type="button" data-sort="name">Name</button></th>
  <th scope="col">Model</th>
  <th scope="col"><button type="button" data-sort="created">Created</button></th>
  <th scope="col"><button type="button" data-sort="progress">Progress</button></th>
  <th scope="col">Jobs by state</th>
  <th scope="col"><button type="button" data-sort="rate">Rate</button></th>
  <th scope="col">ETA</th>
  <th scope="col"><button type="button" data-sort="device">Device-seconds</button></th>
  <th scope="col">Tags</th>
  <th scope="col"><span class="sr-only">Actions</span></th>
</tr></thead>
<tbody></tbody>
</table>
<p id="no-batches" hidden>No batches yet: <a href="/console/submit">submit one</a>.</p>
<p id="older"></p>
<form id="cancel-form" method="post" hidden><input type="hidden" name="csrf" value="{csrf}"></form>
{data}"#,
        csrf = esc(&s.csrf),
        data = island(&BatchesData {
            batches: views,
            older
        }),
    );
    layout("Batches", "batches", Some(s), &body)
}

#[derive(Serialize)]
struct BatchData<'a> {
    batch: &'a BatchView,
}

/// A batch: progress, its manifest, the gallery and its review.
pub(super) fn batch(s: &Session, view: &BatchView, manifest: &str) -> Html<String> {
    let name = &view.status.name;
    let body = format!(
        r#"<h1 id="batch-name">{name}</h1>
<section class="progress" aria-live="polite" id="batch-progress"></section>
<details class="manifest"><summary>Manifest</summary><pre>{manifest}</pre></details>
<form id="cancel-form" method="post" action="/console/batches/{id}/cancel" hidden>
  <input type="hidden" name="csrf" value="{csrf}"><button type="submit">Cancel batch</button>
</form>
<section class="gallery-controls" aria-label="gallery controls">
  <div id="var-filters" class="toolbar"></div>
  <div class="toolbar">
    <label>Rows <select id="rows-by"><option value="">none</option></select></label>
    <label>Columns <select id="cols-by"><option value="">none</option></select></label>
    <label>Show <select id="review-filter">
      <option value="">all</option><option value="approved">approved</option>
      <option value="rejected">rejected</option><option value="unreviewed">not reviewed</option>
      <option value="failed">failed</option>
    </select></label>
  </div>
  <div class="toolbar">
    <button type="button" id="select-all">Select shown</button>
    <button type="button" id="select-none">Clear selection</button>
    <button type="button" id="approve-selected" class="approve">Approve selected (A)</button>
    <button type="button" id="reject-selected" class="reject">Reject selected (R)</button>
    <span id="selection-count" aria-live="polite"></span>
    <a id="download-approved" class="button" href="/console/batches/{id}/approved.tar" download>Download approved (.tar)</a>
  </div>
  <p class="hint">Keys: arrows or j/k move, a approve, r reject, u clear, x select, Enter opens; with a selection, Shift+A and Shift+R decide it.</p>
  <p id="gallery-status" role="status"></p>
</section>
<div id="gallery" class="gallery"></div>
<p id="gallery-more" hidden><button type="button" id="show-more">Show more</button></p>
<dialog id="detail" aria-labelledby="detail-title">
  <form method="dialog"><button class="close" aria-label="Close">×</button></form>
  <h2 id="detail-title"></h2>
  <div class="detail-body"><img id="detail-image" alt=""><dl id="detail-fields"></dl></div>
  <p><a id="detail-rerender" class="button" href="">Re-render with changes</a></p>
</dialog>
{data}"#,
        name = esc(name),
        manifest = esc(manifest),
        id = view.status.id,
        csrf = esc(&s.csrf),
        data = island(&BatchData { batch: view }),
    );
    layout(name, "batch", Some(s), &body)
}

/// The submit form, holding `text`, with the error of the last submit beside it.
pub(super) fn submit(s: &Session, text: &str, error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| {
            format!(
                r#"<p class="error" role="alert" id="submit-error">{}</p>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Submit a batch</h1>
<form method="post" action="/console/submit" id="submit-form">
  <input type="hidden" name="csrf" value="{csrf}">
  <label for="manifest">Manifest (YAML or JSON)</label>
  <textarea id="manifest" name="manifest" rows="22" spellcheck="false" required aria-describedby="submit-error preview">{text}</textarea>
  <div class="toolbar">
    <label>Or load a file <input type="file" id="manifest-file" accept=".yaml,.yml,.json,text/yaml,application/json"></label>
    <button type="button" id="check">Check</button>
    <button type="submit" class="primary">Submit</button>
  </div>
</form>
{error}
<section id="preview" aria-live="polite"></section>"#,
        csrf = esc(&s.csrf),
        text = esc(text),
    );
    layout("Submit", "submit", Some(s), &body)
}

/// An error page.
pub(super) fn error(status: StatusCode, message: &str) -> Html<String> {
    let body = format!(
        r#"<h1>{status}</h1><p class="error" role="alert">{message}</p><p><a href="/console/batches">Back to your batches</a></p>"#,
        status = esc(&status.to_string()),
        message = esc(message),
    );
    layout("Error", "error", None, &body)
}

/// A failed console request: a page (an HTML error, or the sign-in form when the session is
/// missing) or a script's call (the API's JSON error shape).
pub(super) enum Fail {
    Page(Error),
    Json(Error),
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let request_id = crate::errors::request_id();
        match self {
            Fail::Page(e) if e.kind() == ErrorKind::Unauthenticated => {
                Redirect::to("/console/login").into_response()
            }
            Fail::Page(e) => {
                let message = crate::errors::public_message(&e, &request_id, "console page");
                let status = crate::errors::http_status(e.kind());
                (status, error(status, &message)).into_response()
            }
            Fail::Json(e) => {
                let message = crate::errors::public_message(&e, &request_id, "console call");
                let body = error_body(crate::errors::code(e.kind()), &message, &request_id);
                (crate::errors::http_status(e.kind()), Json(body)).into_response()
            }
        }
    }
}
