//! [`ApiClient`]: the gRPC client, with the API key on every call.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use pixelfarm_core::{
    BatchId, Error, ErrorKind, EventId, JobId, JobRecord, MAX_INPUT_BYTES, Result, SubmitOutcome,
    WebhookDelivery,
};
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_client::BatchServiceClient;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::BatchView;
use crate::convert::{cursor_from_proto, cursor_to_proto};

/// The longest a unary call (submit, batch, jobs, cancel) may take: a connection that went dead
/// without closing fails the call instead of leaving it waiting forever. A submit of the largest
/// manifest takes seconds.
const UNARY_DEADLINE: Duration = Duration::from_secs(120);
/// The longest a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle connection, so a stream (watch, image, upload) on a dead one ends.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// `call`, failed as `Transient` when no answer came within [`UNARY_DEADLINE`].
async fn unary<T>(
    call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>> {
    match tokio::time::timeout(UNARY_DEADLINE, call).await {
        Ok(answer) => answer.map_err(|s| from_status(&s)),
        Err(_) => Err(Error::new(
            ErrorKind::Transient,
            format!(
                "the scheduler did not answer within {} s",
                UNARY_DEADLINE.as_secs()
            ),
        )),
    }
}
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
    /// Connect to `url` (`http://host:50051`, or `https://…` trusting the system's root
    /// certificates) with API key `key`.
    ///
    /// # Errors
    /// As [`ApiClient::connect_with_ca`].
    pub async fn connect(url: &str, key: &str) -> Result<Self> {
        Self::connect_with_ca(url, key, None).await
    }

    /// Connect to `url` with API key `key`. An `https://` URL is verified against `ca` when
    /// given, else against the system's root certificates; an `http://` URL is plain TCP.
    ///
    /// # Errors
    /// `Invalid` for a bad URL or key; `Permanent` when the scheduler's certificate cannot be
    /// verified (the message names the URL and the reason); `Transient` when the scheduler is
    /// unreachable.
    pub async fn connect_with_ca(
        url: &str,
        key: &str,
        ca: Option<&CaCertificates>,
    ) -> Result<Self> {
        let auth = MetadataValue::try_from(format!("Bearer {key}"))
            .map_err(|_| Error::invalid("the api key has characters not allowed in a header"))?;
        let mut endpoint = Channel::from_shared(url.to_string())
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!("api url `{url}` is not valid"),
                    e,
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true);
        let https = endpoint.uri().scheme_str() == Some("https");
        if https {
            endpoint = endpoint
                .tls_config(tls_config(ca))
                .map_err(|e| Error::with_source(ErrorKind::Invalid, format!("tls for {url}"), e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let trusted = match ca {
                Some(ca) => ca.origin.as_str(),
                None => "the system's root certificates",
            };
            match tls_failure(&e) {
                // The reason is the whole story; tonic's wrappers around it only repeat it.
                Some(why) if https => Error::new(
                    ErrorKind::Permanent,
                    format!("cannot verify the scheduler at {url} (trusting {trusted}): {why}"),
                ),
                _ => Error::transient(format!("cannot reach the scheduler at {url}"), e),
            }
        })?;
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
        let r = unary(
            self.inner
                .clone()
                .submit_batch(self.req(v1::SubmitBatchRequest { manifest })),
        )
        .await?;
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
        let r = unary(self.inner.clone().get_batch(self.req(v1::GetBatchRequest {
            batch_id: id.to_string(),
        })))
        .await?;
        r.into_inner().try_into()
    }

    /// One page of a batch's webhook delivery log and the cursor of the next.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn deliveries(
        &self,
        id: BatchId,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<(Vec<WebhookDelivery>, Option<EventId>)> {
        let req = v1::ListWebhookDeliveriesRequest {
            batch_id: id.to_string(),
            after: cursor_to_proto(after),
            limit,
        };
        let r = unary(self.inner.clone().list_webhook_deliveries(self.req(req)))
            .await?
            .into_inner();
        let next = cursor_from_proto(&r.next_after)?;
        let deliveries = r
            .deliveries
            .into_iter()
            .map(crate::convert::delivery_from_proto)
            .collect::<Result<_>>()?;
        Ok((deliveries, next))
    }

    /// One page of jobs and the cursor of the next.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's; `Gone` for a batch whose jobs
    /// retention deleted.
    pub async fn jobs(
        &self,
        id: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<(Vec<JobRecord>, Option<JobId>)> {
        let req = v1::ListJobsRequest {
            batch_id: id.to_string(),
            after: cursor_to_proto(after),
            limit,
        };
        let r = unary(self.inner.clone().list_jobs(self.req(req)))
            .await?
            .into_inner();
        let next = cursor_from_proto(&r.next_after)?;
        let jobs = r
            .jobs
            .into_iter()
            .map(crate::convert::job_from_proto)
            .collect::<Result<_>>()?;
        Ok((jobs, next))
    }

    /// Cancel every job of the batch not yet finished; running ones stop at their next denoising
    /// step once their worker's heartbeat finds the lease gone. Returns how many were cancelled.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn cancel(&self, id: BatchId) -> Result<u64> {
        let r = unary(
            self.inner
                .clone()
                .cancel_batch(self.req(v1::GetBatchRequest {
                    batch_id: id.to_string(),
                })),
        )
        .await?;
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

    /// Upload an input image (init image, mask or control image) as `name` (its sha256 when
    /// `None`), in chunks of [`UPLOAD_CHUNK`] bytes; answers the key to name in a manifest.
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
            .await;
        collect(r, None).await
    }

    /// The bytes of an upload of the caller's tenant, by the key the upload answered
    /// (`inputs/<tenant>/<name>`).
    ///
    /// # Errors
    /// `NotFound` for no such upload (another tenant's key included); `Permanent` for an answer
    /// over [`MAX_INPUT_BYTES`], which no upload is.
    pub async fn input(&self, key: &str) -> Result<Bytes> {
        let r = self
            .inner
            .clone()
            .get_input(self.req(v1::GetInputRequest { key: key.into() }))
            .await;
        collect(r, Some(MAX_INPUT_BYTES)).await
    }
}

