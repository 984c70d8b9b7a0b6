//! Webhooks' delivery (docs/webhooks.md): the outbox [`relay`], the HTTP [`send`]er under the
//! deployment's address policy, and the Standard Webhooks [`sign`]ature.

pub mod relay;
pub mod send;
pub mod sign;

pub use relay::{Config, Relay};
