# SPDX-License-Identifier: GPL-3.0-or-later
"""ComfyUI workflows in API format, built from the passes or filled into the artist's own, and checked against
the server's `/object_info` before anything is queued.

A built workflow, for settings with two controls, two LoRAs and Denoise below 1:

    CheckpointLoaderSimple ─model─ LoraLoader ─ LoraLoader ─model────────────────────────── KSampler ─ VAEDecode
                           ─clip──┘          └─clip─ CLIPTextEncode (prompt, negative)            │          │
                                                      └ ControlNetApplyAdvanced (depth) ─┐         │   PreviewImage
                                                        ControlNetApplyAdvanced (lineart)┴─pos/neg─┤
    LoadImage (beauty) ─ VAEEncode ─────────────────────────────────────────────latent──────────────┘

Pictures are referred to by the names `client.upload_image` gave them. Outputs come from a PreviewImage node:
ComfyUI keeps its pictures in its temporary folder, so Stylepass's frames do not pile up in the artist's
output folder.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import WORKFLOW_INPUTS, ComfyUISettings

OUTPUT_NODE = "stylepass_output"
TITLE_PREFIX = "Stylepass "
# Which input of a node class takes each kind of Stylepass input in an artist's workflow.
_IMAGE_INPUT = {"LoadImage": "image"}
_TEXT_INPUT = {"CLIPTextEncode": "text", "CLIPTextEncodeSDXL": "text_g"}
_SEED_INPUT = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed", "RandomNoise": "noise_seed"}
_OUTPUT_CLASSES = ("SaveImage", "PreviewImage")


class WorkflowError(ValueError):
    """A workflow cannot run on this server; the message says what is missing and where."""


@dataclass(frozen=True)
class Inputs:
    """What a workflow is filled with: uploaded picture names by pass ("beauty", "depth"...), prompts, seed and
    the generation size."""

    images: dict[str, str]
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int


def build(settings: ComfyUISettings, inputs: Inputs) -> dict[str, Any]:
    """The API-format workflow for `settings` (see the module docstring)."""
    graph: dict[str, Any] = {}

    def node(key: str, class_type: str, title: str, **node_inputs: Any) -> list:
        graph[key] = {"class_type": class_type, "inputs": node_inputs, "_meta": {"title": title}}
        return [key, 0]

    def out(key: str, index: int) -> list:
        return [key, index]

    node("checkpoint", "CheckpointLoaderSimple", "Checkpoint", ckpt_name=settings.checkpoint)
    model, clip, vae = out("checkpoint", 0), out("checkpoint", 1), out("checkpoint", 2)
    for number, lora in enumerate(settings.active_loras, 1):
        key = f"lora_{number}"
        node(
            key, "LoraLoader", f"LoRA {number}", model=model, clip=clip, lora_name=lora.file,
            strength_model=lora.weight, strength_clip=lora.weight,
        )  # fmt: skip
        model, clip = out(key, 0), out(key, 1)
    positive = node("prompt", "CLIPTextEncode", "Prompt", text=inputs.prompt, clip=clip)
    negative = node(
        "negative_prompt", "CLIPTextEncode", "Negative Prompt", text=inputs.negative_prompt, clip=clip
    )
    for unit in settings.controlnets:
        image = node(f"{unit.map}_image", "LoadImage", f"{unit.map} pass", image=inputs.images[unit.map])
        net = node(
            f"{unit.map}_controlnet",
            "ControlNetLoader",
            f"{unit.map} ControlNet",
            control_net_name=unit.model,
        )
        key = f"{unit.map}_control"
        node(
            key, "ControlNetApplyAdvanced", f"{unit.map} control", positive=positive, negative=negative,
            control_net=net, image=image, strength=unit.weight, start_percent=unit.start, end_percent=unit.end,
        )  # fmt: skip
        positive, negative = out(key, 0), out(key, 1)
    if settings.img2img:
        beauty = node("beauty", "LoadImage", "Beauty", image=inputs.images["beauty"])
        latent = node("start", "VAEEncode", "Start from the beauty", pixels=beauty, vae=vae)
    else:
        latent = node(
            "start",
            "EmptyLatentImage",
            "Start from noise",
            width=inputs.width,
            height=inputs.height,
            batch_size=1,
        )
    samples = node(
        "sampler", "KSampler", "Sampler", model=model, seed=inputs.seed, steps=settings.steps,
        cfg=settings.guidance, sampler_name=settings.sampler, scheduler=settings.scheduler,
        positive=positive, negative=negative, latent_image=latent, denoise=settings.denoise,
    )  # fmt: skip
    picture = node("decode", "VAEDecode", "Decode", samples=samples, vae=vae)
    node(OUTPUT_NODE, "PreviewImage", "Stylepass Result", images=picture)
    return graph


def load(path: str | Path) -> dict[str, Any]:
    """An artist's workflow file, exported from ComfyUI in API format.

    Raises:
        WorkflowError: unreadable, not JSON, or the UI format (nodes and links) instead of the API format.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise WorkflowError(f"Cannot read the workflow {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise WorkflowError(f"The workflow {path} is not JSON: {error}") from error
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{Path(path).name} is a workflow in ComfyUI's UI format: save it with 'Export (API)' (turn on the "
            "dev mode options in ComfyUI's settings if the menu lacks it)."
        )
    if (
        not isinstance(data, dict)
        or not data
        or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict)
            for n in data.values()
        )
    ):
        raise WorkflowError(
            f"{Path(path).name} is not an API-format workflow (node id -> class_type, inputs)."
        )
    return data