/// The bytes of a stream of chunks, refused past `max` bytes when given.
async fn collect(
    r: std::result::Result<tonic::Response<tonic::Streaming<v1::ImageChunk>>, tonic::Status>,
    max: Option<u64>,
) -> Result<Bytes> {
    let mut s = r.map_err(|s| from_status(&s))?.into_inner();
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.next().await {
        buf.extend_from_slice(&chunk.map_err(|st| from_status(&st))?.data);
        if let Some(max) = max
            && buf.len() as u64 > max
        {
            return Err(Error::permanent(format!(
                "the server sent more than {max} bytes"
            )));
        }
    }
    Ok(buf.freeze())
}

/// Certificates an `https://` client trusts instead of the system's roots (a private CA's).
#[derive(Clone, Debug)]
pub struct CaCertificates {
    pem: Certificate,
    /// Where they came from, as messages name it (`--ca-file ca.crt`).
    origin: String,
}

impl CaCertificates {
    /// The PEM certificates in `pem`; `origin` names where they came from in messages.
    ///
    /// # Errors
    /// `Invalid` naming `origin` when `pem` holds no PEM certificate or a broken one.
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(format!(
                "{origin}: holds no PEM CERTIFICATE block; accepted: one or more PEM certificates"
            )));
        }
        Ok(CaCertificates {
            pem: Certificate::from_pem(pem),
            origin: origin.to_string(),
        })
    }
}

/// TLS of an `https://` channel: `ca`'s certificates as the only roots, or the system's.
fn tls_config(ca: Option<&CaCertificates>) -> ClientTlsConfig {
    // tonic builds its rustls config on the process's default provider; the build links two
    // (aws-lc-rs for S3 and this, ring for RabbitMQ), so one must be named. A provider already
    // installed stays.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(ca.pem.clone()),
        None => ClientTlsConfig::new().with_native_roots(),
    }
}

/// The TLS error under a failed connect (an untrusted or expired certificate, a name that does
/// not match), if that is why it failed. rustls errors reach tonic inside `io::Error`s, whose
/// `source()` skips the error they wrap.
fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(t) = e.downcast_ref::<rustls::Error>().or(wrapped) {
            return Some(t);
        }
        cur = e.source();
    }
    None
}
