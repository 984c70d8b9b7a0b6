//! Write a batch's images and `results.jsonl` to a folder (`--format folder`), and the
//! [`ResultSource`] every export reads from.

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pixelfarm_api::{ApiClient, BatchApi};
use pixelfarm_core::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Jobs per page when reading a batch.
const PAGE: u32 = 1000;

/// Where job records, images and the uploads jobs name come from: the gRPC API or the
/// in-process API.
#[async_trait]
pub trait ResultSource: Send + Sync {
    /// A page of jobs after `after`, and the cursor of the next page.
    async fn page(
        &self,
        batch: BatchId,
        after: Option<JobId>,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)>;
    /// The PNG of a succeeded job.
    async fn image(&self, job: JobId) -> Result<Bytes>;
    /// The bytes of the upload (init image or mask) under `key`.
    async fn upload(&self, key: &str) -> Result<Bytes>;
}

/// A [`ResultSource`] whose pages hold only the jobs a reviewer approved (`fetch --approved`):
/// every export writes the approved set and nothing else.
pub struct ApprovedOnly<'a>(pub &'a dyn ResultSource);

#[async_trait]
impl ResultSource for ApprovedOnly<'_> {
    async fn page(
        &self,
        batch: BatchId,
        after: Option<JobId>,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
        let (mut jobs, next) = self.0.page(batch, after).await?;
        jobs.retain(|j| {
            j.review
                .as_ref()
                .is_some_and(|r| r.verdict == Verdict::Approved)
        });
        Ok((jobs, next))
    }

    async fn image(&self, job: JobId) -> Result<Bytes> {
        self.0.image(job).await
    }

    async fn upload(&self, key: &str) -> Result<Bytes> {
        self.0.upload(key).await
    }
}

/// The upload `image` names, checked against the sha256 pinned at submit.
///
/// # Errors
/// The source's errors (`NotFound` for an upload no longer there); `Permanent` for bytes that
/// changed since the submit.
pub async fn input(source: &dyn ResultSource, image: &BlobImage) -> Result<Bytes> {
    let bytes = source.upload(&image.key).await?;
    if let Some(pinned) = &image.sha256 {
        let got = sha256_hex(&bytes);
        if &got != pinned {
            return Err(Error::permanent(format!(
                "input `{}` has sha256 {got}, but the batch pinned {pinned}",
                image.key
            )));
        }
    }
    Ok(bytes)
}

#[async_trait]
impl ResultSource for ApiClient {
    async fn page(
        &self,
        batch: BatchId,
        after: Option<JobId>,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
        self.jobs(batch, after, PAGE).await
    }

    async fn image(&self, job: JobId) -> Result<Bytes> {
        ApiClient::image(self, job).await
    }

    async fn upload(&self, key: &str) -> Result<Bytes> {
        self.input(key).await
    }
}

/// The in-process API as seen by one tenant.
pub struct Local {
    /// The API.
    pub api: Arc<BatchApi>,
    /// The caller.
    pub tenant: TenantId,
}

#[async_trait]
impl ResultSource for Local {
    async fn page(
        &self,
        batch: BatchId,
        after: Option<JobId>,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
        let page = self.api.page(self.tenant, batch, after, Some(PAGE)).await?;
        Ok((page.jobs, page.next))
    }

    async fn image(&self, job: JobId) -> Result<Bytes> {
        self.api.image(self.tenant, job).await
    }

    async fn upload(&self, key: &str) -> Result<Bytes> {
        self.api.input(self.tenant, key).await
    }
}

