"""diffusers (PyTorch, CPU) on the tiny model that `bench-diffusion write` makes: the baseline of
`bench/diffusion.sh`. Same architecture and weights (loaded with strict=True, so every tensor has its
place), same size, steps, sampler (Euler, linspace spacing), guidance and batch; PNG encoding with
Pillow included, as pixelfarm includes its own. Prints one JSON object like bench-diffusion's.

    python bench/diffusers_bench.py DIR --size 64 --steps 20 --batch 4 --images 32
"""

import argparse
import io
import json
import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

# services/diffusion/src/family.rs (Family::Tiny) and model.rs (tiny_clip_config).
UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=(2, 4, 4),
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    use_linear_projection=False,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
)
CLIP = CLIPTextConfig(
    vocab_size=1024,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
)
# candle writes the VAE attention under diffusers' old names.
VAE_RENAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def load(model, path, renames=None):
    state = load_file(path)
    if renames:
        fixed = {}
        for k, v in state.items():
            for old, new in renames.items():
                k = k.replace(old, new)
            fixed[k] = v
        state = fixed
    model.load_state_dict(state, strict=True)
    return model.eval()


class Timer:
    """Seconds spent in a module's forward, via hooks."""

    def __init__(self, module):
        self.seconds = 0.0
        module.register_forward_pre_hook(self.pre)
        module.register_forward_hook(self.post)

    def pre(self, *_):
        self.t0 = time.perf_counter()

    def post(self, *_):
        self.seconds += time.perf_counter() - self.t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--images", type=int, default=16)
    a = ap.parse_args()
    torch.set_grad_enabled(False)

    unet = load(UNet2DConditionModel(**UNET), a.dir / "unet/diffusion_pytorch_model.safetensors")
    vae = load(AutoencoderKL(**VAE), a.dir / "vae/diffusion_pytorch_model.safetensors", VAE_RENAMES)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(a.dir / "tokenizer/tokenizer.json"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    CLIP.bos_token_id = tok.convert_tokens_to_ids("<|startoftext|>")
    CLIP.eos_token_id = CLIP.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    # transformers 5 keeps CLIPTextModel's tensors without the `text_model.` level.
    text_renames = {} if "text_model.embeddings.token_embedding.weight" in CLIPTextModel(CLIP).state_dict() else {"text_model.": ""}
    text = load(CLIPTextModel(CLIP), a.dir / "text_encoder/model.safetensors", text_renames)
    sched = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="linspace",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    timers = {"text_encode": Timer(text), "denoise": Timer(unet), "vae_decode": Timer(vae.decoder)}

    def render(first, n):
        prompts = [f"a photo of a red fox number {i}" for i in range(first, first + n)]
        gens = [torch.Generator().manual_seed(i) for i in range(first, first + n)]
        return pipe(
            prompt=prompts,
            height=a.size,
            width=a.size,
            num_inference_steps=a.steps,
            guidance_scale=7.5,
            generator=gens,
            output_type="pil",
        ).images

    render(0, a.batch)  # warm-up, not counted
    for t in timers.values():
        t.seconds = 0.0
    png = 0.0
    start = time.perf_counter()
    for first in range(0, a.images, a.batch):
        for img in render(first, min(a.batch, a.images - first)):
            t0 = time.perf_counter()
            img.save(io.BytesIO(), format="PNG", compress_level=1)
            png += time.perf_counter() - t0
    secs = time.perf_counter() - start
    per = {k: t.seconds / a.images for k, t in timers.items()}
    per["png_encode"] = png / a.images
    print(
        json.dumps(
            {
                "engine": "diffusers",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "size": a.size,
                "steps": a.steps,
                "batch": a.batch,
                "images": a.images,
                "seconds": secs,
                "images_per_s": a.images / secs,
                "seconds_per_image": per,
            }
        )
    )


if __name__ == "__main__":
    main()
