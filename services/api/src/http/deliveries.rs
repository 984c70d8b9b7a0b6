//! `GET /v1/batches/{id}/webhook-deliveries`: the batch's webhook delivery log.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use pixelfarm_core::{EventId, WebhookDelivery};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use super::handling::{ApiResult, observed, tenant};
use crate::BatchApi;

/// The query of a page of the delivery log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryQuery {
    /// The `next_after` of the previous page (an event id); the first page when absent or empty.
    #[param(format = Uuid)]
    after: Option<String>,
    /// Events on the page: 1 to 10000, 1000 when absent.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// One page of a batch's webhook delivery log.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeliveriesPage {
    /// The batch's webhook events, oldest first, each with every attempt.
    pub deliveries: Vec<WebhookDelivery>,
    /// The `after` of the next page; absent (null) on the last page.
    pub next_after: Option<EventId>,
}

/// The webhook events of the batch (its own webhook's and its tenant's) and every delivery
/// attempt: when, the receiver's status, why it failed, when the next is due.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/webhook-deliveries",
    operation_id = "list_webhook_deliveries",
    params(("id" = pixelfarm_core::BatchId, Path, description = "the batch"), DeliveryQuery),
    responses((status = 200, description = "a page of the delivery log; `next_after` is set while more follow", body = DeliveriesPage))
)]
pub(super) async fn deliveries(
    State(api): State<Arc<BatchApi>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    let t = tenant(&api, &headers).await?;
    let after: Option<EventId> = q
        .after
        .filter(|a| !a.is_empty())
        .map(|a| a.parse())
        .transpose()?;
    let page = observed(
        &api,
        "deliveries",
        api.deliveries(t, id.parse()?, after, q.limit).await,
    )?;
    Ok(axum::Json(DeliveriesPage {
        deliveries: page.deliveries,
        next_after: page.next,
    })
    .into_response())
}
