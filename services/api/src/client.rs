//! [`ApiClient`]: the gRPC client, with the API key on every call.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use pixelfarm_core::{BatchId, Error, ErrorKind, JobId, JobRecord, Result, SubmitOutcome};
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_client::BatchServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::BatchView;
use crate::grpc::from_status;

/// Bytes per `UploadInputRequest`: well within the server's 4 MiB message limit.
pub const UPLOAD_CHUNK: usize = 1 << 20;

/// A connected API client.
#[derive(Clone)]
pub struct ApiClient {
    inner: BatchServiceClient<Channel>,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl ApiClient {
    /// Connect to `url` (`http://host:50051`) with API key `key`.
    ///
    /// # Errors
    /// `Transient` when the scheduler is unreachable, `Invalid` for a bad URL or key.
    pub async fn connect(url: &str, key: &str) -> Result<Self> {
        let auth = MetadataValue::try_from(format!("Bearer {key}"))
            .map_err(|_| Error::invalid("the api key has characters not allowed in a header"))?;
        let endpoint = Channel::from_shared(url.to_string()).map_err(|e| {
            Error::with_source(
                ErrorKind::Invalid,
                format!("api url `{url}` is not valid"),
                e,
            )
        })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Error::transient(format!("cannot reach the scheduler at {url}"), e))?;
        Ok(ApiClient {
            inner: BatchServiceClient::new(channel).max_decoding_message_size(64 << 20),
            auth,
        })
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    /// Submit a manifest.
    ///
    /// # Errors
    /// `Invalid` naming the manifest field; transport errors.
    pub async fn submit(&self, manifest: String) -> Result<SubmitOutcome> {
        let r = self
            .inner
            .clone()
            .submit_batch(self.req(v1::SubmitBatchRequest { manifest }))
            .await
            .map_err(|s| from_status(&s))?;
        let r = r.into_inner();
        Ok(SubmitOutcome {
            batch_id: r.batch_id.parse()?,
            created: r.created,
            jobs: r.jobs,
        })
    }

    /// A batch.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn batch(&self, id: BatchId) -> Result<BatchView> {
        let r = self
            .inner
            .clone()
            .get_batch(self.req(v1::GetBatchRequest {
                batch_id: id.to_string(),
            }))
            .await
            .map_err(|s| from_status(&s))?;
        r.into_inner().try_into()
    }

    /// One page of jobs and the cursor of the next.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn jobs(
        &self,
        id: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
        let req = v1::ListJobsRequest {
            batch_id: id.to_string(),
            after: after.map(|a| a.to_string()).unwrap_or_default(),
            limit,
        };
        let r = self
            .inner
            .clone()
            .list_jobs(self.req(req))
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let next = if r.next_after.is_empty() {
            None
        } else {
            Some(r.next_after.parse()?)
        };
        let jobs = r
            .jobs
            .into_iter()
            .map(crate::convert::job_from_proto)
            .collect::<Result<_>>()?;
        Ok((jobs, next))
    }

    /// Cancel the jobs that have not started.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn cancel(&self, id: BatchId) -> Result<u64> {
        let r = self
            .inner
            .clone()
            .cancel_batch(self.req(v1::GetBatchRequest {
                batch_id: id.to_string(),
            }))
            .await
            .map_err(|s| from_status(&s))?;
        Ok(r.into_inner().cancelled)
    }

    /// The batch on every change until done.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn watch(
        &self,
        id: BatchId,
    ) -> Result<impl Stream<Item = Result<BatchView>> + use<>> {
        let r = self
            .inner
            .clone()
            .watch_batch(self.req(v1::GetBatchRequest {
                batch_id: id.to_string(),
            }))
            .await
            .map_err(|s| from_status(&s))?;
        Ok(r.into_inner()
            .map(|m| m.map_err(|s| from_status(&s)).and_then(BatchView::try_from)))
    }

    /// Upload an init image or mask as `name` (its sha256 when `None`), in chunks of
    /// [`UPLOAD_CHUNK`] bytes; answers the key to name in a manifest.
    ///
    /// # Errors
    /// `Invalid` naming what is wrong with the name or the bytes; transport errors.
    pub async fn upload(&self, name: Option<&str>, bytes: Bytes) -> Result<crate::UploadedInput> {
        let name = name.unwrap_or_default().to_string();
        // At least one message, so the name arrives even with no bytes.
        let mut chunks: Vec<v1::UploadInputRequest> = bytes
            .chunks(UPLOAD_CHUNK)
            .map(|c| v1::UploadInputRequest {
                name: String::new(),
                data: c.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(v1::UploadInputRequest::default());
        }
        chunks[0].name = name;
        let r = self
            .inner
            .clone()
            .upload_input(self.req(futures::stream::iter(chunks)))
            .await
            .map_err(|s| from_status(&s))?;
        crate::convert::uploaded_from_proto(r.into_inner())
    }

    /// The PNG of a succeeded job.
    ///
    /// # Errors
    /// `NotFound` when the job has no image.
    pub async fn image(&self, job: JobId) -> Result<Bytes> {
        let r = self
            .inner
            .clone()
            .get_image(self.req(v1::GetImageRequest {
                job_id: job.to_string(),
            }))
            .await
            .map_err(|s| from_status(&s))?;
        let mut s = r.into_inner();
        let mut buf = BytesMut::new();
        while let Some(chunk) = s.next().await {
            buf.extend_from_slice(&chunk.map_err(|st| from_status(&st))?.data);
        }
        Ok(buf.freeze())
    }
}
