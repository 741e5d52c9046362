# SPDX-License-Identifier: GPL-3.0-or-later
"""Scene -> passes -> engine -> image -> compositor, for one frame.

Split in three so the UI can run the middle on a thread while Blender stays responsive:
    prepare()  main thread: check everything, render (or reuse) the passes, build the engine request;
    run()      any thread, no bpy: the engine, Stylepass's mix with the render, the files on disk;
    finish()   main thread: the Image datablock, the Stylepass compositor group, the new seed.
`stylise()` does all three synchronously, for background mode, scripts and farms.
"""

import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import bpy
import numpy as np

from stylepass_core import compositor_layers, exr, imageops
from stylepass_core.engine_api import Aborted, NullProgress, Progress, Regions, StyleRequest, get_engine
from stylepass_core.errors import StylepassError
from stylepass_core.jobs import BackgroundJob, PartProgress, ProgressEvent
from stylepass_core.output_layout import ensure_writable
from stylepass_core.settings import (
    GROUPS_AS_REGIONS,
    EngineSettings,
    FrameSettings,
    PassSettings,
    SettingsError,
)
from stylepass_core.style_groups import GroupedFinish, StyleGroup, assign, layer_map
from stylepass_core.stylise_job import EngineRunner, Finish, StylisedFrame, run_in_process, stylise_frame
from stylepass_core.takes import FrameTakes

from . import compositor, display_colour, images, properties, runtime
from .pass_process import PassProcess
from .scene_passes import (
    PassOptions,
    PassPlan,
    PassSet,
    develop,
    discard,
    plan_passes,
    publish,
    render_here,
    renderable_objects,
)
from .settings import chosen_engine, engine_group
from .style_groups import SceneGroup, read_groups

STYLISED_IMAGE = compositor.STYLISED_IMAGE
# The pass render's share of a Stylise Frame's progress bar (the engine gets the rest).
PASS_SHARE = 0.45


@dataclass(frozen=True)
class RunSettings:
    """Everything a run reads from the scene and the preferences, as checked, typed values.

    Attributes:
        engine: The chosen engine's settings (its class names the engine).
        frame: Stylepass's own controls (Strength, Keep Scene Colours, objects, seed).
        passes: How the control passes are rendered and where files go.
        images: The Blender images the engine settings' image fields point at, by field name.
        groups: The style groups (objects with their own style), each with its own settings of this engine.
    """

    engine: EngineSettings
    frame: FrameSettings = field(default_factory=FrameSettings)
    passes: PassOptions = field(default_factory=PassOptions)
    images: dict[str, bpy.types.Image] = field(default_factory=dict)
    groups: tuple[SceneGroup, ...] = ()  # the style groups, for the scene's engine

    @classmethod
    def from_scene(cls, scene: bpy.types.Scene, prefs=None) -> "RunSettings":
        """The scene's settings (`scene.stylepass`) and the machine's (`prefs`, may be None).

        Raises:
            SettingsError: a value set out of range from Python, or a rule across fields broken.
        """
        s = scene.stylepass
        engine_cls = chosen_engine(s)
        group = engine_group(s, engine_cls)
        images = {
            name: getattr(group, name)
            for name, _, spec, _ in engine_cls.specs()
            if spec.image and getattr(group, name) is not None
        }
        engine = properties.read(group, engine_cls, **host_values(engine_cls, prefs))
        frame = properties.read(s, FrameSettings)
        passes = PassOptions.from_settings(
            properties.read(s, PassSettings),
            runtime.render_device(prefs),
            beauty_used=engine.uses_beauty() or frame.mixes_beauty(),
        )
        groups = read_groups(scene, engine_cls, host_values(engine_cls, prefs))
        return cls(engine=engine, frame=frame, passes=passes, images=images, groups=groups)


def host_values(engine_cls: type[EngineSettings], prefs) -> dict:
    """The engine's machine-level settings (device, downloads) from the preferences; defaults without them."""
    if prefs is None:
        return {}
    values = {name: getattr(prefs, name) for name in engine_cls.HOST_FIELDS if hasattr(prefs, name)}
    if "allow_network" in values:
        # Blender's own online-access switch overrides any download permission.
        values["allow_network"] = bool(values["allow_network"] and bpy.app.online_access)
    return values


