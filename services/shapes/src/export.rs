//! The shipped model folder (`models/shapes`): weights in the engine's layout, the tokenizer, and the
//! registry entry that serves it.

use anyhow::Result;
use candle_core::Tensor;
use pixelfarm_core::ModelName;
use pixelfarm_diffusion::registry::AdapterEntry;
use pixelfarm_diffusion::registry::{layout, sha256_file};
use pixelfarm_diffusion::{DeviceChoice, Family, ModelEntry, RegistryConfig, Source};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The routing name of the shipped model.
pub const MODEL_NAME: &str = "shapes";

/// The folder of the shipped model under the repository's `models/`.
pub const MODEL_DIR: &str = "shapes";
/// The registry snippet beside the weights, with the sha256 of every file.
pub const REGISTRY_SNIPPET: &str = "registry.yaml";

/// The registry's `loras` section of the LoRAs shipped in the model folder's `loras/`.
pub const LORAS_SNIPPET: &str = "loras.yaml";

/// The shipped LoRA: it teaches the model purple (`pixelfarm-train-shapes lora`).
pub const LORA_NAME: &str = "purple";

/// The files of the shipped model, relative to its folder.
pub const FILES: [&str; 3] = [layout::UNET, layout::TEXT_ENCODER, layout::TOKENIZER];

/// Write the EMA `weights` (prefixed `unet.` / `text.`) and the tokenizer into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_model(weights: &HashMap<String, Tensor>, dir: &Path) -> Result<()> {
    for (prefix, rel) in [("unet.", layout::UNET), ("text.", layout::TEXT_ENCODER)] {
        let sub: HashMap<String, Tensor> = weights
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        candle_core::safetensors::save(&sub, &path)?;
    }
    let tok = dir.join(layout::TOKENIZER);
    std::fs::create_dir_all(tok.parent().expect("a folder"))?;
    std::fs::write(
        &tok,
        crate::vocab::tokenizer()
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    Ok(())
}

/// The registry entry of the model in `dir`, with the sha256 of every file as it is now.
///
/// # Errors
/// When a file cannot be read.
pub fn model_entry(dir: &Path) -> pixelfarm_core::Result<ModelEntry> {
    let mut files = BTreeMap::new();
    for rel in FILES {
        files.insert(rel.to_string(), sha256_file(&dir.join(rel))?);
    }
    Ok(ModelEntry {
        family: Family::Shapes,
        source: Source::File(dir.to_path_buf()),
        checkpoint: None,
        files,
        limits: Default::default(),
    })
}

