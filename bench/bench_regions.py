# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark regional prompting (issue 15): a UNet step with the regional attention against a plain step.

Plain Python in the engine-diffusion venv (no Blender), with the repo root (`stylepass_core`) and
tests/diffusion (`tiny_models`) on PYTHONPATH, as `./run bench` does:

    PYTHONPATH=.:tests/diffusion python bench/bench_regions.py [--size 512] [--rounds 4] [--groups 3]

The UNet is the real-size SD 1.5 architecture built from its config with random weights (nothing is
downloaded or saved; random weights time exactly like trained ones). One step is one UNet forward on a CFG
batch of 2 at `size / 8` latents:

* plain: one 77-token prompt, diffusers' default attention processors;
* regional: the scene and `--groups` style groups (77 tokens each, concatenated) with `RegionalAttention` on
  every cross-attention layer, and a layer map like a rendered shot's: a figure in the middle, a building on
  the left, the floor along the bottom, the scene (sky, background) around them.

Plain and regional steps alternate (and swap order every round), so a busy machine slows both alike; the
figure is the median of the per-round ratios, goal <= 1.15. The tiny test UNet's figure follows, where
fixed per-call costs weigh far more than at real size. Verdicts are printed, not asserted.
"""

import argparse
import statistics
import sys
import time

import numpy as np

GOAL = 1.15
TOKENS = 77


def shot_layer(size: int, groups: int) -> np.ndarray:
    """`(size, size)` uint8: 0 the scene, 1 a figure (ellipse), 2 a building (left), 3 the floor (bottom)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    layer = np.zeros((size, size), np.uint8)
    shapes = [
        ((xx - 0.55) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1.0,  # figure
        (xx > 0.05) & (xx < 0.35) & (yy > 0.15) & (yy < 0.75),  # building
        yy > 0.78,  # floor
    ]
    for number, shape in enumerate(shapes[:groups], start=1):
        layer[shape & (layer == 0)] = number
    return layer


def sd15_unet():
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()


def compare(unet, size: int, groups: int, rounds: int, latent_scale: int = 8) -> dict[str, float]:
    """Seconds per plain and per regional step (medians) and the median per-round ratio."""
    import torch

    from stylepass_core.engines.diffusion import regions

    width = unet.config.cross_attention_dim
    latent = (size // latent_scale, size // latent_scale)
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, *latent, generator=generator)
    plain_tokens = torch.randn(2, TOKENS, width, generator=generator)
    regional_tokens = torch.randn(2, TOKENS * (groups + 1), width, generator=generator)
    layer = shot_layer(size, groups)
    spans = [(r * TOKENS, (r + 1) * TOKENS) for r in range(groups + 1)]
    processor = regions.RegionalAttention(spans, regions.level_weights(layer, groups + 1, latent))

    def plain() -> float:
        started = time.perf_counter()
        unet(sample, 500, encoder_hidden_states=plain_tokens)
        return time.perf_counter() - started

    def regional() -> float:
        started = time.perf_counter()
        with regions.installed([unet], processor):
            unet(sample, 500, encoder_hidden_states=regional_tokens)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"plain": [], "regional": []}
    ratios = []
    with torch.no_grad():
        plain(), regional()  # warm-up: first calls allocate
        for number in range(rounds):
            order = (("plain", plain), ("regional", regional))
            for name, step in order if number % 2 == 0 else order[::-1]:
                times[name].append(step())
            ratios.append(times["regional"][-1] / times["plain"][-1])
    return {
        "plain": statistics.median(times["plain"]),
        "regional": statistics.median(times["regional"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side; latents are size / 8")
    parser.add_argument("--rounds", type=int, default=5, help="plain/regional step pairs at real size")
    parser.add_argument("--groups", type=int, default=3, choices=(1, 2, 3))
    args = parser.parse_args()

    import tiny_models
    import torch

    started = time.perf_counter()
    unet = sd15_unet()
    built = time.perf_counter() - started
    coverage = (
        np.bincount(shot_layer(args.size, args.groups).ravel(), minlength=args.groups + 1) / args.size**2
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; SD1.5-size UNet built in {built:.0f} s; "
        f"{args.size}x{args.size} ({args.size // 8}x{args.size // 8} latents), CFG batch 2, scene + "
        f"{args.groups} groups covering {', '.join(f'{share:.0%}' for share in coverage)}",
        flush=True,
    )
    real = compare(unet, args.size, args.groups, args.rounds)
    del unet
    tiny = compare(tiny_models.unet(), args.size, args.groups, rounds=40)

    rows = [
        ("SD1.5 UNet step, plain (1 prompt)", f"{real['plain']:.2f} s"),
        (f"SD1.5 UNet step, regional (scene + {args.groups} groups)", f"{real['regional']:.2f} s"),
        (
            "SD1.5 regional / plain (median of rounds)",
            f"{real['ratio']:.3f} (goal <= {GOAL}: {'PASS' if real['ratio'] <= GOAL else 'MISS'})",
        ),
        ("  each round", " ".join(f"{ratio:.3f}" for ratio in real["ratios"])),
        ("tiny test UNet step, plain", f"{tiny['plain'] * 1000:.1f} ms"),
        ("tiny test UNet step, regional", f"{tiny['regional'] * 1000:.1f} ms"),
        ("tiny regional / plain", f"{tiny['ratio']:.3f} (fixed per-call costs dominate a tiny UNet)"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"{'regional prompting, per-step UNet time':{width}}  value")
    print("-" * (width + 40))
    for name, value in rows:
        print(f"{name:{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