@dataclass
class PreparedFrame:
    """What the engine thread needs; plain data only, no bpy objects. `warnings` are for the artist."""

    request: StyleRequest
    finish: Finish
    passes: PassSet
    png_path: Path
    json_path: Path
    context: dict
    compositor_exr: Path
    compositor: display_colour.CompositorTarget
    runner: EngineRunner = run_in_process
    png_level: int = 0  # zlib level of the stylised PNG
    new_seed: int | None = None  # stored in the scene by `finish` when the seed is not locked
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    takes: FrameTakes | None = None  # where `run` keeps the frame's numbered take; None keeps none
    # Style groups: each group's request and mix, and the layer map and depth they are composited by.
    groups: tuple[tuple[StyleRequest | None, Finish], ...] = ()  # None: a region of the frame's own run
    group_layer: np.ndarray | None = None
    group_depth: np.ndarray | None = None
    group_names: tuple[str, ...] = ()
    layers_exr: Path | None = None  # the compositor's layers file (`stylepass_core.compositor_layers`)

    @property
    def engine(self) -> str:
        return self.request.engine


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


def _model_reference(value: str, remote: bool) -> str:
    """A '//' path made absolute (the .blend's folder); model ids and names in the model folders pass unchanged.

    A remote worker may run another system, so its paths use forward slashes (Windows accepts them too).
    """
    value = value.strip()
    # A relative name is the worker's to resolve in its model folders (or a model id), never Blender's cwd.
    if value.startswith("//") or os.path.isabs(value):
        value = os.path.normpath(bpy.path.abspath(value))
    return value.replace("\\", "/") if remote else value


def _model_files(settings, prefix: str = ""):
    """(label, reference) of every model field with a value, nested lists included ("Controls 2: ControlNet")."""
    for name, _, spec, _ in settings.specs():
        value = getattr(settings, name)
        if spec.model and value:
            yield prefix + spec.label, value
        elif spec.item is not None:
            for index, nested in enumerate(value):
                if getattr(nested, "enabled", True):
                    yield from _model_files(nested, f"{prefix}{spec.label} {index + 1}: ")


def _check_model_files(settings: EngineSettings) -> None:
    """Refuse a model file or folder that is not there before anything is rendered (a worker on this machine
    sees the same files; model ids and names inside the worker's model folders are its to resolve)."""
    for label, value in _model_files(settings):
        if os.path.isabs(value) and not os.path.exists(value):
            raise StylepassError(f"{label}: '{value}' does not exist. Check the path, or use a model id.")


def _pictures(settings: EngineSettings, images_by_field: dict, owner: str = "") -> dict[str, np.ndarray]:
    """Pixels of the images the engine's settings use now (a style image only with Style Source Image...).
    `owner` names where the settings live in messages ("Style group 'Ink': ")."""
    labels = {name: spec.label for name, _, spec, _ in settings.specs()}
    pictures = {}
    for name, why in settings.required_images().items():
        image = images_by_field.get(name)
        if image is None:
            raise StylepassError(
                f"{owner}{labels[name]} is needed ({why}) but none is set: pick one in the Stylepass panel."
            )
        try:
            pictures[name] = images.image_to_display_rgb(image)
        except images.ImageError as error:
            raise StylepassError(f"{owner}{labels[name]} unusable: {error}") from error
    return pictures


def missing_images(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer) -> list[str]:
    """Warnings for image files the render would miss (textures of rendered objects' materials, the world):
    Blender renders them magenta, and the engine would stylise the magenta."""
    trees = [scene.world.node_tree] if scene.world is not None and scene.world.node_tree is not None else []
    for obj in renderable_objects(view_layer):
        for slot in obj.material_slots:
            if slot.material is not None and slot.material.node_tree is not None:
                trees.append(slot.material.node_tree)
    found, seen = [], set()
    while trees:
        tree = trees.pop()
        if tree.as_pointer() in seen:
            continue
        seen.add(tree.as_pointer())
        for node in tree.nodes:
            if getattr(node, "node_tree", None) is not None:
                trees.append(node.node_tree)  # node groups
            image = getattr(node, "image", None)
            if image is None or image.source not in {"FILE", "SEQUENCE", "TILED"} or image.packed_file:
                continue
            path = bpy.path.abspath(image.filepath, library=image.library)
            if image.source == "FILE" and not os.path.isfile(path) and image.name not in found:
                found.append(image.name)
    return [
        f"Image '{name}' is missing its file, so it renders magenta and gets stylised that way: relink it "
        "(File > External Data > Find Missing Files)."
        for name in found
    ]


