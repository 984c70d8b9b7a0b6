//! [`S3Blob`]: any S3-compatible object store through aws-sdk-s3, and [`S3UrlSigner`], presigned
//! GET URLs of its objects.

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use pixelfarm_core::{BlobStore, Error, ErrorKind, Result, SignedUrl, UrlSigner};
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{too_large, validate_key};

/// Seconds one S3 request attempt may take, from connecting to the last byte of the body.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// Attempts per S3 call (the SDK's standard retry: exponential backoff with jitter between them).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Connecting to the store is quick or the store is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to reach the bucket. Credentials left empty come from the default AWS chain
/// (environment, profile, instance/IRSA role).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL for non-AWS stores (`http://127.0.0.1:8333` for SeaweedFS); empty for AWS.
    pub endpoint: String,
    /// Region (any value for most non-AWS stores).
    pub region: String,
    /// Access key id; empty to use the default chain.
    pub access_key_id: String,
    /// Secret key; never logged.
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by SeaweedFS and MinIO.
    pub path_style: bool,
    /// Prepended to every key, so several deployments can share a bucket.
    pub prefix: String,
    /// Seconds one request attempt may take before it is abandoned and retried: a store that
    /// hangs (rather than refusing) must not hold a worker's upload forever.
    pub timeout_seconds: u64,
    /// Attempts per call before the error reaches the caller (a failed upload makes the job
    /// `retryable`).
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: false,
            prefix: String::new(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl S3Config {
    /// Per-attempt bound (at least one second).
    fn attempt_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.max(1))
    }
}

/// S3 blob store.
#[derive(Debug, Clone)]
pub struct S3Blob {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Bound on reading an object's body once its headers arrived.
    body_timeout: Duration,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(SdkError<E>) -> Error {
    move |e| {
        let kind = match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match se.err().code() {
                    Some("NoSuchKey") | Some("NotFound") => ErrorKind::NotFound,
                    _ if status == 404 => ErrorKind::NotFound,
                    _ if status == 429 || status >= 500 => ErrorKind::Transient,
                    Some("SlowDown") | Some("RequestTimeout") | Some("InternalError") => {
                        ErrorKind::Transient
                    }
                    _ => ErrorKind::Permanent,
                }
            }
            // Dispatch failures, timeouts, unreadable responses: the store may be back soon.
            _ => ErrorKind::Transient,
        };
        Error::with_source(kind, what, e)
    }
}

/// The SDK client for `cfg`'s bucket, addressed at `endpoint` (empty: AWS), and the key prefix
/// (empty or ending in `/`). No request is made.
async fn sdk_client(cfg: &S3Config, endpoint: &str) -> Result<(aws_sdk_s3::Client, String)> {
    if cfg.bucket.is_empty() {
        return Err(Error::invalid("blob.bucket is empty; set the bucket name"));
    }
    let region = if cfg.region.is_empty() {
        "us-east-1".to_string()
    } else {
        cfg.region.clone()
    };
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(region));
    if !cfg.access_key_id.is_empty() {
        loader = loader.credentials_provider(Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            None,
            None,
            "pixelfarm-config",
        ));
    }
    if !endpoint.is_empty() {
        loader = loader.endpoint_url(endpoint);
    }
    let attempt = cfg.attempt_timeout();
    loader = loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(attempt)
                .operation_attempt_timeout(attempt)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts.max(1)));
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.path_style)
        .build();
    let prefix = cfg.prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((aws_sdk_s3::Client::from_conf(conf), prefix))
}

impl S3Blob {
    /// A client for the configured bucket (no request is made).
    ///
    /// # Errors
    /// `Invalid` when the bucket is empty.
    pub async fn connect(cfg: &S3Config) -> Result<Self> {
        let (client, prefix) = sdk_client(cfg, &cfg.endpoint).await?;
        Ok(S3Blob {
            client,
            body_timeout: cfg.attempt_timeout(),
            bucket: cfg.bucket.clone(),
            prefix,
        })
    }

