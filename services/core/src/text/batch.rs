//! The text policy applied to a parsed batch and its manifest.

use super::policy::{TextKind, check, printable};
use crate::{BatchSpec, Error, Result, field_error_in};

/// Check a parsed batch's one-line text (name, idempotency key, tags, job keys) and the
/// manifest itself against the policy; prompts were checked when they were parsed
/// ([`crate::Prompt::parse`]). Every text is stored and shown back, so nothing refused here
/// reaches a database or a terminal.
///
/// # Errors
/// `Invalid` naming the manifest field (and its line where it can be found).
pub fn check_batch(manifest: &str, spec: &BatchSpec) -> Result<()> {
    if let Some(i) = manifest.find('\0') {
        let line = manifest[..i].matches('\n').count() + 1;
        return Err(Error::invalid(format!(
            "the manifest holds a NUL byte on line {line}; accepted: text without NUL"
        )));
    }
    let field = |path: &str, e: Error| field_error_in(manifest, path, &e.to_string());
    check(&spec.name, TextKind::Line).map_err(|e| field("name", e))?;
    if let Some(k) = &spec.idempotency_key {
        check(k, TextKind::Line).map_err(|e| field("idempotency_key", e))?;
    }
    for (k, v) in &spec.tags {
        check(k, TextKind::Line).map_err(|e| field("tags", e.prefixed("a key ")))?;
        check(v, TextKind::Line).map_err(|e| field(&format!("tags.{}", printable(k)), e))?;
    }
    for job in spec.jobs.iter() {
        check(&job.key, TextKind::Line).map_err(|e| {
            field(
                "key",
                e.prefixed(&format!(
                    "the job key `{}`, built from `vars` values or given as `jobs[].key`, ",
                    printable(&job.key)
                )),
            )
        })?;
    }
    Ok(())
}

trait Prefixed {
    fn prefixed(self, p: &str) -> Error;
}

impl Prefixed for Error {
    fn prefixed(self, p: &str) -> Error {
        Error::invalid(format!("{p}{self}"))
    }
}
