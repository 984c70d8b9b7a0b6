//! The registry's adapters — LoRAs and ControlNets: single files of one family, their sha256
//! checked before they are read, `s3://` ones downloaded into the cache as models are.

use super::*;

impl RegistryConfig {
    /// The registry's section of `kind`.
    fn adapters(&self, kind: AdapterKind) -> &BTreeMap<ModelName, AdapterEntry> {
        match kind {
            AdapterKind::Lora => &self.loras,
            AdapterKind::ControlNet => &self.controlnets,
        }
    }

    /// The names of `kind` for the models of `family`.
    pub(super) fn adapters_of(&self, kind: AdapterKind, family: Family) -> Vec<ModelName> {
        self.adapters(kind)
            .iter()
            .filter(|(_, a)| a.family == family)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Each adapter's sha256 is well formed and its family takes its kind (every family takes
    /// LoRAs; the shapes family has no ControlNet architecture).
    pub(super) fn validate_adapters(&self) -> Result<()> {
        for kind in [AdapterKind::Lora, AdapterKind::ControlNet] {
            let section = kind.section();
            for (name, entry) in self.adapters(kind) {
                check_sha256(&entry.sha256)
                    .map_err(|e| Error::invalid(format!("{section} `{name}`: sha256 {e}")))?;
                if kind == AdapterKind::ControlNet && entry.family == Family::Shapes {
                    return Err(Error::invalid(format!(
                        "{section} `{name}`: family `shapes` takes no ControlNets; accepted: the Stable Diffusion families"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The entry of the `kind` adapter `name`, checked to fit `model`'s family.
    ///
    /// # Errors
    /// `Permanent` for an adapter this registry does not list, or one of another family.
    pub fn adapter(
        &self,
        kind: AdapterKind,
        model: &ModelName,
        name: &ModelName,
    ) -> Result<&AdapterEntry> {
        let what = kind.as_str();
        let adapters = self.adapters(kind);
        let entry = adapters.get(name).ok_or_else(|| {
            let known: Vec<_> = adapters.keys().map(|m| m.as_str()).collect();
            Error::permanent(format!(
                "unknown {what} `{name}`; this worker has: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let family = self.entry(model)?.family;
        if entry.family != family {
            return Err(Error::permanent(format!(
                "{what} `{name}` is for family `{}`; model `{model}` is `{family}`",
                entry.family
            )));
        }
        Ok(entry)
    }

    /// Where adapter `name`'s file is read from: its own path, or its place in the download
    /// cache.
    fn adapter_path(&self, kind: AdapterKind, name: &ModelName, entry: &AdapterEntry) -> PathBuf {
        match &entry.source {
            Source::File(p) => p.clone(),
            // Model names never start with a dot: no model's folder is this one.
            Source::S3 { .. } => self
                .cache_dir
                .join(format!(".{}", kind.section()))
                .join(format!("{name}.safetensors")),
        }
    }

    /// The bytes of the `kind` adapter `name`, its sha256 checked.
    ///
    /// # Errors
    /// As [`read_verified`], naming the adapter.
    pub fn read_adapter(
        &self,
        kind: AdapterKind,
        name: &ModelName,
        entry: &AdapterEntry,
    ) -> Result<Vec<u8>> {
        let path = self.adapter_path(kind, name, entry);
        read_checked(
            &path,
            &entry.sha256,
            matches!(entry.source, Source::File(_)),
        )
        .map_err(|e| {
            Error::new(
                e.kind(),
                format!("{} `{name}`: {}", kind.as_str(), e.chain()),
            )
        })
    }

    /// The `s3://` adapters' files to download into the cache, each with what it is and its
    /// name.
    pub fn remote_adapter_files(&self) -> Vec<(AdapterKind, ModelName, RemoteFile)> {
        [AdapterKind::Lora, AdapterKind::ControlNet]
            .into_iter()
            .flat_map(|kind| {
                self.adapters(kind)
                    .iter()
                    .filter_map(move |(name, entry)| match &entry.source {
                        Source::S3 { bucket, prefix } => Some((
                            kind,
                            name.clone(),
                            RemoteFile {
                                bucket: bucket.clone(),
                                key: prefix.clone(),
                                local_path: self.adapter_path(kind, name, entry),
                                sha256: entry.sha256.clone(),
                            },
                        )),
                        Source::File(_) => None,
                    })
            })
            .collect()
    }
}
