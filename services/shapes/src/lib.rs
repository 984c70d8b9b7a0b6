//! pixelfarm's own small text-to-image model: the procedural data it learns from, the analytic
//! checker that grades its images, its training loop, and what ships it.
//!
//! # Layout
//! - [`checker`]: the analytic checker (palette colours, border majority, fill of the bounding box).
//! - [`data`]: shapes, colours, sizes, captions, held-out combinations, the image generator.
//! - [`eval`]: renders prompts × seeds through the production engine and grades them.
//! - [`vocab`]: the closed vocabulary and its word-level tokenizer.
//! - [`train`]: candle training (v-prediction, AdamW, EMA, caption dropout, checkpoints).
//! - [`export`]: writes the shipped model folder and its registry entry; [`shipped_registry`].
//! - `contact`: [`contact_sheet`], a captioned grid of a batch, and [`sheet_png`] to save it.

pub mod checker;
mod contact;
pub mod data;
pub mod eval;
pub mod export;
pub mod train;
pub mod vocab;

pub use contact::{contact_sheet, sheet_png};
pub use export::{MODEL_NAME, models_dir, shipped_registry};
