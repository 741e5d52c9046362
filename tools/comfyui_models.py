# SPDX-License-Identifier: GPL-3.0-or-later
"""Random-weight test models at real SD 1.5 size, in the files a ComfyUI user has, for a real ComfyUI server.

ComfyUI recognises a model by its weight shapes, so tiny models are refused: these have SD 1.5's real
architecture (UNet 320/640/1280/1280, VAE 128/256/512/512, CLIP ViT-L/14 text encoder) with seeded random
weights, so every machine builds the same bytes. Built once, in the diffusion engine's venv (torch, diffusers):

    "$(./run venv diffusion)/bin/python" tools/comfyui_models.py

It prints the folder, `$STYLEPASS_CACHE/comfyui-models-<hash of this file>/` (default cache
`~/.cache/stylepass`), 3.4 GiB, fp16 on disk:

* `checkpoints/stylepass-test-sd15.safetensors`: ONE file in the original (LDM) layout, as community
  checkpoints are (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`), for
  `CheckpointLoaderSimple`.
* `controlnet/stylepass-test-depth.safetensors`, `controlnet/stylepass-test-lineart.safetensors`: diffusers
  ControlNets copied from the UNet (`ControlNetModel.from_unet`) whose zero convolutions are randomised (two
  seeds), so each visibly steers the result; for `ControlNetLoader`.
* `loras/stylepass-test-lora.safetensors`: a kohya-format LoRA (`lora_unet_<diffusers module>`,
  `lora_te_text_model_encoder_layers_<n>_self_attn_<proj>`; `.lora_down`, `.lora_up`, `.alpha`) on every
  attention projection of the UNet and the text encoder, names ComfyUI's `comfy/lora.py` maps onto SD 1.5.
* `extra_model_paths.yaml`: points ComfyUI at those folders (`--extra-model-paths-config`).

The folder is written under a temporary name and renamed when complete (it then holds `.complete`), so a build
that dies leaves nothing that looks usable. Importing this module needs only the standard library: the test
fixture asks `models_dir()` / `is_complete()` from a venv without torch.
"""

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

CHECKPOINT = "stylepass-test-sd15.safetensors"
CONTROLNET_DEPTH = "stylepass-test-depth.safetensors"
CONTROLNET_LINEART = "stylepass-test-lineart.safetensors"
LORA = "stylepass-test-lora.safetensors"
EXTRA_MODEL_PATHS = "extra_model_paths.yaml"

# Seeds: the base model, and one per ControlNet / LoRA so that they differ from each other.
BASE_SEED = 0
DEPTH_SEED = 1
LINEART_SEED = 2
LORA_SEED = 3
LORA_RANK = 4

TEXT_LAYERS = 12


def models_dir() -> Path:
    """Where the models built by this version of this file live (whether built yet or not)."""
    cache = Path(os.environ.get("STYLEPASS_CACHE") or Path.home() / ".cache" / "stylepass")
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache / f"comfyui-models-{digest}"


def is_complete(folder: Path) -> bool:
    return (folder / ".complete").is_file()


# ----------------------------------------------------------------------------------------------------------
# The base model (diffusers' SD 1.5 configuration)


def _unet(seed: int):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
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


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    ).eval()


def _text_encoder(seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config).eval()


# ----------------------------------------------------------------------------------------------------------
# Diffusers -> original (LDM) checkpoint layout: the tables of diffusers'
# `scripts/convert_diffusers_to_original_stable_diffusion.py`, for SD 1.5's four blocks of two layers.


def _unet_to_ldm(state: dict) -> dict:
    prefixes: list[tuple[str, str]] = []  # (ldm, diffusers)
    for i in range(4):
        for j in range(2):
            prefixes.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i < 3:
                prefixes.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            prefixes.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i > 0:
                prefixes.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < 3:
            prefixes.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            # The upsampler follows the attention in blocks that have one.
            slot = 1 if i == 0 else 2
            prefixes.append((f"output_blocks.{3 * i + 2}.{slot}.", f"up_blocks.{i}.upsamplers.0."))
    prefixes.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        prefixes.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    whole = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    resnet_parts = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"),
        ("skip_connection", "conv_shortcut"),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for diffusers_prefix, ldm_prefix in whole.items():
            if key.startswith(diffusers_prefix):
                new = ldm_prefix + key[len(diffusers_prefix) :]
        if "resnets" in new:
            for ldm_part, diffusers_part in resnet_parts:
                new = new.replace(diffusers_part, ldm_part)
        for ldm_prefix, diffusers_prefix in prefixes:
            if new.startswith(diffusers_prefix):
                new = ldm_prefix + new[len(diffusers_prefix) :]
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict) -> dict:
    renames: list[tuple[str, str]] = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(4):
        for j in range(2):
            renames.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < 3:
            renames.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            renames.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(3):
            renames.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        renames.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attention = [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for ldm_part, diffusers_part in renames:
            new = new.replace(diffusers_part, ldm_part)
        if "attn_1" in new:
            for ldm_part, diffusers_part in attention:
                new = new.replace(diffusers_part, ldm_part)
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)  # the original layout uses 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def _text_to_ldm(state: dict) -> dict:
    # transformers 5 leaves out the `text_model.` prefix; ComfyUI loads CLIP non-strictly, so without it a
    # file would silently load nothing.
    out = {}
    for key, value in state.items():
        text_key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + text_key] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# ControlNet and LoRA


