# SPDX-License-Identifier: GPL-3.0-or-later
"""Where model weights come from, whether they are safe to load, which family they belong to, and loading.

A model source is one of:

* a local diffusers folder (a pipeline holds `model_index.json`; a ControlNet or VAE holds `config.json`);
* a single `.safetensors` file, loaded offline with a local diffusers config folder (see `find_config`);
* a Hugging Face id ("org/name"): taken from the standard HF cache, and downloaded into it only when the
  caller allows network access.

Only safetensors are read. Pickle files (`.ckpt`, `.pt`, `.pth`, `.bin`, ...) can run code when loaded, so they
are refused unless the caller opts in (`allow_pickle`), which is recorded as a warning. `trust_remote_code` is
never passed: custom pipeline code from a model repository is never run.

The cheap checks here (`resolve`, `family_of_*`, `check_controlnet_fits`) read only JSON configs and
safetensors headers; torch and diffusers are imported only inside the `load_*` functions.
"""

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
SAFETENSORS = ".safetensors"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Files never fetched from the hub: pickles, other frameworks' weights, and half-precision duplicates.
_HUB_IGNORE = ["*.fp16.*", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5"]

FAMILY_LABELS = {"sd15": "SD1.5-class", "sd2": "SD2-class", "sdxl": "SDXL-class"}


@dataclass(frozen=True)
class Source:
    """A resolved model source.

    Attributes:
        spec: What the caller wrote.
        kind: "folder" or "file" (Hugging Face ids resolve to their cached folder).
        path: Absolute path of the folder or file.
        fingerprint: Changes when the files change (path, size and modification time), for the warm cache.
        pickle: True when the weights are a pickle format the caller allowed.
    """

    spec: str
    kind: str
    path: Path
    fingerprint: str
    pickle: bool = False


def _fingerprint(path: Path) -> str:
    if path.is_file():
        stat = path.stat()
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    parts = [str(path)]
    for entry in sorted(path.rglob("*")):
        if entry.is_file() and entry.suffix in {SAFETENSORS, ".json", *PICKLE_SUFFIXES}:
            stat = entry.stat()
            parts.append(f"{entry.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def refuse_pickle(what: str, path: Path) -> None:
    raise ValueError(
        f"{what} {str(path)!r} is a pickle file ({path.suffix}); pickle can run code hidden in the file, so "
        "only .safetensors are loaded. Use the .safetensors version of this model, or, only for a file from a "
        "source you trust, turn on Allow Pickle Files (Stylepass panel, Diffusion: Model Files, Memory and Precision)"
    )


def warn_pickle(what: str, path: Path, notes: list[str]) -> None:
    message = f"loading pickle {what} {str(path)!r} because Allow Pickle Files is on: pickle can run code"
    warnings.warn(message, UserWarning, stacklevel=3)
    notes.append(message)


def resolve(
    spec: str,
    what: str,
    *,
    marker: str | None,
    allow_network: bool,
    allow_pickle: bool,
    notes: list[str],
    hub_patterns: list[str] | None = None,
) -> Source:
    """Turn a model spec into a local folder or file, checking it is there and safe to load.

    Args:
        spec: Folder, file or Hugging Face id.
        what: What it is, for messages ("model", "ControlNet for depth", "VAE", ...).
        marker: File a folder of this kind must hold: "model_index.json" (pipeline), "config.json", or None
            for no check.
        allow_network: Whether a Hugging Face id may be downloaded.
        allow_pickle: Whether pickle weights are acceptable.
        notes: Warnings for `result.info` are appended here.
        hub_patterns: Files to fetch from a Hugging Face repository; None: a pipeline's components (from its
            model_index.json), else every config and safetensors file.

    Returns:
        The source.

    Raises:
        ValueError: the path does not exist, is not this kind of model, holds only pickle weights, or is an
            id that is not cached while network access is off; the message says what to change.
    """
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        if _HF_ID.match(spec) and not spec.startswith((".", "~")):
            path = _from_hub(spec, what, allow_network, hub_patterns)
        else:
            raise ValueError(
                f"{what} {spec!r} does not exist; give an existing folder or file, or an 'org/name' id"
            )
    path = path.resolve()
    is_pickle = False
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            if not allow_pickle:
                refuse_pickle(what, path)
            warn_pickle(what, path, notes)
            is_pickle = True
        elif path.suffix != SAFETENSORS:
            raise ValueError(f"{what} {str(path)!r} is neither a .safetensors file nor a diffusers folder")
        else:
            _check_safetensors_header(path, what)
        return Source(spec, "file", path, _fingerprint(path), is_pickle)

    # A folder
    if marker is not None and not (path / marker).is_file():
        if marker == "model_index.json":
            raise ValueError(
                f"{what} folder {str(path)!r} is not a diffusers pipeline (no model_index.json); point it at the "
                "folder that holds model_index.json, or at a single .safetensors checkpoint"
            )
        raise ValueError(f"{what} folder {str(path)!r} has no {marker}; it is not a diffusers model folder")
    # Per component folder (unet/, vae/, ...): weights only as pickle there mean loading a pickle.
    by_folder: dict[Path, set[str]] = {}
    for file in path.rglob("*"):
        if file.is_file() and (file.suffix == SAFETENSORS or file.suffix in PICKLE_SUFFIXES):
            by_folder.setdefault(file.parent, set()).add(file.suffix)
    pickled = sorted(folder for folder, suffixes in by_folder.items() if SAFETENSORS not in suffixes)
    if pickled:
        if not allow_pickle:
            refuse_pickle(what, next(f for f in sorted(pickled[0].iterdir()) if f.suffix in PICKLE_SUFFIXES))
        warn_pickle(what, path, notes)
        is_pickle = True
    return Source(spec, "folder", path, _fingerprint(path), is_pickle)


def _check_safetensors_header(path: Path, what: str) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else 0
            ok = 2 <= size <= 100_000_000 and handle.read(1) == b"{"
    except OSError as error:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error}") from None
    if not ok:
        raise ValueError(
            f"{what} {str(path)!r} is not a valid .safetensors file (its header is not safetensors JSON); "
            "re-download it"
        )


def _from_hub(repo_id: str, what: str, allow_network: bool, patterns: list[str] | None) -> Path:
    """The local snapshot of a Hugging Face repository, downloading it only when allowed.

    The download branch cannot run on the build machines (no hub is reachable); the cache branch is what the
    offline tests exercise.
    """
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        raise ValueError(
            f"{what} {repo_id!r} looks like a Hugging Face id, but huggingface_hub is missing"
        ) from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        if not allow_network:
            raise ValueError(
                f"{what} {repo_id!r} is not a local path and not in the Hugging Face cache, and network access "
                "is off; give a local diffusers folder or .safetensors file, or allow network access "
                "(Allow Model Downloads in the preferences) to download it"
            ) from None
    except Exception as error:  # a malformed id, a broken cache entry, ...
        if not allow_network:
            raise ValueError(
                f"{what} {repo_id!r} cannot be used from the Hugging Face cache: {error}"
            ) from None
    try:
        if patterns is None:
            patterns = ["*.json", "*.txt", "*.safetensors"]
            try:
                index = json.loads(
                    Path(hf_hub_download(repo_id, "model_index.json")).read_text(encoding="utf-8")
                )
            except Exception:  # not a pipeline repository: a ControlNet or VAE
                index = None
            if index is not None:
                # Only the pipeline's own components: repositories also hold multi-GB single-file copies.
                parts = [
                    name for name, value in index.items() if not name.startswith("_") and value and value[0]
                ]
                patterns = ["model_index.json"] + [f"{part}/*" for part in parts]
        return Path(snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=_HUB_IGNORE))
    except Exception as error:
        raise ValueError(f"{what} {repo_id!r} could not be downloaded from Hugging Face: {error}") from None


