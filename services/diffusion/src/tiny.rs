//! Random-weight models of the SD architectures, tiny ones and the real full-size ones, written in
//! the diffusers folder layout with a CLIP-style BPE `tokenizer.json`, and ControlNets for them,
//! for tests and benchmarks (nothing is downloaded).

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use pixelfarm_core::{Error, Result};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::clip::ClipText;
use crate::controlnet::ControlNet;
use crate::family::Family;
use crate::registry::{AdapterEntry, ModelEntry, Source, layout, sha256_file};
use crate::rng::JobRng;
use crate::unet::Unet;
use crate::vae::Vae;

/// Words the tiny tokenizer knows as whole tokens (everything else falls back to bytes).
pub const TINY_WORDS: &[&str] = &[
    "a", "photo", "of", "cat", "dog", "red", "blue", "green", "house", "tree", "painting",
    "blurry", "ugly", "in", "the", "snow",
];

fn io(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::transient("cannot write the random-weight model", e)
}

fn candle(e: candle_core::Error) -> Error {
    Error::transient("cannot build the random-weight model", e)
}

/// GPT-2's byte-to-unicode table, which CLIP's byte-level BPE uses.
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut all = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            all.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(all) {
        table[*b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

/// A CLIP-style BPE tokenizer.json (same normalizer, pre-tokenizer, suffix and special tokens as
/// `openai/clip-vit-large-patch14`), with the byte alphabet and [`TINY_WORDS`] as merges.
pub fn tiny_tokenizer_json() -> Value {
    let alphabet = byte_alphabet();
    let mut vocab: BTreeMap<String, u32> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for suffix in ["", "</w>"] {
        for c in &alphabet {
            order.push(format!("{c}{suffix}"));
        }
    }
    let mut merges: Vec<String> = Vec::new();
    for word in TINY_WORDS {
        let chars: Vec<String> = word.chars().map(String::from).collect();
        let mut prefix = chars[0].clone();
        if chars.len() == 1 {
            continue;
        }
        for (i, ch) in chars.iter().enumerate().skip(1) {
            let next = if i == chars.len() - 1 {
                format!("{ch}</w>")
            } else {
                ch.clone()
            };
            let merged = format!("{prefix}{next}");
            let rule = format!("{prefix} {next}");
            if !merges.contains(&rule) {
                merges.push(rule);
                order.push(merged.clone());
            }
            prefix = merged;
        }
    }
    order.dedup();
    for tok in order {
        let id = vocab.len() as u32;
        vocab.entry(tok).or_insert(id);
    }
    let bos = vocab.len() as u32;
    let eos = bos + 1;
    vocab.insert("<|startoftext|>".into(), bos);
    vocab.insert("<|endoftext|>".into(), eos);
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": true, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, "<|startoftext|>"), special(eos, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos],
            "cls": ["<|startoftext|>", bos], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// Hands every tensor a model's constructor asks for back as zeros and records its name, shape and
/// init hint: the model is built once only to learn its tensors, which [`random_tensor`] then fills.
struct ShapeRecorder<'a>(&'a Mutex<BTreeMap<String, (Shape, Init)>>);

impl SimpleBackend for ShapeRecorder<'_> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(name) {
            Some((known, _)) if *known != shape => {
                return Err(candle_core::Error::Msg(format!(
                    "`{name}` is asked for as {shape:?} and as {known:?}"
                )));
            }
            Some(_) => {}
            None => {
                seen.insert(name.to_string(), (shape.clone(), init));
            }
        }
        // Zeroed memory that is never written: the allocator hands out untouched pages, so even
        // SDXL's UNet costs no resident memory here.
        Tensor::zeros(shape, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "`{name}` is read without a shape: the random-weight writer cannot size it"
        )))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }
}

/// FNV-1a over `name`: each tensor's values come from its own generator, so tensors are filled in
/// parallel and a tensor's values do not depend on which other tensors the model has.
fn name_seed(file_seed: u64, name: &str) -> u64 {
    name.bytes().fold(
        0xcbf2_9ce4_8422_2325 ^ file_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3),
    )
}