def _controlnet(unet, seed: int) -> dict:
    """A ControlNet copied from `unet` whose zero convolutions are randomised, so that it visibly steers."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet)
    torch.manual_seed(seed)
    with torch.no_grad():
        # A layer's default initialisation: residuals as large as the layer's input, not zero.
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            module.reset_parameters()
        # The conditioning embedder's last layer, too, so that different control images give different residuals.
        net.controlnet_cond_embedding.conv_out.reset_parameters()
    return net.state_dict()


def _lora(unet, seed: int) -> dict:
    """Kohya-format low-rank updates of every attention projection, about as large as the weights they change."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    targets: list[tuple[str, int, int]] = []  # (kohya name, in features, out features)
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            targets.append(("lora_unet_" + name.replace(".", "_"), module.in_features, module.out_features))
    for layer in range(TEXT_LAYERS):
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            targets.append((f"lora_te_text_model_encoder_layers_{layer}_self_attn_{projection}", 768, 768))
    out = {}
    for name, fan_in, fan_out in targets:
        out[f"{name}.lora_down.weight"] = torch.randn(LORA_RANK, fan_in, generator=generator) / fan_in**0.5
        out[f"{name}.lora_up.weight"] = (
            torch.randn(fan_out, LORA_RANK, generator=generator) * 0.5 / LORA_RANK**0.5
        )
        out[f"{name}.alpha"] = torch.tensor(float(LORA_RANK))
    return out


# ----------------------------------------------------------------------------------------------------------
# Building


def _save(state: dict, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.to(torch.float16).contiguous() for key, value in state.items()}, path)


def build(folder: Path) -> None:
    """Build every model into `folder` (under a temporary name first; `folder` appears only when complete).

    Args:
        folder: The final folder, normally `models_dir()`. A complete one already there (a build beside this
            one finished first) is kept; an incomplete one is replaced.
    """
    import torch

    # 1. A fresh temporary folder beside the final one (same file system, so the rename is atomic); the
    # leftovers of builds that died (their process is gone) are 3.4 GiB each, so they go.
    folder.parent.mkdir(parents=True, exist_ok=True)
    for leftover in folder.parent.glob(f"{folder.name}.tmp-*"):
        if not Path("/proc", leftover.name.rpartition("-")[2]).exists():
            shutil.rmtree(leftover, ignore_errors=True)
    work = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    torch.set_grad_enabled(False)

    # 2. The checkpoint: UNet, VAE and text encoder in one LDM-layout file.
    unet = _unet(BASE_SEED)
    state = _unet_to_ldm(unet.state_dict())
    state.update(_vae_to_ldm(_vae(BASE_SEED).state_dict()))
    state.update(_text_to_ldm(_text_encoder(BASE_SEED).state_dict()))
    _save(state, work / "checkpoints" / CHECKPOINT)
    del state

    # 3. Two ControlNets and a LoRA for that UNet.
    _save(_controlnet(unet, DEPTH_SEED), work / "controlnet" / CONTROLNET_DEPTH)
    _save(_controlnet(unet, LINEART_SEED), work / "controlnet" / CONTROLNET_LINEART)
    _save(_lora(unet, LORA_SEED), work / "loras" / LORA)

    # 4. Where ComfyUI finds them: absolute paths (ComfyUI joins a relative base_path to its working folder).
    (work / EXTRA_MODEL_PATHS).write_text(
        f"stylepass_test:\n"
        f"    base_path: {folder}\n"
        f"    checkpoints: checkpoints\n"
        f"    controlnet: controlnet\n"
        f"    loras: loras\n"
    )

    # 5. Mark complete, then move into place, unless a build running beside this one got there first (a server
    # may already use its files; the seeds make them the same bytes).
    (work / ".complete").touch()
    if is_complete(folder):
        shutil.rmtree(work)
        return
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="build again even if the folder is complete")
    args = parser.parse_args(argv)
    folder = models_dir()
    if args.rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    if not is_complete(folder):
        print(f"building the ComfyUI test models into {folder} (once, about a minute)...", file=sys.stderr)
        started = time.perf_counter()
        build(folder)
        print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
