//! LoRA adapters: a file's low-rank layers matched to a model's tensors, and merged into copies
//! of the layers they change (`W + weight · scale · up · down`), so a LoRA set costs one merge
//! when its networks are built and nothing per step.
//!
//! Two layouts are read, told apart by each tensor's name:
//! - kohya / AUTOMATIC1111: `lora_unet_<path>.lora_down.weight`, `.lora_up.weight` and `.alpha`,
//!   the path being the layer's diffusers name with `_` for `.` (for SDXL, sd-scripts' original
//!   `input_blocks_…` names, mapped through [`crate::checkpoint`]'s table); text encoders under
//!   `lora_te_` (`lora_te1_` and `lora_te2_` for SDXL's two);
//! - diffusers / PEFT: `unet.<path>.lora_A.weight` and `.lora_B.weight` (or the older
//!   `.lora.down.weight` / `.lora.up.weight`), text encoders under `text_encoder.` and
//!   `text_encoder_2.`, with an optional `<path>.alpha`.
//!
//! `scale` is `alpha / rank`, or 1 without an alpha (what diffusers assumes for PEFT files). Linear
//! layers and convolutions both take LoRAs; a convolution's `up` is 1×1 (LoCon). Other adapter
//! kinds (LoHa, LoKr, DoRA) are refused, naming the tensor.

use candle_core::{DType, Device, Tensor};
use pixelfarm_core::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap};

use crate::checkpoint::ldm_unet_names;
use crate::family::Family;
use crate::load::{Weights, tensors_of};

/// The network a LoRA layer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Net {
    Unet,
    Text,
    /// SDXL's second text encoder.
    Text2,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Unet => "UNet",
            Net::Text => "text encoder",
            Net::Text2 => "second text encoder",
        }
    }
}

impl Weights {
    fn net(&self, net: Net) -> Option<&HashMap<String, Tensor>> {
        match net {
            Net::Unet => Some(&self.unet),
            Net::Text => Some(&self.text),
            Net::Text2 => self.text_2.as_ref(),
        }
    }

    fn net_mut(&mut self, net: Net) -> Option<&mut HashMap<String, Tensor>> {
        match net {
            Net::Unet => Some(&mut self.unet),
            Net::Text => Some(&mut self.text),
            Net::Text2 => self.text_2.as_mut(),
        }
    }
}

/// One layer of a LoRA, matched to the tensor it changes.
struct Layer {
    net: Net,
    /// The changed tensor's diffusers name (`….to_q.weight`).
    tensor: String,
    /// `(out, rank)` after reshaping.
    up: Tensor,
    /// `(rank, in · kernel)` after reshaping.
    down: Tensor,
    /// `alpha / rank`, or 1.
    scale: f64,
}

/// A LoRA file's layers, matched to one model's tensors.
pub(crate) struct Lora {
    layers: Vec<Layer>,
}

/// A part of a layer in the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Up,
    Down,
    Alpha,
}

/// Name endings of each part, in both layouts.
const PARTS: [(&str, Part); 7] = [
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".alpha", Part::Alpha),
];

/// Name fragments of adapter kinds that are not plain low-rank products.
const UNSUPPORTED: [(&str, &str); 5] = [
    ("hada_", "LoHa"),
    ("lokr_", "LoKr"),
    ("dora_scale", "DoRA"),
    ("lora_magnitude_vector", "DoRA"),
    (".diff", "full-weight difference"),
];

/// Where each layer name of a file points: `(network, tensor)` by the name as written before its
/// part (`lora_unet_down_blocks_0_…_to_q` or `unet.down_blocks.0.….to_q`).
struct Index {
    kohya: HashMap<String, (Net, String)>,
}

