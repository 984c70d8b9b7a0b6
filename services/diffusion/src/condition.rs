//! Text conditioning: a job's prompts tokenized and encoded into what the denoiser reads —
//! cross-attention states, and for SDXL the pooled text embedding and the size micro-conditioning.
//! Each job is encoded on its own, so its conditioning never depends on the batch it renders in.

use candle_core::{DType, Device, IndexOp, Tensor};
use pixelfarm_core::{Error, JobParams, Result};
use std::ops::Range;
use tokenizers::Tokenizer;

use crate::clip::ClipText;
use crate::failure::render_error;
use crate::family::{Family, XlConfig};
use crate::registry::layout;
use crate::shapes_net::ShapesText;
use crate::unet::{TIME_IDS, TextTime};

/// The networks that encode prompts.
pub(crate) enum TextEncoder {
    /// SD 1.x / 2.x and the tiny family: one CLIP text transformer, its final-normed last state.
    Clip(ClipText),
    /// The shapes family's positional word embedding.
    Shapes(ShapesText),
    /// SDXL's two encoders.
    Xl(Box<XlText>),
}

/// SDXL's text side: CLIP ViT-L and OpenCLIP ViT-bigG with its own tokenizer.
pub(crate) struct XlText {
    pub cfg: XlConfig,
    pub clip_l: ClipText,
    pub clip_g: ClipText,
    pub tokenizer_2: Tokenizer,
    /// OpenCLIP's tokenizer pads with `!`.
    pub pad_2: u32,
}

/// One job's text conditioning, rows `[uncond, cond]` with guidance, `[cond]` without.
#[derive(Clone)]
pub(crate) struct Cond {
    /// `(rows, tokens, dim)` for cross-attention.
    pub ctx: Tensor,
    /// SDXL only: pooled embedding and time ids of the same rows.
    pub text_time: Option<TextTime>,
}

impl Cond {
    /// Rows `r` of every part.
    pub fn rows(&self, r: Range<usize>) -> candle_core::Result<Cond> {
        Ok(Cond {
            ctx: self.ctx.i(r.clone())?,
            text_time: match &self.text_time {
                Some(tt) => Some(TextTime {
                    pooled: tt.pooled.i(r.clone())?,
                    time_ids: tt.time_ids.i(r)?,
                }),
                None => None,
            },
        })
    }

    /// The rows of `parts`, in order.
    pub fn cat(parts: &[Cond]) -> candle_core::Result<Cond> {
        let ctx: Vec<&Tensor> = parts.iter().map(|p| &p.ctx).collect();
        let tts: Option<Vec<&TextTime>> = parts.iter().map(|p| p.text_time.as_ref()).collect();
        Ok(Cond {
            ctx: Tensor::cat(&ctx, 0)?,
            text_time: match tts {
                Some(tts) if !tts.is_empty() => {
                    let pooled: Vec<&Tensor> = tts.iter().map(|t| &t.pooled).collect();
                    let ids: Vec<&Tensor> = tts.iter().map(|t| &t.time_ids).collect();
                    Some(TextTime {
                        pooled: Tensor::cat(&pooled, 0)?,
                        time_ids: Tensor::cat(&ids, 0)?,
                    })
                }
                _ => None,
            },
        })
    }
}

/// The id of token `t` in the tokenizer read from `file`.
///
/// # Errors
/// `Permanent` when the tokenizer has no such token.
pub(crate) fn token_id(tokenizer: &Tokenizer, file: &str, t: &str) -> Result<u32> {
    tokenizer
        .token_to_id(t)
        .ok_or_else(|| Error::permanent(format!("`{file}` has no `{t}` token")))
}

/// SDXL's size micro-conditioning for a `width x height` render: original size and target size
/// both the job's, crop origin (0, 0) — what diffusers passes for a plain text-to-image call.
fn xl_time_ids(width: u32, height: u32) -> [f32; TIME_IDS] {
    let (h, w) = (height as f32, width as f32);
    [h, w, 0.0, 0.0, h, w]
}

/// A model's tokenizers: CLIP's, and SDXL's second with its padding token.
pub(crate) struct Tokenizers {
    pub clip: Tokenizer,
    pub clip_g: Option<(Tokenizer, u32)>,
}

/// A model's prompt encoder: its tokenizer and networks.
pub(crate) struct TextSide {
    encoder: TextEncoder,
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    /// Token rows are cut and padded to this length.
    max_tokens: usize,
    /// The denoiser's dtype: the conditioning is cast to it.
    dtype: DType,
    device: Device,
}

impl TextSide {
    /// Copies of its tokenizers, to build a text side over other weights.
    pub fn tokenizers(&self) -> Tokenizers {
        Tokenizers {
            clip: self.tokenizer.clone(),
            clip_g: match &self.encoder {
                TextEncoder::Xl(x) => Some((x.tokenizer_2.clone(), x.pad_2)),
                _ => None,
            },
        }
    }

