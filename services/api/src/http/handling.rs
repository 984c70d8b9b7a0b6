//! What every handler shares: the error answer, the caller's tenant, the call's metrics.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use pixelfarm_core::{Error, ImageFormat, TenantId};
use std::sync::Arc;

use crate::BatchApi;

/// A failed call: its [`Error`] rides in the response's extensions to `json_errors`, which
/// knows the request id.
pub(super) struct ApiError(pub(super) Error);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = crate::errors::http_status(self.0.kind());
        let mut res = status.into_response();
        res.extensions_mut().insert(Arc::new(self.0));
        res
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn tenant(api: &BatchApi, headers: &HeaderMap) -> ApiResult<TenantId> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(api.authenticate(auth).await?)
}

/// Image bytes with the content type their format says (PNG when unrecognised).
pub(super) fn image_response(bytes: bytes::Bytes) -> Response {
    let format = ImageFormat::sniff(&bytes).unwrap_or_default();
    ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response()
}

pub(super) fn observed<T>(
    api: &BatchApi,
    method: &str,
    r: pixelfarm_core::Result<T>,
) -> ApiResult<T> {
    api.metrics().observe("http", method, &r);
    Ok(r?)
}
