"""SDXL parity: pixelfarm's SDXL path against diffusers' reference modules, on the tiny
SDXL-architecture model (`bench-diffusion write DIR --family tiny-xl`, loaded with strict=True so every tensor has
its place). Same token ids, same initial noise (from `bench-diffusion parity`), Euler with linspace
spacing, classifier-free guidance, SDXL's text embedding (both encoders' penultimate hidden states),
pooled embedding (projected end-of-text state of the second encoder), time ids
(original size, crop, target size) and zeroed empty negative prompt, as StableDiffusionXLPipeline
does them. Prints the largest and mean pixel difference; exits 1 above --max-diff.

    bench-diffusion write /tmp/xl --family tiny-xl
    bench-diffusion parity /tmp/xl --seed 5 --steps 4 --guidance 5 > /tmp/xl/ours.json
    python bench/xl_parity.py /tmp/xl /tmp/xl/ours.json --steps 4 --guidance 5
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from tokenizers import Tokenizer
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusers_bench import FAMILIES, UNET_TINY_XL, VAE, VAE_RENAMES, load, text_model


def ids_of(tok, text, pad):
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    body = tok.encode(text, add_special_tokens=False).ids[:75]
    ids = [bos] + body + [eos]
    return ids + [pad] * (77 - len(ids))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("ours", type=Path)
    ap.add_argument("--prompt", default="a photo of a red house")
    ap.add_argument("--negative", default="")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--max-diff", type=int, default=3)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    ours = json.loads(a.ours.read_text())

    unet = load(UNet2DConditionModel(**UNET_TINY_XL), a.dir / "unet/diffusion_pytorch_model.safetensors")
    vae = load(AutoencoderKL(**VAE), a.dir / "vae/diffusion_pytorch_model.safetensors", VAE_RENAMES)
    tok = Tokenizer.from_file(str(a.dir / "tokenizer/tokenizer.json"))
    tok2 = Tokenizer.from_file(str(a.dir / "tokenizer_2/tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    _, _, _, clip1, clip2 = FAMILIES["tiny-xl"]
    c1, c2 = (CLIPTextConfig(**c, bos_token_id=tok.token_to_id("<|startoftext|>"), eos_token_id=eos)
              for c in (clip1, clip2))
    te1 = text_model(CLIPTextModel, c1, a.dir / "text_encoder/model.safetensors", "cpu", None)
    te2 = text_model(CLIPTextModelWithProjection, c2, a.dir / "text_encoder_2/model.safetensors", "cpu", None)

    def encode(text):
        i1 = torch.tensor([ids_of(tok, text, eos)])
        i2 = torch.tensor([ids_of(tok2, text, tok2.token_to_id("!"))])
        h1 = te1(i1, output_hidden_states=True).hidden_states[-2]
        o2 = te2(i2, output_hidden_states=True)
        return torch.cat([h1, o2.hidden_states[-2]], dim=-1), o2.text_embeds

    cond, pooled = encode(a.prompt)
    cfg = a.guidance > 1.0
    if cfg:
        if a.negative == "":  # force_zeros_for_empty_prompt
            neg, neg_pooled = torch.zeros_like(cond), torch.zeros_like(pooled)
        else:
            neg, neg_pooled = encode(a.negative)
        embeds, pooled = torch.cat([neg, cond]), torch.cat([neg_pooled, pooled])
    else:
        embeds = cond
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * embeds.shape[0])

    sched = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        # pixelfarm's Euler is linspace; for one step linspace degenerates to t = 0 in diffusers,
        # so use trailing there (t = 999, as SDXL-Turbo's scheduler does), which pixelfarm matches.
        timestep_spacing="linspace" if a.steps > 1 else "trailing",
    )
    sched.set_timesteps(a.steps)
    latents = torch.tensor(ours["noise"][: 4 * 8 * 8], dtype=torch.float32).reshape(1, 4, 8, 8)
    latents = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        x = torch.cat([latents] * 2) if cfg else latents
        x = sched.scale_model_input(x, t)
        out = unet(x, t, encoder_hidden_states=embeds,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        if cfg:
            u, c = out.chunk(2)
            out = u + a.guidance * (c - u)
        latents = sched.step(out, t, latents).prev_sample
    img = vae.decode(latents / 0.13025).sample
    img = ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    theirs = img[0].permute(1, 2, 0).numpy().astype(np.int16).reshape(-1)
    mine = np.array(ours["rgb"], dtype=np.int16)
    diff = np.abs(theirs - mine)
    control = np.abs(mine - np.roll(mine, 3)).mean()
    print(json.dumps({
        "max_abs_diff": int(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "pixels_differing": int((diff > 0).sum()),
        "values": int(diff.size),
        "control_mean_abs_diff_of_a_shifted_image": float(control),
    }))
    raise SystemExit(0 if diff.max() <= a.max_diff else 1)


if __name__ == "__main__":
    main()
