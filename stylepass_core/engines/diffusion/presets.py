# SPDX-License-Identifier: GPL-3.0-or-later
"""Common diffusion set-ups: model, sampler and controls in one click (the prompt stays the artist's).

Model ids as published by their authors; artists can point any field at local files instead.
"""

from typing import NamedTuple

from .settings import ControlUnit, DiffusionSettings


class Preset(NamedTuple):
    label: str
    description: str
    changes: dict  # DiffusionSettings fields


PRESETS: dict[str, Preset] = {
    "SD15_DEPTH_LINEART": Preset(
        "SD 1.5 + Depth + Line Art",
        "Stable Diffusion 1.5 following the scene's depth and outlines",
        {
            "model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "scheduler": "dpmpp_2m_karras",
            "steps": 20,
            "guidance": 7.0,
            "controls": (
                ControlUnit(map="depth", model="lllyasviel/control_v11f1p_sd15_depth", weight=1.0, end=1.0),
                ControlUnit(map="lineart", model="lllyasviel/control_v11p_sd15_lineart", weight=0.8, end=0.8),
            ),
        },
    ),
    "SDXL_DEPTH": Preset(
        "SDXL + Depth",
        "Stable Diffusion XL following the scene's depth",
        {
            "model": "stabilityai/stable-diffusion-xl-base-1.0",
            "scheduler": "dpmpp_2m_karras",
            "steps": 25,
            "guidance": 6.0,
            "ip_adapter_weight_name": "ip-adapter_sdxl.safetensors",
            "controls": (ControlUnit(map="depth", model="diffusers/controlnet-depth-sdxl-1.0", weight=0.8),),
        },
    ),
    "LCM_PREVIEW": Preset(
        "Fast Preview (LCM)",
        "A latent-consistency model: usable previews in 4 steps",
        {
            "model": "SimianLuo/LCM_Dreamshaper_v7",
            "scheduler": "lcm",
            "steps": 4,
            "guidance": 1.5,
            "controls": (ControlUnit(map="depth", model="lllyasviel/control_v11f1p_sd15_depth", weight=0.8),),
        },
    ),
}


def apply_preset(settings: DiffusionSettings, key: str) -> DiffusionSettings:
    """`settings` with the preset's model, sampler and controls (prompt and everything else kept).

    Raises:
        KeyError: no preset has that key.
    """
    return settings.replace(**PRESETS[key].changes)
