# SPDX-License-Identifier: GPL-3.0-or-later
"""The warm model cache and one denoising run.

`ModelCache` keeps, between requests:

* the base pipeline (UNet, VAE, text encoders, tokenizers, scheduler config), keyed by the model source's
  fingerprint, device, dtype and offload setting: a second request with the same model set loads nothing;
* ControlNets by source (a small LRU), so changing the ControlNet set loads only the new ones;
* LoRA adapters by file: a new file is loaded into the base as a PEFT adapter, a dropped one is deleted, a
  changed weight is only re-set; the base weights are never reloaded;
* the IP-Adapter, loaded into the UNet's attention layers and unloaded when no longer asked for;
* replacement VAEs (the last `MAX_VAES`, so a live preview decoding with the model's tiny autoencoder and a
  final frame with its full VAE take turns without reloading either); `vae` = `(tiny)` picks the model's tiny
  autoencoder by `models.find_tiny_vae`;
* the pipeline objects themselves (txt2img / img2img, with or without ControlNets), which share all modules.

A regional run (style groups as regions, `regions.py`) changes no cached state: its attention processors are
on the UNet's and ControlNets' cross-attention layers for that one call only.

Every load is counted in `counts` (keys "base", "controlnet", "lora", "vae", "ip_adapter"), so tests and the
benchmark can prove a warm request loads nothing.

torch and diffusers are imported inside methods only.
"""

import hashlib
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...engine_api import Progress, check_abort
from ...worker.model_paths import configured_model_dirs
from . import models, prompts, regions
from .device import DevicePlan
from .settings import TINY_VAE, DiffusionSettings

DEFAULT_MAX_CONTROLNETS = 4  # one per control map
MAX_VAES = 2  # replacement VAEs kept loaded: a live preview's tiny one and a final frame's full one


@dataclass(frozen=True, eq=False)
class GenerateInput:
    """What differs between the frames of one run (`ModelCache.generate`): the seed and the pictures at the
    generation size (`beauty` for img2img, else None; one control image per ControlNet, in order)."""

    seed: int
    beauty: np.ndarray | None
    control_images: list[np.ndarray]


@dataclass
class ComputeTimer:
    """Seconds spent inside the UNet, ControlNets, VAE and text encoders during one request."""

    seconds: Counter = field(default_factory=Counter)
    sync: Any = None  # torch.cuda.synchronize on CUDA, so asynchronous kernels are timed where they run

    def hooks(self, module: Any, name: str) -> list[Any]:
        """Forward pre/post hooks on `module` adding its forward time under `name`; returns the handles."""
        started: list[float] = []

        def before(*_: Any) -> None:
            if self.sync is not None:
                self.sync()
            started.append(time.perf_counter())

        def after(*_: Any) -> None:
            if self.sync is not None:
                self.sync()
            if started:
                self.seconds[name] += time.perf_counter() - started.pop()

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


