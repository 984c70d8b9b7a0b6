//! One exported sample: its metadata row, in the columns every sink shares, and its images.

use bytes::Bytes;
use pixelfarm_core::{ImageFormat, JobRecord};
use std::collections::BTreeSet;

use super::split::{Split, variant_key};

/// An image of a sample and the extension its format takes (`png`, `jpg`, `webp`).
pub struct Media {
    /// The file's bytes, as stored.
    pub bytes: Bytes,
    /// From the bytes' signature.
    pub ext: &'static str,
}

impl Media {
    /// `bytes` with the extension of the format they are in (`bin` for none of PNG, JPEG and
    /// WebP: the blob store holds only those).
    pub fn new(bytes: Bytes) -> Self {
        let ext = ImageFormat::sniff(&bytes).map_or("bin", ImageFormat::extension);
        Media { bytes, ext }
    }
}

/// A succeeded job as a sink writes it.
pub struct Sample {
    /// Where its variant key sends it.
    pub split: Split,
    /// Its name in the export: the job id (unique in the batch, no dots, as WebDataset keys
    /// need).
    pub key: String,
    /// Its metadata, one cell per [`Columns::metadata`] column.
    pub row: Vec<Cell>,
    /// The rendered image.
    pub image: Media,
    /// The img2img input, where the job had one and the source serves inputs.
    pub init: Option<Media>,
    /// The inpainting mask, likewise.
    pub mask: Option<Media>,
}

/// The type of a metadata column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, or null.
    Str,
    /// A whole number.
    Int,
    /// A number, or null.
    Float,
}

/// One value of a metadata row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    #[allow(missing_docs)]
    Str(Option<String>),
    #[allow(missing_docs)]
    Int(i64),
    #[allow(missing_docs)]
    Float(Option<f64>),
}

/// The columns of one export, fixed before its first sample is written (a Parquet file's schema
/// is, and Hugging Face `datasets` wants every split's metadata to have the same columns): the
/// variables named by any job key of the batch, and whether any job has an init image or a mask.
#[derive(Debug, Default, Clone)]
pub struct Columns {
    /// The variables' names, each a `var_<name>` column.
    vars: BTreeSet<String>,
    /// A job has an init image: an `init_strength` column and an `init` image.
    pub init: bool,
    /// A job has a mask: a `mask` image.
    pub mask: bool,
}

impl Columns {
    /// Take in the columns `job` needs.
    pub fn see(&mut self, job: &JobRecord) {
        if let Some(vars) = job.vars() {
            for (name, _) in vars {
                if !self.vars.contains(name) {
                    self.vars.insert(name.to_string());
                }
            }
        }
        if let Some(init) = &job.params.init {
            self.init = true;
            self.mask |= init.mask.is_some();
        }
    }

    /// Every metadata column, in order: the job, its prompts and variables, then the other
    /// parameters, the model and the image's sha256.
    pub fn metadata(&self) -> Vec<(String, Kind)> {
        let mut cols: Vec<(String, Kind)> = ["job_id", "job_key", "variant_key", "prompt"]
            .into_iter()
            .chain(["negative_prompt"])
            .map(|c| (c.to_string(), Kind::Str))
            .collect();
        cols.extend(self.vars.iter().map(|v| (format!("var_{v}"), Kind::Str)));
        cols.extend(["seed", "width", "height", "steps"].map(|c| (c.to_string(), Kind::Int)));
        cols.push(("guidance".into(), Kind::Float));
        for c in ["sampler", "model", "model_sha256", "image_sha256"] {
            cols.push((c.to_string(), Kind::Str));
        }
        if self.init {
            cols.push(("init_strength".into(), Kind::Float));
        }
        cols
    }

