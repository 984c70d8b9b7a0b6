//! Renderers that need no model (the image codec is `pixelfarm-image`).
//!
//! # Layout
//! - [`test_pattern`]: [`TestPattern`], a deterministic renderer for tests and benchmarks of the
//!   pipeline (no model; its output is labelled as such everywhere).

pub mod test_pattern;

pub use test_pattern::TestPattern;
