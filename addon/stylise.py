# SPDX-License-Identifier: GPL-3.0-or-later
"""Scene -> passes -> engine -> image -> compositor, for one frame.

Split in three so the UI can run the middle on a thread while Blender stays responsive:
    prepare()  main thread: check everything, render (or reuse) the passes, build the engine request;
    run()      any thread, no bpy: the engine and the files on disk;
    finish()   main thread: the Image datablock and the Stylepass compositor group.
`stylise()` does all three synchronously, for background mode, scripts and farms.
"""

import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import bpy
import numpy as np

from . import compositor, display_colour, engine_host, images
from .scene_passes import PassOptions, PassSet, StylepassError, render_passes
from .stylepass_core import exr
from .stylepass_core.engine_api import Aborted, EngineUnavailable, Progress, StyleRequest, get_engine
from .stylepass_core.output_layout import SceneLayout, ensure_writable
from .stylepass_core.stylise_job import EngineRunner, StylisedFrame, run_in_process, stylise_frame
from .stylepass_core.worker.client import WorkerError

STYLISED_IMAGE = compositor.STYLISED_IMAGE


@dataclass
class StyleOptions:
    """The style settings as plain values (`scene.stylepass`), so scripts and tests can build one."""

    engine: str = "NEURAL_STYLE"
    style_source: str = "PRESET"
    style_preset: str = "style_00"
    style_blend_preset: str = "style_01"
    style_blend_amount: float = 0.5
    style_image: str | None = None
    strength: float = 1.0
    keep_colours: bool = False
    detail_scale: float = 1.0
    seed: int = 0
    object_filter: str = "ALL"
    png_compression: int = 0  # percent, as Blender's Output > Compression
    passes: PassOptions = field(default_factory=PassOptions)
    # Diffusion
    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    seed_locked: bool = True
    steps: int = 20
    guidance: float = 7.0
    denoise: float = 0.75
    scheduler: str = "dpmpp_2m_karras"
    controls: list[dict] = field(default_factory=list)
    device: str = "auto"
    allow_network: bool = False

    @classmethod
    def from_scene(cls, scene: bpy.types.Scene, device: str = "CPU", prefs=None) -> "StyleOptions":
        s = scene.stylepass
        options = cls(
            engine=s.engine,
            style_source=s.style_source,
            style_preset=s.style_preset,
            style_blend_preset=s.style_blend_preset,
            style_blend_amount=s.style_blend_amount,
            style_image=s.style_image.name if s.style_image is not None else None,
            strength=s.strength,
            keep_colours=s.keep_colours,
            detail_scale=s.detail_scale,
            seed=s.seed,
            object_filter=s.object_filter,
            png_compression=s.png_compression,
            passes=PassOptions.from_scene(scene, device),
            model=s.model,
            prompt=s.prompt,
            negative_prompt=s.negative_prompt,
            seed_locked=s.seed_locked,
            steps=s.steps,
            guidance=s.guidance,
            denoise=s.denoise,
            scheduler=s.scheduler,
            controls=[
                {"map": c.map, "model": c.model, "weight": c.weight, "start": c.start, "end": c.end}
                for c in s.controls
                if c.enabled
            ],
        )
        if prefs is not None:
            options.device = prefs.device
            options.allow_network = bool(prefs.allow_downloads and bpy.app.online_access)
        return options


@dataclass
class PreparedFrame:
    """What the engine thread needs; plain data only, no bpy objects."""

    engine: str
    request: StyleRequest
    passes: PassSet
    png_path: Path
    json_path: Path
    context: dict
    compositor_exr: Path
    compositor: display_colour.CompositorTarget
    runner: EngineRunner = run_in_process
    png_level: int = 0  # zlib level of the stylised PNG
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class StyliseResult:
    frame: StylisedFrame
    passes: PassSet
    image: bpy.types.Image | None
    warnings: list[str]
    timings: dict[str, float]


def output_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The final render's size: the stylised image matches it so the compositor lines it up pixel for pixel."""
    render = scene.render
    return (
        max(1, int(render.resolution_x * render.resolution_percentage / 100)),
        max(1, int(render.resolution_y * render.resolution_percentage / 100)),
    )


def _style_fields(options: StyleOptions) -> dict:
    if options.style_source == "PRESET":
        return {"style": options.style_preset}
    if options.style_source == "BLEND":
        return {
            "style": options.style_preset,
            "style_blend": options.style_blend_preset,
            "blend_amount": options.style_blend_amount,
        }
    if options.style_source == "IMAGE":
        image = bpy.data.images.get(options.style_image) if options.style_image else None
        if image is None:
            detail = f"image '{options.style_image}' not found" if options.style_image else "none chosen"
            raise StylepassError(
                f"Style Source is Image but no style image is set ({detail}): pick one in the Stylepass panel."
            )
        try:
            return {"style_image": images.image_to_display_rgb(image)}
        except images.ImageError as error:
            raise StylepassError(f"Style image unusable: {error}") from error
    raise StylepassError(f"Unknown style source {options.style_source!r}.")