def _selected_objects(scene: bpy.types.Scene) -> set[str]:
    return {obj.name for obj in scene.objects if obj.stylepass.in_selection}


@dataclass(frozen=True)
class CheckedGroup:
    """A style group checked on the main thread: its settings (model references resolved) and pictures."""

    group: StyleGroup
    pictures: dict[str, np.ndarray]
    image_names: dict[str, str]


def _check_groups(run: RunSettings, remote: bool) -> tuple[CheckedGroup, ...]:
    """The style groups as the engine will run them.

    Raises:
        StylepassError: the engine cannot style groups yet, or a group's model or picture is missing.
    """
    checked = []
    for scene_group in run.groups:
        group = scene_group.group
        if group.settings.STYLE_GROUPS == GROUPS_AS_REGIONS:
            # One run with the scene's models: a region takes only its prompts (the engine's call), so the
            # group's models and pictures are neither needed nor checked.
            checked.append(CheckedGroup(group, {}, {}))
            continue
        owner = f"Style group '{group.name}': "
        problem = group.settings.not_ready()
        if problem:
            raise StylepassError(owner + problem)
        settings = group.settings.map_models(lambda value: _model_reference(value, remote))
        if not remote:
            try:
                _check_model_files(settings)
            except StylepassError as error:
                raise StylepassError(owner + str(error)) from error
        pictures = _pictures(settings, scene_group.images, owner)
        names = {name: image.name_full for name, image in scene_group.images.items() if name in pictures}
        checked.append(CheckedGroup(replace(group, settings=settings), pictures, names))
    return tuple(checked)


@dataclass
class CheckedFrame:
    """A frame checked on the main thread and its pass render planned: plain data, so `build` runs anywhere."""

    settings: EngineSettings  # model references resolved for where the engine runs
    frame: FrameSettings
    pictures: dict[str, np.ndarray]
    image_names: dict[str, str]
    plan: PassPlan
    selected: frozenset[str]
    size: tuple[int, int]
    target: display_colour.TargetPlan  # resolved in `build`, once its inverse exists
    runner: EngineRunner
    new_seed: int | None
    warnings: list[str]
    started: float
    groups: tuple[CheckedGroup, ...] = ()


@dataclass(frozen=True)
class EngineInputs:
    """The checked engine side of a run: settings with model paths resolved, pictures, where it runs."""

    settings: EngineSettings
    pictures: dict[str, np.ndarray]
    runner: EngineRunner
    selected: frozenset[str]  # objects in the Stylepass selection
    groups: tuple[CheckedGroup, ...] = ()


def engine_inputs(
    scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, run: RunSettings, prefs=None
) -> EngineInputs:
    """Check the engine's settings, models, pictures and the object selection; say where the engine runs.

    Shared by Stylise Frame (`check`) and the live preview, so both refuse the same inputs with the same words.

    Raises:
        StylepassError: the message says what to change.
    """
    settings = run.engine
    if run.groups and not settings.STYLE_GROUPS:
        raise StylepassError(
            f"The {settings.LABEL} engine does not take style groups. Remove the style groups or switch the "
            "engine."
        )
    # Objects linked since the last update are not in the view layer's list until it syncs (5.x defers it).
    view_layer.update()
    problem = settings.not_ready()
    if problem:
        raise StylepassError(problem)
    if not settings.NEEDS_WORKER:
        get_engine(settings.ENGINE)  # EngineUnavailable says what to install
    remote = runtime.RUNTIME.is_remote(settings, prefs)
    settings = settings.map_models(lambda value: _model_reference(value, remote))
    if not remote:
        _check_model_files(settings)
    pictures = _pictures(settings, run.images)
    selected = frozenset(_selected_objects(scene))
    if run.frame.object_filter == "INCLUDE":
        if not selected:
            raise StylepassError(
                "Objects is 'Only Selected' but no object is in the Stylepass selection: tick 'Stylepass "
                "Selection' on the objects to stylise."
            )
        if not selected & {obj.name for obj in renderable_objects(view_layer)}:
            raise StylepassError(
                "Objects is 'Only Selected' but no rendered object is in the Stylepass selection (the selected "
                "ones are hidden from the render or excluded from the view layer)."
            )
    folders = sorted(
        {os.path.dirname(path) for path in settings.model_references().values() if os.path.isabs(path)}
    )
    runner = runtime.RUNTIME.runner_for(settings, prefs, folders)
    return EngineInputs(settings, pictures, runner, selected, _check_groups(run, remote))