impl Index {
    fn of(weights: &Weights, family: Family) -> Self {
        let mut kohya = HashMap::new();
        let ldm = ldm_unet_names(family);
        let text_prefixes: &[(Net, &str)] = if family.xl().is_some() {
            &[(Net::Text, "lora_te1_"), (Net::Text2, "lora_te2_")]
        } else {
            &[(Net::Text, "lora_te_")]
        };
        let mut add = |prefix: &str, module: &str, net: Net, tensor: &str| {
            kohya.insert(
                format!("{prefix}{}", module.replace('.', "_")),
                (net, tensor.to_string()),
            );
        };
        for (net, prefix) in [(Net::Unet, "lora_unet_")]
            .into_iter()
            .chain(text_prefixes.iter().copied())
        {
            let Some(map) = weights.net(net) else {
                continue;
            };
            for (tensor, t) in map {
                let Some(module) = tensor.strip_suffix(".weight") else {
                    continue;
                };
                if !matches!(t.rank(), 2 | 4) {
                    continue;
                }
                add(prefix, module, net, tensor);
                if net == Net::Unet
                    && let Some(original) = ldm(tensor)
                    && let Some(module) = original.strip_suffix(".weight")
                {
                    add(prefix, module, net, tensor);
                }
            }
        }
        Index { kohya }
    }

    /// The network and tensor a layer name points at, if its prefix names a network.
    fn resolve(&self, layer: &str) -> Option<(Net, String)> {
        if layer.starts_with("lora_") {
            return self.kohya.get(layer).cloned();
        }
        for (prefix, net) in [
            ("unet.", Net::Unet),
            ("text_encoder.", Net::Text),
            ("text_encoder_2.", Net::Text2),
        ] {
            if let Some(module) = layer.strip_prefix(prefix) {
                return Some((net, format!("{module}.weight")));
            }
        }
        None
    }
}

