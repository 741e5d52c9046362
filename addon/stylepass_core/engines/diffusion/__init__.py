# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine: Stable Diffusion 1.x/2.x and SDXL, text-to-image or image-to-image from the beauty
pass, steered by multi-ControlNet on Blender's exact depth, normal, line-art and segmentation passes.

    StyleRequest(beauty, controls, seed, params) -> DiffusionEngine.run -> StyleResult(image, info)

Importing this package registers `DIFFUSION` and imports neither torch nor diffusers: `available()` checks
for them with `importlib.util.find_spec`, and models load on the first `run`.

Modules: `params` (the settings below, checked), `controls` (control map -> ControlNet image, per convention),
`models` (sources, pickle refusal, families, loading), `prompts` (chunked long-prompt embeddings),
`pipeline` (warm model cache, one run), `device` (device and dtype), `engine` (the `Engine`).

Request fields used
-------------------
* `beauty`: start image for image-to-image (`params denoise < 1`); also the base for `strength`,
  `keep_colours` and include/exclude object selections, applied after generation as in the neural-style engine.
* `controls`: one map per enabled ControlNet unit ("depth", "normal", "lineart", "segmentation").
* `seed`: the noise seed (same seed, settings and device -> same pixels).
* `width`/`height`/`detail_scale`: the generation size is the output size times `detail_scale`, snapped to
  multiples of 8 (at least 64); the result is resized back to the output size and `info["notes"]` says so.
* `style`: a prompt preset (`styles()`), "none" or "" for the prompt alone.
* `style_image`: the IP-Adapter reference picture (needs `ip_adapter.model`).

params scheme (flat keys, values str/int/float/bool; unknown keys are refused)
-----------------------------------------------------------------------------
    model                    str    required: diffusers folder | .safetensors checkpoint | HF id "org/name"
    model_config             str    config folder for a single-file checkpoint (default: beside it, same name;
                                    then <config_root>/<family>)
    vae                      str    replacement VAE (folder, file or HF id; AutoencoderTiny folders work too)
    allow_network            bool   False: HF ids only from the local HF cache
    allow_pickle             bool   False: .ckpt/.pt/.pth/.bin refused (loading pickle can run code)
    prompt, negative_prompt  str    any length; > 75 tokens are chunked, never cut (at most 600 tokens)
    steps                    int    20, in [1, 150]
    guidance                 float  7.0, in [0, 30]
    denoise                  float  1.0 = txt2img; in (0, 1) = img2img from the beauty
    scheduler                str    euler_a | dpmpp_2m_karras | lcm | model
    device, dtype            str    auto | cuda | mps | cpu;  auto | float16 | bfloat16 | float32
    attention_slicing, vae_tiling, cpu_offload   bool   memory savers (cpu_offload: CUDA only)
    controlnet.<map>.model   str    enables the unit; <map> in depth, normal, lineart, segmentation
    controlnet.<map>.weight  float  1.0, in [0, 2]
    controlnet.<map>.start   float  0.0 } fraction of the steps the unit is active;
    controlnet.<map>.end     float  1.0 } start < end
    lora.<n>.file            str    LoRA .safetensors, n = 1..8
    lora.<n>.weight          float  1.0, in [-4, 4]
    ip_adapter.model         str    IP-Adapter folder or HF id (h94/IP-Adapter layout)
    ip_adapter.subfolder     str    "models"
    ip_adapter.weight_name   str    "ip-adapter_sd15.safetensors"
    ip_adapter.scale         float  0.6, in [0, 2]

`params.PARAMS` holds the same table with full descriptions (`params.params_table()` prints it).

Example:
    {"model": "/models/dreamshaper_8.safetensors", "prompt": "a watercolour village", "steps": 20,
     "controlnet.depth.model": "/models/control_v11f1p_sd15_depth", "controlnet.depth.weight": 0.8,
     "controlnet.lineart.model": "/models/control_v11p_sd15_lineart", "controlnet.lineart.end": 0.6,
     "lora.1.file": "/models/lcm-lora-sdv1-5.safetensors", "scheduler": "lcm", "guidance": 1.5, "steps": 4}

`result.info` records the mode, sizes, device, what was loaded in this request (`loaded`: empty when warm),
prompt tokens and chunks, steps run, ControlNet units with their conventions, notes and warnings, package
versions, and timings (`load`, `text_encoder`, `unet`, `controlnet`, `vae_decode`, `total`, and `overhead`:
everything that is not loading or UNet/ControlNet/VAE compute).
"""

from .engine import STYLE_PRESETS, DiffusionEngine, OutOfMemory, snap_size
from .params import CONTROL_MAPS, PARAMS, SCHEDULERS, parse_params

__all__ = [
    "CONTROL_MAPS",
    "PARAMS",
    "SCHEDULERS",
    "STYLE_PRESETS",
    "DiffusionEngine",
    "OutOfMemory",
    "parse_params",
    "snap_size",
]
