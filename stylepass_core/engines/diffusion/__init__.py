# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine: Stable Diffusion 1.x/2.x and SDXL, text-to-image or image-to-image from the beauty
pass, steered by multi-ControlNet on Blender's exact depth, normal, line-art and segmentation passes.

    StyleRequest(beauty, controls, DiffusionSettings, seed) -> DiffusionEngine.run -> StyleResult(image, info)

Importing this package registers `DIFFUSION` and imports neither torch nor diffusers: `available()` checks
for them with `importlib.util.find_spec`, and models load on the first `run`.

Modules: `settings` (every setting, typed and checked), `controls` (control map -> ControlNet image, per convention),
`models` (sources, pickle refusal, families, loading), `prompts` (chunked long-prompt embeddings),
`pipeline` (warm model cache, one run), `regions` (style groups' prompts confined to their regions),
`device` (device and dtype), `engine` (the `Engine`), `live` (the fast few-step preset of the viewport's
live preview: `live_settings`).

Request fields used
-------------------
* `settings`: a `DiffusionSettings` (`settings.py`: every field with its default, range and description).
* `beauty`: the start picture for image-to-image (*Denoise* below 1).
* `controls`: one map per enabled ControlNet unit ("depth", "normal", "lineart", "segmentation").
* `images["ip_adapter_image"]`: the IP-Adapter's reference picture (with an IP-Adapter set).
* `seed`: the noise seed (same seed, settings and device -> same pixels).
* `width`/`height`: the generation size is the output size snapped to multiples of 8 (at least 64); the result
  is resized back to the output size and `info["notes"]` says so.
* `regions`: style groups as regions of the one run (`regions.py`): group k's prompt, negative prompt and
  style preset condition only the pixels where `regions.layer == k`, the scene's everywhere else; all other
  settings are the request's. Not with an IP-Adapter.

The result carries in `info`: mode (txt2img/img2img), device and dtype, what was loaded, the seed, sizes,
prompt tokens and chunks, steps run, ControlNet units with their conventions, a regional run's regions (name,
tokens, coverage) and attention layers, notes and warnings, package versions, and timings (`load`,
`text_encoder`, `unet`, `controlnet`, `vae_decode`, `total`, and `overhead`: everything that is not loading or
UNet/ControlNet/VAE compute).
"""

from .engine import DiffusionEngine, OutOfMemory, snap_size
from .settings import CONTROL_MAPS, SCHEDULERS, STYLE_PRESETS, ControlUnit, DiffusionSettings, Lora

__all__ = [
    "CONTROL_MAPS",
    "SCHEDULERS",
    "STYLE_PRESETS",
    "ControlUnit",
    "DiffusionEngine",
    "DiffusionSettings",
    "Lora",
    "OutOfMemory",
    "snap_size",
]
