//! The `pixelfarm` command line.
//!
//! # Layout
//! - [`export`]: write a batch's images and `results.jsonl` to a folder (shared by `fetch` and `run`).
//! - [`progress`]: the progress bar for `watch`, `submit --wait` and `run`.
//! - [`embedded`]: `pixelfarm run`, scheduler and worker in one process on SQLite, an in-process
//!   broker and a local folder.

pub mod embedded;
pub mod export;
pub mod progress;