/// Where the shipped models are: `PIXELFARM_MODELS_DIR`, else `./models` when it exists (a
/// checkout's root, an image's `/app`), else the source checkout's `models/` (for `cargo run`
/// from elsewhere).
pub fn models_dir() -> std::path::PathBuf {
    if let Ok(d) = std::env::var("PIXELFARM_MODELS_DIR") {
        return d.into();
    }
    let local = std::path::PathBuf::from("models");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// The registry serving the shipped model as `shapes` from `repo_models_dir/shapes` (the repository's
/// `models/` folder), with the sha256 pinned in `models/shapes/registry.yaml`, and its LoRAs
/// (`models/shapes/loras.yaml`): CPU, one model loaded, batches of 4, unfused (bit-identical per
/// job).
///
/// # Errors
/// `Invalid` when the folder or its `registry.yaml` is missing or malformed.
pub fn shipped_registry(repo_models_dir: &Path) -> pixelfarm_core::Result<RegistryConfig> {
    let dir = repo_models_dir.join(MODEL_DIR);
    let dir = std::path::absolute(&dir).map_err(|e| {
        pixelfarm_core::Error::with_source(
            pixelfarm_core::ErrorKind::Invalid,
            format!("model folder `{}` has no absolute path", dir.display()),
            e,
        )
    })?;
    let snippet = dir.join(REGISTRY_SNIPPET);
    let text = std::fs::read_to_string(&snippet).map_err(|e| {
        pixelfarm_core::Error::with_source(
            pixelfarm_core::ErrorKind::Invalid,
            format!("cannot read `{}`", snippet.display()),
            e,
        )
    })?;
    let mut models: BTreeMap<ModelName, ModelEntry> = serde_yaml::from_str(&text).map_err(|e| {
        pixelfarm_core::Error::with_source(
            pixelfarm_core::ErrorKind::Invalid,
            format!("`{}` is not a registry snippet", snippet.display()),
            e,
        )
    })?;
    for entry in models.values_mut() {
        entry.source = Source::File(dir.clone());
    }
    let cfg = RegistryConfig {
        cache_dir: std::env::temp_dir().join("pixelfarm-models"),
        loras: shipped_loras(&dir)?,
        max_lora_sets: pixelfarm_diffusion::registry::DEFAULT_MAX_LORA_SETS,
        controlnets: Default::default(),
        max_controlnets: pixelfarm_diffusion::registry::DEFAULT_MAX_CONTROLNETS,
        max_loaded: 1,
        max_batch: pixelfarm_diffusion::registry::DEFAULT_MAX_BATCH,
        fused_batches: false,
        device: DeviceChoice::Cpu,
        models,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The `loras` section in `dir`'s [`LORAS_SNIPPET`] (none when it is absent), each source pointed
/// at the file of the same name in `dir/loras/`.
fn shipped_loras(dir: &Path) -> pixelfarm_core::Result<BTreeMap<ModelName, AdapterEntry>> {
    let snippet = dir.join(LORAS_SNIPPET);
    if !snippet.exists() {
        return Ok(BTreeMap::new());
    }
    let invalid = |msg: String| pixelfarm_core::Error::invalid(msg);
    let text = std::fs::read_to_string(&snippet)
        .map_err(|e| invalid(format!("cannot read `{}`: {e}", snippet.display())))?;
    let mut loras: BTreeMap<ModelName, AdapterEntry> =
        serde_yaml::from_str(&text).map_err(|e| {
            invalid(format!(
                "`{}` is not a loras section: {e}",
                snippet.display()
            ))
        })?;
    for (name, entry) in &mut loras {
        let Source::File(path) = &entry.source else {
            return Err(invalid(format!(
                "`{}`: LoRA `{name}` is not a file:// source",
                snippet.display()
            )));
        };
        let file = path.file_name().ok_or_else(|| {
            invalid(format!(
                "`{}`: LoRA `{name}` names no file",
                snippet.display()
            ))
        })?;
        entry.source = Source::File(dir.join("loras").join(file));
    }
    Ok(loras)
}

/// The `registry.yaml` snippet for the model in `dir` (sha256 of every file as it is now).
///
/// # Errors
/// When a file cannot be read.
pub fn registry_snippet(dir: &Path) -> pixelfarm_core::Result<String> {
    let entry = model_entry(dir)?;
    let mut out = String::from(
        "# pixelfarm's shipped shapes model (issue 4): merge under `diffusion.models`, with `source`\n\
         # pointing at this folder (absolute). `pixelfarm_shapes::shipped_registry` does that for you.\n",
    );
    out.push_str(&format!(
        "{MODEL_NAME}:\n  family: {}\n  source: file:///opt/pixelfarm/models/shapes\n  files:\n",
        entry.family
    ));
    for (path, sha) in &entry.files {
        out.push_str(&format!("    {path}: {sha}\n"));
    }
    Ok(out)
}

/// The [`LORAS_SNIPPET`] for the LoRAs in `dir/loras/` (every `.safetensors` file, by its stem,
/// with its sha256 as it is now).
///
/// # Errors
/// When the folder or a file cannot be read.
pub fn loras_snippet(dir: &Path) -> pixelfarm_core::Result<String> {
    let folder = dir.join("loras");
    let read = |e: std::io::Error| {
        pixelfarm_core::Error::transient(format!("cannot read `{}`", folder.display()), e)
    };
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()).map_err(read))
        .collect::<pixelfarm_core::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files.sort();
    let mut out = String::from(
        "# LoRAs of pixelfarm's shipped shapes model: merge under `diffusion.loras`, with `source`\n\
         # pointing at the file (absolute). `pixelfarm_shapes::shipped_registry` does that for you.\n",
    );
    for path in files {
        let (Some(stem), Some(file)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.file_name().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        out.push_str(&format!(
            "{stem}:\n  family: shapes\n  source: file:///opt/pixelfarm/models/shapes/loras/{file}\n  sha256: {}\n",
            sha256_file(&path)?
        ));
    }
    Ok(out)
}