def check(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    run: RunSettings,
    frame: int | None = None,
    prefs=None,
    fingerprint: str | None = None,
) -> CheckedFrame:
    """Check inputs and plan (or reuse) the passes (main thread; renders nothing).

    Raises:
        StylepassError: the message says what to change; nothing was changed in the scene.
    """
    start = time.perf_counter()
    inputs = engine_inputs(scene, view_layer, run, prefs)
    target = display_colour.plan_target(scene)  # a new colour view's inverse is built later, off the UI
    # A new seed is chosen now but stored in the scene only once the frame succeeded (`finish`).
    new_seed = None if run.frame.seed_locked else secrets.randbelow(2**31)
    missing = missing_images(scene, view_layer)
    # Camera, objects, memory, the output folder (created if missing); reuses current passes.
    plan = plan_passes(scene, view_layer, run.passes, frame=frame, reuse=True, fingerprint=fingerprint)
    return CheckedFrame(
        settings=inputs.settings,
        frame=run.frame,
        pictures=inputs.pictures,
        image_names={name: image.name_full for name, image in run.images.items() if name in inputs.pictures},
        plan=plan,
        selected=inputs.selected,
        size=output_size(scene),
        target=target,
        runner=inputs.runner,
        new_seed=new_seed,
        warnings=missing,
        started=start,
        groups=inputs.groups,
    )


def build(checked: CheckedFrame, passes: PassSet) -> PreparedFrame:
    """The engine request and the mix with the render, from the frame's passes (any thread, no bpy).

    Raises:
        StylepassError: the stylised folder is not writable, or the request is invalid.
    """
    layout = checked.plan.layout
    try:
        ensure_writable(layout.stylised_dir)
    except OSError as error:
        raise StylepassError(str(error)) from error
    frame_settings = checked.frame
    selection = tuple(entry.index for entry in passes.objects if entry.name in checked.selected)
    if frame_settings.object_filter == "INCLUDE" and not selection:
        raise StylepassError(
            "Objects is 'Only Selected' but no rendered object is in the Stylepass selection: tick "
            "'Stylepass Selection' on objects the camera sees."
        )
    width, height = checked.size
    settings = checked.settings
    request = StyleRequest(
        beauty=passes.maps["beauty"],
        settings=settings,
        controls={name: passes.maps[name] for name in settings.control_maps()},
        images=checked.pictures,
        seed=frame_settings.seed if checked.new_seed is None else checked.new_seed,
        width=width,
        height=height,
    )
    try:
        request.validate()
        finish_with = Finish(
            frame_settings,
            passes.maps["beauty"],
            passes.maps["object_index"] if frame_settings.object_filter != "ALL" else None,
            selection,
        )
    except ValueError as error:
        raise StylepassError(f"Invalid style settings: {error}") from error
    context = {
        "scene": checked.plan.record["scene"],
        "frame": passes.frame,
        "passes_record": str(passes.json_path),
        "passes_reused": passes.reused,
        "images": checked.image_names,
        "blender_version": checked.plan.record["blender_version"],
        "pass_timings": passes.timings,
    }
    groups, group_layer, group_depth, group_warnings = _group_requests(checked, passes, request, finish_with)
    if groups and settings.STYLE_GROUPS == GROUPS_AS_REGIONS:
        request = _with_regions(request, checked, group_layer)
    if groups:
        context["style_groups"] = [
            {
                "name": item.group.name,
                "objects": sorted(item.group.objects),
                "settings": item.group.settings.to_plain(),
                "strength": item.group.strength,
                "keep_colours": item.group.keep_colours,
                "images": item.image_names,
            }
            for item in checked.groups
        ]
    return PreparedFrame(
        request=request,
        finish=finish_with,
        passes=passes,
        png_path=layout.stylised_file(passes.frame),
        json_path=layout.stylised_file(passes.frame, "json"),
        context=context,
        compositor_exr=layout.compositor_file(passes.frame),
        layers_exr=layout.layers_file(passes.frame),
        takes=FrameTakes(layout, passes.frame),
        compositor=_resolve_target(checked.target),
        runner=checked.runner,
        png_level=round(frame_settings.png_compression * 9 / 100),
        new_seed=checked.new_seed,
        timings={"prepare": time.perf_counter() - checked.started},
        warnings=[*checked.warnings, *passes.warnings, *group_warnings],
        groups=groups,
        group_layer=group_layer,
        group_depth=group_depth,
        group_names=tuple(item.group.name for item in checked.groups),
    )


