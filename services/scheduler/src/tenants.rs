//! Tenants and API keys.

use pixelfarm_core::{JobStore, Result, TenantId, hash_api_key};
use pixelfarm_runtime::settings::TenantBootstrap;
use rand::RngCore;

/// A new random API key: `pf_` and 32 random bytes in hex.
pub fn new_api_key() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("pf_{}", hex::encode(b))
}

/// Create the tenant if missing and register the key; returns the tenant.
///
/// # Errors
/// Store errors.
pub async fn ensure(
    store: &dyn JobStore,
    name: &str,
    weight: u32,
    keys: &[String],
) -> Result<TenantId> {
    let id = match store.tenant_by_name(name).await? {
        Some(id) => id,
        None => match store.create_tenant(name, weight).await {
            Ok(id) => id,
            // Another scheduler replica created it at the same moment.
            Err(e) if e.kind() == pixelfarm_core::ErrorKind::Conflict => {
                store.tenant_by_name(name).await?.ok_or(e)?
            }
            Err(e) => return Err(e),
        },
    };
    for k in keys {
        store.add_api_key(id, &hash_api_key(k)).await?;
    }
    Ok(id)
}

/// Apply the configured tenant bootstrap.
///
/// # Errors
/// Store errors.
pub async fn bootstrap(store: &dyn JobStore, tenants: &[TenantBootstrap]) -> Result<()> {
    for t in tenants {
        ensure(store, &t.name, t.weight, &t.api_keys).await?;
    }
    Ok(())
}
