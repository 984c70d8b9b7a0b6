//! What the console serves as files: a job's image and thumbnail (through the session, with an
//! ETag on the image's sha256) and a batch's approved set as one streamed tar.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pixelfarm_core::*;
use std::sync::Arc;

use super::pages::Fail;
use super::session::signed_in;
use crate::BatchApi;

/// Jobs per page read while streaming the approved set.
const APPROVED_PAGE: u32 = 500;

/// Images read from the blob store at once while streaming the approved set.
const APPROVED_CONCURRENCY: usize = 4;

/// Longest job key kept in a file name of the approved set (ustar names hold 100 bytes).
const MAX_NAME_KEY: usize = 72;

pub(super) async fn image(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Fail> {
    picture(&api, &headers, &id, Picture::Image).await
}

pub(super) async fn thumbnail(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Fail> {
    picture(&api, &headers, &id, Picture::Thumbnail).await
}

#[derive(Clone, Copy)]
enum Picture {
    Image,
    Thumbnail,
}

async fn picture(
    api: &BatchApi,
    headers: &HeaderMap,
    id: &str,
    which: Picture,
) -> Result<Response, Fail> {
    let s = signed_in(api, headers).await.map_err(Fail::Json)?;
    let job = async {
        let id: JobId = id.parse()?;
        api.job(s.session.tenant, id).await
    };
    let job = job.await.map_err(Fail::Json)?;
    // The browser keeps a picture but asks again each time (`no-cache`): the answer goes through
    // the session, and an unchanged one costs a 304 on the image's sha256, not its bytes.
    let etag = job.sha256.as_ref().map(|sha| match which {
        Picture::Image => format!("\"{sha}\""),
        Picture::Thumbnail => format!("\"{sha}-thumb\""),
    });
    let cache = [(header::CACHE_CONTROL, "private, no-cache")];
    if let Some(tag) = &etag
        && headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            cache,
            [(header::ETAG, tag.clone())],
        )
            .into_response());
    }
    let bytes = match which {
        Picture::Image => api.image_of(&job).await,
        Picture::Thumbnail => api.thumbnail_of(&job).await,
    };
    let bytes = bytes.map_err(Fail::Json)?;
    let format = ImageFormat::sniff(&bytes).unwrap_or_default();
    let mut res = (
        cache,
        [(header::CONTENT_TYPE, format.content_type())],
        bytes,
    )
        .into_response();
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        res.headers_mut().insert(header::ETAG, tag);
    }
    Ok(res)
}

/// The batch's approved images as a tar, streamed as it is read (one page of records and
/// [`APPROVED_CONCURRENCY`] images in memory, whatever the batch's size): for each approved job,
/// in manifest order, `00001-<key>.<ext>` and `00001-<key>.json` (its record, review included,
/// as the jobs API answers it). A read that fails mid-way aborts the response, so the browser
/// reports a failed download rather than keeping a short archive.
pub(super) async fn approved(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Fail> {
    let s = signed_in(&api, &headers).await.map_err(Fail::Page)?;
    let tenant = s.session.tenant;
    let batch = async {
        let id: BatchId = id.parse()?;
        api.batch(tenant, id).await
    };
    let batch = batch.await.map_err(Fail::Page)?.status;
    let body = async_stream::try_stream! {
        let mut after = None;
        let mut n = 0usize;
        loop {
            let page = api.page(tenant, batch.id, after, Some(APPROVED_PAGE)).await?;
            let approved = page.jobs.into_iter().filter(is_approved).map(|job| {
                let api = Arc::clone(&api);
                async move {
                    let bytes = api.image_of(&job).await;
                    (job, bytes)
                }
            });
            let mut images = futures::stream::iter(approved).buffered(APPROVED_CONCURRENCY);
            while let Some((job, bytes)) = images.next().await {
                let bytes = bytes?;
                n += 1;
                let stem = entry_stem(n, &job.key);
                let ext = ImageFormat::sniff(&bytes).map_or("bin", ImageFormat::extension);
                let record = serde_json::to_vec_pretty(&job).expect("a job record serializes");
                let mtime = job.finished_at.map_or(0, |t| t.timestamp().max(0) as u64);
                for (name, data) in [(format!("{stem}.{ext}"), bytes), (format!("{stem}.json"), Bytes::from(record))] {
                    yield tar_header(&name, data.len() as u64, mtime)?;
                    let pad = padding(data.len());
                    yield data;
                    if pad > 0 {
                        yield Bytes::from(vec![0u8; pad]);
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // The end of an archive: two empty blocks.
        yield Bytes::from(vec![0u8; 1024]);
    };
    let body = body.map_err(|e: Error| std::io::Error::other(e.to_string()));
    let file = format!("{}-approved.tar", file_safe(&batch.name, 64));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn is_approved(job: &JobRecord) -> bool {
    job.state == JobState::Succeeded
        && job
            .review
            .as_ref()
            .is_some_and(|r| r.verdict == Verdict::Approved)
}

/// `00042-color=red,shape=circle@512x512#0`: the position keeps the names unique and in order.
fn entry_stem(n: usize, key: &str) -> String {
    format!("{n:05}-{}", file_safe(key, MAX_NAME_KEY))
}

/// `text` with every character but `A-Z a-z 0-9 . _ - = , @ # +` replaced by `_`, no leading dot
/// and at most `max` bytes: a name every file system takes, never a path.
fn file_safe(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-=,@#+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(max);
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn tar_header(name: &str, size: u64, mtime: u64) -> Result<Bytes> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| Error::permanent(format!("cannot name `{name}` in the archive: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(Bytes::copy_from_slice(h.as_bytes()))
}

/// Zeros after `len` bytes of data up to the next 512-byte block.
fn padding(len: usize) -> usize {
    (512 - len % 512) % 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_unique_plain_file_names() {
        assert_eq!(
            entry_stem(42, "color=red,shape=circle@512x512#0"),
            "00042-color=red,shape=circle@512x512#0"
        );
        assert_eq!(entry_stem(1, "../../etc/passwd"), "00001-_.._.._etc_passwd");
        assert_eq!(file_safe("..", 10), "_..");
        assert_eq!(file_safe("", 10), "_");
        assert_eq!(file_safe("ünï/", 10), "_n__");
        let long = entry_stem(1, &"k".repeat(500));
        assert!(long.len() <= 6 + MAX_NAME_KEY);
        assert!(tar_header(&format!("{long}.json"), 1, 0).is_ok());
        assert_eq!(
            (padding(0), padding(1), padding(512), padding(513)),
            (0, 511, 0, 511)
        );
    }
}