# --------------------------------------------------------------------------------------------------------
# Families and configs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {str(path)!r}: {error}") from None


def _unet_family(unet_config: dict[str, Any]) -> str:
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if unet_config.get("cross_attention_dim") == 1024 else "sd15"


def describe_unet(config: dict[str, Any]) -> str:
    """A family label with the numbers that decide it, e.g. "SD1.5-class (cross-attention 768)"."""
    dim = config.get("cross_attention_dim")
    family = _unet_family(config)
    label = FAMILY_LABELS[family]
    if (family, dim) not in {("sd15", 768), ("sd2", 1024), ("sdxl", 2048)}:
        label = f"{label} (custom)"
    return f"{label} (cross-attention {dim})"


@dataclass(frozen=True)
class PipelineConfig:
    """What a base model is, read from configs only.

    Attributes:
        family: "sd15", "sd2" or "sdxl".
        folder: The diffusers folder holding the configs (the model itself, or the config for a checkpoint).
        unet: The UNet's config.
    """

    family: str
    folder: Path
    unet: dict[str, Any]


_SUPPORTED_PIPELINES = re.compile(
    r"^(StableDiffusion(XL)?(Img2Img|ControlNet|ControlNetImg2Img|XLControlNet|XLControlNetImg2Img)?Pipeline"
    r"|LatentConsistencyModelPipeline|LatentConsistencyModelImg2ImgPipeline)$"
)


