"""diffusers on the random-weight models that `bench-diffusion write` makes: the baseline of
`bench/diffusion.sh` (tiny model, CPU) and `bench/gpu.sh` (full-size SD 1.5 and SDXL, CUDA, fp16 with
PyTorch's SDPA attention, diffusers' default). Same architecture and weights (loaded with
strict=True, so every tensor has its place), same size, steps, sampler (Euler, linspace spacing),
guidance and batch; PNG encoding with Pillow included, as pixelfarm includes its own. Prints one
JSON object like bench-diffusion's.

    python bench/diffusers_bench.py DIR --family sd15 --size 512 --steps 25 --batch 8 --images 16 \
        --device cuda
    python bench/diffusers_bench.py DIR --family sdxl --size 1024 --steps 25 --device cuda \
        --parity ours.json

With --parity OURS (the JSON of `bench-diffusion parity`, same prompt, steps, guidance and size) it
instead renders that one image from pixelfarm's initial noise through the diffusers pipeline and
prints how far the two images' pixels are apart.
"""

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers import scheduling_dpmsolver_multistep, scheduling_euler_ancestral_discrete
from safetensors.torch import load_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
)

# services/diffusion/src/family.rs: the UNet of each family, as diffusers configures it.
UNET = dict(  # tiny
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
# The tiny UNet with SDXL's block layout, transformer depths, linear projections and
# micro-conditioning.
UNET_TINY_XL = dict(
    UNET,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 1),
    cross_attention_dim=32 + 48,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=48 + 6 * 8,
)
# runwayml/stable-diffusion-v1-5 unet/config.json (attention_head_dim is the head count there).
UNET_SD15 = dict(
    UNET,
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json.
UNET_SDXL = dict(
    UNET,
    sample_size=128,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
VAE = dict(  # tiny
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
)
VAE_FULL = dict(VAE, block_out_channels=(128, 256, 512, 512), layers_per_block=2)
# candle writes the VAE attention under diffusers' old names.
VAE_RENAMES = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def clip(width, intermediate, layers, heads, act, projection, vocab):
    return dict(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
    )


CLIP_TINY = clip(32, 64, 2, 2, "quick_gelu", 32, 1024)
# openai/clip-vit-large-patch14's text model.
CLIP_L = clip(768, 3072, 12, 12, "quick_gelu", 768, 49408)
# Per family: UNet, VAE, VAE latent scale, text encoders (None for the second where there is none).
FAMILIES = {
    "tiny": (UNET, VAE, 0.18215, CLIP_TINY, None),
    "tiny-xl": (UNET_TINY_XL, VAE, 0.13025, CLIP_TINY, clip(48, 96, 2, 2, "gelu", 48, 1024)),
    "sd15": (UNET_SD15, VAE_FULL, 0.18215, CLIP_L, None),
    # SDXL: CLIP ViT-L and OpenCLIP ViT-bigG with its projection.
    "sdxl": (UNET_SDXL, VAE_FULL, 0.13025, CLIP_L, clip(1280, 5120, 32, 20, "gelu", 1280, 49408)),
}


def load(model, path, renames=None, device="cpu", dtype=None):
    """`model`'s tensors from `path`, strictly: every tensor must have its place and every place a
    tensor. A model built under `torch.device("meta")` (no random init: seconds instead of a
    minute for SDXL) takes the loaded tensors as they are."""
    state = load_file(path, device=str(device))
    if renames:
        fixed = {}
        for k, v in state.items():
            for old, new in renames.items():
                k = k.replace(old, new)
            fixed[k] = v
        state = fixed
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(state, strict=True, assign=meta)
    return model.eval()


def text_model(cls, config, path, device, dtype):
    with torch.device("meta"):
        model = cls(config)
    # transformers 5 keeps the tensors without the `text_model.` level.
    flat = "text_model.embeddings.token_embedding.weight" not in model.state_dict()
    model = load(model, path, {"text_model.": ""} if flat else None, device, dtype)
    # The one buffer that is not in the file (position ids) was left on the meta device.
    for module in model.modules():
        if getattr(module, "position_ids", None) is not None and module.position_ids.is_meta:
            module.register_buffer(
                "position_ids", torch.arange(77, device=device).expand((1, -1)), persistent=False
            )
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    return model


def tokenizer(path, pad):
    return PreTrainedTokenizerFast(tokenizer_file=str(path), model_max_length=77, pad_token=pad)


# Every SD family's training schedule.
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
)


def pipeline(dir, family, device, dtype):
    """The diffusers pipeline of `family` over the weights in `dir`, on `device` in `dtype`."""
    unet_cfg, vae_cfg, scale, clip1, clip2 = FAMILIES[family]
    xl = clip2 is not None
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        # SDXL's VAE overflows in fp16: diffusers upcasts it to fp32 for the decode (force_upcast).
        vae = AutoencoderKL(**vae_cfg, scaling_factor=scale, force_upcast=xl)
    unet = load(unet, dir / "unet/diffusion_pytorch_model.safetensors", device=device, dtype=dtype)
    vae = load(vae, dir / "vae/diffusion_pytorch_model.safetensors", VAE_RENAMES, device, dtype)
    tok = tokenizer(dir / "tokenizer/tokenizer.json", "<|endoftext|>")
    bos = tok.convert_tokens_to_ids("<|startoftext|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")

    def config(c):
        return CLIPTextConfig(**c, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)

    sched = SCHEDULERS["euler"](SCHEDULE)
    text = text_model(CLIPTextModel, config(clip1), dir / "text_encoder/model.safetensors", device, dtype)
    if xl:
        text_2 = text_model(
            CLIPTextModelWithProjection,
            config(clip2),
            dir / "text_encoder_2/model.safetensors",
            device,
            dtype,
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text,
            text_encoder_2=text_2,
            tokenizer=tok,
            # OpenCLIP's tokenizer pads with `!`, as pixelfarm's second tokenizer does.
            tokenizer_2=tokenizer(dir / "tokenizer_2/tokenizer.json", "!"),
            unet=unet,
            scheduler=sched,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
        encoders = [text, text_2]
    else:
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
        encoders = [text]
    pipe.set_progress_bar_config(disable=True)
    return pipe, encoders


class Timer:
    """Seconds spent in modules' forwards, via hooks (the device synchronised at both ends)."""

    def __init__(self, modules, device):
        self.seconds = 0.0
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for m in modules:
            m.register_forward_pre_hook(self.pre)
            m.register_forward_hook(self.post)

    def pre(self, *_):
        self.sync()
        self.t0 = time.perf_counter()

    def post(self, *_):
        self.sync()
        self.seconds += time.perf_counter() - self.t0


# pixelfarm's samplers (services/diffusion/src/sampler.rs) as diffusers' schedulers: Euler and Euler a
# with linspace spacing, DDIM with leading spacing (eta 0), DPM++ 2M and its SDE variant with Karras
# sigmas.
SCHEDULERS = {
    "euler": lambda c: EulerDiscreteScheduler(**c, timestep_spacing="linspace"),
    "euler_a": lambda c: EulerAncestralDiscreteScheduler(**c, timestep_spacing="linspace"),
    "ddim": lambda c: DDIMScheduler(
        **c, timestep_spacing="leading", set_alpha_to_one=False, clip_sample=False
    ),
    "dpmpp_2m": lambda c: DPMSolverMultistepScheduler(
        **c, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    ),
    "dpmpp_2m_sde": lambda c: DPMSolverMultistepScheduler(
        **c, algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=True
    ),
}


def parity(pipe, ours, family, size, steps, guidance, prompt, negative, sampler, device, dtype):
    """pixelfarm's image (`ours`: bench-diffusion parity's JSON) against diffusers' from the same
    initial noise; the stochastic samplers get pixelfarm's later draws too, in order."""
    latent = size // 8
    n = 4 * latent * latent
    draws = torch.tensor(ours["noise"], dtype=torch.float32)
    chunks = iter(draws[n:].reshape(-1, n))

    def randn(shape, generator=None, device=None, dtype=None, layout=None):
        return next(chunks).reshape(shape).to(device=device, dtype=dtype)

    for module in (scheduling_euler_ancestral_discrete, scheduling_dpmsolver_multistep):
        module.randn_tensor = randn
    pipe.scheduler = SCHEDULERS[sampler](SCHEDULE)
    img = pipe(
        prompt=prompt,
        negative_prompt=negative or None,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=draws[:n].reshape(1, 4, latent, latent).to(device=device, dtype=dtype),
        output_type="np",
    ).images[0]
    theirs = (img * 255).round().astype(np.int16).reshape(-1)
    mine = np.array(ours["rgb"], dtype=np.int16)
    diff = np.abs(theirs - mine)
    return {
        "family": family,
        "sampler": sampler,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "steps": steps,
        "max_abs_diff": int(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "pixels_within_2": float((diff <= 2).mean()),
        "values": int(diff.size),
        # The scale of "different": the same image shifted by one pixel.
        "control_mean_abs_diff_of_a_shifted_image": float(np.abs(mine - np.roll(mine, 3)).mean()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--family", default="tiny", choices=sorted(FAMILIES))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: float16 on cuda, float32 on cpu")
    ap.add_argument("--warmup-steps", type=int, default=None, help="default: --steps")
    ap.add_argument("--parity", type=Path, help="bench-diffusion parity's JSON")
    ap.add_argument("--prompt", default="a photo of a red house")
    ap.add_argument("--negative", default="")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--sampler", default="euler", choices=sorted(SCHEDULERS))
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype or ("float16" if device.type == "cuda" else "float32"))

    t0 = time.perf_counter()
    pipe, encoders = pipeline(a.dir, a.family, device, dtype)
    load_secs = time.perf_counter() - t0
    if a.parity:
        ours = json.loads(a.parity.read_text())
        print(json.dumps(parity(pipe, ours, a.family, a.size, a.steps, a.guidance, a.prompt,
                                a.negative, a.sampler, device, dtype)))
        return
    timers = {
        "text_encode": Timer(encoders, device),
        "denoise": Timer([pipe.unet], device),
        "vae_decode": Timer([pipe.vae.decoder], device),
    }

    def render(first, n, steps):
        prompts = [f"a photo of a red fox number {i}" for i in range(first, first + n)]
        gens = [torch.Generator(device).manual_seed(i) for i in range(first, first + n)]
        return pipe(
            prompt=prompts,
            height=a.size,
            width=a.size,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=gens,
            output_type="pil",
        ).images

    render(0, a.batch, a.warmup_steps or a.steps)  # warm-up, not counted
    for t in timers.values():
        t.seconds = 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    png = 0.0
    start = time.perf_counter()
    for first in range(0, a.images, a.batch):
        for img in render(first, min(a.batch, a.images - first), a.steps):
            t0 = time.perf_counter()
            img.save(io.BytesIO(), format="PNG", compress_level=1)
            png += time.perf_counter() - t0
    secs = time.perf_counter() - start
    per = {k: t.seconds / a.images for k, t in timers.items()}
    per["png_encode"] = png / a.images
    out = {
        "engine": "diffusers",
        "family": a.family,
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": a.size,
        "steps": a.steps,
        "batch": a.batch,
        "images": a.images,
        "load_seconds": load_secs,
        "seconds": secs,
        "images_per_s": a.images / secs,
        "seconds_per_image": per,
    }
    if device.type == "cuda":
        out["torch_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["attention"] = type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
