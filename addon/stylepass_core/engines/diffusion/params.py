# SPDX-License-Identifier: GPL-3.0-or-later
"""`StyleRequest.params` for the diffusion engine: the documented keys, their checks, and the parsed settings.

`params` values must be float, int, str or bool (see `engine_api`), so nested settings use dotted keys:
`controlnet.depth.model`, `lora.1.file`, `ip_adapter.scale`. Parsing never imports torch.
"""

import math
import re
from dataclasses import dataclass

# Control maps a ControlNet unit can take, in the order units are passed to the pipeline.
CONTROL_MAPS: tuple[str, ...] = ("depth", "normal", "lineart", "segmentation")
SCHEDULERS: tuple[str, ...] = ("euler_a", "dpmpp_2m_karras", "lcm", "model")
DEVICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
DTYPES: tuple[str, ...] = ("auto", "float16", "bfloat16", "float32")
MAX_LORAS = 8
MAX_STEPS = 150
MAX_GUIDANCE = 30.0

# name -> (type, default, description). Types: "str", "bool", "int", "float".
PARAMS: dict[str, tuple[str, object, str]] = {
    "model": (
        "str",
        "",
        "Required. A local diffusers pipeline folder (holds model_index.json), a single .safetensors "
        "checkpoint, or a Hugging Face id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5'.",
    ),
    "model_config": (
        "str",
        "",
        "Local diffusers folder with the configs (and tokenizer) for a single-file checkpoint. Default: a "
        "folder beside the checkpoint named like it (foo.safetensors -> foo/), else the engine's config "
        "root for the checkpoint's family (<root>/sd15, <root>/sd2, <root>/sdxl).",
    ),
    "vae": ("str", "", "Optional VAE to use instead of the model's: folder, .safetensors file or HF id."),
    "allow_network": (
        "bool",
        False,
        "Allow downloading Hugging Face ids into the standard HF cache. Off: only what is already cached.",
    ),
    "allow_pickle": (
        "bool",
        False,
        "Allow pickle weight files (.ckpt, .pt, .pth, .bin). Loading a pickle can run code hidden in the "
        "file: only for files from a source you trust. A warning is recorded when used.",
    ),
    "prompt": ("str", "", "What to draw. Any length: prompts over 75 tokens are encoded in chunks."),
    "negative_prompt": ("str", "", "What to avoid. Any length."),
    "steps": ("int", 20, f"Denoising steps in [1, {MAX_STEPS}] (img2img runs about steps * denoise)."),
    "guidance": ("float", 7.0, f"Classifier-free guidance in [0, {MAX_GUIDANCE}]; <= 1 turns it off."),
    "denoise": (
        "float",
        1.0,
        "In (0, 1]. 1 = text-to-image (the beauty is not used as a start); below 1 = image-to-image from "
        "the beauty pass, changing this much of it.",
    ),
    "scheduler": ("str", "euler_a", f"One of {', '.join(SCHEDULERS)} ('model' keeps the model's own)."),
    "device": ("str", "auto", "auto (CUDA, then MPS, then CPU), cuda, mps or cpu."),
    "dtype": ("str", "auto", "auto (float16 on CUDA/MPS, float32 on CPU), float16, bfloat16 or float32."),
    "attention_slicing": ("bool", False, "Compute attention in slices: less memory, a little slower."),
    "vae_tiling": ("bool", False, "Decode the image in tiles: large frames on small GPUs."),
    "cpu_offload": ("bool", False, "Keep models in RAM and move each to the GPU only while it runs (CUDA)."),
}
for _map in CONTROL_MAPS:
    PARAMS[f"controlnet.{_map}.model"] = (
        "str",
        "",
        f"ControlNet for the {_map} map (folder, .safetensors file or HF id); setting it enables the unit. "
        f"<map> is one of {', '.join(CONTROL_MAPS)}.",
    )
    PARAMS[f"controlnet.{_map}.weight"] = ("float", 1.0, "Conditioning scale of this unit in [0, 2].")
    PARAMS[f"controlnet.{_map}.start"] = (
        "float",
        0.0,
        "Fraction of the steps where the unit starts, [0, 1].",
    )
    PARAMS[f"controlnet.{_map}.end"] = ("float", 1.0, "Fraction of the steps where it stops, (start, 1].")
for _n in range(1, MAX_LORAS + 1):
    PARAMS[f"lora.{_n}.file"] = ("str", "", "A LoRA .safetensors file; set it to enable this slot.")
    PARAMS[f"lora.{_n}.weight"] = ("float", 1.0, "Strength of this LoRA in [-4, 4].")
