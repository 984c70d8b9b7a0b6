//! A tenant by the name an operator types.

use pixelfarm_core::{Error, JobStore, Result, TenantId};

/// The tenant called `name`.
///
/// # Errors
/// `NotFound` saying how to create it.
pub(super) async fn by_name(store: &dyn JobStore, name: &str) -> Result<TenantId> {
    store.tenant_by_name(name).await?.ok_or_else(|| {
        Error::not_found(format!(
            "no tenant `{name}`; create it with `pixelfarm-scheduler tenant create {name}`"
        ))
    })
}
