# SPDX-License-Identifier: GPL-3.0-or-later
"""`DiffusionEngine`: the engine interface around the warm model cache (see the package docstring)."""

import importlib.metadata
import importlib.util
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import imageops
from ...engine_api import (
    Aborted,
    BatchItem,
    Engine,
    EngineUnavailable,
    NullProgress,
    Progress,
    SharedProgress,
    StyleRequest,
    StyleResult,
    check_abort,
    register_engine,
)
from . import controls
from .pipeline import GenerateInput
from .regions import SCENE, RegionPrompts
from .settings import DiffusionSettings, styled_prompts

SIZE_MULTIPLE = 8  # the VAE downsamples by 8 and the UNet needs whole latent pixels
MIN_SIDE = 64
MAX_PIXELS = 4096 * 4096
REQUIRED = ("torch", "diffusers", "transformers", "accelerate", "safetensors")
CONFIG_ROOT_ENV = "STYLEPASS_DIFFUSION_CONFIGS"
_INSTALL = "install the engine's venv: pip install -r requirements/engine-diffusion.txt"


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

    id = DiffusionSettings.ENGINE
    label = "Stable Diffusion + ControlNet"
    settings_type = DiffusionSettings

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

    def loaded_models(self) -> list[str]:
        """What is in memory now ("base: <path>", "vae: <path>", "controlnet: <path>", ...), as of the last
        request; the worker shows it in `/v1/health`. Never waits for a running request."""
        cache = self._cache
        return list(cache.loaded_models) if cache is not None else []

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
        """Generate one frame; see `Engine.run`; `request.settings` is a `DiffusionSettings`.

        With `request.regions`, one denoising run in which each style group's prompt, negative prompt and style
        preset condition only its region (`regions.py`); everything else is `request.settings`.

        Raises:
            ValueError: an invalid request or param, a missing control map, a model that is missing, unsafe,
                not a pipeline or of the wrong family for a ControlNet, regions with an IP-Adapter (the message
                says what to change).
            EngineUnavailable: torch/diffusers missing; `OutOfMemory` when the device runs out of memory.
            Aborted: `abort` was set; the engine stays ready for the next request.
        """
        progress = progress if progress is not None else NullProgress()
        return self._generate([self._prepare(request)], progress, abort)[0]

    def batch_key(self, request: StyleRequest) -> Hashable | None:
        """Frames that differ only in their pixels and seed share a key (`run_batch` runs them as one batch).
        Regions and an IP-Adapter put processors on the attention layers for one frame: those run alone."""
        settings = request.settings
        if request.regions is not None or getattr(settings, "ip_adapter", None) is not None:
            return None
        shapes = sorted((name, tuple(array.shape)) for name, array in request.controls.items())
        plain = json.dumps(settings.to_plain(), sort_keys=True)
        return (self.id, plain, request.output_size, tuple(request.beauty.shape), tuple(shapes))

    def run_batch(self, items: Sequence[BatchItem]) -> list[StyleResult | BaseException]:
        """Frames with one `batch_key` denoise together: one pipeline call with a batch of latents, each frame
        with its own seed's generator, so a frame starts from the same noise as it would alone. On a GPU this
        uses the device better than one frame at a time; the pictures may differ from single runs in the last
        bits (batched kernels sum in another order), so batching is the worker's opt-in (`--max-batch-size`).

        Each frame keeps its own progress and abort: a cancelled frame is dropped from the reports and gets
        `Aborted`, and the batch stops only when every frame is cancelled (`SharedProgress`). A frame that fails
        its checks gets its `ValueError` and the others run; a failure of the shared run is every frame's.
        """
        outcomes: list[StyleResult | BaseException | None] = [None] * len(items)
        groups: dict[Hashable, list[int]] = {}
        for index, item in enumerate(items):
            key = self.batch_key(item.request)
            groups.setdefault(key if key is not None else ("alone", index), []).append(index)
        for members in groups.values():
            prepared: list[tuple[int, _Prepared]] = []
            for index in members:
                try:
                    prepared.append((index, self._prepare(items[index].request)))
                except ValueError as error:
                    outcomes[index] = error
            if not prepared:
                continue
            batch = [items[index] for index, _ in prepared]
            shared = SharedProgress(batch) if len(batch) > 1 else None
            try:
                if shared is None:
                    results = self._generate([p for _, p in prepared], batch[0].progress, batch[0].abort)
                else:
                    results = self._generate([p for _, p in prepared], shared, shared)
            except Exception as error:  # the shared run failed (or every frame was cancelled): each frame's
                results = [error] * len(prepared)
            for position, (index, _) in enumerate(prepared):
                dropped = shared is not None and (position in shared.dropped or shared.is_set())
                outcomes[index] = Aborted("stylisation aborted") if dropped else results[position]
        return outcomes  # type: ignore[return-value] - every item got its outcome above

    def _prepare(self, request: StyleRequest) -> "_Prepared":
        """A request checked, with its prompts, sizes and the start of its record (`info`).

        Raises:
            ValueError: see `run`.
        """
        request.validate()
        settings: DiffusionSettings = request.settings
        if settings.not_ready():
            raise ValueError(settings.not_ready())
        prompt, negative = self._styled_prompts(settings)
        region_prompts = self._region_prompts(request, (prompt, negative))
        settings = settings.replace(negative_prompt=negative)
        out_h, out_w = request.output_size
        gen_h, gen_w = self._generation_size(request)
        style_image = request.images.get("ip_adapter_image") if settings.ip_adapter is not None else None
        notes: list[str] = []
        info: dict[str, Any] = {
            "engine": self.id,
            "mode": "img2img" if settings.img2img else "txt2img",
            "seed": int(request.seed),
            "size": {"output": [out_h, out_w], "generated": [gen_h, gen_w]},
            "notes": notes,
        }
        if (gen_h, gen_w) != (out_h, out_w):
            notes.append(
                f"generated at {gen_w}x{gen_h} (multiples of {SIZE_MULTIPLE}, at least {MIN_SIDE}) instead of "
                f"{out_w}x{out_h}, then resized to the output"
            )
        return _Prepared(request, settings, prompt, region_prompts, (gen_h, gen_w), style_image, info)

    def _generate(self, frames: list["_Prepared"], progress: Progress, abort: Any) -> list[StyleResult]:
        """Load what changed, then denoise `frames` (one, or a batch sharing settings and sizes) in one run.

        Raises:
            EngineUnavailable: see `run`.
            Aborted: `abort` was set.
        """
        started = time.perf_counter()
        first = frames[0]
        settings = first.settings
        gen_h, gen_w = first.size
        self.require_available()

        # 2. Models (warm: only what changed is loaded)
        progress.update(0, 3, "Loading models")
        with self._lock:
            from .device import choose_device, free_device_memory, is_out_of_memory

            plan = choose_device(settings.device, settings.dtype)
            shared: dict[str, Any] = {
                "device": {"device": plan.device, "dtype": plan.dtype, "reason": plan.reason}
            }
            if self._cache is None:
                from .pipeline import ModelCache

                self._cache = ModelCache(self.load_counts, self.config_root, self.max_controlnets)
            cache = self._cache
            load_started = time.perf_counter()
            try:
                # What loading found (e.g. a LoRA it could not apply) concerns every frame of the run.
                load_notes: list[str] = []
                shared["loaded"] = cache.ensure(settings, plan, load_notes)
                load_seconds = time.perf_counter() - load_started
                check_abort(abort)

                # 3. Images at the generation size
                progress.update(1, 3, "Preparing images")
                inputs = [
                    GenerateInput(
                        seed=int(frame.request.seed),
                        beauty=imageops.resize(frame.request.beauty, (gen_h, gen_w))
                        if settings.img2img
                        else None,
                        control_images=[
                            controls.control_image(unit.map, frame.request.controls[unit.map], (gen_h, gen_w))
                            for unit in settings.controlnets
                        ],
                    )
                    for frame in frames
                ]
                shared["controlnets"] = [
                    {"map": u.map, "model": u.model, "weight": u.weight, "start": u.start, "end": u.end,
                     "convention": controls.CONVENTIONS[u.map][2]}
                    for u in settings.controlnets
                ]  # fmt: skip
                shared["loras"] = [
                    {"file": lora.file, "weight": lora.weight} for lora in settings.active_loras
                ]

                # 4. Encode, denoise, decode
                generated, facts = cache.generate(
                    settings,
                    size=(gen_h, gen_w),
                    frames=inputs,
                    prompt=first.prompt,
                    style_image=first.style_image,
                    progress=progress,
                    abort=abort,
                    steps_before=2,
                    region_prompts=first.region_prompts,
                )
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                free_device_memory(plan.device)
                size = (gen_h, gen_w)
                raise OutOfMemory(self.id, self._memory_advice(settings, plan, size, len(frames))) from error
            shared.update(facts)
            shared["load_counts"] = dict(self.load_counts)
            compute = dict(cache.timer.seconds)

        # 5. Back to the output size (the frame writer mixes it with the render)
        total = time.perf_counter() - started
        model_seconds = sum(compute.get(k, 0.0) for k in ("unet", "controlnet", "vae_decode"))
        timings = {
            "load": load_seconds,
            **{k: float(v) for k, v in compute.items()},
            "total": total,
            "overhead": total - load_seconds - model_seconds,
        }
        versions = _versions()
        results = []
        for index, (frame, image) in enumerate(zip(frames, generated, strict=True)):
            out_h, out_w = frame.request.output_size
            if image.shape[:2] != (out_h, out_w):
                image = imageops.resize(image, (out_h, out_w))
            image = np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
            info = {**frame.info, **shared, "timings": dict(timings), "versions": versions}
            info["notes"] = [*frame.info["notes"], *load_notes]
            if len(frames) > 1:
                # The timings are the whole batch's: one run made every frame of it.
                info["batch"] = {"size": len(frames), "index": index}
            results.append(StyleResult(image=image, info=info))
        progress.update(1, 1, "Done")
        return results

    # -- Helpers ------------------------------------------------------------------------------------------

    @staticmethod
    def _styled_prompts(settings: DiffusionSettings) -> tuple[str, str]:
        return styled_prompts(settings.prompt, settings.negative_prompt, settings.style_preset)

    @classmethod
    def _region_prompts(cls, request: StyleRequest, scene: tuple[str, str]) -> RegionPrompts | None:
        """The regions' prompt pairs (the scene's styled `scene` first), or None for a plain run.

        Raises:
            ValueError: regions together with an IP-Adapter.
        """
        regions = request.regions
        if regions is None:
            return None
        if request.settings.ip_adapter is not None:
            raise ValueError(
                f"style groups as regions ({', '.join(regions.names)}) cannot be combined with an IP-Adapter, "
                "which puts its own processors on the same attention layers: clear the IP-Adapter, or take the "
                "objects out of their style groups"
            )
        return RegionPrompts(
            layer=regions.layer,
            names=(SCENE, *regions.names),
            prompts=(scene, *(cls._styled_prompts(group) for group in regions.settings)),
        )

    @staticmethod
    def _generation_size(request: StyleRequest) -> tuple[int, int]:
        out_h, out_w = request.output_size
        gen_h, gen_w = snap_size(out_h, out_w)
        if gen_h * gen_w > MAX_PIXELS:
            raise ValueError(
                f"an output of {out_w}x{out_h} asks for a {gen_w}x{gen_h} generation; at most "
                f"{MAX_PIXELS // 1_000_000} megapixels: lower the render resolution"
            )
        return gen_h, gen_w

    @staticmethod
    def _memory_advice(settings: DiffusionSettings, plan: Any, size: tuple[int, int], batch: int = 1) -> str:
        tips = ["lower the render resolution"]
        if batch > 1:
            tips.insert(0, f"lower the worker's --max-batch-size (this batch had {batch} frames)")
        if settings.controlnets:
            tips.append(f"use fewer ControlNets (now {len(settings.controlnets)})")
        for name, on in (
            ("Attention Slicing", settings.attention_slicing),
            ("VAE Tiling", settings.vae_tiling),
            ("CPU Offload", settings.cpu_offload or plan.device != "cuda"),
        ):
            if not on:
                tips.append(f"turn on {name}")
        if plan.dtype == "float32" and plan.device != "cpu":
            tips.append("set Precision to Half (float16)")
        return f"out of memory generating {size[1]}x{size[0]} on {plan.device} ({plan.dtype}); " + "; ".join(
            tips
        )


@dataclass(frozen=True, eq=False)
class _Prepared:
    """A checked request with what its run needs (`DiffusionEngine._prepare`)."""

    request: StyleRequest
    settings: DiffusionSettings  # with the styled negative prompt
    prompt: str
    region_prompts: RegionPrompts | None
    size: tuple[int, int]  # generation (height, width)
    style_image: np.ndarray | None
    info: dict[str, Any]


def _versions() -> dict[str, str]:
    versions = {}
    for name in (*REQUIRED, "peft"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
