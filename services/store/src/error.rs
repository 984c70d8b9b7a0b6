//! sqlx errors to error kinds, by SQLSTATE, in one place.

use pixelfarm_core::{Error, ErrorKind, Result};

/// Classify a database error so callers can decide retry vs fail without reading messages.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        let kind = match &e {
            sqlx::Error::RowNotFound => ErrorKind::NotFound,
            sqlx::Error::Database(d) => match d.code().as_deref() {
                // unique_violation
                Some("23505") | Some("2067") | Some("1555") => ErrorKind::Conflict,
                // integrity and data exceptions: the input (or a bug) is wrong, retrying won't help
                Some(c) if c.starts_with("23") || c.starts_with("22") => ErrorKind::Invalid,
                // sqlite constraint / trigger RAISE(ABORT)
                Some("275") | Some("19") | Some("1811") | Some("787") => ErrorKind::Invalid,
                // sqlite busy/locked
                Some("5") | Some("6") | Some("517") | Some("261") => ErrorKind::Transient,
                // connection, transaction rollback, resources, operator intervention
                Some(c)
                    if ["08", "40", "53", "57", "58"]
                        .iter()
                        .any(|p| c.starts_with(p)) =>
                {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Permanent,
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        Error::with_source(kind, what, e)
    }
}

/// `Ok` when an update of one tenant's row changed `rows` rows, `NotFound` when it changed none
/// (no such tenant).
pub(crate) fn tenant_updated(tenant: pixelfarm_core::TenantId, rows: u64) -> Result<()> {
    if rows == 0 {
        return Err(Error::not_found(format!("tenant {tenant} not found")));
    }
    Ok(())
}
