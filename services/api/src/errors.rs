//! What a client is told when a call fails, on both transports.
//!
//! A client gets a stable code, a message meant for it and a request id. The client's own
//! mistakes (`invalid_argument`, `not_found`, `gone`, `conflict`, `unauthenticated`) and the limits it
//! ran into (`quota_exceeded`, `rate_limited`: the limit and the usage) keep their message,
//! which names the field and what is accepted, but never the error's sources (a database or
//! storage error under it). The server's failures (`unavailable`, `internal`) get a fixed text;
//! their whole chain goes to the log under the request id, which the client quotes.

use pixelfarm_core::{Error, ErrorKind};

/// A fresh id for one request, logged with its failure and sent to the client.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The stable code of an error kind (HTTP `error.code`; gRPC uses the matching status code).
pub fn code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Invalid => "invalid_argument",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unauthenticated => "unauthenticated",
        ErrorKind::Gone => "gone",
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::Transient => "unavailable",
        ErrorKind::Permanent => "internal",
    }
}

/// The HTTP status of an error kind (the API's and the console's answers).
pub fn http_status(kind: ErrorKind) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::QuotaExceeded | ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message for the client; the whole error goes to the log under `request_id` first
/// (`call` names the transport and method, e.g. `http GET /v1/batches/{id}`).
pub fn public_message(e: &Error, request_id: &str, call: &str) -> String {
    match e.kind() {
        ErrorKind::Transient => {
            tracing::warn!(request_id, call, error = %e.chain(), "request failed: a dependency is unavailable");
            format!("the service is unavailable; retry later (request id {request_id})")
        }
        ErrorKind::Permanent => {
            tracing::error!(request_id, call, error = %e.chain(), "request failed");
            format!("internal error (request id {request_id})")
        }
        _ => {
            if std::error::Error::source(e).is_some() {
                tracing::info!(request_id, call, error = %e.chain(), "request refused");
            }
            e.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_server_failures_stay_in_the_log() {
        let io =
            || std::io::Error::other("relation \"jobs\" violates check; bucket pixelfarm-prod");
        let e = Error::with_source(ErrorKind::Invalid, "cannot store batch", io());
        assert_eq!(public_message(&e, "r1", "t"), "cannot store batch");
        let e = Error::with_source(
            ErrorKind::Permanent,
            "cannot read bucket pixelfarm-prod",
            io(),
        );
        assert_eq!(
            public_message(&e, "r2", "t"),
            "internal error (request id r2)"
        );
        let e = Error::transient("database down at 10.0.0.1", io());
        assert_eq!(
            public_message(&e, "r3", "t"),
            "the service is unavailable; retry later (request id r3)"
        );
        let e = Error::invalid("manifest field `name`: is missing");
        assert_eq!(
            public_message(&e, "r4", "t"),
            "manifest field `name`: is missing"
        );
    }
}