def _group_requests(checked: CheckedFrame, passes: PassSet, request: StyleRequest, scene_finish: Finish):
    """Each style group's request (the frame's, with the group's settings and pictures) and mix (the scene's,
    with the group's Strength and Keep Scene Colours), and the layer map from the object-index pass.

    Returns:
        `(groups, layer, depth, warnings)`; `groups` is empty without style groups.

    Raises:
        StylepassError: a group's settings make an invalid request.
    """
    if not checked.groups:
        return (), None, None, []
    entries = [(entry.index, entry.name) for entry in passes.objects]
    try:
        assignment, warnings = assign(entries, [item.group for item in checked.groups])
    except ValueError as error:
        raise StylepassError(str(error)) from error
    layer = layer_map(np.asarray(passes.maps["object_index"]).astype(np.int32), assignment)
    regional = request.settings.STYLE_GROUPS == GROUPS_AS_REGIONS
    groups = []
    for item in checked.groups:
        # Regions: the frame's one run makes every group's picture (None), conditioned by `request.regions`.
        group_request = (
            None if regional else replace(request, settings=item.group.settings, images=item.pictures)
        )
        frame = replace(checked.frame, strength=item.group.strength, keep_colours=item.group.keep_colours)
        try:
            if group_request is not None:
                group_request.validate()
        except ValueError as error:
            raise StylepassError(f"Style group '{item.group.name}': invalid settings: {error}") from error
        groups.append((group_request, replace(scene_finish, frame=frame)))
    return tuple(groups), layer, np.asarray(passes.raw["depth"], dtype=np.float32), warnings


def _with_regions(request: StyleRequest, checked: CheckedFrame, layer: np.ndarray) -> StyleRequest:
    """The frame's request with the style groups as regions of its one run (`GROUPS_AS_REGIONS` engines).

    Raises:
        StylepassError: a group's settings make invalid regions.
    """
    regions = Regions(
        layer=layer.astype(np.uint8 if len(checked.groups) < 256 else np.int32),
        settings=tuple(item.group.settings for item in checked.groups),
        names=tuple(item.group.name for item in checked.groups),
    )
    regional = replace(request, regions=regions)
    try:
        regional.validate()
    except ValueError as error:
        raise StylepassError(f"Invalid style groups: {error}") from error
    return regional


def grouped_finish(prepared: PreparedFrame, progress: Progress | None, abort: threading.Event | None):
    """Run every style group's engine (any thread) and return the frame's mix that composites them, or the
    frame's own mix when there are no groups.

    Raises:
        Aborted, StylepassError (as `run`).
    """
    if not prepared.groups:
        return prepared.finish
    progress = progress or NullProgress()
    runs = sum(request is not None for request, _ in prepared.groups)
    share = 1.0 / (runs + 1)  # the frame's own run takes the last share
    layers = []
    for request, finish in prepared.groups:
        if request is None:  # a region of the frame's own run
            layers.append((None, finish))
            continue
        number = len([picture for picture, _ in layers if picture is not None])
        part = PartProgress(progress, number * share, (number + 1) * share)
        try:
            result = prepared.runner(request.engine, request, part, abort)
        except (ValueError, OSError, MemoryError) as error:
            raise StylepassError(f"The {prepared.engine} engine failed on a style group: {error}") from error
        layers.append((result.image, finish))
    return GroupedFinish(
        prepared.finish, tuple(layers), prepared.group_layer, prepared.group_depth, prepared.group_names
    )


@contextmanager
def _colour_management():
    """A colour view Blender could not probe, as the artist's message."""
    try:
        yield
    except display_colour.ViewProbeError as error:
        raise StylepassError(f"Cannot match the scene's colour management: {error}") from error


def _resolve_target(plan: display_colour.TargetPlan) -> display_colour.CompositorTarget:
    with _colour_management():
        return plan.resolve()


