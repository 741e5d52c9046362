# SPDX-License-Identifier: GPL-3.0-or-later
"""`DiffusionEngine`: the engine interface around the warm model cache (see the package docstring)."""

import importlib.metadata
import importlib.util
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ... import imageops
from ...engine_api import (
    Engine,
    EngineUnavailable,
    NullProgress,
    Progress,
    StyleRequest,
    StyleResult,
    check_abort,
    register_engine,
)
from . import controls
from .params import DiffusionSettings, parse_params

SIZE_MULTIPLE = 8  # the VAE downsamples by 8 and the UNet needs whole latent pixels
MIN_SIDE = 64
MAX_PIXELS = 4096 * 4096
REQUIRED = ("torch", "diffusers", "transformers", "accelerate", "safetensors")
CONFIG_ROOT_ENV = "STYLEPASS_DIFFUSION_CONFIGS"
_INSTALL = "install the engine's venv: pip install -r requirements/engine-diffusion.txt"

# Style presets add words to the prompt; "none" leaves the prompt alone.
STYLE_PRESETS: dict[str, tuple[str, str, str]] = {
    "none": ("Prompt only", "", ""),
    "watercolour": ("Watercolour", "watercolour painting, soft washes, paper texture", "photo, 3d render"),
    "oil_painting": (
        "Oil painting",
        "oil painting, visible brush strokes, canvas texture",
        "photo, 3d render",
    ),
    "ink": ("Ink drawing", "ink drawing, cross-hatching, black and white", "colour, photo"),
    "anime": ("Anime", "anime style, cel shading, clean line art", "photo, realistic"),
    "concept_art": ("Concept art", "digital concept art, painterly, dramatic lighting", "photo"),
    "photo": ("Photograph", "photograph, natural light, detailed, sharp focus", "painting, drawing, cartoon"),
}


class OutOfMemory(EngineUnavailable):
    """The device ran out of memory; the reason names the settings that would lower the need."""


