# SPDX-License-Identifier: GPL-3.0-or-later
"""`DiffusionSettings`: every setting of the diffusion engine, declared once (see `stylepass_core.settings`).

Importing this never imports torch. Names follow Stylepass's words, not diffusers': *Denoise* is how much of
the start picture img2img repaints (diffusers calls it `strength`; renamed at the pipeline call only).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

from ...conditioning import CONTROL_MAPS as CONTROL_MAPS  # the maps a ControlNet unit can take
from ...settings import (
    GROUPS_AS_REGIONS,
    EngineSettings,
    Settings,
    SettingsError,
    register_settings,
    setting,
)

MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_LORAS = 8

CONTROL_CHOICES = (
    ("depth", "Depth", "Normalised inverse depth from the Depth pass"),
    ("normal", "Normal", "Camera-space normals in normalbae colours"),
    ("lineart", "Line Art", "Geometric outlines and creases"),
    ("segmentation", "Segmentation", "Flat ADE20K colours per object"),
)

SCHEDULERS = (
    ("euler_a", "Euler a", "Euler ancestral: robust, varied"),
    ("dpmpp_2m_karras", "DPM++ 2M Karras", "Sharp results in fewer steps"),
    ("lcm", "LCM", "Latent consistency: 4-8 steps with an LCM model or LoRA"),
    ("model", "Model's Own", "The scheduler the model was saved with"),
    # Appended, not inserted: Blender stores an enum by its position.
    ("tcd", "TCD", "Trajectory consistency: 2-8 steps with a TCD or Hyper-SD LoRA"),
    ("euler_trailing", "Euler Trailing", "Euler on trailing timesteps: SDXL-Lightning-style 2-8 steps"),
    ("euler_a_trailing", "Euler a Trailing", "Euler ancestral on trailing timesteps: SD/SDXL-Turbo"),
)
FEW_STEP_SCHEDULERS = frozenset({"lcm", "tcd", "euler_trailing", "euler_a_trailing"})
"""Schedulers made for few-step (distilled) models."""

TINY_VAE = "(tiny)"
"""A `vae` value: the model's tiny autoencoder (TAESD), found by the rules in `models.find_tiny_vae`, else the
model's own VAE. Parenthesised so that it is no model id and no likely folder name (the worker would resolve a
folder of that name in a model folder like any other VAE)."""

# Prompt presets: words added to the prompt and the negative prompt.
STYLE_PRESETS: dict[str, tuple[str, str, str]] = {
    "none": ("Prompt Only", "", ""),
    "watercolour": ("Watercolour", "watercolour painting, soft washes, paper texture", "photo, 3d render"),
    "oil_painting": (
        "Oil Painting",
        "oil painting, visible brush strokes, canvas texture",
        "photo, 3d render",
    ),
    "ink": ("Ink Drawing", "ink drawing, cross-hatching, black and white", "colour, photo"),
    "anime": ("Anime", "anime style, cel shading, clean line art", "photo, realistic"),
    "concept_art": ("Concept Art", "digital concept art, painterly, dramatic lighting", "photo"),
    "photo": ("Photograph", "photograph, natural light, detailed, sharp focus", "painting, drawing, cartoon"),
}

DEVICES = (
    ("auto", "Automatic", "CUDA, then Apple Metal, then CPU"),
    ("cuda", "CUDA", "NVIDIA GPU (fp16)"),
    ("mps", "Apple Metal", "Apple silicon GPU"),
    ("cpu", "CPU", "Slow but always there (fp32)"),
)

DTYPES = (
    ("auto", "Automatic", "float16 on CUDA and Apple Metal, float32 on the CPU"),
    ("float16", "Half (float16)", "Half the memory of float32 on a GPU"),
    ("bfloat16", "bfloat16", "Half precision with float32's range (recent GPUs)"),
    ("float32", "Full (float32)", "Most exact, twice the memory"),
)


class IpAdapter(NamedTuple):
    """IP-Adapter weights and their scale, as the pipeline loads them."""

    model: str
    subfolder: str
    weight_name: str
    scale: float


def shared(name: str):
    """A setting the diffusion and ComfyUI engines share (same name, meaning, default and range), declared once
    here: `prompt: str = shared("prompt")` in each engine's settings class."""
    specs = {
        "prompt": lambda: setting("", "Prompt", "What the image should look like (any length)"),
        "negative_prompt": lambda: setting(
            "blurry, low quality", "Negative Prompt", "What the image should not look like"
        ),
        "style_preset": lambda: setting(
            "none",
            "Style",
            "Words added to the prompt for a common look",
            choices=tuple(
                (key, label, f"Adds: {words}" if words else "The prompt alone")
                for key, (label, words, _) in STYLE_PRESETS.items()
            ),
        ),
        "steps": lambda: setting(20, "Steps", "Denoising steps", min=1, max=MAX_STEPS, soft_max=60),
        "guidance": lambda: setting(
            7.0,
            "Guidance",
            "How closely to follow the prompt (1 or less turns it off)",
            min=0.0,
            max=MAX_GUIDANCE,
            soft_max=15.0,
        ),
        "denoise": lambda: setting(
            0.75,
            "Denoise",
            "How much of the beauty pass is repainted: 1 paints from noise (text to image), lower keeps more of "
            "the render (image to image)",
            min=0.01,
            max=1.0,
            subtype="FACTOR",
        ),
    }
    return specs[name]()  # a new field each time: a dataclass field belongs to one class


