"""Parity of pixelfarm's engine with diffusers on a real architecture, stage by stage, on the same
random weights (`bench-diffusion write DIR --family F`), CPU, float32.

    bench-diffusion components DIR --latent 16 --out ours.safetensors
    python bench/parity.py DIR --family sd15 --components ours.safetensors

The components file holds pixelfarm's inputs and outputs of each stage: the text encoder(s) on the
prompt and negative prompt (cross-attention states, and SDXL's pooled embedding and time ids), one
UNet call on fixed latents at a fixed timestep with that conditioning, and one VAE decode of fixed
latents. diffusers redoes each stage from the same inputs (its own tokenizer and `encode_prompt`
for the text, pixelfarm's conditioning for the UNet, so each stage is checked alone). Prints one
JSON line per stage (largest absolute difference, relative L2 error ‖ours − theirs‖ / ‖theirs‖) and
exits 1 when a relative error is above --max-rel.

With `--lora FILE:WEIGHT` (repeated, the same as given to `bench-diffusion components`), diffusers
loads each file with `load_lora_weights` (its own reading of the kohya or PEFT layout, through
peft) and applies them at their weights with `set_adapters`, unfused, before the stages: the text
encoders and the UNet are then checked with the LoRAs.

With `--controlnet FILE:WEIGHT` (the same as given to `bench-diffusion components`), the UNet call
is checked with that ControlNet: diffusers' `ControlNetModel.from_unet` of the pipeline's UNet
(its condition embedding's widths read from the file) loads the file strictly, reads the
components' control image at that conditioning scale, and its residuals go into the UNet call as
`down_block_additional_residuals` and `mid_block_additional_residual`.
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffusers_bench import pipeline


def compare(stage, ours, theirs):
    ours, theirs = ours.double(), theirs.double()
    assert ours.shape == theirs.shape, f"{stage}: {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    diff = (ours - theirs).abs()
    return {
        "stage": stage,
        "shape": list(ours.shape),
        "max_abs_diff": float(diff.max()),
        "max_abs_ref": float(theirs.abs().max()),
        "rel_l2": float(diff.norm() / theirs.norm()),
    }


def controlnet(unet, path):
    """diffusers' ControlNet for `unet` with the weights of `path` (strict: every tensor of the
    file is one of the model's, and every one of the model's is in the file)."""
    from diffusers import ControlNetModel

    state = {k: v.float() for k, v in load_file(path).items()}
    prefix = "controlnet_cond_embedding."
    pairs = sum(1 for k in state if k.startswith(prefix + "blocks.") and k.endswith(".weight")) // 2
    widths = [state[prefix + "conv_in.weight"].shape[0]]
    widths += [state[f"{prefix}blocks.{2 * i + 1}.weight"].shape[0] for i in range(pairs)]
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(widths))
    net.load_state_dict(state, strict=True)
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--family", required=True, choices=["tiny", "tiny-xl", "sd15", "sdxl"])
    ap.add_argument("--components", type=Path, required=True)
    ap.add_argument("--prompt", default="a photo of a red house")
    ap.add_argument("--negative", default="blurry")
    ap.add_argument("--max-rel", type=float, default=1e-4)
    ap.add_argument("--lora", action="append", default=[], help="FILE:WEIGHT, repeatable")
    ap.add_argument("--controlnet", help="FILE:WEIGHT")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    ours = load_file(a.components)
    pipe, _ = pipeline(a.dir, a.family, torch.device("cpu"), torch.float32)
    if a.lora:
        names, weights = [], []
        for i, spec in enumerate(a.lora):
            path, weight = spec.rsplit(":", 1)
            pipe.load_lora_weights(path, adapter_name=f"lora{i}")
            names.append(f"lora{i}")
            weights.append(float(weight))
        pipe.set_adapters(names, adapter_weights=weights)
    xl = "text.pooled" in ours
    rows = []

    if xl:
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
            prompt=a.prompt,
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=a.negative,
        )
        rows.append(compare("text_encoders (both, penultimate states)", ours["text.ctx"], torch.cat([uncond, cond])))
        rows.append(compare("pooled text embedding", ours["text.pooled"], torch.cat([uncond_pooled, pooled])))
    else:
        cond, uncond = pipe.encode_prompt(a.prompt, "cpu", 1, True, negative_prompt=a.negative)
        rows.append(compare("text_encoder", ours["text.ctx"], torch.cat([uncond, cond])))

    added = {"text_embeds": ours["text.pooled"], "time_ids": ours["text.time_ids"]} if xl else None
    residuals = {}
    stage = "unet (one call)"
    if a.controlnet:
        path, weight = a.controlnet.rsplit(":", 1)
        down, mid = controlnet(pipe.unet, path)(
            ours["unet.x"],
            ours["unet.t"].item(),
            encoder_hidden_states=ours["text.ctx"],
            controlnet_cond=ours["control.image"],
            conditioning_scale=float(weight),
            added_cond_kwargs=added,
            return_dict=False,
        )
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        stage = f"unet (one call) with a ControlNet at {weight}"
    theirs = pipe.unet(
        ours["unet.x"],
        ours["unet.t"].item(),
        encoder_hidden_states=ours["text.ctx"],
        added_cond_kwargs=added,
        **residuals,
    ).sample
    rows.append(compare(stage, ours["unet.out"], theirs))

    theirs = pipe.vae.decode(ours["vae.z"] / pipe.vae.config.scaling_factor).sample
    rows.append(compare("vae decode", ours["vae.out"], theirs))

    failed = False
    for r in rows:
        r["family"] = a.family
        if a.lora:
            r["loras"] = a.lora
        if a.controlnet:
            r["controlnet"] = a.controlnet
        r["ok"] = r["rel_l2"] <= a.max_rel
        failed |= not r["ok"]
        print(json.dumps(r))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
