//! Dataset exports of a batch's succeeded jobs: Hugging Face `imagefolder`, WebDataset tar shards
//! or Parquet, each split into train / validation / test by variant.
//!
//! An export reads the batch's job list twice, page by page: first the records alone, to fix the
//! columns (the variables the job keys name, whether jobs have init images or masks), then the
//! succeeded jobs with their images, [`FETCH_CONCURRENCY`] at a time, each written as it arrives:
//! what is in memory is a page of records and the images in flight (and, for Parquet, one row
//! group of at most [`Options::row_group_bytes`]).
//!
//! # Layout
//! - `split`: the split of a variant key and the `--split` fractions.
//! - `sample`: the metadata columns and one sample's row and images.
//! - `sink`: what every layout does with a sample, and the JSON of a row.
//! - `imagefolder`, `webdataset`, `parquet`: the three sinks.

mod imagefolder;
mod parquet;
mod sample;
mod sink;
mod split;
mod webdataset;

pub use split::{Split, SplitRatios, variant_key};
pub use webdataset::parse_shard_bytes;

use bytes::Bytes;
use futures::StreamExt;
use pixelfarm_core::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::export::{ResultSource, input};
use sample::{Columns, Media, Sample};
use sink::{Sink, io};

/// A dataset layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `train/`, `validation/`, `test/`, each with the images and a `metadata.jsonl`.
    ImageFolder,
    /// `{split}-{000000}.tar` shards of `<key>.png` + `<key>.json` samples.
    WebDataset,
    /// `{split}.parquet`, the images in Hugging Face `Image` struct columns.
    Parquet,
}

/// How to write a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The layout.
    pub format: Format,
    /// The fractions of variants in train, validation and test.
    pub split: SplitRatios,
    /// WebDataset: the most bytes a shard holds, unless one sample alone is bigger.
    pub shard_bytes: u64,
    /// Parquet: a row group is written once the rows buffered for it hold this many bytes.
    pub row_group_bytes: u64,
}

/// Default `--shard-bytes`: 1 GiB, the shard size WebDataset's documentation suggests.
pub const DEFAULT_SHARD_BYTES: u64 = 1 << 30;

/// Parquet row groups of about 128 MiB: a reader loads one at a time, and the export holds one
/// (twice, while it is encoded).
pub const DEFAULT_ROW_GROUP_BYTES: u64 = 128 << 20;

impl Options {
    /// `format` with the default split, shard and row group sizes.
    pub fn new(format: Format) -> Self {
        Options {
            format,
            split: SplitRatios::default(),
            shard_bytes: DEFAULT_SHARD_BYTES,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
        }
    }
}

/// What a dataset export wrote and left out.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Samples per split, in [`Split::ALL`] order.
    pub samples: [u64; 3],
    /// Jobs left out because they did not succeed, per state.
    pub skipped: StateCounts,
}

impl Summary {
    /// All samples written.
    pub fn total(&self) -> u64 {
        self.samples.iter().sum()
    }
}

/// Images downloaded at once (as the folder export).
const FETCH_CONCURRENCY: usize = 8;