def fill(graph: dict[str, Any], inputs: Inputs) -> tuple[dict[str, Any], list[str]]:
    """The artist's workflow with Stylepass's inputs put into the nodes titled `Stylepass <Input>`.

    Returns:
        `(graph, used)`: a filled copy, and which Stylepass inputs found a node.

    Raises:
        WorkflowError: no node is titled for any input, a titled node is of a class that cannot take the
            input, or the workflow has no image output.
    """
    graph = json.loads(json.dumps(graph))  # the artist's file stays as it is
    values = {"prompt": inputs.prompt, "negative_prompt": inputs.negative_prompt, "seed": inputs.seed}
    values.update(inputs.images)
    used = []
    for name in WORKFLOW_INPUTS:
        title = input_title(name)
        nodes = [
            (key, n) for key, n in graph.items() if (n.get("_meta") or {}).get("title", "").strip() == title
        ]
        for key, found in nodes:
            kind = found["class_type"]
            field = (
                _IMAGE_INPUT.get(kind)
                if name in ("beauty", "depth", "normal", "lineart", "segmentation")
                else _SEED_INPUT.get(kind)
                if name == "seed"
                else _TEXT_INPUT.get(kind)
            )
            if field is None:
                raise WorkflowError(
                    f"The node '{title}' (#{key}) is a {kind}, which cannot take Stylepass's {name}: use a "
                    f"{' or '.join(_kinds_for(name))} node."
                )
            if name not in values:
                raise WorkflowError(
                    f"The node '{title}' (#{key}) wants the {name} pass, which this run has not."
                )
            found["inputs"][field] = values[name]
        if nodes:
            used.append(name)
    if not used:
        raise WorkflowError(
            "No node of the workflow is titled for a Stylepass input: title a LoadImage node 'Stylepass Beauty' "
            "(or 'Stylepass Depth', ...) and the prompt's CLIPTextEncode 'Stylepass Prompt'."
        )
    if not any(n["class_type"] in _OUTPUT_CLASSES for n in graph.values()):
        raise WorkflowError(
            "The workflow has no SaveImage or PreviewImage node, so it gives no picture back."
        )
    return graph, used


def input_title(name: str) -> str:
    """The node title that takes Stylepass input `name`: "Stylepass Beauty", "Stylepass Negative Prompt"."""
    return TITLE_PREFIX + name.replace("_", " ").title().replace("Lineart", "Line Art")


def _kinds_for(name: str) -> tuple[str, ...]:
    if name == "seed":
        return tuple(_SEED_INPUT)
    if name in ("prompt", "negative_prompt"):
        return tuple(_TEXT_INPUT)
    return tuple(_IMAGE_INPUT)


def check(graph: dict[str, Any], object_info: dict[str, Any], uploaded: set[str] = frozenset()) -> None:
    """Refuse a workflow the server cannot run, before it is queued: a node type the server lacks, a model (or
    sampler) name not in the server's list for that input, a link to a node that is not there.

    Args:
        uploaded: picture names just uploaded (a server lists its input folder only as of the last
            `/object_info`).

    Raises:
        WorkflowError: naming the node, the input and what the server offers instead.
    """
    for key, item in graph.items():
        kind = item["class_type"]
        title = (item.get("_meta") or {}).get("title") or kind
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(
                f"The ComfyUI server has no '{kind}' node (#{key} '{title}'): install the custom node that "
                "provides it, or change the workflow."
            )
        specs = {
            **(info.get("input", {}).get("required") or {}),
            **(info.get("input", {}).get("optional") or {}),
        }
        for name, value in item["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                if value[0] not in graph:
                    raise WorkflowError(
                        f"Node #{key} '{title}' takes {name} from node #{value[0]}, which is missing."
                    )
                continue
            spec = specs.get(name)
            choices = (
                spec[0] if isinstance(spec, list | tuple) and spec and isinstance(spec[0], list) else None
            )
            if choices is not None and value not in choices and value not in uploaded:
                offered = ", ".join(str(c) for c in choices[:12]) or "nothing"
                more = f" and {len(choices) - 12} more" if len(choices) > 12 else ""
                raise WorkflowError(
                    f"'{value}' is not on the ComfyUI server for {name} of #{key} '{title}' ({kind}); it has: "
                    f"{offered}{more}."
                )


def choices(object_info: dict[str, Any], kind: str, name: str) -> list[str]:
    """The server's list for input `name` of node `kind` (checkpoints, LoRAs, ControlNets, samplers); [] when
    the server has no such node or input."""
    inputs = (object_info.get(kind) or {}).get("input") or {}
    spec = {**(inputs.get("required") or {}), **(inputs.get("optional") or {})}.get(name)
    if isinstance(spec, list | tuple) and spec and isinstance(spec[0], list):
        return [str(choice) for choice in spec[0]]
    return []
