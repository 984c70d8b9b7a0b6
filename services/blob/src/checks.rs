//! What both stores check: the keys accepted, and objects over a size limit.

use pixelfarm_core::{Error, Result};

/// Keys are relative paths of `[A-Za-z0-9._-]` segments: safe as S3 keys and as file paths.
///
/// # Errors
/// `Invalid` naming what is wrong with the key.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "blob key `{key}` is not accepted: use `/`-separated segments of A-Z a-z 0-9 . _ -, no `..`"
        )))
    }
}

/// The `get_limited` refusal of an object over `max_bytes` (`size` when the store told it).
pub(crate) fn too_large(key: &str, size: Option<u64>, max_bytes: u64) -> Error {
    let is = size.map_or_else(
        || format!("is larger than {max_bytes} bytes"),
        |n| format!("is {n} bytes"),
    );
    Error::invalid(format!(
        "object `{key}` {is}; accepted: at most {max_bytes} bytes"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_cannot_escape() {
        for bad in ["", "/abs", "a/../b", "a//b", "a b", "..", "a/"] {
            assert!(super::validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(super::validate_key("images/ab/abc.png").is_ok());
    }
}
