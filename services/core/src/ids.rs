//! Typed identifiers. UUIDv7, so ids sort by creation time and index well.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                $name(Uuid::now_v7())
            }

            /// Wrap an existing uuid (from storage).
            pub fn from_uuid(u: Uuid) -> Self {
                $name(u)
            }

            /// The underlying uuid.
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::parse_str(s.trim()).map($name).map_err(|_| {
                    Error::invalid(format!(concat!($what, " id `{}` is not a uuid"), s))
                })
            }
        }
    };
}

id_type!(
    /// A tenant: the unit of isolation and of fair share.
    TenantId,
    "tenant"
);
id_type!(
    /// A submitted batch.
    BatchId,
    "batch"
);
id_type!(
    /// One image to render.
    JobId,
    "job"
);
id_type!(
    /// A webhook subscription.
    WebhookId,
    "webhook"
);
id_type!(
    /// One event of the webhook outbox, sent as the `webhook-id` header: receivers drop a second
    /// delivery of the same id.
    EventId,
    "event"
);