def build_inverse_here(plan: display_colour.TargetPlan) -> None:
    """The colour view's inverse, built in this Blender (main thread) when it is new."""
    if plan.needs_inverse:
        with _colour_management():
            display_colour.build_inverse(plan.settings, plan.key, plan.folder)


def prepare(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    run: RunSettings,
    frame: int | None = None,
    prefs=None,
    fingerprint: str | None = None,
) -> PreparedFrame:
    """`check`, the pass render in this Blender (blocking) unless the passes are current, and `build`.

    Raises:
        StylepassError: the message says what to change; nothing was changed in the scene.
    """
    checked = check(scene, view_layer, run, frame=frame, prefs=prefs, fingerprint=fingerprint)
    plan = checked.plan
    try:
        build_inverse_here(checked.target)
    except BaseException:
        if plan.reused is None:
            discard(plan)
        raise
    if plan.reused is not None:
        return build(checked, plan.reused)
    passes = develop(plan, render_here(scene, view_layer, plan))
    publish(passes, plan)
    return build(checked, passes)


def passes_from_second_blender(
    checked: CheckedFrame,
    process: PassProcess,
    progress: Progress,
    abort: threading.Event,
    inverse_ticket: int | None = None,
    passes_ticket: int | None = None,
) -> PassSet:
    """Wait for what `process` was given for this frame (a new colour view's inverse, then its pass render
    unless the passes are reused) and develop the maps (any thread, no bpy). The pass render fills the
    progress up to `PASS_SHARE`. The plan's temporary files are removed when this fails.

    Raises:
        Aborted when `abort` was set (the second Blender is killed, nothing is written); StylepassError.
    """
    plan = checked.plan
    try:
        if inverse_ticket is not None:
            progress.update(0, 1000, "matching the colour view (once per colour setting)")
            process.wait(inverse_ticket, None, abort)
        if plan.reused is not None:
            return plan.reused
        progress.update(0, 1000, "waiting for Blender to render the passes")
        rendered = process.wait(passes_ticket, PartProgress(progress, 0.0, PASS_SHARE), abort)
    except BaseException:
        if plan.reused is None:
            discard(plan)
        raise
    plan.timings.update(rendered.pop("timings", {}))
    progress.update(round(PASS_SHARE * 1000), 1000, "computing control maps")
    return develop(plan, rendered)


def render_and_run(
    checked: CheckedFrame,
    process: PassProcess,
    progress: Progress,
    abort: threading.Event,
    inverse_ticket: int | None = None,
    passes_ticket: int | None = None,
) -> tuple[PreparedFrame, StylisedFrame]:
    """`passes_from_second_blender`, then the engine and the files: the whole frame off Blender's main thread
    (any thread, no bpy). `finish` (and `scene_passes.publish`) follow on the main thread.

    Raises:
        Aborted when `abort` was set (the second Blender is killed, nothing is written); StylepassError.
    """
    try:
        passes = passes_from_second_blender(checked, process, progress, abort, inverse_ticket, passes_ticket)
    finally:
        if process.idle:
            process.close()  # its jobs are done: it quits here, while the engine works, not on the main thread
    prepared = build(checked, passes)
    start = PASS_SHARE + 0.05 if checked.plan.reused is None else 0.0
    return prepared, run(prepared, PartProgress(progress, start, 1.0), abort)