def pipeline_config(folder: Path, what: str = "model") -> PipelineConfig:
    """Family and UNet config of a diffusers pipeline folder (weights or config-only).

    Raises:
        ValueError: the folder is not a supported SD1.x/2.x/XL text-to-image pipeline (inpainting, SD3,
            Flux, ... are named in the message).
    """
    index = _read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    if not _SUPPORTED_PIPELINES.match(class_name):
        raise ValueError(
            f"{what} {str(folder)!r} is a {class_name or 'unknown'} pipeline; this engine runs Stable Diffusion "
            "1.x/2.x and SDXL text-to-image models (with their img2img and ControlNet variants)"
        )
    if not (folder / "unet" / "config.json").is_file():
        raise ValueError(f"{what} {str(folder)!r} has no unet/config.json; the pipeline folder is incomplete")
    unet = _read_json(folder / "unet" / "config.json")
    if unet.get("in_channels", 4) != 4:
        raise ValueError(
            f"{what} {str(folder)!r} has a UNet with {unet.get('in_channels')} input channels (an inpainting or "
            "depth-to-image model); use a text-to-image model"
        )
    family = _unet_family(unet)
    if ("XL" in class_name) != (family == "sdxl"):
        raise ValueError(
            f"{what} {str(folder)!r}: {class_name} does not match its UNet ({describe_unet(unet)})"
        )
    return PipelineConfig(family, folder, unet)