impl Lora {
    /// The layers of the safetensors file `bytes` (LoRA `name`), matched to the tensors of a
    /// model of `family` whose weights are `weights`.
    ///
    /// # Errors
    /// `Permanent`, naming the LoRA and the tensor: not a safetensors file, an adapter kind that
    /// is not LoRA, a name that is no LoRA part or names no layer of the model, a layer without
    /// its `up` or `down`, or shapes that do not fit the layer.
    pub(crate) fn parse(
        bytes: &[u8],
        name: &str,
        family: Family,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self> {
        let bad = |msg: String| Error::permanent(format!("LoRA `{name}`: {msg}"));
        let tensors = tensors_of(bytes, name, DType::F32, device)
            .map_err(|e| Error::new(ErrorKind::Permanent, format!("LoRA {}", e.chain())))?;
        let index = Index::of(weights, family);
        type Found = (Option<Tensor>, Option<Tensor>, Option<f64>);
        let mut layers: BTreeMap<String, Found> = BTreeMap::new();
        for (key, t) in tensors {
            if let Some((_, kind)) = UNSUPPORTED.iter().find(|(frag, _)| key.contains(frag)) {
                return Err(bad(format!(
                    "tensor `{key}` is a {kind} adapter; accepted: LoRA (lora_down/lora_up or lora_A/lora_B)"
                )));
            }
            let Some((layer, part)) = PARTS
                .iter()
                .find_map(|(end, part)| key.strip_suffix(end).map(|l| (l.to_string(), *part)))
            else {
                return Err(bad(format!(
                    "tensor `{key}` is not a LoRA part; accepted: names ending in .lora_down.weight, \
                     .lora_up.weight, .lora_A.weight, .lora_B.weight or .alpha"
                )));
            };
            let entry = layers.entry(layer).or_default();
            match part {
                Part::Up => entry.0 = Some(t),
                Part::Down => entry.1 = Some(t),
                Part::Alpha => {
                    let alpha = (t.elem_count() == 1)
                        .then(|| t.reshape(()).and_then(|t| t.to_scalar::<f32>()).ok())
                        .flatten()
                        .map(f64::from)
                        .filter(|a| a.is_finite())
                        .ok_or_else(|| bad(format!("`{key}` is not one finite number")))?;
                    entry.2 = Some(alpha);
                }
            }
        }
        let mut out = Vec::with_capacity(layers.len());
        for (layer, (up, down, alpha)) in layers {
            let (Some(up), Some(down)) = (up, down) else {
                return Err(bad(format!(
                    "layer `{layer}` lacks its up or down matrix; accepted: both, with an optional alpha"
                )));
            };
            let Some((net, tensor)) = index.resolve(&layer) else {
                return Err(bad(format!(
                    "layer `{layer}` names no layer of a `{family}` model; accepted: names under \
                     lora_unet_, lora_te_ (lora_te1_/lora_te2_ for SDXL), unet., text_encoder., \
                     text_encoder_2."
                )));
            };
            let Some(base) = weights.net(net).and_then(|m| m.get(&tensor)) else {
                return Err(bad(format!(
                    "layer `{layer}` names `{tensor}`, which the model's {} does not have",
                    net.name()
                )));
            };
            out.push(Layer::new(&layer, net, tensor, base, up, down, alpha).map_err(bad)?);
        }
        Ok(Lora { layers: out })
    }
}

impl Layer {
    /// The layer `name` of the file changing `base`, its shapes checked.
    fn new(
        name: &str,
        net: Net,
        tensor: String,
        base: &Tensor,
        up: Tensor,
        down: Tensor,
        alpha: Option<f64>,
    ) -> std::result::Result<Self, String> {
        let dims = base.dims();
        let out = dims[0];
        let inner = base.elem_count() / out.max(1);
        let rank = down.dims().first().copied().unwrap_or(0);
        let fits = rank > 0
            && up.dims().first() == Some(&out)
            && up.elem_count() == out * rank
            && down.elem_count() == rank * inner;
        if !fits {
            return Err(format!(
                "layer `{name}`: up {:?} and down {:?} do not fit `{tensor}` {dims:?}",
                up.dims(),
                down.dims()
            ));
        }
        let reshape = |t: Tensor, shape: (usize, usize)| {
            t.reshape(shape).map_err(|e| format!("layer `{name}`: {e}"))
        };
        Ok(Layer {
            net,
            tensor,
            up: reshape(up, (out, rank))?,
            down: reshape(down, (rank, inner))?,
            scale: alpha.map_or(1.0, |a| a / rank as f64),
        })
    }
}

/// `weights` with each LoRA's layers added at its weight. Tensors no LoRA changes are shared with
/// `weights`; each changed one is summed in f32 and rounded once to its dtype.
///
/// # Errors
/// `Transient` when the device fails; `Permanent` for candle's other errors.
pub(crate) fn merged(weights: &Weights, loras: &[(&Lora, f64)]) -> Result<Weights> {
    let mut deltas: BTreeMap<(Net, &str), Tensor> = BTreeMap::new();
    let mut out = weights.clone();
    let fail = crate::failure::render_error;
    for (lora, weight) in loras {
        for layer in &lora.layers {
            let Some(base) = weights.net(layer.net).and_then(|m| m.get(&layer.tensor)) else {
                continue;
            };
            let delta = layer
                .up
                .matmul(&layer.down)
                .and_then(|d| d.reshape(base.dims()))
                .and_then(|d| d.affine(layer.scale * weight, 0.0))
                .map_err(fail)?;
            let key = (layer.net, layer.tensor.as_str());
            let sum = match deltas.remove(&key) {
                Some(prev) => (prev + delta).map_err(fail)?,
                None => delta,
            };
            deltas.insert(key, sum);
        }
    }
    for ((net, tensor), delta) in deltas {
        let (Some(base), Some(map)) = (
            weights.net(net).and_then(|m| m.get(tensor)),
            out.net_mut(net),
        ) else {
            continue;
        };
        let changed = base
            .to_dtype(DType::F32)
            .and_then(|b| b + delta)
            .and_then(|t| t.to_dtype(base.dtype()))
            .map_err(fail)?;
        map.insert(tensor.to_string(), changed);
    }
    Ok(out)
}
