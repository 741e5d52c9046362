# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine's fast live preset: the artist's settings turned into a few-step viewport preview.

The live preview in the 3D viewport sends one ordinary `StyleRequest` per view: the viewport colour at preview
size (long side 256-512) as `beauty`, the control maps, the frame's seed, and
`settings=live_settings(artist_settings)`. It goes through the same runner as a final frame (the warm worker),
so a preview and a final frame share the loaded models. Nothing here imports torch or bpy, and nothing reads
more than a few JSON configs.

Rules, each keeping what the artist chose where it already suits a preview:

1. Kind of model (`model_kind`), from the first that tells:
   a. the artist's scheduler, when it is a few-step one (LCM, TCD, Euler [a] Trailing): kept as it is, with
      the artist's guidance;
   b. the model's own files, when `model` is an absolute path to a diffusers folder on this machine: an LCM
      pipeline, scheduler or UNet (one that embeds the guidance, `time_cond_proj_dim`) -> LCM; a TCD scheduler
      -> TCD; a scheduler on trailing timesteps (Turbo and Lightning folders) -> the model's own scheduler;
   c. the names of the model and of the enabled LoRAs (their last two path parts): `lcm` -> LCM; `tcd` or
      `hyper-sd` -> TCD; `lightning` (a LoRA's name must also say `step`, as SDXL-Lightning's do) -> Euler
      Trailing; `turbo` -> Euler a Trailing;
   d. else an ordinary model.
   A relative model name may live on a remote worker's disk, so only names are read for it; set a few-step
   scheduler yourself when a model's name does not tell.
2. Scheduler and guidance: a few-step kind uses its scheduler with guidance 1 (classifier-free guidance off:
   one UNet pass per step), except an LCM UNet that embeds the guidance, which keeps the artist's (it costs
   nothing there). An ordinary model uses DPM++ 2M Karras with the artist's guidance, at most
   `LIVE_MAX_GUIDANCE` (high guidance over-cooks few steps).
3. Image to image from the viewport colour: the artist's denoise when below 1, else `LIVE_DENOISE` (0.6);
   never below `LIVE_MIN_DENOISE` (0.05).
4. Steps: the fewest with `int(steps x denoise) >= LIVE_STEPS` (4), so about 4 denoising steps run whatever the
   denoise (image to image runs `steps x denoise` of them); at most 50 for LCM and TCD (their schedules are
   drawn from 50 training steps), else the engine's maximum.
5. VAE: `(tiny)` (`settings.TINY_VAE`) when the artist set none: the engine decodes, and encodes the viewport
   colour, with the model's tiny autoencoder (TAESD) when it has one, else with its own VAE; see
   `models.find_tiny_vae` for where it looks (`vae_tiny/` in the model folder, `taesd`/`taesdxl` beside it or
   at the top of a model folder, the Hugging Face cache). A VAE the artist set is kept.
6. Everything else as the artist set it: prompt and style, the control units (maps, ControlNets, weights,
   start and end), LoRAs, IP-Adapter, precision and memory settings, device. Style groups are not part of a
   preview: a live request carries no regions, so the scene's prompt applies everywhere.