/// Write the succeeded jobs of `batch` into `dir` (new or empty) as `opts` says.
///
/// # Errors
/// `Invalid` when `dir` holds files; API and blob errors; `Permanent` when an image does not
/// match its recorded sha256, an input its pinned one, or a file cannot be written.
pub async fn export(
    source: &dyn ResultSource,
    batch: BatchId,
    dir: &Path,
    opts: &Options,
) -> Result<Summary> {
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(Error::invalid(format!(
            "--out {} is not empty; accepted: a new or empty folder for a dataset export",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io("cannot create the output folder"))?;
    let mut columns = Columns::default();
    let mut pages = Pages::default();
    while let Some(jobs) = pages.next(source, batch).await? {
        jobs.iter().for_each(|j| columns.see(j));
    }

    let mut sink: Box<dyn Sink> = match opts.format {
        Format::ImageFolder => Box::new(imagefolder::ImageFolder::new(dir, &columns)),
        Format::WebDataset => Box::new(webdataset::Shards::new(dir, &columns, opts.shard_bytes)),
        Format::Parquet => Box::new(parquet::Files::new(dir, &columns, opts.row_group_bytes)),
    };
    let mut summary = Summary::default();
    let cache = InputCache::default();
    let mut pages = Pages::default();
    while let Some(jobs) = pages.next(source, batch).await? {
        for j in jobs.iter().filter(|j| j.state != JobState::Succeeded) {
            summary.skipped.add(j.state, 1);
        }
        let succeeded = jobs.iter().filter(|j| j.state == JobState::Succeeded);
        let mut samples = futures::stream::iter(succeeded)
            .map(|j| sample(source, &cache, &columns, &opts.split, j))
            .buffered(FETCH_CONCURRENCY);
        while let Some(s) = samples.next().await {
            let s = s?;
            summary.samples[s.split.index()] += 1;
            sink.add(s)?;
        }
    }
    sink.finish()?;
    Ok(summary)
}

/// The pages of a batch's jobs, in id order.
#[derive(Default)]
struct Pages {
    /// The cursor of the next page.
    after: Option<JobId>,
    /// The last page was read.
    done: bool,
}

impl Pages {
    /// The next page, or `None` after the last.
    async fn next(
        &mut self,
        source: &dyn ResultSource,
        batch: BatchId,
    ) -> Result<Option<Vec<JobRecord>>> {
        if self.done {
            return Ok(None);
        }
        let (jobs, next) = source.page(batch, self.after).await?;
        self.done = next.is_none();
        self.after = next;
        Ok(Some(jobs))
    }
}

/// The sample of the succeeded job `j`: its image (checked against its sha256), its init image
/// and mask (checked against theirs), and its row.
async fn sample(
    source: &dyn ResultSource,
    cache: &InputCache,
    columns: &Columns,
    ratios: &SplitRatios,
    j: &JobRecord,
) -> Result<Sample> {
    let sha = j.sha256.as_deref().ok_or_else(|| {
        Error::permanent(format!(
            "job {} succeeded but records no image sha256",
            j.id
        ))
    })?;
    let bytes = source.image(j.id).await?;
    let got = sha256_hex(&bytes);
    if got != sha {
        return Err(Error::permanent(format!(
            "image of job {} has sha256 {got}, but the job records {sha}",
            j.id
        )));
    }
    let init = j.params.init.as_ref();
    let init_image = match init {
        Some(i) => Some(cache.get(source, &i.image).await?),
        None => None,
    };
    let mask_image = match init.and_then(|i| i.mask.as_ref()) {
        Some(m) => Some(cache.get(source, m).await?),
        None => None,
    };
    Ok(Sample {
        split: ratios.split_of(variant_key(&j.key)),
        key: j.id.to_string(),
        row: columns.row(j, sha, sample::model_sha256(&bytes)),
        image: Media::new(bytes),
        init: init_image.map(Media::new),
        mask: mask_image.map(Media::new),
    })
}

/// The last few inputs read: a template's jobs all name the same init image and mask.
#[derive(Default)]
struct InputCache(Mutex<HashMap<String, Bytes>>);

/// Inputs kept by [`InputCache`] (each at most [`MAX_INPUT_BYTES`]).
const CACHED_INPUTS: usize = 4;

impl InputCache {
    async fn get(&self, source: &dyn ResultSource, image: &BlobImage) -> Result<Bytes> {
        let id = format!("{}\0{}", image.key, image.sha256.as_deref().unwrap_or(""));
        if let Some(b) = self.0.lock().expect("not poisoned").get(&id) {
            return Ok(b.clone());
        }
        let bytes = input(source, image).await?;
        let mut cached = self.0.lock().expect("not poisoned");
        if cached.len() >= CACHED_INPUTS {
            cached.clear();
        }
        cached.insert(id, bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    /// A source that must not be read.
    struct Unread;

    #[async_trait]
    impl ResultSource for Unread {
        async fn page(
            &self,
            _batch: BatchId,
            _after: Option<JobId>,
        ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
            panic!("the batch was read")
        }

        async fn image(&self, _job: JobId) -> Result<Bytes> {
            panic!("an image was read")
        }

        async fn upload(&self, key: &str) -> Result<Bytes> {
            panic!("upload {key} was read")
        }
    }

    #[tokio::test]
    async fn a_folder_with_files_is_refused_before_the_batch_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.parquet"), b"an earlier export").unwrap();
        let opts = Options::new(Format::Parquet);
        let err = export(&Unread, BatchId::generate(), dir.path(), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(
            err.to_string()
                .contains("is not empty; accepted: a new or empty folder"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("train.parquet")).unwrap(),
            b"an earlier export"
        );
    }
}
