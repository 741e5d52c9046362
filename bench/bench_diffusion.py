# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the diffusion engine at real size: SD1.5 UNet + one ControlNet, random weights, 512x512.

Plain Python in the engine-diffusion venv (no Blender), with the repo root (`stylepass_core`) and
tests/diffusion (`tiny_models.tokenizer()`: a byte-level CLIP tokenizer) on PYTHONPATH, as `./run bench` does:

    PYTHONPATH=.:tests/diffusion python bench/bench_diffusion.py [--size 512] [--steps 2] [--rebuild]

The random-weight models (SD1.5-size UNet, ControlNet, full KL VAE, CLIP ViT-L/14-size text encoder, and a
tiny TAESD-size autoencoder) are built once into `$STYLEPASS_CACHE/bench-models/` (default
`~/.cache/stylepass/bench-models/`, about 6 GB) and reused; random weights time exactly like trained ones.

Reported, for a warm request (models already loaded, as for every frame after the first):
seconds per denoising step (and the UNet / ControlNet share of it), VAE decode with the full VAE and with the
tiny autoencoder, the cold load, peak memory (max RSS of this process), and the share of the request spent
outside UNet/ControlNet/VAE compute (target < 2%).
"""

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("STYLEPASS_CACHE", Path.home() / ".cache" / "stylepass")) / "bench-models"
OVERHEAD_TARGET = 0.02


def build_models(folder: Path, rebuild: bool) -> dict[str, Path]:
    """Random-weight SD1.5-size pipeline, ControlNet and TAESD-size autoencoder, built once."""
    paths = {
        "sd15": folder / "sd15-random",
        "controlnet": folder / "controlnet-random",
        "taesd": folder / "taesd-random",
    }
    if not rebuild and all((p / ".complete").is_file() for p in paths.values()):
        return paths
    import tiny_models
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    print(f"building random-weight SD1.5-size models into {folder} (once)...", flush=True)
    started = time.perf_counter()
    for path in paths.values():
        shutil.rmtree(path, ignore_errors=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_models.tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(paths["sd15"], safe_serialization=True)
    ControlNetModel.from_unet(unet).save_pretrained(paths["controlnet"], safe_serialization=True)
    AutoencoderTiny().save_pretrained(paths["taesd"], safe_serialization=True)
    for path in paths.values():
        (path / ".complete").touch()
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    return paths


def request(size: int, steps: int, paths: dict[str, Path], **extra: object):
    """A `size`-square frame with a depth map; `extra` are `DiffusionSettings` fields (e.g. `vae`).

    Text to image with Euler a, so every one of `steps` runs the UNet and ControlNet (the settings' default
    Denoise of 0.75 would run fewer).
    """
    from stylepass_core.engine_api import StyleRequest
    from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    beauty = np.stack([xx, yy, 1 - xx], axis=-1).astype(np.float32)
    depth = np.clip(1.0 - ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2, 0, 1).astype(np.float32)
    settings = DiffusionSettings(
        model=str(paths["sd15"]),
        prompt="a watercolour village by a lake, soft light",
        negative_prompt="blurry",
        steps=steps,
        guidance=7.0,
        denoise=1.0,
        scheduler="euler_a",
        controls=(ControlUnit(map="depth", model=str(paths["controlnet"])),),
        **extra,
    )
    return StyleRequest(beauty=beauty, settings=settings, controls={"depth": depth}, seed=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true", help="build the random-weight models again")
    args = parser.parse_args()

    paths = build_models(CACHE, args.rebuild)
    import torch

    from stylepass_core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.size}x{args.size}, {args.steps} steps"
    )
    cold = engine.run(request(args.size, args.steps, paths))
    warm = engine.run(request(args.size, args.steps, paths))
    assert warm.info["loaded"] == [], warm.info["loaded"]
    tiny = engine.run(request(args.size, args.steps, paths, vae=str(paths["taesd"])))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux

    t = warm.info["timings"]
    steps = warm.info["steps_run"]
    overhead_share = t["overhead"] / (t["total"] - t["load"])
    rows = [
        ("cold load (UNet, ControlNet, VAE, text encoder)", f"{cold.info['timings']['load']:.2f} s"),
        ("seconds per step (warm, CFG batch 2)", f"{warm.info['denoise_seconds'] / steps:.2f} s"),
        ("  UNet per step", f"{t.get('unet', 0.0) / steps:.2f} s"),
        ("  ControlNet per step", f"{t.get('controlnet', 0.0) / steps:.2f} s"),
        ("VAE decode, full KL VAE", f"{t['vae_decode']:.2f} s"),
        ("VAE decode, tiny autoencoder (TAESD size)", f"{tiny.info['timings']['vae_decode']:.2f} s"),
        ("text encoder (prompt + negative)", f"{t.get('text_encoder', 0.0):.3f} s"),
        ("warm request total", f"{t['total'] - t['load']:.2f} s"),
        ("not UNet/ControlNet/VAE compute", f"{t['overhead']:.3f} s = {overhead_share:.2%} (target < 2%)"),
        ("peak memory (max RSS)", f"{peak_gb:.2f} GB"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'diffusion engine, SD1.5 + 1 ControlNet, random weights':{width}}  value")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:{width}}  {value}")
    return 0 if overhead_share < OVERHEAD_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