class ModelCache:
    """Loaded models for the diffusion engine (see the module docstring). Not thread-safe: the engine locks.

    Args:
        counts: Counter the loads are added to.
        config_root: Folder with per-family configs for single-file checkpoints (`<root>/sd15`, ...), or None.
        max_controlnets: ControlNets kept loaded, least recently used dropped first.
    """

    def __init__(
        self, counts: Counter, config_root: Path | None = None, max_controlnets: int = DEFAULT_MAX_CONTROLNETS
    ):
        self.counts = counts
        self.config_root = config_root
        self.max_controlnets = max_controlnets
        self.timer = ComputeTimer()
        self.release()

    # -- State --------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Forget every loaded model (the caller frees device memory afterwards)."""
        self.base: Any = None
        self.base_key: tuple | None = None
        self.base_config: models.PipelineConfig | None = None
        self.plan: DevicePlan | None = None
        self.own_vae: Any = None
        self.vae_key: str = ""
        self.vaes: OrderedDict[str, Any] = OrderedDict()  # replacement VAEs by fingerprint, oldest first
        self.controlnets: OrderedDict[str, Any] = OrderedDict()
        self.loras: dict[str, tuple[str, str]] = {}  # adapter name -> (fingerprint, path)
        self.ip_adapter_key: str = ""
        self.pipelines: dict[tuple, Any] = {}
        self.slicing = False
        self.scheduler_config: Any = None
        self.active_pipeline: Any = None
        self.offloaded: Any = None
        self.paths: dict[str, str] = {}  # fingerprint -> path of every model loaded, for `loaded_models`
        self.loaded_models: tuple[str, ...] = ()
        """What is in memory after the last request ("base: <path>", "vae: <path>", ...); replaced whole, so
        another thread may read it while a request runs."""

    # -- Loading ------------------------------------------------------------------------------------------

    def ensure(self, settings: DiffusionSettings, plan: DevicePlan, notes: list[str]) -> list[str]:
        """Load or swap whatever differs from the last request; returns what was loaded ("base: ...").

        Raises:
            ValueError: a source is missing, unsafe, of the wrong family, or fails to load (message says which).
        """
        loaded: list[str] = []
        allow = {
            "allow_network": settings.allow_network,
            "allow_pickle": settings.allow_pickle,
            "notes": notes,
        }

        # 1. Resolve and check everything from configs before loading any weights
        base_source = models.resolve(settings.model, "model", marker="model_index.json", **allow)
        config = self._base_config(base_source, settings)
        control_sources = []
        for unit in settings.controlnets:
            what = f"ControlNet for {unit.map}"
            source = models.resolve(unit.model, what, marker="config.json", **allow)
            _, cn_config = models.component_config(source, what)
            if cn_config.get("_class_name", "ControlNetModel") != "ControlNetModel":
                raise ValueError(
                    f"{what} {unit.model!r} is a {cn_config.get('_class_name')}, not a ControlNetModel"
                )
            models.check_controlnet_fits(unit.map, unit.model, cn_config, settings.model, config.unet)
            control_sources.append(source)
        if settings.vae == TINY_VAE:
            vae_source = self._tiny_vae(base_source, config, allow, notes)
        elif settings.vae:
            vae_source = models.resolve(settings.vae, "VAE", marker="config.json", **allow)
        else:
            vae_source = None

        # 2. Base model
        key = (base_source.fingerprint, str(config.folder), plan.device, plan.dtype, settings.cpu_offload)
        if key != self.base_key:
            self._drop_base()
            self.base = models.load_base(base_source, config, plan.torch_dtype())
            self.base.set_progress_bar_config(disable=True)
            if not settings.cpu_offload and plan.device != "cpu":  # weights load on the CPU
                self.base.to(plan.device)
            self.base_key, self.base_config, self.plan = key, config, plan
            self.own_vae = self.base.vae
            self.scheduler_config = self.base.scheduler.config
            self.counts["base"] += 1
            loaded.append(f"base: {base_source.path}")

        # 3. VAE (replacements kept: the last MAX_VAES)
        vae_key = vae_source.fingerprint if vae_source else ""
        if vae_key != self.vae_key:
            vae = self.own_vae
            if vae_source is not None:
                vae = self.vaes.pop(vae_key, None)
                if vae is None:
                    vae = models.load_component(vae_source, "VAE", plan.torch_dtype(), "vae")
                    if not settings.cpu_offload and plan.device != "cpu":
                        vae.to(plan.device)
                    self.counts["vae"] += 1
                    loaded.append(f"vae: {vae_source.path}")
                    self.paths[vae_key] = str(vae_source.path)
                self.vaes[vae_key] = vae
                while len(self.vaes) > MAX_VAES:
                    self.paths.pop(self.vaes.popitem(last=False)[0], None)
            self.base.register_modules(vae=vae)
            self.vae_key = vae_key
            self.pipelines.clear()

        # 4. ControlNets (least recently used dropped beyond the limit)
        for source in control_sources:
            if source.fingerprint in self.controlnets:
                self.controlnets.move_to_end(source.fingerprint)
                continue
            net = models.load_component(source, "ControlNet", plan.torch_dtype(), "controlnet")
            if not settings.cpu_offload and plan.device != "cpu":
                net.to(plan.device)
            self.controlnets[source.fingerprint] = net
            self.paths[source.fingerprint] = str(source.path)
            self.counts["controlnet"] += 1
            loaded.append(f"controlnet: {source.path}")
        wanted = {s.fingerprint for s in control_sources}
        while len(self.controlnets) > max(self.max_controlnets, len(wanted)):
            oldest = next(k for k in self.controlnets if k not in wanted)
            del self.controlnets[oldest]
            self.paths.pop(oldest, None)
            self.pipelines = {k: v for k, v in self.pipelines.items() if oldest not in k[1]}

        # 5. LoRAs and IP-Adapter change modules in place
        loaded += self._ensure_loras(settings, notes)
        loaded += self._ensure_ip_adapter(settings, notes)

        # 6. The pipeline for this request's mode and ControlNet set
        self.active_pipeline = self._pipeline(settings, [s.fingerprint for s in control_sources])
        self._instrument()
        self.loaded_models = self._describe(base_source)
        return loaded

    def _describe(self, base: models.Source) -> tuple[str, ...]:
        names = [f"base: {base.path}"]
        names += [f"vae: {self.paths[key]}" for key in self.vaes]
        names += [f"controlnet: {self.paths[key]}" for key in self.controlnets]
        names += [f"lora: {path}" for _, path in self.loras.values()]
        if self.ip_adapter_key:
            names.append(f"ip_adapter: {self.ip_adapter_key.split('|')[0]}")
        return tuple(names)

    def _tiny_vae(
        self, base: models.Source, config: models.PipelineConfig, allow: dict[str, Any], notes: list[str]
    ) -> models.Source | None:
        """The base model's tiny autoencoder (`models.find_tiny_vae`), or None (noted) to keep its own VAE."""
        model_dirs = configured_model_dirs()
        found = models.find_tiny_vae(base.path, config, model_dirs, notes)
        if found is None:
            looked = [str(c) for c in models.tiny_vae_candidates(base.path, config, model_dirs)]
            notes.append(
                f"VAE {TINY_VAE}: the model has no tiny autoencoder (looked in {looked} and the Hugging Face "
                "cache); decoding with its own VAE"
            )
            return None
        return models.resolve(str(found), "tiny autoencoder", marker="config.json", **allow)

    def _base_config(self, source: models.Source, settings: DiffusionSettings) -> models.PipelineConfig:
        if source.kind == "folder":
            return models.pipeline_config(source.path)
        family, cross = (None, None) if source.pickle else models.checkpoint_family(source.path)
        folder = models.find_config(source.path, settings.model_config, self.config_root, family)
        config = models.pipeline_config(folder, "model_config")
        if family is not None and (
            family != config.family or (cross and cross != config.unet.get("cross_attention_dim"))
        ):
            raise ValueError(
                f"checkpoint {settings.model!r} is {models.FAMILY_LABELS[family]} (cross-attention {cross}) but its "
                f"config folder {str(folder)!r} describes {models.describe_unet(config.unet)}; use a config folder "
                "of the checkpoint's family (Model Config)"
            )
        return config

    def _drop_base(self) -> None:
        counts = self.counts
        self.release()
        self.counts = counts

    def _ensure_loras(self, settings: DiffusionSettings, notes: list[str]) -> list[str]:
        loaded = []
        wanted: dict[str, tuple[str, str, float]] = {}
        for lora in settings.active_loras:
            source = models.resolve(
                lora.file,
                f"LoRA {lora.file!r}",
                marker="config.json",
                allow_network=False,
                allow_pickle=settings.allow_pickle,
                notes=notes,
            )
            if source.kind != "file":
                raise ValueError(f"LoRA {lora.file!r} must be a LoRA file, not a folder")
            # The adapter name follows the file's contents (path, size, time), so an edited file loads anew.
            name = "lora_" + hashlib.sha1(source.fingerprint.encode()).hexdigest()[:12]
            wanted[name] = (source.fingerprint, str(source.path), lora.weight)
        stale = [name for name in self.loras if name not in wanted]
        if stale:
            self.base.delete_adapters(stale)
            for name in stale:
                del self.loras[name]
        for name, (fingerprint, path, _) in wanted.items():
            if name in self.loras:
                continue
            if not _has_peft():
                raise ValueError(
                    "LoRA files need the peft package: pip install -r requirements/engine-diffusion.txt"
                )
            file = Path(path)
            try:
                self.base.load_lora_weights(
                    str(file.parent),
                    weight_name=file.name,
                    adapter_name=name,
                    local_files_only=True,
                    use_safetensors=file.suffix == models.SAFETENSORS,
                )
            except (OSError, ValueError, KeyError, RuntimeError) as error:
                raise ValueError(
                    f"LoRA {path!r} could not be loaded into {settings.model!r}: {error}. Is it a LoRA for this "
                    f"model's family ({models.FAMILY_LABELS[self.base_config.family]})?"
                ) from None
            self.loras[name] = (fingerprint, path)
            self.counts["lora"] += 1
            loaded.append(f"lora: {path}")
        if wanted:
            self.base.set_adapters(list(wanted), adapter_weights=[w for _, _, w in wanted.values()])
        return loaded

    def _ensure_ip_adapter(self, settings: DiffusionSettings, notes: list[str]) -> list[str]:
        """Load, swap or unload the IP-Adapter.

        Exercised offline only with tiny random weights in the h94/IP-Adapter layout; real IP-Adapter files
        need the hub or a local copy and are covered by the `real_weights` tests.
        """
        spec = settings.ip_adapter
        key = ""
        if spec is not None:
            weights = f"{spec.subfolder}/{spec.weight_name}" if spec.subfolder else spec.weight_name
            source = models.resolve(
                spec.model,
                "IP-Adapter",
                marker=None,
                allow_network=settings.allow_network,
                allow_pickle=settings.allow_pickle,
                notes=notes,
                hub_patterns=[
                    weights,
                    f"{spec.subfolder}/image_encoder/*" if spec.subfolder else "image_encoder/*",
                ],
            )
            file = source.path / weights
            if not file.is_file():
                raise ValueError(
                    f"IP-Adapter {spec.model!r} has no {weights}; set the IP-Adapter's Subfolder and "
                    "Weights to the weight file inside it"
                )
            if file.suffix != models.SAFETENSORS:
                if not settings.allow_pickle:
                    models.refuse_pickle("IP-Adapter weights", file)
                models.warn_pickle("IP-Adapter weights", file, notes)
            key = f"{source.fingerprint}|{spec.subfolder}|{spec.weight_name}"
        if key == self.ip_adapter_key:
            if spec is not None:
                self.base.set_ip_adapter_scale(spec.scale)
            return []
        if self.ip_adapter_key:
            self.base.unload_ip_adapter()
            self.ip_adapter_key = ""
            self.pipelines.clear()
        if spec is None:
            return []
        try:
            self.base.load_ip_adapter(
                str(source.path),
                subfolder=spec.subfolder,
                weight_name=spec.weight_name,
                local_files_only=True,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ValueError(
                f"IP-Adapter {spec.model!r} ({spec.weight_name}) could not be loaded: {error}"
            ) from None
        if not settings.cpu_offload and plan_device_is_gpu(self.plan) and self.base.image_encoder is not None:
            self.base.image_encoder.to(self.plan.device)
        self.base.set_ip_adapter_scale(spec.scale)
        self.ip_adapter_key = key
        self.pipelines.clear()
        self.counts["ip_adapter"] += 1
        return [f"ip_adapter: {source.path / spec.subfolder / spec.weight_name}"]

    def _pipeline(self, settings: DiffusionSettings, control_keys: list[str]) -> Any:
        mode = ("cn_" if control_keys else "") + ("img2img" if settings.img2img else "txt2img")
        key = (mode, tuple(control_keys))
        pipe = self.pipelines.get(key)
        if pipe is None:
            classes = models.pipeline_classes(self.base_config.family)
            if mode == "txt2img":
                pipe = self.base
            else:
                # The VAE goes in explicitly: from_pipe drops a replacement of another class (AutoencoderTiny).
                extra: dict[str, Any] = {"vae": self.base.vae}
                if control_keys:
                    from diffusers import MultiControlNetModel

                    extra["controlnet"] = MultiControlNetModel([self.controlnets[k] for k in control_keys])
                pipe = classes[mode].from_pipe(self.base, **extra)
                pipe.set_progress_bar_config(disable=True)
            self.pipelines[key] = pipe
        if settings.cpu_offload and self.offloaded is not pipe:
            # Not exercised here (no GPU on the build machines): accelerate moves each model to the GPU in turn.
            pipe.enable_model_cpu_offload(device=self.plan.device)
            self.offloaded = pipe
        if settings.attention_slicing:
            pipe.enable_attention_slicing()  # cheap, and covers ControlNets new to this pipeline
            self.slicing = True
        elif self.slicing:
            for module in [self.base.unet, *self.controlnets.values()]:
                module.set_attention_slice(None)  # back to the default attention processors
            self.slicing = False
        vae = pipe.vae
        if hasattr(vae, "enable_tiling"):
            if settings.vae_tiling:
                vae.enable_tiling()
            else:
                vae.disable_tiling()
        return pipe

    def _instrument(self) -> None:
        """Time every UNet and ControlNet forward (hooks stay on the modules until they are dropped)."""
        import torch

        if self.plan.device == "cuda":
            self.timer.sync = torch.cuda.synchronize
        modules = [(self.base.unet, "unet"), *((net, "controlnet") for net in self.controlnets.values())]
        for module, name in modules:
            if not getattr(module, "_stylepass_timed", False):
                self.timer.hooks(module, name)
                module._stylepass_timed = True

    # -- Running ------------------------------------------------------------------------------------------

    def scheduler(self, name: str) -> Any:
        """A fresh scheduler of the requested kind, configured like the model's own."""
        import diffusers

        config = self.scheduler_config
        if name == "euler_a":
            return diffusers.EulerAncestralDiscreteScheduler.from_config(config)
        if name == "dpmpp_2m_karras":
            return diffusers.DPMSolverMultistepScheduler.from_config(
                config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
            )
        if name == "lcm":
            return diffusers.LCMScheduler.from_config(config)
        if name == "tcd":
            return diffusers.TCDScheduler.from_config(config)
        if name == "euler_trailing":
            return diffusers.EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
        if name == "euler_a_trailing":
            return diffusers.EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing")
        return getattr(diffusers, config["_class_name"]).from_config(config)

    def generate(
        self,
        settings: DiffusionSettings,
        *,
        size: tuple[int, int],
        frames: list[GenerateInput],
        prompt: str,
        style_image: np.ndarray | None,
        progress: Progress,
        abort: Any,
        steps_before: int,
        region_prompts: regions.RegionPrompts | None = None,
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Run the active pipeline once and decode; returns one `(H, W, 3)` float32 in [0, 1] per frame, and
        facts.

        Several `frames` denoise as one batch (the prompt's embeddings repeated, one generator per frame's
        seed, the pictures stacked); one frame runs exactly as it always has (batch of one, one generator).
        `region_prompts` (region 0 the scene's `prompt` and `settings.negative_prompt`) makes it one regional
        run of one frame: every region's conditioning applies inside its region only (`regions.py`).

        Raises:
            Aborted: between two denoising steps when `abort` is set (or `progress.update` raises it).
        """
        import torch

        pipe = self.active_pipeline
        plan = self.plan
        dtype = plan.torch_dtype()
        height, width = size
        facts: dict[str, Any] = {}
        self.timer.seconds.clear()
        device = pipe._execution_device  # the GPU even when offloading parks the models in RAM

        # 1. Prompt embeddings (any length; a regional run's regions one after the other)
        started = time.perf_counter()
        sdxl = self.base_config.family == "sdxl"
        tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if sdxl else [pipe.tokenizer]
        encoders = [pipe.text_encoder, pipe.text_encoder_2] if sdxl else [pipe.text_encoder]

        def encode(positive: str, negative: str) -> prompts.PromptEmbeddings:
            return prompts.encode(
                tokenizers,
                encoders,
                positive,
                negative,
                sdxl=sdxl,
                zeros_for_empty_negative=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)),
                device=device,
                dtype=dtype,
                clip_skip=settings.clip_skip,
            )

        if region_prompts is None:
            embeddings = scene = encode(prompt, settings.negative_prompt)
        else:
            per_region = [encode(*pair) for pair in region_prompts.prompts]
            embeddings, spans = regions.concatenate(per_region)
            scene = per_region[0]
        self.timer.seconds["text_encoder"] += time.perf_counter() - started
        facts["prompt_tokens"] = scene.tokens
        facts["prompt_chunks"] = scene.chunks

        # 2. Pipeline arguments
        count = len(frames)
        if region_prompts is not None and count != 1:
            raise ValueError("a regional run stylises one frame at a time")

        def batched(tensor: Any) -> Any:  # the prompt's embeddings, once per frame
            return tensor if count == 1 or tensor is None else tensor.repeat(count, *[1] * (tensor.dim() - 1))

        generators = [torch.Generator("cpu").manual_seed(frame.seed) for frame in frames]
        kwargs: dict[str, Any] = {
            "prompt_embeds": batched(embeddings.prompt_embeds),
            "negative_prompt_embeds": batched(embeddings.negative_prompt_embeds),
            "height": height,
            "width": width,
            "num_inference_steps": settings.steps,
            "guidance_scale": settings.guidance,
            # A list draws each frame's noise from its own generator, as the frame alone would.
            "generator": generators[0] if count == 1 else generators,
            "output_type": "latent",
        }
        if sdxl:
            kwargs["pooled_prompt_embeds"] = batched(embeddings.pooled)
            kwargs["negative_pooled_prompt_embeds"] = batched(embeddings.negative_pooled)
        if settings.img2img:
            kwargs["image"] = torch.cat([_to_tensor(frame.beauty) for frame in frames])
            kwargs["strength"] = settings.denoise
        if settings.controlnets:
            units = settings.controlnets
            kwargs["control_image" if settings.img2img else "image"] = [
                torch.cat([_to_tensor(frame.control_images[unit]) for frame in frames])
                for unit in range(len(units))
            ]
            kwargs["controlnet_conditioning_scale"] = [u.weight for u in units]
            kwargs["control_guidance_start"] = [u.start for u in units]
            kwargs["control_guidance_end"] = [u.end for u in units]
        if settings.ip_adapter is not None and style_image is not None:
            from PIL import Image

            kwargs["ip_adapter_image"] = Image.fromarray(np.round(style_image * 255.0).astype(np.uint8))
        pipe.scheduler = self.scheduler(settings.scheduler)

        # 3. Denoise with progress and abort between steps
        expected = settings.steps if not settings.img2img else int(settings.steps * settings.denoise)
        total = steps_before + expected + 1

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            steps = int(getattr(pipeline, "_num_timesteps", 0) or expected)
            progress.update(
                steps_before + step + 1, steps_before + steps + 1, f"Denoising step {step + 1}/{steps}"
            )
            check_abort(abort)
            return callback_kwargs

        progress.update(steps_before, total, "Denoising")
        started = time.perf_counter()
        if region_prompts is None:
            latents = pipe(callback_on_step_end=on_step_end, **kwargs).images
        else:
            scale = int(pipe.vae_scale_factor)
            latent_size = (height // scale, width // scale)
            weights = regions.level_weights(region_prompts.layer, region_prompts.count, latent_size)
            controlnet = getattr(pipe, "controlnet", None)
            nets = list(getattr(controlnet, "nets", [controlnet] if controlnet is not None else []))
            processor = regions.RegionalAttention(spans, weights)
            with regions.installed([pipe.unet, *nets], processor) as layers:
                latents = pipe(callback_on_step_end=on_step_end, **kwargs).images
            facts["regions"] = region_prompts.describe(per_region, spans)
            facts["regional_attention_layers"] = {"unet": layers[0], "controlnets": layers[1:]}
        facts["denoise_seconds"] = time.perf_counter() - started
        facts["steps_run"] = int(getattr(pipe, "_num_timesteps", expected) or expected)
        check_abort(abort)

        # 4. Decode
        steps_done = steps_before + facts["steps_run"]
        progress.update(steps_done, steps_done + 1, "Decoding")
        started = time.perf_counter()
        images = [self.decode(pipe.vae, latents[index : index + 1]) for index in range(count)]
        self.timer.seconds["vae_decode"] += time.perf_counter() - started
        facts["vae"] = type(pipe.vae).__name__
        return images, facts

    def decode(self, vae: Any, latents: Any) -> np.ndarray:
        """Latents `(1, 4, h, w)` -> `(H, W, 3)` float32 in [0, 1] with the model's VAE scaling."""
        import torch

        upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(torch.float32)
        try:
            with torch.no_grad():
                latents = latents.to(device=vae.device, dtype=vae.dtype)
                mean = getattr(vae.config, "latents_mean", None)
                std = getattr(vae.config, "latents_std", None)
                scale = vae.config.scaling_factor
                if mean is not None and std is not None:
                    mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
                    std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
                    latents = latents * std / scale + mean
                else:
                    latents = latents / scale
                decoded = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        image = (decoded[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(image, dtype=np.float32)


def _to_tensor(image: np.ndarray) -> Any:
    """`(H, W, 3)` float32 in [0, 1] -> `(1, 3, H, W)` torch tensor in [0, 1] (the pipelines normalise)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))


def plan_device_is_gpu(plan: DevicePlan) -> bool:
    """Whether models must be moved off the CPU after loading."""
    return plan.device != "cpu"


def _has_peft() -> bool:
    import importlib.util

    return importlib.util.find_spec("peft") is not None
