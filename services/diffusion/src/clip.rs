//! The CLIP text transformer of every SD family: the final-normed last state (SD 1.x / 2.x), and as
//! SDXL reads it, the hidden state of the penultimate layer (no final norm) for cross-attention
//! and the final-normed state at the end-of-text token, projected, as the pooled embedding.
//! candle's stable-diffusion CLIP exposes these only for its fixed presets (and fails on more than
//! one prompt at a time: its causal mask does not broadcast over heads) and its generic CLIP only
//! the final state with quick-GELU, so all the families' encoders (CLIP ViT-L, OpenCLIP ViT-H and
//! ViT-bigG with GELU, the tiny test twins) run through this one module, which reads the Hugging
//! Face `CLIPTextModel(WithProjection)` weight names.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// The exact (erf) GELU (OpenCLIP).
    Gelu,
}

/// A text transformer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipConfig {
    #[allow(missing_docs)]
    pub vocab_size: usize,
    /// Hidden width.
    pub width: usize,
    #[allow(missing_docs)]
    pub layers: usize,
    #[allow(missing_docs)]
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Positions (tokens) it reads.
    pub max_positions: usize,
    #[allow(missing_docs)]
    pub activation: Activation,
    /// Width of `text_projection` (the pooled embedding), for `WithProjection` models.
    pub projection: Option<usize>,
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A CLIP text transformer (with its projection when the config has one).
pub struct ClipText {
    cfg: ClipConfig,
    token: Embedding,
    position: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
}

/// What the families read of one text encoder, for a batch of token rows.
pub struct ClipOutput {
    /// `(n, tokens, width)`: the last layer's output, final-normed (SD 1.x / 2.x).
    pub last: Tensor,
    /// `(n, tokens, width)`: the penultimate layer's output (SDXL).
    pub penultimate: Tensor,
    /// `(n, projection)`: the projected, final-normed end-of-text state (`None` without projection).
    pub pooled: Option<Tensor>,
}

impl ClipText {
    /// Load from `vb` (Hugging Face names: `text_model.*`, `text_projection.weight`).
    ///
    /// # Errors
    /// When a tensor is missing or has the wrong shape.
    pub fn new(vb: VarBuilder, cfg: ClipConfig) -> Result<Self> {
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let w = cfg.width;
        let ln = |vb: VarBuilder| candle_nn::layer_norm(w, 1e-5, vb);
        let layers = (0..cfg.layers)
            .map(|i| {
                let l = tm.pp("encoder.layers").pp(i.to_string());
                let a = l.pp("self_attn");
                Ok(Layer {
                    norm1: ln(l.pp("layer_norm1"))?,
                    q: candle_nn::linear(w, w, a.pp("q_proj"))?,
                    k: candle_nn::linear(w, w, a.pp("k_proj"))?,
                    v: candle_nn::linear(w, w, a.pp("v_proj"))?,
                    out: candle_nn::linear(w, w, a.pp("out_proj"))?,
                    norm2: ln(l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(w, cfg.intermediate, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(cfg.intermediate, w, l.pp("mlp.fc2"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(ClipText {
            cfg,
            token: candle_nn::embedding(cfg.vocab_size, w, emb.pp("token_embedding"))?,
            position: candle_nn::embedding(cfg.max_positions, w, emb.pp("position_embedding"))?,
            layers,
            final_norm: ln(tm.pp("final_layer_norm"))?,
            projection: match cfg.projection {
                Some(p) => Some(candle_nn::linear_no_bias(w, p, vb.pp("text_projection"))?),
                None => None,
            },
        })
    }

    /// Run token rows `ids` `(n, tokens)` (u32); `eos[i]` is the end-of-text position of row `i`.
    ///
    /// # Errors
    /// For ids out of range or the wrong shape.
    pub fn forward(&self, ids: &Tensor, eos: &[usize]) -> Result<ClipOutput> {
        let (n, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?;
        let mut x = self
            .token
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), ids.device())?.to_dtype(x.dtype())?;
        let (h, d) = (self.cfg.heads, self.cfg.width / self.cfg.heads);
        let scale = (d as f64).powf(-0.5);
        let mut penultimate = None;
        for (i, l) in self.layers.iter().enumerate() {
            let y = l.norm1.forward(&x)?;
            let split = |p: Tensor| p.reshape((n, t, h, d))?.transpose(1, 2)?.contiguous();
            let q = split((l.q.forward(&y)? * scale)?)?;
            let k = split(l.k.forward(&y)?)?;
            let v = split(l.v.forward(&y)?)?;
            let att = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((n, t, h * d))?;
            x = (x + l.out.forward(&y)?)?;
            let y = l.fc1.forward(&l.norm2.forward(&x)?)?;
            let y = match self.cfg.activation {
                Activation::QuickGelu => (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?,
                Activation::Gelu => y.gelu_erf()?,
            };
            x = (x + l.fc2.forward(&y)?)?;
            if i + 2 == self.layers.len() {
                penultimate = Some(x.clone());
            }
        }
        let penultimate = match penultimate {
            Some(p) => p,
            None => candle_core::bail!("a text encoder needs at least two layers"),
        };
        let last = self.final_norm.forward(&x)?;
        let pooled = match &self.projection {
            Some(proj) => {
                let rows = (0..n)
                    .map(|i| last.i((i, eos.get(i).copied().unwrap_or(t - 1))))
                    .collect::<Result<Vec<_>>>()?;
                Some(proj.forward(&Tensor::stack(&rows, 0)?)?)
            }
            None => None,
        };
        Ok(ClipOutput {
            last,
            penultimate,
            pooled,
        })
    }
}
