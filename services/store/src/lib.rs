//! Durable job storage behind [`pixelfarm_core::JobStore`].
//!
//! # Layout
//! - [`postgres`]: [`PgStore`], production (migrations in `migrations/postgres`).
//! - [`sqlite`]: [`SqliteStore`], the embedded mode (migrations in `migrations/sqlite`).
//! - `error`: sqlx errors to [`pixelfarm_core::ErrorKind`] by SQLSTATE, in one place.
//! - `row`: the row shape both stores read jobs into.
//! - `purge`: the purge of finished batches' job rows, written once over each store's statements.
//! - [`testsuite`]: the conformance suite every implementation passes.
//! - [`testing`]: fresh databases for tests.

mod error;
pub mod postgres;
mod purge;
mod row;
pub mod sqlite;
pub mod testing;
pub mod testsuite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