PARAMS.update(
    {
        "ip_adapter.model": (
            "str",
            "",
            "IP-Adapter repository folder or HF id (h94/IP-Adapter layout); the request's style_image is "
            "the reference picture. Set it to enable IP-Adapter.",
        ),
        "ip_adapter.subfolder": ("str", "models", "Subfolder of ip_adapter.model holding the weights."),
        "ip_adapter.weight_name": (
            "str",
            "ip-adapter_sd15.safetensors",
            "Weight file inside the subfolder, e.g. ip-adapter_sdxl.safetensors for SDXL.",
        ),
        "ip_adapter.scale": ("float", 0.6, "How strongly the reference picture steers, in [0, 2]."),
    }
)


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit: which control map drives which ControlNet, how strongly, and when."""

    map: str
    model: str
    weight: float
    start: float
    end: float


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA slot: the file and its weight."""

    slot: int
    file: str
    weight: float


@dataclass(frozen=True)
class IpAdapterSpec:
    """IP-Adapter weights and their scale."""

    model: str
    subfolder: str
    weight_name: str
    scale: float


@dataclass(frozen=True)
class DiffusionSettings:
    """Every setting of one diffusion request, checked; see `PARAMS` for meanings and defaults."""

    model: str
    model_config: str
    vae: str
    allow_network: bool
    allow_pickle: bool
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    denoise: float
    scheduler: str
    device: str
    dtype: str
    attention_slicing: bool
    vae_tiling: bool
    cpu_offload: bool
    controlnets: tuple[ControlUnit, ...]
    loras: tuple[LoraSpec, ...]
    ip_adapter: IpAdapterSpec | None

    @property
    def img2img(self) -> bool:
        """Whether the run starts from the beauty pass (denoise below 1)."""
        return self.denoise < 1.0


_DOTTED = re.compile(r"^(controlnet\.[a-z]+|lora\.\d+|ip_adapter)\.")


def _typed(name: str, value: object) -> object:
    kind = PARAMS[name][0]
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            value = float(value)
    if not ok:
        raise ValueError(f"params[{name!r}] must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")
    return value


