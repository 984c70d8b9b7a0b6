//! Init images and masks: uploads, and the inputs a manifest names, checked and pinned by
//! their sha256.

use bytes::Bytes;
use pixelfarm_core::*;
use std::collections::HashMap;

use super::views::UploadedInput;
use super::{BatchApi, upload_too_large};

/// The inputs a submit checked: key -> (sha256, width, height).
type Pinned = HashMap<String, (String, u32, u32)>;

/// The sha256 of an input's `bytes` and what its header says, once they decode under the input
/// limits (`pixelfarm_image::input::decode_input`), both worked out on a blocking thread (up to
/// [`MAX_INPUT_BYTES`] of hashing and decoding). The outer error is a crashed decoder; the inner
/// one, what is wrong with the bytes.
async fn inspect_input(
    bytes: Bytes,
) -> Result<Result<(String, pixelfarm_image::input::InputInfo)>> {
    tokio::task::spawn_blocking(move || {
        pixelfarm_image::input::decode_input(&bytes).map(|(info, _)| (sha256_hex(&bytes), info))
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Permanent, "image decoder crashed", e))
}

impl BatchApi {
    /// The bytes of `tenant`'s upload under `key` (`inputs/<tenant>/<file>`, as a manifest
    /// names it).
    ///
    /// # Errors
    /// `NotFound` for no such upload, worded alike for a key outside the tenant's uploads (another
    /// tenant's included: the answer tells nothing of whether it exists); store errors.
    pub async fn input(&self, tenant: TenantId, key: &str) -> Result<Bytes> {
        let missing = || Error::not_found(format!("no upload `{key}`"));
        if !is_tenant_input(tenant, key) {
            return Err(missing());
        }
        match self.blob.get_limited(key, MAX_INPUT_BYTES).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(missing()),
            other => other,
        }
    }

    /// Check an init image or mask and store it under the tenant's prefix
    /// ([`input_prefix`]) as `name` (its sha256 when `None`), replacing an earlier upload of that
    /// name. The bytes are checked before anything is stored: at most [`MAX_INPUT_BYTES`], a PNG,
    /// JPEG or WebP whose header says at most [`ImageSize::MAX_SIDE`] pixels a side, and pixels
    /// that decode under the decoder's limits. A refused upload stores nothing.
    ///
    /// # Errors
    /// `Invalid` naming the name or what the bytes are and what is accepted; `Transient` as
    /// [`BatchApi::submit`] when the slots stay busy; store errors.
    pub async fn upload(
        &self,
        tenant: TenantId,
        name: Option<&str>,
        bytes: Bytes,
    ) -> Result<UploadedInput> {
        let name = name.map(InputName::parse).transpose()?;
        let size = bytes.len() as u64;
        if size > MAX_INPUT_BYTES {
            return Err(Error::invalid(upload_too_large(Some(size))));
        }
        let _slot = self.slot().await?;
        let (sha256, info) = inspect_input(bytes.clone())
            .await?
            .map_err(|e| Error::invalid(format!("the upload {e}")))?;
        let key = name
            .unwrap_or_else(|| InputName::from_sha256(&sha256))
            .key(tenant, info.format);
        self.blob
            .put(&key, bytes, info.format.content_type())
            .await?;
        Ok(UploadedInput {
            key,
            sha256,
            format: info.format,
            width: info.width,
            height: info.height,
            bytes: size,
        })
    }

    /// Check every init image, mask and control image of `spec` (fetched once per key: it is
    /// one of `tenant`'s uploads, decodes, masks match their image's size) and pin its sha256 on
    /// every job that uses it, so output keys and provenance name the exact pixels. A sha256
    /// given in the manifest must match.
    pub(super) async fn pin_inputs(&self, tenant: TenantId, spec: &mut BatchSpec) -> Result<()> {
        let mut seen = Pinned::default();
        for init in spec.jobs.inits_mut() {
            let size = self
                .pin(tenant, &mut seen, "init.image", &mut init.image)
                .await?;
            if let Some(mask) = init.mask.as_mut() {
                let (w, h) = self.pin(tenant, &mut seen, "init.mask", mask).await?;
                if (w, h) != size {
                    return Err(Error::invalid(format!(
                        "manifest field `init.mask`: mask `{}` is {w}x{h}; accepted: the init image's size, {}x{}",
                        mask.key, size.0, size.1
                    )));
                }
            }
        }
        for controls in spec.jobs.controls_mut() {
            for c in controls.iter_mut() {
                self.pin(tenant, &mut seen, "control.image", &mut c.image)
                    .await?;
            }
        }
        Ok(())
    }

    /// Check `img` (once per key, remembered in `seen`), check a sha256 the manifest gives,
    /// pin its own, and return its size.
    async fn pin(
        &self,
        tenant: TenantId,
        seen: &mut Pinned,
        field: &str,
        img: &mut BlobImage,
    ) -> Result<(u32, u32)> {
        if !seen.contains_key(&img.key) {
            let checked = self.check_input(tenant, field, &img.key).await?;
            seen.insert(img.key.clone(), checked);
        }
        let (sha, w, h) = &seen[&img.key];
        if let Some(given) = &img.sha256
            && given != sha
        {
            return Err(Error::invalid(format!(
                "manifest field `{field}.sha256`: `{}` has sha256 {sha}; the manifest pins {given}",
                img.key
            )));
        }
        img.sha256 = Some(sha.clone());
        Ok((*w, *h))
    }

    /// sha256 and size of the input image `key`, which must be one of `tenant`'s uploads and
    /// decode within the limits ([`pixelfarm_image::input`]).
    ///
    /// A key outside `tenant`'s prefix gets the very error of a missing one, before the store is
    /// asked: the answer says nothing about another tenant's objects.
    async fn check_input(
        &self,
        tenant: TenantId,
        field: &str,
        key: &str,
    ) -> Result<(String, u32, u32)> {
        let shown = text::printable(key);
        let missing = || {
            Error::invalid(format!(
                "manifest field `{field}`: `{shown}` is not one of your inputs; accepted: a key that an upload answered (`pixelfarm upload FILE`, PUT /v1/inputs/{{name}}), which starts with `{}`",
                input_prefix(tenant)
            ))
        };
        if !is_tenant_input(tenant, key) {
            return Err(missing());
        }
        let bytes = self
            .blob
            .get_limited(key, MAX_INPUT_BYTES)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => missing(),
                // The key is well-formed (checked above): the object is over the limit.
                ErrorKind::Invalid => Error::invalid(format!("manifest field `{field}`: {e}")),
                _ => e,
            })?;
        let (sha, info) = inspect_input(bytes)
            .await?
            .map_err(|e| Error::invalid(format!("manifest field `{field}`: `{shown}` {e}")))?;
        Ok((sha, info.width, info.height))
    }
}
