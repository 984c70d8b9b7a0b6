//! The `pixelfarm` command line.
//!
//! # Layout
//! - [`export`]: write a batch's images and `results.jsonl` to a folder (shared by `fetch` and `run`).
//! - [`dataset`]: write a batch's succeeded jobs as a dataset (`imagefolder`, `webdataset`,
//!   `parquet`) split by variant into train / validation / test.
//! - [`progress`]: the progress bar for `watch`, `submit --wait` and `run`.
//! - [`embedded`]: `pixelfarm run`, scheduler and worker in one process on SQLite, an in-process
//!   broker and a local folder.

pub mod dataset;
pub mod embedded;
pub mod export;
pub mod progress;
