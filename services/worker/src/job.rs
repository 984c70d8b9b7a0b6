//! One job's execution: render, encode, upload image and provenance.

use bytes::Bytes;
use chrono::Utc;
use pixelfarm_core::*;
use pixelfarm_image::canny::{CannyThresholds, canny};
use pixelfarm_image::credentials::{DigitalSource, Generation, embed};
use pixelfarm_image::input::decode_input;
use pixelfarm_image::output::{encode, postprocess, thumbnail};
use pixelfarm_image::{ContentSigner, PngMetadata, a1111_parameters};
use pixelfarm_runtime::settings::ProvenanceRecords;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::batcher::{Batcher, blocking};

/// What pixelfarm writes into every image besides its pixels: only what decides the pixels,
/// nothing about the run (worker, batch, time). Its JSON is what the [`OutputKey`] hashes, so a
/// key names one content: the device and the code version are in both.
#[derive(Serialize)]
struct PngProvenance<'a> {
    schema: &'static str,
    model: &'a str,
    model_identity: &'a ModelIdentity,
    params: &'a JobParams,
    /// Each LoRA's file sha256 (absent without LoRAs: older keys do not move).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    loras: &'a [AppliedLora],
    /// Each ControlNet's file sha256 (absent without: older keys do not move).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    controlnets: &'a [AppliedControlNet],
    code_version: &'static str,
}

/// The JSON record stored beside the image: the audit trail of one render.
#[derive(Serialize)]
pub struct Provenance<'a> {
    /// Format name and version.
    pub schema: &'static str,
    /// Job, batch, tenant and the job's manifest key.
    pub job_id: JobId,
    #[allow(missing_docs)]
    pub batch_id: BatchId,
    #[allow(missing_docs)]
    pub tenant_id: TenantId,
    #[allow(missing_docs)]
    pub job_key: &'a str,
    /// Model name and the identity of its weights / renderer.
    pub model: &'a str,
    #[allow(missing_docs)]
    pub model_identity: &'a ModelIdentity,
    /// Every parameter, seed included.
    pub params: &'a JobParams,
    /// The LoRAs applied, each with its weight and the sha256 of its file.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub loras: &'a [AppliedLora],
    /// The ControlNets applied, each with the sha256 of its file (their weights, windows and
    /// images are in `params.control`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub controlnets: &'a [AppliedControlNet],
    /// Lease owner that rendered it, and which attempt.
    pub worker: &'a str,
    #[allow(missing_docs)]
    pub attempt: u32,
    /// pixelfarm version.
    pub code_version: &'static str,
    /// Blob key and sha256 of the PNG.
    pub object_key: &'a str,
    #[allow(missing_docs)]
    pub sha256: &'a str,
    /// The content credentials embedded in the image; `null` when the job asked for none.
    pub content_credentials: Option<CredentialsRecord<'a>>,
    /// Seconds per phase.
    pub timings: &'a BTreeMap<String, f64>,
    /// When the record was written.
    pub rendered_at: chrono::DateTime<Utc>,
}

/// The content credentials of one image, in its provenance record.
#[derive(Serialize)]
pub struct CredentialsRecord<'a> {
    /// The C2PA manifest's label (`urn:c2pa:…`).
    pub manifest: &'a str,
    /// sha256 of the signer's certificate.
    pub signer_sha256: &'a str,
    /// Signed with the shipped TEST ONLY development key (no key configured).
    pub development_key: bool,
}

/// Schema name of the provenance records.
pub const PROVENANCE_SCHEMA: &str = "pixelfarm.provenance/v1";

/// Version stamped into every image.
pub const CODE_VERSION: &str = concat!("pixelfarm/", env!("CARGO_PKG_VERSION"));

/// Everything one execution needs.
pub struct Execution<'a> {
    /// The claimed job.
    pub claimed: &'a ClaimedJob,
    /// This worker's lease-owner name.
    pub worker: &'a str,
    /// Renders the pixels, alone or in a micro-batch.
    pub batcher: &'a Batcher,
    /// Stores the results.
    pub blob: Arc<dyn BlobStore>,
    /// Shared with the render thread: its progress, and the stop once the job is cancelled.
    pub control: RenderControl,
    /// The longest the render may take (`worker.render_timeout_seconds`).
    pub render_timeout: std::time::Duration,
    /// Signs the content credentials (`worker.content_credentials`).
    pub signer: &'a Arc<ContentSigner>,
    /// Whether this image's provenance record is stored beside it (`worker.provenance_records`).
    pub provenance_records: ProvenanceRecords,
}