The seed is the request's (the caller passes the frame's seed), and every sampler draws its noise from a
generator seeded with it, so the same view gives the same picture every time. Sizes: the engine generates
at the output size snapped to multiples of 8 (at least 64) and resizes back, so any preview size works;
a preview already in multiples of 8 (the add-on's `live_capture.preview_size`) is not resized at all.
"""

import json
import math
import os
import re
from pathlib import Path

from .settings import FEW_STEP_SCHEDULERS, MAX_STEPS, TINY_VAE, DiffusionSettings

LIVE_STEPS = 4
"""Denoising steps a live picture runs."""
LIVE_DENOISE = 0.6
"""Denoise when the artist's is 1 (text to image): the preview always starts from the viewport colour."""
LIVE_MIN_DENOISE = 0.05
LIVE_MAX_GUIDANCE = 5.0
"""Highest guidance an ordinary (not distilled) model gets in a preview."""
CONSISTENCY_MAX_STEPS = 50  # LCM and TCD draw their timesteps from 50 original steps

# Kinds of model (`model_kind`) -> the scheduler a preview uses.
KIND_SCHEDULERS = {
    "lcm": "lcm",
    "tcd": "tcd",
    "lightning": "euler_trailing",
    "turbo": "euler_a_trailing",
    "own": "model",  # the model's own scheduler is already a few-step one
    "ordinary": "dpmpp_2m_karras",
}
_SCHEDULER_KINDS = {"lcm": "lcm", "tcd": "tcd", "euler_trailing": "lightning", "euler_a_trailing": "turbo"}


def live_settings(
    settings: DiffusionSettings,
    *,
    steps: int = LIVE_STEPS,
    denoise: float = LIVE_DENOISE,
    tiny_vae: bool = True,
) -> DiffusionSettings:
    """The artist's diffusion settings as the fast live preset (rules in the module docstring).

    Args:
        settings: The artist's settings (model references as the runner gets them).
        steps: Denoising steps to run, 1 to 50.
        denoise: Denoise used when the artist's is 1 (text to image), in [LIVE_MIN_DENOISE, 1).
        tiny_vae: Ask for the model's tiny autoencoder when the artist set no VAE.

    Returns:
        A copy with scheduler, steps, guidance, denoise and VAE changed; everything else is the artist's.

    Raises:
        ValueError: `steps` or `denoise` out of range (quoting the value).
    """
    # 1. Check inputs
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= CONSISTENCY_MAX_STEPS:
        raise ValueError(f"steps must be an int in [1, {CONSISTENCY_MAX_STEPS}], got {steps!r}")
    if not isinstance(denoise, int | float) or not LIVE_MIN_DENOISE <= denoise < 1.0:
        raise ValueError(f"denoise must be in [{LIVE_MIN_DENOISE}, 1), got {denoise!r}")

    # 2. Kind of model -> scheduler and guidance
    kind, embeds_guidance = _kind(settings)
    if settings.scheduler in FEW_STEP_SCHEDULERS:
        scheduler, guidance = settings.scheduler, settings.guidance
    elif kind == "ordinary":
        scheduler, guidance = KIND_SCHEDULERS[kind], min(settings.guidance, LIVE_MAX_GUIDANCE)
    else:
        scheduler = KIND_SCHEDULERS[kind]
        guidance = settings.guidance if embeds_guidance else 1.0

    # 3. Image to image from the viewport colour, with about `steps` denoising steps
    amount = max(settings.denoise if settings.img2img else denoise, LIVE_MIN_DENOISE)
    cap = CONSISTENCY_MAX_STEPS if scheduler in ("lcm", "tcd") else MAX_STEPS
    total = min(math.ceil(steps / amount), cap)
    while total < cap and int(total * amount) < steps:  # float rounding: 4 / 0.7 * 0.7 < 4
        total += 1

    # 4. Decoder
    vae = TINY_VAE if tiny_vae and not settings.vae.strip() else settings.vae
    return settings.replace(scheduler=scheduler, guidance=guidance, steps=total, denoise=amount, vae=vae)


def model_kind(settings: DiffusionSettings) -> str:
    """What the live preset takes the model for: "lcm", "tcd", "lightning", "turbo", "own" (a folder whose
    own scheduler is a few-step one) or "ordinary" (rule 1 of the module docstring)."""
    return _kind(settings)[0]


def _kind(settings: DiffusionSettings) -> tuple[str, bool]:
    """`(kind, whether the UNet embeds the guidance)`."""
    if settings.scheduler in _SCHEDULER_KINDS:
        return _SCHEDULER_KINDS[settings.scheduler], False
    from_files = _kind_from_files(settings.model.strip())
    if from_files is not None:
        return from_files
    return _kind_from_names(settings), False


def _kind_from_files(model: str) -> tuple[str, bool] | None:
    """From a local diffusers folder's configs; None when `model` is not one on this machine."""
    folder = Path(model)
    if not (os.path.isabs(model) and (folder / "model_index.json").is_file()):
        return None
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    embeds_guidance = unet.get("time_cond_proj_dim") is not None
    if embeds_guidance or str(index.get("_class_name", "")).startswith("LatentConsistencyModel"):
        return "lcm", embeds_guidance
    if scheduler.get("_class_name") == "LCMScheduler":
        return "lcm", False
    if scheduler.get("_class_name") == "TCDScheduler":
        return "tcd", False
    if scheduler.get("timestep_spacing") == "trailing":
        return "own", False
    return None  # an ordinary folder: its name may still tell (an LCM LoRA, a Lightning LoRA)


def _kind_from_names(settings: DiffusionSettings) -> str:
    model = _tail(settings.model)
    loras = [_tail(lora.file) for lora in settings.active_loras]
    names = [model, *loras]
    if any("lcm" in name for name in names):
        return "lcm"
    if any("tcd" in name or re.search(r"hyper[-_]?sd", name) for name in names):
        return "tcd"
    if "lightning" in model or any("lightning" in name and "step" in name for name in loras):
        return "lightning"
    if any("turbo" in name for name in names):
        return "turbo"
    return "ordinary"


def _tail(reference: str) -> str:
    """The last two parts of a path or model id, lower case: "lcm-lora-sdv1-5/pytorch_lora_weights.safetensors"."""
    parts = [part for part in re.split(r"[\\/]+", reference.strip().lower()) if part]
    return "/".join(parts[-2:])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