def check_sampling(settings) -> None:
    """The rules the diffusion and ComfyUI engines share: at least one step of image to image, one control per
    pass, each control and LoRA with a model, no LoRA twice and at most `MAX_LORAS`.

    Raises:
        SettingsError: quoting the values.
    """
    if settings.denoise < 1.0 and int(settings.steps * settings.denoise) < 1:
        raise SettingsError(
            f"steps {settings.steps} with denoise {settings.denoise} leaves no denoising step (image to image runs "
            f"steps x denoise steps): raise steps to at least {math.ceil(1 / settings.denoise)} or denoise"
        )
    maps = [unit.map for unit in settings.controlnets]
    twice = sorted({m for m in maps if maps.count(m) > 1})
    if twice:
        raise SettingsError(f"two enabled controls use the {twice[0]} pass: keep one")
    for unit in settings.controlnets:
        if not unit.model.strip():
            raise SettingsError(f"the {unit.map} control has no ControlNet model: set one or disable it")
    files = [lora.file.strip() for lora in settings.active_loras]
    if len(files) > MAX_LORAS:
        raise SettingsError(f"{len(files)} LoRAs are enabled; at most {MAX_LORAS}")
    if any(not file for file in files):
        raise SettingsError("an enabled LoRA has no file: set one or disable it")
    duplicates = sorted({file for file in files if files.count(file) > 1})
    if duplicates:
        raise SettingsError(f"LoRA {duplicates[0]!r} is listed twice: keep one and set its weight")


def styled_prompts(prompt: str, negative_prompt: str, style_preset: str) -> tuple[str, str]:
    """The prompt and negative prompt with the style preset's words added, as both engines send them."""
    _, positive, negative = STYLE_PRESETS[style_preset]
    return (
        ", ".join(p for p in (prompt.strip(), positive) if p),
        ", ".join(p for p in (negative_prompt.strip(), negative) if p),
    )


@dataclass(frozen=True)
class ControlUnit(Settings):
    """One ControlNet unit: which control pass drives which ControlNet, how strongly, and when."""

    enabled: bool = setting(True, "Enabled", "Use this control")
    map: str = setting("depth", "Pass", "Which control pass drives this ControlNet", choices=CONTROL_CHOICES)
    model: str = setting(
        "",
        "ControlNet",
        "ControlNet model: a model id, a diffusers folder or a .safetensors file",
        model=True,
    )
    weight: float = setting(1.0, "Weight", "How strongly this control steers the image", min=0.0, max=2.0)
    start: float = setting(0.0, "Start", "Share of the steps before this control starts", min=0.0, max=1.0)
    end: float = setting(1.0, "End", "Share of the steps after which this control stops", min=0.0, max=1.0)

    def check(self) -> None:
        if not self.start < self.end:
            raise SettingsError(
                f"the {self.map} control starts at {self.start} but ends at {self.end}: start < end"
            )