    /// Create the bucket if it does not exist (development and tests; production buckets are
    /// provisioned by their owners).
    ///
    /// # Errors
    /// When the store refuses to create it.
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify("cannot create bucket")(e)),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The object's response, its body not read yet.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        validate_key(key)?;
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(classify("cannot get object"))
    }
}

#[async_trait]
impl BlobStore for S3Blob {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(classify("cannot put object"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self.get_object(key).await?;
        let data = tokio::time::timeout(self.body_timeout, out.body.collect())
            .await
            .map_err(|e| Error::transient("cannot read object body", e))?
            .map_err(|e| Error::transient("cannot read object body", e))?;
        Ok(data.into_bytes())
    }

    async fn get_limited(&self, key: &str, max_bytes: u64) -> Result<Bytes> {
        let out = self.get_object(key).await?;
        // The size from the response's headers refuses a large object before its body is read
        // (dropping the response closes the connection); the capped read below holds for a store
        // that sends no length or more bytes than it announced.
        let announced = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(n) = announced
            && n > max_bytes
        {
            return Err(too_large(key, Some(n), max_bytes));
        }
        let mut body = out.body;
        let read = async {
            let mut buf = bytes::BytesMut::with_capacity(announced.unwrap_or(0) as usize);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::transient("cannot read object body", e))?;
                if (buf.len() + chunk.len()) as u64 > max_bytes {
                    return Err(too_large(key, None, max_bytes));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|e| Error::transient("cannot read object body", e))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("cannot delete object")(e) {
                err if err.kind() == ErrorKind::NotFound => Ok(()),
                err => Err(err),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify("cannot list objects"))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(k.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(classify("cannot reach the bucket"))?;
        Ok(())
    }
}

/// Presigned GET URLs (SigV4 query signing) of the objects of an [`S3Blob`] with the same
/// settings. The URLs name `public_endpoint`, the store's address as their users reach it (the
/// host is part of what is signed, so a store behind a proxy must see that host); an empty one
/// names the store's own endpoint.
#[derive(Debug, Clone)]
pub struct S3UrlSigner {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// The longest a SigV4 presigned URL can be valid: 7 days.
pub const MAX_SIGNED_URL_SECONDS: u64 = 7 * 24 * 3600;

impl S3UrlSigner {
    /// A signer for `cfg`'s bucket whose URLs name `public_endpoint` (empty: `cfg.endpoint`).
    /// No request is made.
    ///
    /// # Errors
    /// `Invalid` when the bucket is empty.
    pub async fn connect(cfg: &S3Config, public_endpoint: &str) -> Result<Self> {
        let endpoint = if public_endpoint.is_empty() {
            &cfg.endpoint
        } else {
            public_endpoint
        };
        let (client, prefix) = sdk_client(cfg, endpoint).await?;
        Ok(S3UrlSigner {
            client,
            bucket: cfg.bucket.clone(),
            prefix,
        })
    }
}

#[async_trait]
impl UrlSigner for S3UrlSigner {
    async fn signed_get(&self, key: &str, expires_in: Duration) -> Result<SignedUrl> {
        validate_key(key)?;
        // Whole seconds: the signature's date has no finer grain, so `expires_at` is exact.
        let now = SystemTime::now();
        let start = now
            - Duration::from_nanos(u64::from(
                now.duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos(),
            ));
        let config = PresigningConfig::builder()
            .start_time(start)
            .expires_in(expires_in)
            .build()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Invalid,
                    format!(
                        "a signed URL valid for {} s cannot be made; accepted: 1 to {MAX_SIGNED_URL_SECONDS} s",
                        expires_in.as_secs()
                    ),
                    e,
                )
            })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .presigned(config)
            .await
            .map_err(classify("cannot sign a URL"))?;
        Ok(SignedUrl {
            url: request.uri().to_string(),
            expires_at: DateTime::<Utc>::from(start + expires_in),
        })
    }
}