/// A tensor's deterministic values: constant inits (norm scales, zero biases) kept; matrices and
/// kernels `N(0, 1/fan_in)`, which keeps activations near unit scale through a deep network; other
/// vectors `N(0, 0.02^2)`.
fn random_tensor(
    name: &str,
    shape: &Shape,
    init: Init,
    file_seed: u64,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let values = match init {
        Init::Const(v) => vec![v as f32; n],
        _ => {
            let dims = shape.dims();
            let std = if dims.len() >= 2 {
                1.0 / (dims[1..].iter().product::<usize>() as f32).sqrt()
            } else {
                0.02
            };
            let mut rng = JobRng::new(name_seed(file_seed, name));
            let mut v = rng.normals(n);
            v.iter_mut().for_each(|x| *x *= std);
            v
        }
    };
    Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// Build a model with `build` to learn its tensors, fill them with deterministic random values and
/// write them to `path` as safetensors of `dtype`.
fn write_random(
    path: &Path,
    file_seed: u64,
    dtype: DType,
    build: &dyn Fn(VarBuilder) -> candle_core::Result<()>,
) -> Result<()> {
    let seen = Mutex::new(BTreeMap::new());
    build(VarBuilder::from_backend(
        Box::new(ShapeRecorder(&seen)),
        DType::F32,
        Device::Cpu,
    ))
    .map_err(candle)?;
    let seen: Vec<(String, (Shape, Init))> = seen
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .collect();
    let tensors: HashMap<String, Tensor> = seen
        .into_par_iter()
        .map(|(name, (shape, init))| {
            random_tensor(&name, &shape, init, file_seed, dtype).map(|t| (name, t))
        })
        .collect::<candle_core::Result<_>>()
        .map_err(candle)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    candle_core::safetensors::save(&tensors, path).map_err(candle)
}

/// Write a tiny random-weight model (UNet with `unet_in_channels` inputs: 4, or 9 for inpainting)
/// in the diffusers layout under `dir`, and return its registry entry (`file://dir`, real sha256s).
///
/// # Errors
/// `Transient` when the files cannot be written.
pub fn write_tiny_model(dir: &Path, unet_in_channels: usize) -> Result<ModelEntry> {
    write_random_model(dir, Family::Tiny, unet_in_channels)
}

/// Write a tiny random-weight SDXL-architecture model (family `tiny-xl`: UNet with transformer
/// depths and micro-conditioning, two text encoders, two tokenizers) under `dir`.
///
/// # Errors
/// `Transient` when the files cannot be written.
pub fn write_tiny_xl_model(dir: &Path) -> Result<ModelEntry> {
    write_random_model(dir, Family::TinyXl, 4)
}

/// Write a deterministic random-weight model of `family`'s real architecture (UNet with
/// `unet_in_channels` inputs, VAE, text encoder(s), the tiny tokenizer, whose ids every family's
/// vocabulary holds) in the diffusers layout under `dir`, and return its registry entry. The tiny
/// families are written in f32; the full-size ones in f16, as diffusers' `fp16` variants ship
/// (SD 1.5: 1.07 G parameters, 2.1 GB; SDXL: 3.47 G, 6.9 GB). Speed does not depend on the
/// values, and parity with another implementation only needs the same file in both: this is
/// how pixelfarm benchmarks and checks the real architectures without downloading weights.
///
/// # Errors
/// `Invalid` for the `shapes` family (not an SD architecture); `Transient` when the files cannot
/// be written.
pub fn write_random_model(
    dir: &Path,
    family: Family,
    unet_in_channels: usize,
) -> Result<ModelEntry> {
    let dtype = match family {
        Family::Tiny | Family::TinyXl => DType::F32,
        Family::Sd15 | Family::Sd21 | Family::Sdxl | Family::SdxlTurbo => DType::F16,
        Family::Shapes => {
            return Err(Error::invalid(
                "family `shapes` has no random-weight writer: it is not an SD architecture",
            ));
        }
    };
    let xl = family.xl();
    let build = |rel: &str, seed: u64, f: &dyn Fn(VarBuilder) -> candle_core::Result<()>| {
        write_random(&dir.join(rel), seed, dtype, f)
    };
    build(layout::UNET, 1, &|vb| {
        let cfg = family.unet_config();
        Unet::new(vb, unet_in_channels, 4, &cfg, xl.map(|x| x.text_time)).map(|_| ())
    })?;
    build(layout::VAE, 2, &|vb| {
        Vae::new(vb, 3, 3, &family.vae_config()).map(|_| ())
    })?;
    match xl {
        Some(x) => {
            build(layout::TEXT_ENCODER, 3, &|vb| {
                ClipText::new(vb, x.clip_l).map(|_| ())
            })?;
            build(layout::TEXT_ENCODER_2, 4, &|vb| {
                ClipText::new(vb, x.clip_g).map(|_| ())
            })?;
        }
        None => {
            let cfg = family.text_config().ok_or_else(|| {
                Error::invalid(format!("family {family} has no text encoder to write"))
            })?;
            build(layout::TEXT_ENCODER, 3, &|vb| {
                ClipText::new(vb, cfg).map(|_| ())
            })?
        }
    }
    let json = serde_json::to_vec_pretty(&tiny_tokenizer_json()).map_err(io)?;
    let files_of_family = layout::files(family);
    for rel in [layout::TOKENIZER, layout::TOKENIZER_2] {
        if files_of_family.contains(&rel) {
            let tok = dir.join(rel);
            std::fs::create_dir_all(tok.parent().unwrap_or(dir)).map_err(io)?;
            std::fs::write(&tok, &json).map_err(io)?;
        }
    }
    let mut files = BTreeMap::new();
    for rel in files_of_family {
        files.insert(rel.to_string(), sha256_file(&dir.join(rel))?);
    }
    Ok(ModelEntry {
        family,
        source: Source::File(dir.to_path_buf()),
        checkpoint: None,
        files,
        limits: Default::default(),
    })
}

/// File name of the tiny model's single-file checkpoint.
pub const TINY_CHECKPOINT: &str = "tiny.safetensors";

/// The model of [`write_tiny_model`] as one Stability-layout file ([`TINY_CHECKPOINT`]) beside its
/// tokenizer in `dir` — what model sites ship — with its registry entry (`checkpoint` set). The
/// text encoder is named as `text_layout` says (SD 1.x files: OpenAI CLIP; SD 2.x: OpenCLIP).
///
/// # Errors
/// When a file cannot be written.
pub fn write_tiny_checkpoint(
    dir: &Path,
    unet_in_channels: usize,
    text_layout: crate::checkpoint::TextLayout,
) -> Result<ModelEntry> {
    let staging = dir.join(".diffusers");
    write_tiny_model(&staging, unet_in_channels)?;
    let load = |rel: &str| candle_core::safetensors::load(staging.join(rel), &Device::Cpu);
    let all = crate::checkpoint::to_stability_layout(
        Family::Tiny,
        load(layout::UNET).map_err(candle)?,
        load(layout::VAE).map_err(candle)?,
        load(layout::TEXT_ENCODER).map_err(candle)?,
        text_layout,
    )?;
    candle_core::safetensors::save(&all, dir.join(TINY_CHECKPOINT)).map_err(candle)?;
    let tok = dir.join(layout::TOKENIZER);
    std::fs::create_dir_all(tok.parent().unwrap_or(dir)).map_err(io)?;
    std::fs::rename(staging.join(layout::TOKENIZER), &tok).map_err(io)?;
    std::fs::remove_dir_all(&staging).map_err(io)?;
    let mut files = BTreeMap::new();
    for rel in [TINY_CHECKPOINT, layout::TOKENIZER] {
        files.insert(rel.to_string(), sha256_file(&dir.join(rel))?);
    }
    Ok(ModelEntry {
        family: Family::Tiny,
        source: Source::File(dir.to_path_buf()),
        checkpoint: Some(TINY_CHECKPOINT.to_string()),
        files,
        limits: Default::default(),
    })
}

/// Write a deterministic random-weight ControlNet for `family` in diffusers' layout (one
/// safetensors file, the family's dtype as [`write_random_model`] writes it) to `path`, and
/// return its registry entry (`file://`, real sha256). Its condition embedding has diffusers'
/// default widths (16, 32, 96, 256) for the full-size families, (8, 16, 16, 32) for the tiny
/// ones; its zero convolutions are random too (a trained ControlNet's are not zero), so it
/// changes the renders it steers.
///
/// # Errors
/// `Invalid` for the `shapes` family; `Transient` when the file cannot be written.
pub fn write_random_controlnet(path: &Path, family: Family, seed: u64) -> Result<AdapterEntry> {
    let (dtype, widths): (DType, &[usize]) = match family {
        Family::Tiny | Family::TinyXl => (DType::F32, &[8, 16, 16, 32]),
        Family::Sd15 | Family::Sd21 | Family::Sdxl | Family::SdxlTurbo => {
            (DType::F16, &[16, 32, 96, 256])
        }
        Family::Shapes => return Err(Error::invalid("family `shapes` takes no ControlNet")),
    };
    write_random(path, seed, dtype, &|vb| {
        ControlNet::new(vb, family, widths).map(|_| ())
    })?;
    Ok(AdapterEntry {
        family,
        source: Source::File(path.to_path_buf()),
        sha256: sha256_file(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_models_are_the_same_files_on_every_run() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ea = write_tiny_model(a.path(), 4).unwrap();
        let eb = write_tiny_model(b.path(), 4).unwrap();
        assert_eq!(ea.files, eb.files);
    }

    #[test]
    fn tiny_tokenizer_splits_words_like_clip() {
        let json = serde_json::to_vec(&tiny_tokenizer_json()).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(&json).unwrap();
        let vocab = Family::Tiny.text_config().map(|c| c.vocab_size);
        assert!(tok.get_vocab_size(true) <= vocab.unwrap());
        let enc = tok.encode("A  photo of a CAT, in snow!", true).unwrap();
        let toks = enc.get_tokens();
        assert_eq!(toks[0], "<|startoftext|>");
        assert_eq!(toks[toks.len() - 1], "<|endoftext|>");
        assert!(toks.contains(&"photo</w>".to_string()), "{toks:?}");
        assert!(toks.contains(&"cat</w>".to_string()), "{toks:?}");
        assert!(toks.contains(&",</w>".to_string()), "{toks:?}");
        // Unknown words fall back to byte tokens, never fail.
        let enc = tok.encode("zebra ☃", false).unwrap();
        assert!(enc.get_ids().len() >= 5);
    }
}