def _model_reference(value: str) -> str:
    """A file or folder setting made absolute ('//' = the .blend's folder); model ids pass unchanged."""
    if value.startswith("//") or os.path.isabs(value) or os.path.exists(bpy.path.abspath(value)):
        return os.path.normpath(bpy.path.abspath(value))
    return value


def diffusion_params(options: StyleOptions) -> tuple[dict, list[str]]:
    """The diffusion engine's params and the folders its model files live in (the worker may read only those).

    Raises:
        StylepassError: no model, or a control without a ControlNet.
    """
    if not options.model.strip():
        raise StylepassError(
            "The diffusion engine needs a model: set Model to a model id, a diffusers folder or a .safetensors file "
            "(or use a preset)."
        )
    params: dict = {
        "model": _model_reference(options.model.strip()),
        "prompt": options.prompt,
        "negative_prompt": options.negative_prompt,
        "steps": options.steps,
        "guidance": options.guidance,
        "denoise": options.denoise,
        "scheduler": options.scheduler,
        "device": options.device,
        "allow_network": options.allow_network,
    }
    used = set()
    for control in options.controls:
        name = control["map"]
        if name in used:
            raise StylepassError(f"Two controls use the {name} pass: keep one.")
        if not control["model"].strip():
            raise StylepassError(
                f"The {name} control has no ControlNet model: set one or disable the control."
            )
        used.add(name)
        params[f"controlnet.{name}.model"] = _model_reference(control["model"].strip())
        params[f"controlnet.{name}.weight"] = control["weight"]
        params[f"controlnet.{name}.start"] = control["start"]
        params[f"controlnet.{name}.end"] = control["end"]
    folders = sorted(
        {
            os.path.dirname(v)
            for k, v in params.items()
            if (k == "model" or k.endswith(".model")) and os.path.isabs(v)
        }
    )
    return params, folders


def _object_selection(scene: bpy.types.Scene, options: StyleOptions, passes: PassSet) -> dict:
    if options.object_filter == "ALL":
        return {}
    marked = {obj.name for obj in scene.objects if hasattr(obj, "stylepass") and obj.stylepass.in_selection}
    indices = tuple(entry.index for entry in passes.objects if entry.name in marked)
    if options.object_filter == "INCLUDE":
        if not indices:
            raise StylepassError(
                "Objects is 'Only Selected' but no rendered object is in the Stylepass selection: tick "
                "'Stylepass Selection' on the objects to stylise."
            )
        return {"include_objects": indices, "object_index": passes.maps["object_index"]}
    return {"exclude_objects": indices, "object_index": passes.maps["object_index"]} if indices else {}