def snap_size(height: int, width: int) -> tuple[int, int]:
    """Nearest multiples of `SIZE_MULTIPLE` (halves round up), at least `MIN_SIDE`."""

    def snap(value: int) -> int:
        return max(MIN_SIDE, (value + SIZE_MULTIPLE // 2) // SIZE_MULTIPLE * SIZE_MULTIPLE)

    return snap(height), snap(width)


@register_engine
class DiffusionEngine(Engine):
    """Stable Diffusion 1.x/2.x and SDXL with ControlNets driven by Blender's exact passes.

    Args:
        config_root: Folder holding diffusers configs per family (`sd15/`, `sd2/`, `sdxl/`) for single-file
            checkpoints that have none beside them; None uses `$STYLEPASS_DIFFUSION_CONFIGS` when set.
        max_controlnets: ControlNets kept loaded between requests (least recently used dropped first).
    """

    id = "DIFFUSION"
    label = "Stable Diffusion + ControlNet"

    def __init__(self, config_root: str | os.PathLike[str] | None = None, max_controlnets: int = 4) -> None:
        if config_root is None and os.environ.get(CONFIG_ROOT_ENV):
            config_root = os.environ[CONFIG_ROOT_ENV]
        self.config_root = Path(config_root) if config_root is not None else None
        self.max_controlnets = max_controlnets
        self.load_counts: Counter = Counter()
        """Models loaded since construction, by kind ("base", "controlnet", "lora", "vae", "ip_adapter")."""
        self._cache: Any = None
        self._lock = threading.Lock()

    # -- Engine interface ---------------------------------------------------------------------------------

    def available(self) -> tuple[bool, str]:
        """Whether torch, diffusers and friends are importable (checked without importing them)."""
        missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
        if missing:
            return False, f"{', '.join(missing)} not installed; {_INSTALL}"
        return True, ""

    def styles(self) -> list[tuple[str, str]]:
        """Prompt presets: ("none", "Prompt only"), ("watercolour", "Watercolour"), ..."""
        return [(style_id, label) for style_id, (label, _, _) in STYLE_PRESETS.items()]

    def release(self) -> None:
        """Drop every loaded model and return device memory."""
        with self._lock:
            if self._cache is None:
                return
            device = self._cache.plan.device if self._cache.plan is not None else "cpu"
            self._cache.release()
            self._cache = None
        from .device import free_device_memory

        free_device_memory(device)

    def run(
        self,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
    ) -> StyleResult:
        """Generate one frame; see `Engine.run` and the package docstring for `params`.

        Raises:
            ValueError: an invalid request or param, a missing control map, a model that is missing, unsafe,
                not a pipeline or of the wrong family for a ControlNet (the message says what to change).
            EngineUnavailable: torch/diffusers missing; `OutOfMemory` when the device runs out of memory.
            Aborted: `abort` was set; the engine stays ready for the next request.
        """
        started = time.perf_counter()
        progress = progress if progress is not None else NullProgress()

        # 1. Check inputs
        request.validate()
        settings = parse_params(request.params)
        prompt, negative = self._styled_prompts(request, settings)
        settings = _replace(settings, negative_prompt=negative)
        out_h, out_w = request.output_size
        gen_h, gen_w = self._generation_size(request)
        for unit in settings.controlnets:
            if unit.map not in request.controls:
                raise ValueError(
                    f"params controlnet.{unit.map}.model is set but the request has no {unit.map!r} control map "
                    f"(controls given: {sorted(request.controls)})"
                )
        if request.style_image is not None and settings.ip_adapter is None:
            raise ValueError(
                "a style_image needs an IP-Adapter to steer the diffusion engine: set params ip_adapter.model "
                "(or leave style_image out)"
            )
        if request.style_blend is not None:
            raise ValueError(
                f"style_blend {request.style_blend!r} is not supported by {self.id}; describe both looks in "
                "params prompt instead"
            )
        self.require_available()
        notes: list[str] = []
        info: dict[str, Any] = {
            "engine": self.id,
            "mode": "img2img" if settings.img2img else "txt2img",
            "style": request.style,
            "params": dict(request.params),
            "seed": int(request.seed),
            "size": {"output": [out_h, out_w], "generated": [gen_h, gen_w]},
            "notes": notes,
        }
        base_h, base_w = (round(out_h * request.detail_scale), round(out_w * request.detail_scale))
        if (gen_h, gen_w) != (base_h, base_w):
            notes.append(
                f"generated at {gen_w}x{gen_h} (multiples of {SIZE_MULTIPLE}, at least {MIN_SIDE}) instead of "
                f"{base_w}x{base_h}, then resized to the output {out_w}x{out_h}"
            )

        # 2. Models (warm: only what changed is loaded)
        progress.update(0, 3, "Loading models")
        with self._lock:
            from .device import choose_device, free_device_memory, is_out_of_memory

            plan = choose_device(settings.device, settings.dtype)
            info["device"] = {"device": plan.device, "dtype": plan.dtype, "reason": plan.reason}
            if self._cache is None:
                from .pipeline import ModelCache

                self._cache = ModelCache(self.load_counts, self.config_root, self.max_controlnets)
            cache = self._cache
            load_started = time.perf_counter()
            try:
                info["loaded"] = cache.ensure(settings, plan, notes)
                load_seconds = time.perf_counter() - load_started
                check_abort(abort)

                # 3. Images at the generation size
                progress.update(1, 3, "Preparing images")
                beauty = imageops.resize(request.beauty, (gen_h, gen_w)) if settings.img2img else None
                images = [
                    controls.control_image(unit.map, request.controls[unit.map], (gen_h, gen_w))
                    for unit in settings.controlnets
                ]
                info["controlnets"] = [
                    {"map": u.map, "model": u.model, "weight": u.weight, "start": u.start, "end": u.end,
                     "convention": controls.CONVENTIONS[u.map][2]}
                    for u in settings.controlnets
                ]  # fmt: skip
                info["loras"] = [{"file": lora.file, "weight": lora.weight} for lora in settings.loras]

                # 4. Encode, denoise, decode
                generated, facts = cache.generate(
                    settings,
                    size=(gen_h, gen_w),
                    seed=int(request.seed),
                    prompt=prompt,
                    beauty=beauty,
                    control_images=images,
                    style_image=request.style_image,
                    progress=progress,
                    abort=abort,
                    steps_before=2,
                )
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                free_device_memory(plan.device)
                raise OutOfMemory(self.id, self._memory_advice(settings, plan, (gen_h, gen_w))) from error
            info.update(facts)
            compute = dict(cache.timer.seconds)

        # 5. Back to the output size, then strength, colours and the object selection
        image = self._composite(request, generated, (out_h, out_w))
        total = time.perf_counter() - started
        model_seconds = sum(compute.get(k, 0.0) for k in ("unet", "controlnet", "vae_decode"))
        info["timings"] = {
            "load": load_seconds,
            **{k: float(v) for k, v in compute.items()},
            "total": total,
            "overhead": total - load_seconds - model_seconds,
        }
        info["versions"] = _versions()
        progress.update(1, 1, "Done")
        return StyleResult(image=image, info=info)

    # -- Helpers ------------------------------------------------------------------------------------------

    def _styled_prompts(self, request: StyleRequest, settings: DiffusionSettings) -> tuple[str, str]:
        style = request.style or "none"
        if style not in STYLE_PRESETS:
            raise ValueError(
                f"style {request.style!r} is not a preset of {self.id}; use one of {list(STYLE_PRESETS)}"
            )
        _, positive, negative = STYLE_PRESETS[style]
        prompt = ", ".join(p for p in (settings.prompt.strip(), positive) if p)
        negative_prompt = ", ".join(p for p in (settings.negative_prompt.strip(), negative) if p)
        return prompt, negative_prompt

    @staticmethod
    def _generation_size(request: StyleRequest) -> tuple[int, int]:
        out_h, out_w = request.output_size
        gen_h, gen_w = snap_size(round(out_h * request.detail_scale), round(out_w * request.detail_scale))
        if gen_h * gen_w > MAX_PIXELS:
            raise ValueError(
                f"detail_scale {request.detail_scale!r} at output {out_w}x{out_h} asks for a {gen_w}x{gen_h} "
                f"generation; at most {MAX_PIXELS // 1_000_000} megapixels: lower detail_scale"
            )
        return gen_h, gen_w

    @staticmethod
    def _memory_advice(settings: DiffusionSettings, plan: Any, size: tuple[int, int]) -> str:
        tips = ["lower the resolution or detail_scale"]
        if settings.controlnets:
            tips.append(f"use fewer ControlNets (now {len(settings.controlnets)})")
        for name, on in (
            ("attention_slicing", settings.attention_slicing),
            ("vae_tiling", settings.vae_tiling),
            ("cpu_offload", settings.cpu_offload or plan.device != "cuda"),
        ):
            if not on:
                tips.append(f"set params {name}=True")
        if plan.dtype == "float32" and plan.device != "cpu":
            tips.append("use dtype float16")
        return f"out of memory generating {size[1]}x{size[0]} on {plan.device} ({plan.dtype}); " + "; ".join(
            tips
        )

    @staticmethod
    def _composite(request: StyleRequest, generated: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        out_h, out_w = size
        image = generated if generated.shape[:2] == size else imageops.resize(generated, size)
        image = np.clip(image, 0.0, 1.0)
        beauty = request.beauty
        if (
            request.keep_colours
            or request.strength < 1.0
            or request.include_objects
            or request.exclude_objects
        ):
            beauty = beauty if beauty.shape[:2] == size else imageops.resize(beauty, size)
        alpha = None
        if request.object_index is not None and (request.include_objects or request.exclude_objects):
            index = imageops.resize_nearest(request.object_index, (out_h, out_w))
            alpha = imageops.selection_alpha(index, request.include_objects, request.exclude_objects)
        return imageops.finish_with_beauty(
            image, beauty, keep_colours=request.keep_colours, strength=request.strength, alpha=alpha
        )


def _replace(settings: DiffusionSettings, **changes: Any) -> DiffusionSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def _versions() -> dict[str, str]:
    versions = {}
    for name in (*REQUIRED, "peft"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
