//! Who is calling the console: the session a cookie's token opens, and the checks every state
//! change passes (same origin, the session's CSRF token).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use pixelfarm_core::*;
use std::net::{IpAddr, SocketAddr};

use crate::BatchApi;

/// The session cookie.
const COOKIE: &str = "pixelfarm_session";

/// The client's address, when the server was started with connect info.
pub(super) struct Peer(pub(super) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The session token of the request's cookie, when it has the token's form.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The request's session with its cookie's token.
pub(super) struct SignedIn {
    pub(super) session: Session,
    pub(super) token: String,
}

pub(super) async fn signed_in(api: &BatchApi, headers: &HeaderMap) -> Result<SignedIn> {
    let token = cookie_token(headers).ok_or_else(|| {
        Error::new(
            ErrorKind::Unauthenticated,
            "not signed in: sign in at /console/login",
        )
    })?;
    let session = api.session(token).await?;
    Ok(SignedIn {
        session,
        token: token.to_string(),
    })
}

/// Refuse a state change sent from another site: a browser says where a request comes from
/// (`Sec-Fetch-Site`, `Origin`), and a form of this console comes from its own origin.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<()> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let cross_site = matches!(site, Some("cross-site" | "same-site"));
    let foreign_origin = match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| authority != host),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if cross_site || foreign_origin {
        return Err(Error::invalid(
            "the request came from another site; accepted: the console's own forms",
        ));
    }
    Ok(())
}

/// Refuse a state change without the session's CSRF token.
pub(super) fn check_csrf(
    headers: &HeaderMap,
    session: &Session,
    given: Option<&str>,
) -> Result<()> {
    same_origin(headers)?;
    let given = given
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    // Compared without an early exit: the time says nothing of how much matched.
    let matches = given.len() == session.csrf.len()
        && given
            .bytes()
            .zip(session.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !matches {
        return Err(Error::invalid(
            "the form is stale (its CSRF token does not match the session's); reload the page",
        ));
    }
    Ok(())
}

/// The session cookie: set to `token` for the session's life, or cleared (`None`).
pub(super) fn session_cookie(headers: &HeaderMap, token: Option<&str>) -> HeaderValue {
    // Behind a TLS-terminating proxy the browser talks https: the cookie is then Secure.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let (value, age) = match token {
        Some(t) => (t, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    let mut cookie =
        format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={age}");
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("hex token and fixed text")
}
