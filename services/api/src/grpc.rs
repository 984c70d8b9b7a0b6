//! The tonic `BatchService` over [`BatchApi`].

use bytes::BytesMut;
use futures::{Stream, StreamExt};
use pixelfarm_core::{Error, ErrorKind, EventId, JobId, MAX_INPUT_BYTES, TenantId};
use pixelfarm_proto::v1;
use pixelfarm_proto::v1::batch_service_server::{BatchService, BatchServiceServer};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::BatchApi;
use crate::convert::{cursor_from_proto, cursor_to_proto};

/// Bytes per `ImageChunk`.
const CHUNK: usize = 64 * 1024;

/// gRPC front of [`BatchApi`].
pub struct GrpcApi(pub Arc<BatchApi>);

impl GrpcApi {
    /// The tonic server to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> BatchServiceServer<Self> {
        BatchServiceServer::new(self)
    }

    async fn tenant<T>(&self, req: &Request<T>) -> Result<TenantId, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let peer = req.remote_addr().map(|a| a.ip());
        self.0.authenticate_from(peer, auth).await.map_err(status)
    }

    fn observe<T>(&self, method: &str, r: pixelfarm_core::Result<T>) -> Result<T, Status> {
        self.0.metrics().observe("grpc", method, &r);
        r.map_err(|e| status_of(e, &format!("grpc {method}")))
    }
}

/// Error kind → gRPC status code, with the message [`crate::errors::public_message`] gives (the
/// same as over HTTP) and the request id in the `x-request-id` metadata.
pub fn status(e: Error) -> Status {
    status_of(e, "grpc")
}

/// [`status`] for a failure of `call` (transport and method, named in the log).
fn status_of(e: Error, call: &str) -> Status {
    let code = match e.kind() {
        ErrorKind::NotFound => tonic::Code::NotFound,
        // gRPC has no "gone": the batch is in a state (its jobs purged) that refuses the call.
        ErrorKind::Gone => tonic::Code::FailedPrecondition,
        ErrorKind::Conflict => tonic::Code::AlreadyExists,
        ErrorKind::Invalid => tonic::Code::InvalidArgument,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::QuotaExceeded | ErrorKind::RateLimited => tonic::Code::ResourceExhausted,
        ErrorKind::Transient => tonic::Code::Unavailable,
        ErrorKind::Permanent => tonic::Code::Internal,
    };
    let request_id = crate::errors::request_id();
    let message = crate::errors::public_message(&e, &request_id, call);
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(v) = request_id.parse() {
        metadata.insert("x-request-id", v);
    }
    Status::with_metadata(code, message, metadata)
}

