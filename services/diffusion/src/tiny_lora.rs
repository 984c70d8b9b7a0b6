//! Random-weight LoRA files for a random-weight model (see `tiny`), in both layouts users bring,
//! for tests, benchmarks and parity checks with diffusers (nothing is downloaded).

use candle_core::{Device, Tensor};
use pixelfarm_core::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::ldm_unet_names;
use crate::family::Family;
use crate::registry::{AdapterEntry, Source, layout, sha256_file};
use crate::rng::JobRng;

/// How a LoRA file names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraLayout {
    /// kohya / AUTOMATIC1111: `lora_unet_…​.lora_down.weight`, `.lora_up.weight`, `.alpha`; SDXL's
    /// UNet under sd-scripts' original (`input_blocks_…`) names.
    Kohya,
    /// diffusers / PEFT: `unet.….lora_A.weight`, `.lora_B.weight`, no alpha.
    Peft,
}

/// The layers a written LoRA changes: the UNet's attention projections and its transformers'
/// `proj_in` / `proj_out` (1×1 convolutions in SD 1.x), the text encoders' attention projections.
fn targeted(name: &str) -> bool {
    const ENDS: [&str; 10] = [
        ".to_q.weight",
        ".to_k.weight",
        ".to_v.weight",
        ".to_out.0.weight",
        ".proj_in.weight",
        ".proj_out.weight",
        ".q_proj.weight",
        ".k_proj.weight",
        ".v_proj.weight",
        ".out_proj.weight",
    ];
    ENDS.iter().any(|e| name.ends_with(e))
}

fn candle(e: candle_core::Error) -> Error {
    Error::transient("cannot write the random LoRA", e)
}

/// `n` normal draws times `std`, from the generator of `seed` and `name`.
fn draws(seed: u64, name: &str, n: usize, std: f32) -> Vec<f32> {
    let mixed = name.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut v = JobRng::new(mixed).normals(n);
    v.iter_mut().for_each(|x| *x *= std);
    v
}

/// Write a deterministic random LoRA of rank `rank` for the diffusers-layout model of `family`
/// in `model_dir` to `path`, in `layout`, and return its registry entry (`file://`, real sha256).
///
/// The same `seed` gives the same matrices in both layouts: the kohya file has `alpha = rank / 2`,
/// the PEFT file (which has no alpha: diffusers takes its scale as 1) `up` halved instead, so both
/// make exactly the same weights. Each layer changes by about a quarter of its own scale.
///
/// # Errors
/// `Invalid` for the `shapes` family (its LoRA is trained, not random); `Transient` when the
/// model cannot be read or the file written.
pub fn write_random_lora(
    model_dir: &Path,
    family: Family,
    path: &Path,
    layout: LoraLayout,
    rank: usize,
    seed: u64,
) -> Result<AdapterEntry> {
    if family == Family::Shapes {
        return Err(Error::invalid(
            "random LoRAs are written for the Stable Diffusion families; the shapes family's is \
             trained (`pixelfarm-train-shapes lora`)",
        ));
    }
    let xl = family.xl().is_some();
    let ldm = ldm_unet_names(family);
    let mut nets = vec![
        (layout::UNET, "lora_unet_", "unet."),
        (
            layout::TEXT_ENCODER,
            if xl { "lora_te1_" } else { "lora_te_" },
            "text_encoder.",
        ),
    ];
    if xl {
        nets.push((layout::TEXT_ENCODER_2, "lora_te2_", "text_encoder_2."));
    }
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (file, kohya, peft) in nets {
        let tensors = candle_core::safetensors::load(model_dir.join(file), &Device::Cpu)
            .map_err(|e| Error::transient(format!("cannot read `{file}`"), e))?;
        let mut names: Vec<&String> = tensors.keys().filter(|n| targeted(n)).collect();
        names.sort();
        for name in names {
            let dims = tensors[name].dims();
            let (out_dim, inner) = (dims[0], dims[1..].iter().product::<usize>());
            let kernel = &dims[2..];
            let down = draws(
                seed,
                &format!("{name} down"),
                rank * inner,
                1.0 / (inner as f32).sqrt(),
            );
            let up = draws(
                seed,
                &format!("{name} up"),
                out_dim * rank,
                0.5 / (rank as f32).sqrt(),
            );
            let mut down_shape = vec![rank, dims[1]];
            down_shape.extend_from_slice(kernel);
            let mut up_shape = vec![out_dim, rank];
            up_shape.extend(kernel.iter().map(|_| 1));
            let module = name.strip_suffix(".weight").unwrap_or(name);
            let tensor = |v: Vec<f32>, shape: &[usize]| {
                Tensor::from_vec(v, shape, &Device::Cpu).map_err(candle)
            };
            match layout {
                LoraLayout::Kohya => {
                    let original = if file == layout::UNET && xl {
                        ldm(name)
                    } else {
                        None
                    };
                    let module = original
                        .as_deref()
                        .and_then(|o| o.strip_suffix(".weight"))
                        .unwrap_or(module);
                    let key = format!("{kohya}{}", module.replace('.', "_"));
                    out.insert(
                        format!("{key}.lora_down.weight"),
                        tensor(down, &down_shape)?,
                    );
                    out.insert(format!("{key}.lora_up.weight"), tensor(up, &up_shape)?);
                    out.insert(
                        format!("{key}.alpha"),
                        tensor(vec![rank as f32 / 2.0], &[])?,
                    );
                }
                LoraLayout::Peft => {
                    let up = up.into_iter().map(|x| x * 0.5).collect();
                    out.insert(
                        format!("{peft}{module}.lora_A.weight"),
                        tensor(down, &down_shape)?,
                    );
                    out.insert(
                        format!("{peft}{module}.lora_B.weight"),
                        tensor(up, &up_shape)?,
                    );
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::transient("cannot write the random LoRA", e))?;
    }
    candle_core::safetensors::save(&out, path).map_err(candle)?;
    let path = std::path::absolute(path)
        .map_err(|e| Error::transient("cannot write the random LoRA", e))?;
    Ok(AdapterEntry {
        family,
        source: Source::File(path.clone()),
        sha256: sha256_file(&path)?,
    })
}
