//! Names of what jobs route to and apply: models, and (by the same rules) LoRAs.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use crate::{Error, Result};

/// A model name as routed on the broker: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// # Errors
    /// `Invalid` when empty, longer than 64 or holding characters other than `a-z 0-9 . _ -`.
    pub fn parse(s: impl Into<String>) -> Result<Self> {
        let s: String = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(Error::invalid(format!(
                "is `{s}`; accepted: 1 to 64 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
            )));
        }
        Ok(ModelName(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(ModelName, String);

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