/// gRPC status → error kind (client side).
pub fn from_status(s: &Status) -> Error {
    let kind = match s.code() {
        tonic::Code::NotFound => ErrorKind::NotFound,
        tonic::Code::FailedPrecondition => ErrorKind::Gone,
        tonic::Code::AlreadyExists => ErrorKind::Conflict,
        tonic::Code::InvalidArgument => ErrorKind::Invalid,
        tonic::Code::Unauthenticated => ErrorKind::Unauthenticated,
        // The server's two kinds share the code; the message says which limit.
        tonic::Code::ResourceExhausted => ErrorKind::QuotaExceeded,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    Error::new(kind, s.message().to_string())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `bytes` as a stream of [`CHUNK`]-sized messages.
fn chunked(bytes: bytes::Bytes) -> BoxStream<v1::ImageChunk> {
    let chunks: Vec<Result<v1::ImageChunk, Status>> = bytes
        .chunks(CHUNK)
        .map(|c| Ok(v1::ImageChunk { data: c.to_vec() }))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

#[tonic::async_trait]
impl BatchService for GrpcApi {
    async fn submit_batch(
        &self,
        req: Request<v1::SubmitBatchRequest>,
    ) -> Result<Response<v1::SubmitBatchResponse>, Status> {
        let t = self.tenant(&req).await?;
        let out = self.observe("submit", self.0.submit(t, req.into_inner().manifest).await)?;
        Ok(Response::new(v1::SubmitBatchResponse {
            batch_id: out.batch_id.to_string(),
            created: out.created,
            jobs: out.jobs,
        }))
    }

    async fn get_batch(
        &self,
        req: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        let t = self.tenant(&req).await?;
        let id = req.into_inner().batch_id.parse().map_err(status)?;
        let view = self.observe("get", self.0.batch(t, id).await)?;
        Ok(Response::new((&view).into()))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let t = self.tenant(&req).await?;
        let r = req.into_inner();
        let batch = r.batch_id.parse().map_err(status)?;
        let after: Option<JobId> = cursor_from_proto(&r.after).map_err(status)?;
        // proto3 cannot tell 0 from unset: 0 asks for the default page.
        let limit = (r.limit != 0).then_some(r.limit);
        let page = self.observe("list", self.0.page(t, batch, after, limit).await)?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: page.jobs.iter().map(crate::convert::job_to_proto).collect(),
            next_after: cursor_to_proto(page.next),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<v1::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<v1::ListWebhookDeliveriesResponse>, Status> {
        let t = self.tenant(&req).await?;
        let r = req.into_inner();
        let batch = r.batch_id.parse().map_err(status)?;
        let after: Option<EventId> = cursor_from_proto(&r.after).map_err(status)?;
        let limit = (r.limit != 0).then_some(r.limit);
        let page = self.observe(
            "deliveries",
            self.0.deliveries(t, batch, after, limit).await,
        )?;
        Ok(Response::new(v1::ListWebhookDeliveriesResponse {
            deliveries: page
                .deliveries
                .iter()
                .map(crate::convert::delivery_to_proto)
                .collect(),
            next_after: cursor_to_proto(page.next),
        }))
    }

    type WatchBatchStream = BoxStream<v1::Batch>;

    async fn watch_batch(
        &self,
        req: Request<v1::GetBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let t = self.tenant(&req).await?;
        let id = req.into_inner().batch_id.parse().map_err(status)?;
        // Fail fast (NOT_FOUND, RESOURCE_EXHAUSTED) before opening the stream.
        let views = self.observe("watch", self.0.clone().watch(t, id).await)?;
        let s = views.map(|r| r.map(|v| v1::Batch::from(&v)).map_err(status));
        Ok(Response::new(Box::pin(s)))
    }

    async fn cancel_batch(
        &self,
        req: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::CancelBatchResponse>, Status> {
        let t = self.tenant(&req).await?;
        let id = req.into_inner().batch_id.parse().map_err(status)?;
        let n = self.observe("cancel", self.0.cancel(t, id).await)?;
        Ok(Response::new(v1::CancelBatchResponse { cancelled: n }))
    }

    type GetImageStream = BoxStream<v1::ImageChunk>;

    async fn get_image(
        &self,
        req: Request<v1::GetImageRequest>,
    ) -> Result<Response<Self::GetImageStream>, Status> {
        let t = self.tenant(&req).await?;
        let id = req.into_inner().job_id.parse().map_err(status)?;
        let bytes = self.observe("image", self.0.image(t, id).await)?;
        Ok(Response::new(chunked(bytes)))
    }

    type GetInputStream = BoxStream<v1::ImageChunk>;

    async fn get_input(
        &self,
        req: Request<v1::GetInputRequest>,
    ) -> Result<Response<Self::GetInputStream>, Status> {
        let t = self.tenant(&req).await?;
        let key = req.into_inner().key;
        let bytes = self.observe("input", self.0.input(t, &key).await)?;
        Ok(Response::new(chunked(bytes)))
    }

    async fn upload_input(
        &self,
        req: Request<tonic::Streaming<v1::UploadInputRequest>>,
    ) -> Result<Response<v1::UploadedInput>, Status> {
        let t = self.tenant(&req).await?;
        let mut stream = req.into_inner();
        let upload =
            async {
                let mut name = None;
                let mut buf = BytesMut::new();
                let mut first = true;
                // Counted as the chunks arrive: the upload is refused at the limit, not after it.
                while let Some(msg) = stream.message().await.map_err(|s| {
                    Error::invalid(format!("the upload stream failed: {}", s.message()))
                })? {
                    if first {
                        name = Some(msg.name).filter(|n| !n.is_empty());
                        first = false;
                    }
                    if (buf.len() + msg.data.len()) as u64 > MAX_INPUT_BYTES {
                        return Err(Error::invalid(crate::service::upload_too_large(None)));
                    }
                    buf.extend_from_slice(&msg.data);
                }
                self.0.upload(t, name.as_deref(), buf.freeze()).await
            };
        let out = self.observe("upload", upload.await)?;
        Ok(Response::new(crate::convert::uploaded_to_proto(&out)))
    }
}