def run(
    prepared: PreparedFrame,
    progress: Progress | None = None,
    abort: threading.Event | None = None,
    postprocess=None,
    layer_postprocess=None,
) -> StylisedFrame:
    """The engine and the result files (any thread; touches no bpy). `postprocess` see `stylise_frame`.

    Besides the PNG and its record it writes the compositor's copy: the scene-linear pixels that the scene's
    view transform turns back into the PNG, as an EXR (half float unless the view needs more range), and the
    compositor's layers file (`compositor_layers`: each style group's layer and mask, and the line art).
    `frame.alongside` is a `CompositorCopy` (warnings, the layers as written). Without `postprocess` the files
    are also kept as the frame's next numbered take (`stylepass_core.takes`; `frame.take` names it), so no
    earlier result is lost.

    Args:
        layer_postprocess: turns the style groups' scene-linear layers (in group order) into the ones written
            (an animation's in-between frames fuse them along the motion like the frame itself).

    Raises:
        StylepassError: the engine or a file write failed (the message says which); Aborted when `abort` was set.
    """
    finish_with = grouped_finish(prepared, progress, abort)

    def compositor_copy(image, place) -> CompositorCopy:
        pixels, warnings = prepared.compositor.convert(image)
        channels = {c: pixels[..., i] for i, c in enumerate("RGB")}
        exr.write_exr(place(prepared.compositor_exr), channels, half=pixels.dtype == np.float16)
        layers = _group_layers(prepared, finish_with, layer_postprocess)
        try:
            # Indexed, not `.get`: reused passes read each map from disk on first use (`_OnDisk`).
            line_art = prepared.passes.maps["lineart"]
        except (KeyError, OSError, ValueError):
            line_art = None
        if line_art is not None and line_art.shape != image.shape[:2]:
            line_art = imageops.resize_nearest(line_art, image.shape[:2])
        if prepared.layers_exr is not None and (layers or line_art is not None):
            channels = compositor_layers.channels(layers, line_art)
            # Compressed (ZIPS): masks and flat regions shrink to little, and an animation keeps one per frame.
            exr.write_exr(place(prepared.layers_exr), channels, half=True, compress=True)
        return CompositorCopy(warnings, [picture for _, picture, _ in layers])

    try:
        return stylise_frame(
            prepared.request,
            prepared.png_path,
            prepared.json_path,
            finish=finish_with,
            # The take's colour space travels with its record, for when it is chosen again.
            context=dict(prepared.context, compositor_colour_space=prepared.compositor.colour_space),
            progress=progress,
            abort=abort,
            runner=prepared.runner,
            postprocess=postprocess,
            alongside=compositor_copy,
            png_level=prepared.png_level,
            # A temporally blended frame belongs to its shot (Stylise Animation): it keeps no take of its own.
            takes=prepared.takes if postprocess is None else None,
        )
    except (Aborted, StylepassError):
        raise
    except (ValueError, OSError, MemoryError) as error:
        raise StylepassError(f"The {prepared.engine} engine failed: {error}") from error


@dataclass
class CompositorCopy:
    """What `run` wrote for the compositor besides the PNG: warnings for the artist, and the style groups'
    scene-linear layers as the layers file holds them (in group order; empty without groups)."""

    warnings: list[str]
    layers: list[np.ndarray]


def _group_layers(prepared: PreparedFrame, finish_with, layer_postprocess):
    """Each style group's passes, scene-linear layer and mask, for the layers file."""
    if not isinstance(finish_with, GroupedFinish):
        return []
    pictures, weights = finish_with.last()  # what the composite just used
    linear = [prepared.compositor.convert(picture)[0] for picture in pictures[1:]]
    if layer_postprocess is not None:
        linear = layer_postprocess(linear)
    names = compositor_layers.pass_names(finish_with.names or [f"Group {n + 1}" for n in range(len(linear))])
    return [(names[k], linear[k], weights[k + 1]) for k in range(len(linear))]


def finish(
    scene: bpy.types.Scene, prepared: PreparedFrame, frame: StylisedFrame
) -> tuple[bpy.types.Image, list]:
    """Image datablock, compositor group and the new seed (main thread). Returns the image and warnings.

    Raises:
        StylepassError: the compositor cannot take the group (the message says why).
    """
    # The compositor works in scene-linear light: it shows the EXR `run` wrote beside the PNG.
    warnings = list(frame.alongside.warnings if frame.alongside is not None else [])
    image = images.show_file(
        compositor.STYLISED_ROLE,
        STYLISED_IMAGE,
        prepared.compositor_exr,
        prepared.compositor.colour_space,
        warnings,
    )
    label = frame.take.name if frame.take is not None else None  # the group's image node names the take
    layers = None
    if prepared.layers_exr is not None:
        colour_space = prepared.compositor.colour_space
        layers = compositor.show_layers(
            prepared.layers_exr, list(prepared.group_names), colour_space, warnings
        )
    compositor.install(scene, image, notes=warnings, label=label, layers=layers)
    if prepared.new_seed is not None:
        scene.stylepass.seed = prepared.new_seed
    if not scene.render.use_compositing:
        warnings.append(
            "Compositing is off in Output > Post Processing, so F12 will not show the stylised image."
        )
    return image, warnings