def prepare(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: StyleOptions,
    frame: int | None = None,
    prefs=None,
    fingerprint: str | None = None,
) -> PreparedFrame:
    """Check inputs, render or reuse the passes and build the request (main thread).

    Raises:
        StylepassError: the message says what to change; nothing was changed or written.
    """
    start = time.perf_counter()
    # 1. Check what would make the engine fail before rendering anything
    extra: dict = {}
    folders: list[str] = []
    if options.engine not in engine_host.WORKER_ENGINES:
        try:
            get_engine(options.engine)
        except EngineUnavailable as error:
            raise StylepassError(str(error)) from error
        except ValueError as error:
            raise StylepassError(f"Unknown engine: {error}") from error
        style = _style_fields(options)
    else:
        params, folders = diffusion_params(options)
        extra["params"] = params
        style = {}  # the prompt and the controls carry the look; presets and style images are neural style's
    try:
        runner = engine_host.runner_for(options.engine, prefs, folders)
    except engine_host.EngineHostError as error:
        raise StylepassError(str(error)) from error
    try:
        target = display_colour.compositor_target(scene)
    except display_colour.ViewProbeError as error:
        raise StylepassError(f"Cannot match the scene's colour management: {error}") from error
    if not options.seed_locked:
        options.seed = secrets.randbelow(2**31)
        scene.stylepass.seed = options.seed

    # 2. Passes (checks camera, objects, resolution and the output folder)
    passes = render_passes(
        scene, view_layer, options.passes, frame=frame, reuse=True, fingerprint=fingerprint
    )
    layout = SceneLayout(passes.json_path.parents[2], scene.name)
    try:
        ensure_writable(layout.stylised_dir)
    except OSError as error:
        raise StylepassError(str(error)) from error

    # 3. The request
    width, height = output_size(scene)
    # Only the maps the engine reads (neural style reads none; diffusion those with a ControlNet).
    wanted = [c["map"] for c in options.controls] if options.engine in engine_host.WORKER_ENGINES else []
    controls = {name: passes.maps[name] for name in wanted}
    request = StyleRequest(
        beauty=passes.maps["beauty"],
        controls=controls,
        strength=options.strength,
        keep_colours=options.keep_colours,
        detail_scale=options.detail_scale,
        seed=options.seed,
        width=width,
        height=height,
        **style,
        **extra,
        **_object_selection(scene, options, passes),
    )
    try:
        request.validate()
    except ValueError as error:
        raise StylepassError(f"Invalid style settings: {error}") from error
    context = {
        "scene": scene.name,
        "frame": passes.frame,
        "passes_record": str(passes.json_path),
        "passes_reused": passes.reused,
        "style_image": options.style_image if options.style_source == "IMAGE" else None,
        "options": {k: v for k, v in asdict(options).items() if k != "passes"},
        "blender_version": bpy.app.version_string,
        "pass_timings": passes.timings,
    }
    return PreparedFrame(
        engine=options.engine,
        request=request,
        passes=passes,
        png_path=layout.stylised_file(passes.frame),
        json_path=layout.stylised_file(passes.frame, "json"),
        context=context,
        compositor_exr=layout.compositor_file(passes.frame),
        compositor=target,
        runner=runner,
        png_level=round(max(0, min(100, options.png_compression)) * 9 / 100),
        timings={"prepare": time.perf_counter() - start},
    )


def run(
    prepared: PreparedFrame,
    progress: Progress | None = None,
    abort: threading.Event | None = None,
    postprocess=None,
):
    """The engine and the result files (any thread; touches no bpy). `postprocess` see `stylise_frame`.

    Besides the PNG and its record it writes the compositor's copy: the scene-linear pixels that the scene's
    view transform turns back into the PNG, as an EXR (half float unless the view needs more range).
    `frame.alongside` holds its warnings.
    """

    def compositor_copy(image) -> list[str]:
        pixels, warnings = prepared.compositor.convert(image)
        prepared.compositor_exr.parent.mkdir(parents=True, exist_ok=True)
        channels = {c: pixels[..., i] for i, c in enumerate("RGB")}
        exr.write_exr(prepared.compositor_exr, channels, half=pixels.dtype == np.float16)
        return warnings

    try:
        return stylise_frame(
            prepared.engine,
            prepared.request,
            prepared.png_path,
            prepared.json_path,
            context=prepared.context,
            progress=progress,
            abort=abort,
            runner=prepared.runner,
            postprocess=postprocess,
            alongside=compositor_copy,
            png_level=prepared.png_level,
        )
    except Aborted:
        raise
    except (EngineUnavailable, ValueError, OSError, MemoryError, WorkerError) as error:
        raise StylepassError(f"The {prepared.engine} engine failed: {error}") from error


def finish(
    scene: bpy.types.Scene, prepared: PreparedFrame, frame: StylisedFrame
) -> tuple[bpy.types.Image, list]:
    """Image datablock + compositor group (main thread). Returns the image and warnings."""
    # The compositor works in scene-linear light: it shows the EXR `run` wrote beside the PNG.
    warnings = list(frame.alongside or [])
    image = images.show_file(STYLISED_IMAGE, prepared.compositor_exr, prepared.compositor.colour_space)
    compositor.install(scene, image)
    if not scene.render.use_compositing:
        warnings.append(
            "Compositing is off in Output > Post Processing, so F12 will not show the stylised image."
        )
    return image, warnings


def stylise(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: StyleOptions,
    progress: Progress | None = None,
    abort: threading.Event | None = None,
    prefs=None,
) -> StyliseResult:
    """All three steps synchronously (background mode, scripts, render farms)."""
    prepared = prepare(scene, view_layer, options, prefs=prefs)
    tick = time.perf_counter()
    frame = run(prepared, progress, abort)
    engine_and_write = time.perf_counter() - tick
    tick = time.perf_counter()
    image, warnings = finish(scene, prepared, frame)
    timings = dict(prepared.timings, run=engine_and_write, finish=time.perf_counter() - tick)
    timings["engine"] = frame.record["timings"]["engine"]
    return StyliseResult(frame, prepared.passes, image, prepared.passes.warnings + warnings, timings)