impl Execution<'_> {
    /// The init image (and mask) of an img2img / inpainting job, fetched, checked against the
    /// sha256 pinned at submit and decoded.
    async fn input(&self, init: &InitSpec) -> Result<ImageInput> {
        let image = self.fetch(&init.image, "init image").await?;
        let mask = match &init.mask {
            Some(m) => {
                let m = self.fetch(m, "mask").await?;
                // One byte per pixel: the mean of the channels (white repaints).
                let luma = m
                    .rgb
                    .chunks_exact(3)
                    .map(|p| ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8)
                    .collect();
                Some(luma)
            }
            None => None,
        };
        Ok(ImageInput {
            init: image,
            strength: init.strength.get(),
            mask,
        })
    }

    /// The job's input images: its init image and mask, and each ControlNet's control image,
    /// preprocessed as its entry says.
    async fn inputs(&self, params: &JobParams) -> Result<JobInputs> {
        let init = match &params.init {
            Some(init) => Some(self.input(init).await?),
            None => None,
        };
        let mut control = Vec::with_capacity(params.control.iter().len());
        for c in params.control.iter() {
            let image = self.fetch(&c.image, "control image").await?;
            control.push(match c.preprocess {
                Preprocess::None => image,
                Preprocess::Canny => {
                    blocking(move || Ok(canny(&image, CannyThresholds::default()))).await?
                }
            });
        }
        Ok(JobInputs { init, control })
    }

    /// One input, read only from the job's own tenant's prefix (the scheduler checked that at
    /// submit; this holds even for a job row written some other way), at most
    /// [`MAX_INPUT_BYTES`] of it, and decoded under the decoder's limits.
    async fn fetch(&self, image: &BlobImage, what: &str) -> Result<RgbImage> {
        let key = &image.key;
        if !is_tenant_input(self.claimed.tenant, key) {
            return Err(Error::permanent(format!(
                "{what} `{key}` is not an input of the job's tenant"
            )));
        }
        let bytes = self
            .blob
            .get_limited(key, MAX_INPUT_BYTES)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    Error::permanent(format!("{what} `{key}` is no longer in the blob store"))
                }
                // Over the limit: it never gets smaller on retry.
                ErrorKind::Invalid => Error::permanent(format!("{what}: {e}")),
                _ => e,
            })?;
        let (what, key, pinned) = (what.to_string(), key.clone(), image.sha256.clone());
        // Hashing and decoding up to MAX_INPUT_BYTES: off the async runtime.
        blocking(move || {
            if let Some(pinned) = pinned {
                let got = sha256_hex(&bytes);
                if got != pinned {
                    return Err(Error::permanent(format!(
                        "{what} `{key}` changed since the batch was submitted: sha256 {got}, pinned {pinned}"
                    )));
                }
            }
            decode_input(&bytes)
                .map(|(_, pixels)| pixels)
                .map_err(|e| Error::permanent(format!("{what} `{key}` {e}")))
        })
        .await
    }

    /// Render, encode and upload; returns what to record on success and the device it used.
    ///
    /// # Errors
    /// Renderer and blob errors, with their kinds.
    pub async fn run(&self, timings: &mut BTreeMap<String, f64>) -> Result<(Completion, String)> {
        let job = &self.claimed.job;
        let model = job.model.clone();
        let renderer = self.batcher.renderer();
        let identity = renderer.identity(&model)?;
        let applied = Applied {
            loras: renderer.loras(&model, &job.params.loras)?,
            controlnets: renderer.controlnets(&model, &job.params.control)?,
        };
        if let Some(limits) = renderer.limits(&model) {
            limits.check(&model, &job.params)?;
        }

        let t = Instant::now();
        let inputs = self.inputs(&job.params).await?;
        let render = self
            .batcher
            .render(&model, &job.params, inputs, &self.control);
        let rendered = match tokio::time::timeout(self.render_timeout, render).await {
            Ok(rendered) => rendered?,
            Err(_) => {
                // The render thread stops at its next step; the job is not retried: it would
                // take as long on any worker.
                self.control.cancel();
                return Err(Error::invalid(format!(
                    "the render took longer than worker.render_timeout_seconds ({} s) and was stopped at step {}; accepted: jobs that render within it (fewer steps or pixels)",
                    self.render_timeout.as_secs_f64(),
                    self.control
                        .progress()
                        .map_or_else(|| "0".to_string(), |p| format!("{} of {}", p.done, p.total)),
                )));
            }
        };
        let render_secs = t.elapsed().as_secs_f64();
        timings.insert("render".into(), render_secs);
        timings.extend(rendered.phases);

        let t = Instant::now();
        let png_prov = serde_json::to_string(&PngProvenance {
            schema: PROVENANCE_SCHEMA,
            model: model.as_str(),
            model_identity: &identity,
            params: &job.params,
            loras: &applied.loras,
            controlnets: &applied.controlnets,
            code_version: CODE_VERSION,
        })
        .expect("provenance serializes");
        let output = job.params.output;
        let signer = output.content_credentials().then(|| self.signer.clone());
        let key = OutputKey::new(
            self.claimed.tenant,
            &png_prov,
            output.format,
            signer.as_ref().map(|s| s.fingerprint()),
        );
        let meta = PngMetadata {
            parameters: a1111_parameters(&job.params, model.as_str(), &identity.renderer, &applied),
            provenance_json: png_prov,
        };
        let (model_name, model_id) = (model.to_string(), identity.id.clone());
        let source = if identity.test_pattern {
            DigitalSource::AlgorithmicMedia
        } else {
            DigitalSource::TrainedAlgorithmicMedia
        };
        let (encoded, manifest, thumb) = blocking(move || {
            let image = postprocess(rendered.image, &output)?;
            let encoded = encode(&image, &output, &meta)?;
            let thumb = thumbnail(&image)?;
            let Some(signer) = signer else {
                return Ok((encoded, None, thumb));
            };
            let what = Generation {
                model: &model_name,
                model_sha256: &model_id,
                source,
            };
            let size = (image.width, image.height);
            let (signed, label) = embed(&encoded, output.format, size, &what, &signer)?;
            Ok((signed, Some(label), thumb))
        })
        .await?;
        let sha256 = sha256_hex(&encoded);
        timings.insert("encode".into(), t.elapsed().as_secs_f64());

        // The record names the image's key and sha256, known before any upload, so the image, its
        // record (unless the PNG carries the provenance and the deployment leaves it there) and
        // its thumbnail (for an image over 256 px) go out together: one round trip.
        let (image_key, record_key, thumb_key) = (key.image(), key.provenance(), key.thumbnail());
        let record = Provenance {
            schema: PROVENANCE_SCHEMA,
            job_id: job.id,
            batch_id: job.batch_id,
            tenant_id: self.claimed.tenant,
            job_key: &job.key,
            model: model.as_str(),
            model_identity: &identity,
            params: &job.params,
            loras: &applied.loras,
            controlnets: &applied.controlnets,
            worker: self.worker,
            attempt: job.attempt,
            code_version: CODE_VERSION,
            object_key: &image_key,
            sha256: &sha256,
            content_credentials: manifest.as_deref().map(|manifest| CredentialsRecord {
                manifest,
                signer_sha256: self.signer.fingerprint(),
                development_key: self.signer.is_development(),
            }),
            timings,
            rendered_at: Utc::now(),
        };
        let json = self
            .provenance_records
            .stored(output.format)
            .then(|| serde_json::to_vec_pretty(&record).expect("provenance serializes"));
        let t = Instant::now();
        tokio::try_join!(
            self.blob.put(
                &image_key,
                Bytes::from(encoded),
                output.format.content_type(),
            ),
            put_some(&*self.blob, &record_key, json, "application/json"),
            put_some(&*self.blob, &thumb_key, thumb, "image/webp"),
        )?;
        // The record above holds every phase but this one: it is measured around the uploads.
        timings.insert("upload".into(), t.elapsed().as_secs_f64());

        Ok((
            Completion {
                object_key: image_key,
                sha256,
                timings: timings.clone(),
                device_seconds: render_secs,
            },
            identity.device,
        ))
    }
}

/// Stores `body` at `key`, when there is a body.
async fn put_some(
    blob: &dyn BlobStore,
    key: &str,
    body: Option<Vec<u8>>,
    content_type: &str,
) -> Result<()> {
    match body {
        Some(body) => blob.put(key, Bytes::from(body), content_type).await,
        None => Ok(()),
    }
}