class FrameJob:
    """Stylise Frame without holding Blender's main thread: what the UI's operator runs.

    `FrameJob(...)` checks and starts (main thread: the checks, a copy of the scene, a second Blender for the
    passes); `poll()` reads progress (main thread, never waits); once `done`, `complete(scene)` shows the
    passes and installs the result (main thread). The pass render, the maps and the engine run on a thread and
    in the second Blender. `cancel()` stops both; `close()` (Blender closing the operator) also waits a moment.
    `main_thread` records how long each main-thread call took, for the benchmark.
    """

    def __init__(
        self, scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, run_settings: RunSettings, prefs=None
    ):
        tick = self.started = time.perf_counter()
        self.main_thread: list[tuple[str, float]] = []
        self._process: PassProcess | None = None
        checked = check(scene, view_layer, run_settings, prefs=prefs)
        self._plan = plan = checked.plan
        inverse = checked.target.needs_inverse
        if plan.reused is not None and not inverse:
            prepared = build(checked, plan.reused)
            self._job = BackgroundJob(lambda progress, abort: (prepared, run(prepared, progress, abort)))
        else:
            # A second Blender renders the passes (and a new colour view's inverse): this one only writes the
            # scene's copy (milliseconds).
            try:
                process = self._process = PassProcess.start(scene, run_settings.passes.device)
                inverse_ticket = process.submit_inverse(checked.target) if inverse else None
                passes_ticket = process.submit(plan.job) if plan.reused is None else None
            except BaseException:
                if plan.reused is None:
                    discard(plan)
                if self._process is not None:
                    self._process.kill()
                raise
            self._job = BackgroundJob(
                lambda progress, abort: render_and_run(
                    checked, process, progress, abort, inverse_ticket, passes_ticket
                )
            )
        self._job.start()
        self.main_thread.append(("start", time.perf_counter() - tick))

    @property
    def done(self) -> bool:
        return self._job.done

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled

    def poll(self) -> list[ProgressEvent]:
        """Progress since the last poll (never waits)."""
        tick = time.perf_counter()
        events = self._job.poll()
        self.main_thread.append(("poll", time.perf_counter() - tick))
        return events

    def complete(
        self, scene: bpy.types.Scene
    ) -> tuple[PreparedFrame, StylisedFrame, bpy.types.Image, list[str]]:
        """The finished frame into Blender (main thread, once `done` and not cancelled).

        Raises:
            The job's error (StylepassError for the artist); StylepassError from `finish`.
        """
        tick = time.perf_counter()
        self._close_process()
        if self._job.error is not None:
            raise self._job.error
        prepared, frame = self._job.result
        if self._plan.reused is None:
            publish(prepared.passes, self._plan)
        image, warnings = finish(scene, prepared, frame)
        self.main_thread.append(("complete", time.perf_counter() - tick))
        return prepared, frame, image, prepared.warnings + warnings

    def cancel(self) -> None:
        """Stop the engine and kill the pass render (returns at once; `done` follows)."""
        self._job.cancel()

    def close(self) -> None:
        """Stop everything now (Blender is closing the operator: file load, quit)."""
        self._job.cancel(wait=5.0)
        if self._process is not None:
            self._process.kill()
            self._process = None

    def _close_process(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None


def stylise(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    run_settings: RunSettings,
    progress: Progress | None = None,
    abort: threading.Event | None = None,
    prefs=None,
) -> StyliseResult:
    """All three steps synchronously (background mode, scripts, render farms)."""
    prepared = prepare(scene, view_layer, run_settings, prefs=prefs)
    tick = time.perf_counter()
    frame = run(prepared, progress, abort)
    engine_and_write = time.perf_counter() - tick
    tick = time.perf_counter()
    image, warnings = finish(scene, prepared, frame)
    timings = dict(prepared.timings, run=engine_and_write, finish=time.perf_counter() - tick)
    timings["engine"] = frame.record["timings"]["engine"]
    return StyliseResult(frame, prepared.passes, image, prepared.warnings + warnings, timings)


def with_frame(run_settings: RunSettings, **changes) -> RunSettings:
    """`run_settings` with frame settings changed (e.g. the seed locked for an animation)."""
    try:
        return replace(run_settings, frame=run_settings.frame.replace(**changes))
    except SettingsError as error:
        raise StylepassError(str(error)) from error
