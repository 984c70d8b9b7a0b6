//! Renderers and image encoding.
//!
//! # Layout
//! - [`test_pattern`]: [`TestPattern`], a deterministic renderer for tests and benchmarks of the
//!   pipeline (no model; its output is labelled as such everywhere).
//! - [`encode`]: [`encode_png`] with the AUTOMATIC1111 `parameters` text chunk and pixelfarm's own
//!   provenance chunk; [`a1111_parameters`] formats the former.
//! - [`output`]: the job's post-processing (resize/crop, colour, sharpen) and file format
//!   (PNG, JPEG, WebP); [`output::decode_rgb`] reads any of them back.
//! - [`input`]: init images and masks from outside, checked from their header and decoded under
//!   limits ([`input::probe`], [`input::decode_input`]).
//! - [`testing`]: PNGs for tests of those checks (plain, declaring a size, decompression bombs).

pub mod encode;
pub mod input;
pub mod output;
pub mod test_pattern;
pub mod testing;

pub use encode::{PngMetadata, a1111_parameters, decode_png_text, encode_png};
pub use test_pattern::TestPattern;
