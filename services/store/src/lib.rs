//! Durable job storage behind [`pixelfarm_core::JobStore`].
//!
//! # Layout
//! - [`postgres`]: [`PgStore`], production (migrations in `migrations/postgres`).
//! - [`sqlite`]: [`SqliteStore`], the embedded mode (migrations in `migrations/sqlite`).
//! - `error`: sqlx errors to [`pixelfarm_core::ErrorKind`] by SQLSTATE, in one place.
//! - `feed`: the in-process fan-out of the batch change feed both stores share.
//! - `progress`: the batch progress counters as both stores read them (backlog, finished).
//! - `row`: the row shape both stores read jobs into.
//! - `review`: the all-or-none rule of reviews both stores apply.
//! - `purge`: the purge of finished batches' job rows, written once over each store's statements.
//! - [`testsuite`]: the conformance suite every implementation passes.
//! - [`testing`]: fresh databases for tests.

mod error;
mod feed;
pub mod postgres;
mod progress;
mod purge;
mod review;
mod row;
pub mod sqlite;
pub mod testing;
pub mod testsuite;
mod webhooks;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