    /// `encoder` with the tokenizer of `family` (read from the model's [`layout::TOKENIZER`]).
    ///
    /// # Errors
    /// `Permanent` when the tokenizer lacks the start, end or padding token.
    pub fn new(
        encoder: TextEncoder,
        tokenizer: Tokenizer,
        family: Family,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let id = |t: &str| token_id(&tokenizer, layout::TOKENIZER, t);
        let bos = id("<|startoftext|>")?;
        let eos = id("<|endoftext|>")?;
        let pad = match family {
            Family::Sd21 => id("!")?,
            _ => eos,
        };
        Ok(TextSide {
            encoder,
            tokenizer,
            bos,
            eos,
            pad,
            max_tokens: family.defaults().max_tokens,
            dtype,
            device: device.clone(),
        })
    }

    /// Token ids for `text` with `tokenizer`: start token, at most `max_tokens - 2` tokens, end
    /// token, `pad`; and the end token's position.
    fn token_ids(&self, tokenizer: &Tokenizer, pad: u32, text: &str) -> Result<(Vec<u32>, usize)> {
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("prompt cannot be tokenized: {e}")))?;
        let max = self.max_tokens;
        let mut ids = Vec::with_capacity(max);
        ids.push(self.bos);
        ids.extend(enc.get_ids().iter().take(max - 2));
        let eos_at = ids.len();
        ids.push(self.eos);
        ids.resize(max, pad);
        Ok((ids, eos_at))
    }

    /// Token rows of `texts` with `tokenizer` padded with `pad`, and each row's end position.
    fn ids(&self, tokenizer: &Tokenizer, pad: u32, texts: &[&str]) -> Result<(Tensor, Vec<usize>)> {
        let tokens = self.max_tokens;
        let mut rows = Vec::with_capacity(texts.len() * tokens);
        let mut eos = Vec::with_capacity(texts.len());
        for t in texts {
            let (ids, at) = self.token_ids(tokenizer, pad, t)?;
            rows.extend(ids);
            eos.push(at);
        }
        let ids =
            Tensor::from_vec(rows, (texts.len(), tokens), &self.device).map_err(render_error)?;
        Ok((ids, eos))
    }

    /// The job's text conditioning: `[uncond, cond]` rows (or just `[cond]` without guidance).
    ///
    /// # Errors
    /// `Invalid` for a prompt the tokenizer refuses, else what [`render_error`] makes of candle's.
    pub fn encode(&self, p: &JobParams) -> Result<Cond> {
        let mut texts = Vec::new();
        if p.guidance.guides() {
            texts.push(p.negative_prompt.as_str());
        }
        texts.push(p.prompt.as_str());
        let (ids, eos) = self.ids(&self.tokenizer, self.pad, &texts)?;
        let plain = |ctx: candle_core::Result<Tensor>| -> Result<Cond> {
            Ok(Cond {
                ctx: ctx
                    .and_then(|t| t.to_dtype(self.dtype))
                    .map_err(render_error)?,
                text_time: None,
            })
        };
        match &self.encoder {
            TextEncoder::Clip(m) => plain(m.forward(&ids, &eos).map(|o| o.last)),
            TextEncoder::Shapes(m) => plain(m.forward(&ids)),
            TextEncoder::Xl(xl) => self.encode_xl(xl, p, &texts, &ids, &eos),
        }
    }

    /// SDXL: both encoders' penultimate states side by side for cross-attention, the second's
    /// pooled state and the size micro-conditioning for `add_embedding`; an empty negative prompt
    /// conditions on zeros where the family says so.
    fn encode_xl(
        &self,
        xl: &XlText,
        p: &JobParams,
        texts: &[&str],
        ids: &Tensor,
        eos: &[usize],
    ) -> Result<Cond> {
        let r = render_error;
        let (ids_2, eos_2) = self.ids(&xl.tokenizer_2, xl.pad_2, texts)?;
        let l = xl.clip_l.forward(ids, eos).map_err(r)?;
        let g = xl.clip_g.forward(&ids_2, &eos_2).map_err(r)?;
        let mut ctx = Tensor::cat(&[&l.penultimate, &g.penultimate], 2).map_err(r)?;
        let mut pooled = g.pooled.ok_or_else(|| {
            Error::permanent(format!(
                "`{}` has no text_projection",
                layout::TEXT_ENCODER_2
            ))
        })?;
        let n = texts.len();
        if n == 2 && texts[0].is_empty() && xl.cfg.zeros_for_empty_negative {
            let zero_first = |t: &Tensor| -> candle_core::Result<Tensor> {
                Tensor::cat(&[&t.i(0..1)?.zeros_like()?, &t.i(1..2)?], 0)
            };
            ctx = zero_first(&ctx).map_err(r)?;
            pooled = zero_first(&pooled).map_err(r)?;
        }
        let row = xl_time_ids(p.width, p.height);
        let time_ids = Tensor::from_vec(row.repeat(n), (n, TIME_IDS), &self.device).map_err(r)?;
        Ok(Cond {
            ctx: ctx.to_dtype(self.dtype).map_err(r)?,
            text_time: Some(TextTime {
                pooled: pooled.to_dtype(self.dtype).map_err(r)?,
                time_ids,
            }),
        })
    }
}