@dataclass(frozen=True)
class Lora(Settings):
    """One LoRA: the file and how strongly it applies."""

    enabled: bool = setting(True, "Enabled", "Use this LoRA")
    file: str = setting("", "LoRA", "A LoRA .safetensors file", model=True, subtype="FILE_PATH")
    weight: float = setting(
        1.0, "Weight", "How strongly the LoRA applies (negative inverts it)", min=-4.0, max=4.0
    )


@register_settings
@dataclass(frozen=True)
class DiffusionSettings(EngineSettings):
    """Stable Diffusion 1.x/2.x and SDXL with ControlNets driven by the exact passes."""

    ENGINE = "DIFFUSION"
    LABEL = "Diffusion"
    DESCRIPTION = (
        "Stable Diffusion with ControlNets driven by the exact passes, in a worker process (install it in "
        "the preferences, or connect a remote worker)"
    )
    ORDER = 20
    PROPERTY = "diffusion"
    NEEDS_WORKER = True
    USES_SEED = True
    # One denoising run; a group's prompt, negative prompt and style apply inside its region only (`regions.py`).
    STYLE_GROUPS = GROUPS_AS_REGIONS
    REGION_FIELDS = ("prompt", "negative_prompt", "style_preset")
    HOST_FIELDS = ("device", "allow_network")

    # Model
    model: str = setting(
        "",
        "Model",
        "Stable Diffusion model: a model id, a diffusers folder or a .safetensors checkpoint",
        model=True,
    )
    model_config: str = setting(
        "",
        "Model Config",
        "Diffusers folder with the configs (and tokenizer) of a single-file checkpoint; empty: a folder beside "
        "the checkpoint named like it, else the engine's config folder for its family",
        model=True,
        subtype="DIR_PATH",
    )
    vae: str = setting(
        "",
        "VAE",
        "A VAE to use instead of the model's own (folder, .safetensors file or model id); (tiny): the model's "
        "tiny autoencoder (vae_tiny/ in the model folder, or a taesd/taesdxl folder beside it or in a model "
        "folder), else its own VAE",
        model=True,
    )
    # Prompt
    prompt: str = shared("prompt")
    negative_prompt: str = shared("negative_prompt")
    style_preset: str = shared("style_preset")
    clip_skip: int = setting(
        0,
        "Clip Skip",
        "Leave out this many of the text encoder's last layers (1 or 2 suit many anime and illustration "
        "models); 0 uses them all",
        min=0,
        max=11,
    )
    # Sampling
    steps: int = shared("steps")
    guidance: float = shared("guidance")
    denoise: float = shared("denoise")
    scheduler: str = setting("dpmpp_2m_karras", "Scheduler", "Sampling method", choices=SCHEDULERS)
    # Steering
    controls: tuple[ControlUnit, ...] = setting((), "Controls", "ControlNet units", item=ControlUnit)
    loras: tuple[Lora, ...] = setting((), "LoRAs", "LoRA files mixed into the model", item=Lora)
    ip_adapter_model: str = setting(
        "",
        "IP-Adapter",
        "IP-Adapter folder or model id (h94/IP-Adapter layout); with a reference image it steers the look",
        model=True,
    )
    ip_adapter_subfolder: str = setting(
        "models", "Subfolder", "Subfolder of the IP-Adapter holding the weights", model_part=True
    )
    ip_adapter_weight_name: str = setting(
        "ip-adapter_sd15.safetensors",
        "Weights",
        "Weight file in the subfolder (ip-adapter_sdxl.safetensors for SDXL)",
        model_part=True,
    )
    ip_adapter_image: str = setting(
        "", "Reference Image", "The picture whose look the IP-Adapter follows", image=True
    )
    ip_adapter_scale: float = setting(
        0.6,
        "Reference Scale",
        "How strongly the reference picture steers",
        min=0.0,
        max=2.0,
        subtype="FACTOR",
    )
    # Memory and precision
    dtype: str = setting("auto", "Precision", "Number format of the model weights", choices=DTYPES)
    attention_slicing: bool = setting(
        False, "Attention Slicing", "Compute attention in slices: less memory, a little slower"
    )
    vae_tiling: bool = setting(False, "VAE Tiling", "Decode the image in tiles: large frames on small GPUs")
    cpu_offload: bool = setting(
        False, "CPU Offload", "Keep models in RAM and move each to the GPU only while it runs (CUDA only)"
    )
    allow_pickle: bool = setting(
        False,
        "Allow Pickle Files",
        "Allow .ckpt/.pt/.pth/.bin weights. Loading a pickle can run code hidden in the file: only for files "
        "from a source you trust",
    )
    # Host (from the add-on's preferences)
    device: str = setting("auto", "Device", "Device for the diffusion engine", choices=DEVICES)
    allow_network: bool = setting(
        False,
        "Allow Model Downloads",
        "Let the worker download models by id (only when Blender's online access is allowed too)",
    )

    # -- rules across fields -----------------------------------------------------------------------------

    def check(self) -> None:
        if self.cpu_offload and self.device in ("cpu", "mps"):
            raise SettingsError(f"CPU Offload needs a CUDA device, but the device is {self.device!r}")
        check_sampling(self)
        if self.ip_adapter_model.strip() and self.attention_slicing:
            raise SettingsError(
                "Attention Slicing cannot be combined with an IP-Adapter (slicing replaces its attention layers): "
                "turn one of them off"
            )

    # -- capabilities ------------------------------------------------------------------------------------

    def not_ready(self) -> str:
        if not self.model.strip():
            return (
                "The diffusion engine needs a model: set Model to a model id, a diffusers folder or a .safetensors "
                "file (or use a preset)."
            )
        return ""

    def control_maps(self) -> tuple[str, ...]:
        return tuple(unit.map for unit in self.controlnets)

    def required_images(self) -> dict[str, str]:
        if self.ip_adapter_model.strip():
            return {"ip_adapter_image": "an IP-Adapter is set"}
        return {}

    def uses_beauty(self) -> bool:
        return self.img2img

    def continuation(self, denoise: float) -> "DiffusionSettings":
        # Repaint at most `denoise` of the warped previous frame, but keep at least one step.
        amount = max(min(self.denoise, denoise), min(1.0, 1.0 / self.steps + 1e-6))
        return self.replace(denoise=amount)

    def live(self) -> "DiffusionSettings":
        # The fast few-step preset (`live.py`); imported here because live.py imports this module.
        from .live import live_settings

        return live_settings(self)

    # -- derived views the pipeline reads ----------------------------------------------------------------

    @property
    def img2img(self) -> bool:
        """Whether the run starts from the beauty pass (denoise below 1)."""
        return self.denoise < 1.0

    @property
    def controlnets(self) -> tuple[ControlUnit, ...]:
        """The enabled ControlNet units."""
        return tuple(unit for unit in self.controls if unit.enabled)

    @property
    def ip_adapter(self) -> "IpAdapter | None":
        """The IP-Adapter to load, or None when none is set."""
        if not self.ip_adapter_model.strip():
            return None
        return IpAdapter(
            self.ip_adapter_model.strip(),
            self.ip_adapter_subfolder,
            self.ip_adapter_weight_name,
            self.ip_adapter_scale,
        )

    @property
    def active_loras(self) -> tuple[Lora, ...]:
        """The enabled LoRAs."""
        return tuple(lora for lora in self.loras if lora.enabled)
