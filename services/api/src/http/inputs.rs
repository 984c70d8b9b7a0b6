//! `GET /v1/inputs/{name}`: an upload's bytes, for the tenant that uploaded it.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use pixelfarm_core::input_prefix;
use std::sync::Arc;

use super::handling::{ApiResult, image_response, observed, tenant};
use crate::BatchApi;

/// An upload of the caller's tenant: `name` is the last segment of its key
/// (`inputs/<tenant>/<name>`), as the upload answered it.
#[utoipa::path(
    get,
    path = "/v1/inputs/{name}",
    operation_id = "input",
    params(("name" = String, Path, description = "the upload's file name: the last segment of its key, extension included (`photo.png`)")),
    responses((
        status = 200,
        description = "the upload's bytes, as they were stored",
        content(
            (String = "image/png"),
            (String = "image/jpeg"),
            (String = "image/webp")
        )
    ))
)]
pub(super) async fn input(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let key = format!("{}{name}", input_prefix(t));
    let bytes = observed(&api, "input", api.input(t, &key).await)?;
    Ok(image_response(bytes))
}