    /// The metadata row of `job` (succeeded, with `image_sha256`), in [`Columns::metadata`]
    /// order; `model_sha256` is what its image says of the model.
    pub fn row(
        &self,
        job: &JobRecord,
        image_sha256: &str,
        model_sha256: Option<String>,
    ) -> Vec<Cell> {
        let p = &job.params;
        let text = |s: &str| Cell::Str(Some(s.to_string()));
        let mut row = vec![
            text(&job.id.to_string()),
            text(&job.key),
            text(variant_key(&job.key)),
            text(p.prompt.as_str()),
            text(p.negative_prompt.as_str()),
        ];
        let vars = job.vars().unwrap_or_default();
        row.extend(self.vars.iter().map(|name| {
            Cell::Str(
                vars.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.to_string()),
            )
        }));
        let seed = i64::try_from(p.seed.get()).expect("seeds have 53 bits");
        row.extend([
            Cell::Int(seed),
            Cell::Int(p.width.into()),
            Cell::Int(p.height.into()),
            Cell::Int(p.steps.get().into()),
            Cell::Float(Some(p.guidance.get())),
            text(p.sampler.as_str()),
            text(job.model.as_str()),
            Cell::Str(model_sha256),
            text(image_sha256),
        ]);
        if self.init {
            row.push(Cell::Float(p.init.as_ref().map(|i| i.strength.get())));
        }
        row
    }
}

/// The model's weights identity (sha256 over its files' sha256s) as a PNG written by a worker
/// records it in its `pixelfarm` text chunk; `None` for JPEG and WebP outputs (they do not carry
/// it) and for renderers without weights (the test pattern).
pub fn model_sha256(image: &[u8]) -> Option<String> {
    if ImageFormat::sniff(image) != Some(ImageFormat::Png) {
        return None;
    }
    let texts = pixelfarm_image::encode::decode_png_text(image).ok()?;
    let (_, json) = texts.into_iter().find(|(k, _)| k == "pixelfarm")?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    let id = v["model_identity"]["id"].as_str()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_core::parse_manifest;

    fn job(key: &str, manifest: &str) -> JobRecord {
        let spec = parse_manifest(manifest).expect("manifest parses");
        let params = spec.jobs.iter().next().expect("a job").params;
        JobRecord {
            id: pixelfarm_core::JobId::generate(),
            batch_id: pixelfarm_core::BatchId::generate(),
            key: key.into(),
            model: spec.model,
            params,
            state: pixelfarm_core::JobState::Succeeded,
            attempt: 1,
            max_attempts: 3,
            object_key: None,
            sha256: None,
            image_url: None,
            last_error: None,
            error_kind: None,
            timings: Default::default(),
            progress: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            review: None,
        }
    }

    const SMALL: &str =
        "name: n\nmodel: m\ndefaults: {width: 64, height: 32}\nprompt: p\nseeds: [1]\n";

    #[test]
    fn rows_follow_the_columns_and_leave_other_jobs_variables_null() {
        let template = job("color=red,size=big@64x32#1", SMALL);
        let explicit = job("banner", SMALL);
        let mut cols = Columns::default();
        cols.see(&explicit);
        cols.see(&template);
        let names: Vec<String> = cols.metadata().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "job_id",
                "job_key",
                "variant_key",
                "prompt",
                "negative_prompt",
                "var_color",
                "var_size",
                "seed",
                "width",
                "height",
                "steps",
                "guidance",
                "sampler",
                "model",
                "model_sha256",
                "image_sha256"
            ]
        );
        let row = cols.row(&template, "abc", None);
        assert_eq!(row.len(), names.len());
        assert_eq!(row[2], Cell::Str(Some("color=red,size=big@64x32".into())));
        assert_eq!(row[5], Cell::Str(Some("red".into())));
        assert_eq!(row[7], Cell::Int(1));
        assert_eq!(row[8], Cell::Int(64));
        let row = cols.row(&explicit, "abc", None);
        assert_eq!((&row[5], &row[6]), (&Cell::Str(None), &Cell::Str(None)));
    }
}