/// One line of `results.jsonl`.
#[derive(Serialize)]
struct ResultLine<'a> {
    job_id: JobId,
    batch_id: BatchId,
    key: &'a str,
    model: &'a str,
    state: JobState,
    params: &'a JobParams,
    seed: Seed,
    object_key: Option<&'a str>,
    sha256: Option<&'a str>,
    /// Path of the image relative to the output folder.
    file: Option<&'a str>,
    /// A presigned GET URL of the image, when the scheduler signs them (`blob.signed_urls`).
    image_url: Option<&'a str>,
    /// When `image_url` stops working.
    image_url_expires_at: Option<String>,
    attempt: u32,
    error_kind: Option<&'a str>,
    last_error: Option<&'a str>,
    timings: &'a BTreeMap<String, f64>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// The latest review of the image: verdict, reviewer, when.
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<&'a Review>,
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Lines in `results.jsonl`.
    pub jobs: u64,
    /// Images written or already present with the right bytes.
    pub images: u64,
}

/// Images downloaded at once: one at a time leaves a fetch of thousands of images waiting on
/// round trips.
const FETCH_CONCURRENCY: usize = 8;

/// Write every succeeded job's PNG to `dir/<object key>` (verifying its sha256) and one
/// `results.jsonl` line per job. Images already present with the right bytes are not fetched
/// again, so an interrupted fetch resumes. `results.jsonl` is written to a temporary file and
/// renamed, so it is never half-written.
///
/// Every object key is checked with [`pixelfarm_blob::validate_key`] before anything is
/// written for it: a key the blob store would refuse (absolute, `..`, empty segments, characters
/// outside `A-Z a-z 0-9 . _ -`) comes from a broken or malicious server and could write outside
/// `dir`, so the export stops there.
///
/// # Errors
/// API errors, I/O errors, `Permanent` when an image's bytes do not match the recorded sha256 or
/// when the server answers an object key that would leave `dir`.
pub async fn export(source: &dyn ResultSource, batch: BatchId, dir: &Path) -> Result<Summary> {
    let io = |what: &'static str| {
        move |e: std::io::Error| Error::with_source(ErrorKind::Permanent, what, e)
    };
    std::fs::create_dir_all(dir).map_err(io("cannot create output folder"))?;
    let tmp = dir.join(".results.jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(io("cannot create results.jsonl"))?,
    );
    let mut summary = Summary::default();
    let mut after = None;
    loop {
        let (jobs, next) = source.page(batch, after).await?;
        // The page's images, FETCH_CONCURRENCY at a time; the lines keep the jobs' order.
        let files: Vec<Option<&str>> = futures::stream::iter(&jobs)
            .map(|j| async move {
                match (&j.object_key, &j.sha256) {
                    (Some(key), Some(sha)) if j.state == JobState::Succeeded => {
                        check_key(j.id, key)?;
                        fetch_image(source, j.id, &dir.join(key), sha).await?;
                        Ok(Some(key.as_str()))
                    }
                    _ => Ok(None),
                }
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        for (j, file) in jobs.iter().zip(files) {
            summary.images += u64::from(file.is_some());
            let line = ResultLine {
                job_id: j.id,
                batch_id: j.batch_id,
                key: &j.key,
                model: j.model.as_str(),
                state: j.state,
                params: &j.params,
                seed: j.params.seed,
                object_key: j.object_key.as_deref(),
                sha256: j.sha256.as_deref(),
                file,
                image_url: j.image_url.as_ref().map(|u| u.url.as_str()),
                image_url_expires_at: j.image_url.as_ref().map(|u| u.expires_at.to_rfc3339()),
                attempt: j.attempt,
                error_kind: j.error_kind.as_deref(),
                last_error: j.last_error.as_deref(),
                timings: &j.timings,
                created_at: j.created_at.to_rfc3339(),
                started_at: j.started_at.map(|t| t.to_rfc3339()),
                finished_at: j.finished_at.map(|t| t.to_rfc3339()),
                review: j.review.as_ref(),
            };
            serde_json::to_writer(&mut out, &line).expect("result line serializes");
            out.write_all(b"\n")
                .map_err(io("cannot write results.jsonl"))?;
            summary.jobs += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    out.flush().map_err(io("cannot write results.jsonl"))?;
    drop(out);
    std::fs::rename(&tmp, dir.join("results.jsonl"))
        .map_err(io("cannot move results.jsonl into place"))?;
    Ok(summary)
}

/// Refuse an object key that could name a path outside the output folder.
fn check_key(job: JobId, key: &str) -> Result<()> {
    pixelfarm_blob::validate_key(key).map_err(|_| {
        Error::permanent(format!(
            "the server answered object key {key:?} for job {job}, which is not a relative path inside the output folder; nothing was written for it"
        ))
    })
}

async fn fetch_image(
    source: &dyn ResultSource,
    job: JobId,
    path: &PathBuf,
    sha: &str,
) -> Result<()> {
    if std::fs::read(path).is_ok_and(|existing| sha256_hex(&existing) == sha) {
        return Ok(());
    }
    let bytes = source.image(job).await?;
    let got = sha256_hex(&bytes);
    if got != sha {
        return Err(Error::permanent(format!(
            "image of job {job} has sha256 {got}, but the job records {sha}"
        )));
    }
    let parent = path.parent().expect("object keys have a folder");
    let io = |e: std::io::Error| Error::with_source(ErrorKind::Permanent, "cannot write image", e);
    std::fs::create_dir_all(parent).map_err(io)?;
    let tmp = parent.join(format!(".{job}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers one page of succeeded jobs with the given object keys, and the same
    /// image bytes (with the right sha256) for each.
    struct Fake {
        keys: Vec<String>,
    }

    const PNG: &[u8] = b"not really a png";

    fn record(batch: BatchId, key: &str) -> JobRecord {
        let spec =
            parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").expect("manifest parses");
        JobRecord {
            id: JobId::generate(),
            batch_id: batch,
            key: "k".into(),
            model: spec.model.clone(),
            params: spec.jobs.iter().next().expect("one job").params,
            state: JobState::Succeeded,
            attempt: 1,
            max_attempts: 3,
            object_key: Some(key.to_string()),
            sha256: Some(sha256_hex(PNG)),
            image_url: None,
            last_error: None,
            error_kind: None,
            timings: BTreeMap::new(),
            progress: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            review: None,
        }
    }

    #[async_trait]
    impl ResultSource for Fake {
        async fn page(
            &self,
            batch: BatchId,
            _after: Option<JobId>,
        ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
            Ok((self.keys.iter().map(|k| record(batch, k)).collect(), None))
        }

        async fn image(&self, _job: JobId) -> Result<Bytes> {
            Ok(Bytes::from_static(PNG))
        }

        async fn upload(&self, key: &str) -> Result<Bytes> {
            panic!("upload {key} was read")
        }
    }

    #[tokio::test]
    async fn keys_that_leave_the_folder_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let out = base.path().join("out");
        let absolute = base.path().join("abs.png").to_string_lossy().into_owned();
        for key in [
            "../escaped.png",
            "images/../../escaped.png",
            absolute.as_str(),
            "images/a\nb.png",
            "",
        ] {
            let fake = Fake {
                keys: vec!["images/ok.png".into(), key.into()],
            };
            let err = export(&fake, BatchId::generate(), &out)
                .await
                .expect_err(key);
            assert_eq!(err.kind(), ErrorKind::Permanent, "{key:?}");
            let msg = err.chain();
            assert!(
                msg.contains("not a relative path inside the output folder"),
                "{msg}"
            );
            assert!(
                !msg.contains('\n'),
                "the key is quoted, not printed raw: {msg}"
            );
            assert!(!base.path().join("escaped.png").exists(), "{key:?}");
            assert!(!base.path().join("abs.png").exists(), "{key:?}");
            assert!(!out.join("results.jsonl").exists(), "{key:?}");
        }
        // Only what is inside the folder was written.
        let mut outside: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["out"]);
    }

    #[tokio::test]
    async fn good_keys_are_written_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake {
            keys: vec!["images/ab/x.png".into()],
        };
        let s = export(&fake, BatchId::generate(), dir.path())
            .await
            .unwrap();
        assert_eq!((s.jobs, s.images), (1, 1));
        assert_eq!(
            std::fs::read(dir.path().join("images/ab/x.png")).unwrap(),
            PNG
        );
    }
}
