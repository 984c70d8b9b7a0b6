//! What every pixelfarm process shares.
//!
//! # Layout
//! - [`settings`]: [`Settings`], loaded in layers: `config/base.yaml` → `config/{PIXELFARM_ENV}.yaml`
//!   → `PIXELFARM__SECTION__KEY` environment variables; each section builds its own client.
//! - [`check`]: start-up checks of the shared settings sections, needing no network (`check-config`).
//! - [`health`]: [`health::Health`], dependency probes and loop watchdogs behind readiness,
//!   liveness and `pixelfarm_dependency_up`.
//! - [`ops`]: the ops HTTP router (`/metrics`, `/healthz`, `/readyz`) and serving helpers.
//! - [`tls`]: [`tls::ServerTls`], a listener's certificate from PEM files, re-read while serving,
//!   and [`tls::TlsListener`], connections handed out after their handshake.
//! - [`shutdown`]: one cancellation token fired by SIGTERM / Ctrl-C.
//! - [`telemetry`]: tracing setup.
//! - [`tasks`]: [`tasks::wait_all`], a process's tasks to their first failure.

pub mod check;
pub mod health;
pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod tls;

pub use settings::Settings;