def checkpoint_family(path: Path) -> tuple[str, int | None]:
    """Family of an original-layout (LDM) single-file checkpoint, from its safetensors header only.

    Returns:
        `(family, cross_attention_dim)`; the dimension is None when no cross-attention key is found.

    Raises:
        ValueError: not a Stable Diffusion checkpoint (a LoRA, a ControlNet, SD3, Flux, an inpainting model...).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        cross_key = next(
            (k for k in keys if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight")),
            None,
        )
        cross = int(handle.get_slice(cross_key).get_shape()[1]) if cross_key else None
        conv_in = "model.diffusion_model.input_blocks.0.0.weight"
        in_channels = int(handle.get_slice(conv_in).get_shape()[1]) if conv_in in keys else None
    has = {prefix: any(k.startswith(prefix) for k in keys) for prefix in _CHECKPOINT_MARKERS}
    if has["conditioner.embedders.1."]:
        family = "sdxl"
    elif has["conditioner.embedders.0."]:
        raise ValueError(f"checkpoint {str(path)!r} is an SDXL refiner; use an SDXL base model")
    elif has["cond_stage_model.model."]:
        family = "sd2"
    elif has["cond_stage_model.transformer."]:
        family = "sd15"
    elif has["model.diffusion_model."] and any(
        "joint_blocks" in k or "double_blocks" in k for k in keys[:2000]
    ):
        raise ValueError(
            f"checkpoint {str(path)!r} is an SD3/Flux-type model; this engine runs SD1.x/2.x and SDXL"
        )
    elif any(k.startswith(("lora_unet_", "lora_te", "unet.")) or ".lora_" in k for k in keys[:200]):
        raise ValueError(f"{str(path)!r} is a LoRA, not a model checkpoint; add it under LoRAs")
    elif any(k.startswith(("control_model.", "controlnet_")) for k in keys[:200]):
        raise ValueError(
            f"{str(path)!r} is a ControlNet, not a model checkpoint; set it as a control's ControlNet"
        )
    else:
        raise ValueError(
            f"checkpoint {str(path)!r} is not an original-layout Stable Diffusion checkpoint "
            "(no model.diffusion_model.* / text encoder keys)"
        )
    if in_channels is not None and in_channels != 4:
        raise ValueError(
            f"checkpoint {str(path)!r} has a UNet with {in_channels} input channels (inpainting); "
            "use a text-to-image checkpoint"
        )
    return family, cross


_CHECKPOINT_MARKERS = (
    "conditioner.embedders.1.",
    "conditioner.embedders.0.",
    "cond_stage_model.model.",
    "cond_stage_model.transformer.",
    "model.diffusion_model.",
)


def find_config(checkpoint: Path, explicit: str, config_root: Path | None, family: str | None) -> Path:
    """The diffusers config folder used to load a single-file checkpoint offline.

    Looked for in order: `explicit` (the Model Config setting); a folder beside the checkpoint named like it
    (`foo.safetensors` -> `foo/`); `config_root/<family>` (configs shipped with the project or installed
    once for all checkpoints of a family; skipped when the family is unknown, as for a pickle file).

    Raises:
        ValueError: none found; the message lists where it looked.
    """
    candidates = []
    if explicit:
        folder = Path(os.path.expanduser(explicit)).resolve()
        if not (folder / "model_index.json").is_file():
            raise ValueError(
                f"Model Config {explicit!r} is not a diffusers config folder (no model_index.json)"
            )
        return folder
    candidates.append(checkpoint.with_suffix(""))
    if config_root is not None and family is not None:
        candidates.append(config_root / family)
    for folder in candidates:
        if (folder / "model_index.json").is_file():
            return folder
    raise ValueError(
        f"checkpoint {str(checkpoint)!r} ({FAMILY_LABELS.get(family or '', 'unknown family')}) needs a diffusers config folder (model_index.json, "
        "component configs and tokenizer) to load offline; looked in "
        f"{[str(c) for c in candidates]}. Put one beside the checkpoint with the same name, or set "
        "Model Config"
    )


def component_config(source: Source, what: str) -> tuple[Path, dict[str, Any]]:
    """Config folder and config of a single model (ControlNet, VAE): the folder itself, or for a file a
    folder beside it named like it, or the file's own folder when it holds `config.json`.

    Raises:
        ValueError: no config found.
    """
    if source.kind == "folder":
        return source.path, _read_json(source.path / "config.json")
    for folder in (source.path.with_suffix(""), source.path.parent):
        if (folder / "config.json").is_file():
            return folder, _read_json(folder / "config.json")
    raise ValueError(
        f"{what} {str(source.path)!r} is a single file and needs its config.json to load offline; put it in a "
        f"folder named {source.path.stem!r} beside the file, or beside the file itself"
    )


TINY_VAE_SUBFOLDER = "vae_tiny"
TINY_VAE_NAMES = {"sd15": "taesd", "sd2": "taesd", "sdxl": "taesdxl"}
TINY_VAE_HUB_IDS = {"sd15": "madebyollin/taesd", "sd2": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


def tiny_vae_candidates(model: Path, config: PipelineConfig, model_dirs: list[Path]) -> list[Path]:
    """The folders a base model's tiny autoencoder may be in, in the order looked at (see `find_tiny_vae`);
    the Hugging Face cache is looked at after these."""
    name = TINY_VAE_NAMES[config.family]
    candidates = [config.folder / TINY_VAE_SUBFOLDER, model.parent / name]
    candidates += [folder / name for folder in model_dirs]
    return list(dict.fromkeys(candidates))  # each once, in order


def find_tiny_vae(
    model: Path, config: PipelineConfig, model_dirs: list[Path], notes: list[str]
) -> Path | None:
    """The tiny autoencoder (TAESD, diffusers' `AutoencoderTiny`) that belongs to a base model, or None.

    Looked for in order, offline only:

    1. `vae_tiny/` inside the model's diffusers folder (for a single-file checkpoint: inside the config folder
       it loads with, so a family's config folder under the config root serves every checkpoint of it);
    2. a folder named `taesd` (SD1.x/2.x) or `taesdxl` (SDXL) beside the model (in the same folder);
    3. such a folder at the top of one of the worker's model folders (`model_dirs`, first first);
    4. `madebyollin/taesd` or `madebyollin/taesdxl` in the Hugging Face cache (never downloaded).

    A candidate must be a folder whose `config.json` names `AutoencoderTiny`; a folder there that is not one
    is skipped with a note.

    Args:
        model: The resolved base model (diffusers folder or checkpoint file).
        config: Its family and config folder.
        model_dirs: The worker's model folders.
        notes: Skipped candidates are noted here.
    """
    candidates = tiny_vae_candidates(model, config, model_dirs)
    try:
        from huggingface_hub import snapshot_download

        candidates.append(Path(snapshot_download(TINY_VAE_HUB_IDS[config.family], local_files_only=True)))
    except Exception:  # not in the cache, or no huggingface_hub: nothing to add
        pass
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        try:
            config_json = json.loads((candidate / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config_json = None
        if isinstance(config_json, dict) and config_json.get("_class_name") == "AutoencoderTiny":
            return candidate.resolve()
        notes.append(
            f"{str(candidate)!r} is not a tiny autoencoder (its config.json does not name AutoencoderTiny): "
            "not used"
        )
    return None


def check_controlnet_fits(
    unit_map: str, spec: str, controlnet: dict[str, Any], model: str, unet: dict[str, Any]
) -> None:
    """Refuse a ControlNet trained for another family than the base model (before loading any weights).

    Raises:
        ValueError: naming both families and what to change.
    """
    keys = ("cross_attention_dim", "addition_embed_type", "block_out_channels")
    mismatched = [k for k in keys if _norm(controlnet.get(k)) != _norm(unet.get(k))]
    if mismatched:
        raise ValueError(
            f"ControlNet {spec!r} for the {unit_map} map is {describe_unet(controlnet)} but model {model!r} is "
            f"{describe_unet(unet)} (they differ in {', '.join(mismatched)}); choose a {unit_map} ControlNet "
            f"made for {FAMILY_LABELS[_unet_family(unet)]} models, or a model of the ControlNet's family"
        )


def _norm(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


# --------------------------------------------------------------------------------------------------------
# Loading (torch and diffusers from here on)


def pipeline_classes(family: str) -> dict[str, Any]:
    """The diffusers pipeline classes for a family: keys "txt2img", "img2img", "cn_txt2img", "cn_img2img"."""
    import diffusers

    if family == "sdxl":
        names = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
        names += ("StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline")
    else:
        names = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
        names += ("StableDiffusionControlNetPipeline", "StableDiffusionControlNetImg2ImgPipeline")
    return dict(
        zip(
            ("txt2img", "img2img", "cn_txt2img", "cn_img2img"),
            (getattr(diffusers, n) for n in names),
            strict=True,
        )
    )


def load_base(source: Source, config: PipelineConfig, torch_dtype: Any) -> Any:
    """Load the base model as a text-to-image pipeline (no safety checker, no feature extractor).

    Raises:
        ValueError: the files cannot be loaded; the message names the source and the cause.
    """
    cls = pipeline_classes(config.family)["txt2img"]
    extra: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if config.family == "sdxl":
        extra = {}
    try:
        if source.kind == "file":
            return cls.from_single_file(
                str(source.path),
                config=str(config.folder),
                local_files_only=True,
                dtype=torch_dtype,
                **extra,
            )
        return cls.from_pretrained(
            str(source.path),
            local_files_only=True,
            use_safetensors=None if source.pickle else True,
            dtype=torch_dtype,
            feature_extractor=None,
            image_encoder=None,
            **extra,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"model {source.spec!r} could not be loaded from {str(source.path)!r}: {error}"
        ) from None


def load_component(source: Source, what: str, torch_dtype: Any, kind: str) -> Any:
    """Load a ControlNet (`kind` "controlnet") or a VAE (`kind` "vae", AutoencoderKL or AutoencoderTiny).

    Raises:
        ValueError: the files cannot be loaded; the message names the source and the cause.
    """
    import diffusers

    folder, config = component_config(source, what)
    if kind == "controlnet":
        cls = diffusers.ControlNetModel
    else:
        cls = (
            diffusers.AutoencoderTiny
            if config.get("_class_name") == "AutoencoderTiny"
            else diffusers.AutoencoderKL
        )
    try:
        if source.kind == "file":
            return cls.from_single_file(
                str(source.path), config=str(folder), local_files_only=True, dtype=torch_dtype
            )
        return cls.from_pretrained(
            str(source.path),
            local_files_only=True,
            use_safetensors=None if source.pickle else True,
            dtype=torch_dtype,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"{what} {source.spec!r} could not be loaded from {str(source.path)!r}: {error}"
        ) from None