def _in_range(name: str, value: float, low: float, high: float, *, open_low: bool = False) -> None:
    if value < low or value > high or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ValueError(f"params[{name!r}] must be in {bracket}{low}, {high}], got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"params[{name!r}] must be one of {list(choices)}, got {value!r}")


def parse_params(params: dict[str, object]) -> DiffusionSettings:
    """Check `StyleRequest.params` against `PARAMS` and fill in the defaults.

    Args:
        params: name -> float, int, str or bool.

    Returns:
        The parsed settings.

    Raises:
        ValueError: naming the first unknown key, wrongly typed value, out-of-range value, or setting that
            needs another (a unit's weight without its model, a start after its end, ...).
    """
    # 1. Names and types
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        hint = ""
        for key in unknown:
            if key.startswith("controlnet.") and key.split(".")[1] not in CONTROL_MAPS:
                hint = f"; control maps are {list(CONTROL_MAPS)}"
            elif key.startswith("lora.") and _DOTTED.match(key):
                hint = f"; LoRA slots are lora.1 ... lora.{MAX_LORAS}"
        known = sorted(k for k in PARAMS if "." not in k)
        raise ValueError(
            f"unknown params {unknown} for DIFFUSION{hint}; known: {known} plus controlnet.<map>.model/weight/"
            f"start/end, lora.<1-{MAX_LORAS}>.file/weight, ip_adapter.model/subfolder/weight_name/scale"
        )
    values = {name: _typed(name, value) for name, value in params.items()}

    def get(name: str) -> object:
        return values.get(name, PARAMS[name][1])

    # 2. Model and prompts
    model = str(get("model")).strip()
    if not model:
        raise ValueError(
            "params['model'] is empty; give a diffusers folder, a .safetensors checkpoint or a Hugging Face id"
        )
    steps = int(get("steps"))
    _in_range("steps", steps, 1, MAX_STEPS)
    guidance = float(get("guidance"))
    _in_range("guidance", guidance, 0.0, MAX_GUIDANCE)
    denoise = float(get("denoise"))
    _in_range("denoise", denoise, 0.0, 1.0, open_low=True)
    if denoise < 1.0 and int(steps * denoise) < 1:
        raise ValueError(
            f"params steps={steps} with denoise={denoise} leaves no denoising step (img2img runs "
            f"int(steps * denoise) steps); raise steps to at least {math.ceil(1 / denoise)} or denoise"
        )
    scheduler = str(get("scheduler"))
    _choice("scheduler", scheduler, SCHEDULERS)
    device = str(get("device"))
    _choice("device", device, DEVICES)
    dtype = str(get("dtype"))
    _choice("dtype", dtype, DTYPES)
    cpu_offload = bool(get("cpu_offload"))
    if cpu_offload and device in ("cpu", "mps"):
        raise ValueError(f"params cpu_offload=True needs a CUDA device, but device is {device!r}")

    # 3. ControlNet units
    units = []
    for name in CONTROL_MAPS:
        prefix = f"controlnet.{name}."
        source = str(get(prefix + "model")).strip()
        given = [key for key in values if key.startswith(prefix) and not key.endswith(".model")]
        if not source:
            if given:
                raise ValueError(
                    f"params {sorted(given)} are set but {prefix}model is empty; set the ControlNet"
                )
            continue
        weight, start, end = (float(get(prefix + part)) for part in ("weight", "start", "end"))
        _in_range(prefix + "weight", weight, 0.0, 2.0)
        _in_range(prefix + "start", start, 0.0, 1.0)
        _in_range(prefix + "end", end, 0.0, 1.0)
        if not start < end:
            raise ValueError(f"params {prefix}start ({start}) must be below {prefix}end ({end})")
        units.append(ControlUnit(name, source, weight, start, end))

    # 4. LoRAs
    loras = []
    for slot in range(1, MAX_LORAS + 1):
        prefix = f"lora.{slot}."
        file = str(get(prefix + "file")).strip()
        if not file:
            if prefix + "weight" in values:
                raise ValueError(f"params {prefix}weight is set but {prefix}file is empty")
            continue
        weight = float(get(prefix + "weight"))
        _in_range(prefix + "weight", weight, -4.0, 4.0)
        loras.append(LoraSpec(slot, file, weight))
    files = [lora.file for lora in loras]
    duplicates = sorted({file for file in files if files.count(file) > 1})
    if duplicates:
        raise ValueError(
            f"LoRA {duplicates} is in more than one lora.<n>.file slot; use one slot and its weight"
        )

    # 5. IP-Adapter
    ip_adapter = None
    ip_model = str(get("ip_adapter.model")).strip()
    if ip_model:
        scale = float(get("ip_adapter.scale"))
        _in_range("ip_adapter.scale", scale, 0.0, 2.0)
        ip_adapter = IpAdapterSpec(
            ip_model, str(get("ip_adapter.subfolder")), str(get("ip_adapter.weight_name")), scale
        )
        if bool(get("attention_slicing")):
            raise ValueError(
                "params attention_slicing=True cannot be combined with ip_adapter.model: slicing replaces the "
                "IP-Adapter's attention layers; turn one of them off"
            )
    elif any(key.startswith("ip_adapter.") for key in values):
        raise ValueError("params ip_adapter.* are set but ip_adapter.model is empty; set the IP-Adapter")

    return DiffusionSettings(
        model=model,
        model_config=str(get("model_config")).strip(),
        vae=str(get("vae")).strip(),
        allow_network=bool(get("allow_network")),
        allow_pickle=bool(get("allow_pickle")),
        prompt=str(get("prompt")),
        negative_prompt=str(get("negative_prompt")),
        steps=steps,
        guidance=guidance,
        denoise=denoise,
        scheduler=scheduler,
        device=device,
        dtype=dtype,
        attention_slicing=bool(get("attention_slicing")),
        vae_tiling=bool(get("vae_tiling")),
        cpu_offload=cpu_offload,
        controlnets=tuple(units),
        loras=tuple(loras),
        ip_adapter=ip_adapter,
    )


def params_table() -> str:
    """The params scheme as a plain-text table (name, type, default, meaning), for docs and `--help`."""
    rows = []
    for name, (kind, default, text) in PARAMS.items():
        if name.startswith(("controlnet.", "lora.")) and not name.startswith(
            ("controlnet.depth.", "lora.1.")
        ):
            continue
        shown = name.replace("controlnet.depth.", "controlnet.<map>.").replace("lora.1.", "lora.<n>.")
        rows.append(f"{shown:28} {kind:5} {default!r:32} {text}")
    return "\n".join(rows)
