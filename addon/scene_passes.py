# SPDX-License-Identifier: GPL-3.0-or-later
"""Scene -> exact control passes: render the data passes with Cycles and turn them into control images.

The steps, split by where they may run:
    1. `plan_passes` (main thread): check the scene (camera, view layer, something to render, a size that
       fits in memory, a writable folder) and reuse the frame's passes when they are current, or describe the
       render as a plain `RenderJob`.
    2. Render (`pass_render`): Cycles with data-pass settings, the Render Result saved as an uncompressed
       multilayer EXR (raw data) and a PNG (the beauty, through the scene's view transform), every setting
       restored. Here (`render_here`, blocking) or in a separate Blender (`pass_process`) so the UI stays free.
    3. `develop` (any thread, no bpy): read the EXR into numpy and compute the control maps in the bpy-free
       core, each kept as its PNG stores it (a fresh render hands on exactly what a reload gives); write the
       predictable file layout and the frame's JSON record.
    4. `publish` (main thread): show the images in Blender and keep the passes for the next reuse.
`render_passes` does all four in this Blender.
"""

import json
import math
import shutil
import tempfile
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import bpy
import numpy as np

from stylepass_core import conditioning, exr, png
from stylepass_core.errors import StylepassError
from stylepass_core.output_layout import (
    PASS_BIT_DEPTHS,
    PASS_NAMES,
    OutputError,
    SceneLayout,
    decode_pass,
    encode_pass,
    ensure_writable,
    resolve_output_root,
    write_json,
)
from stylepass_core.settings import PassSettings, setting

from . import images, runtime
from .pass_render import (
    PassRenderCancelled,
    PassRenderError,
    RenderJob,
    camera_problem,
    render,
    renderable_objects,
)
from .scene_fingerprint import scene_fingerprint

# Blender 4.x writes the object-index pass as "IndexOB"; 5.x calls it "Object Index".
_INDEX_PASS_NAMES = ("IndexOB", "Object Index")

# Any depth at or beyond this is Cycles' "nothing was hit" value (it writes 1e10 for the background).
BACKGROUND_DEPTH = 1e9

# Peak memory of `render_passes` per pass pixel, measured on Blender 4.5 and 5.2 at 0.26-9.4 megapixels
# (219-288 bytes): Cycles' buffers and the Render Result (13 float channels), the EXR read back, and the
# float32 maps and raw arrays computed from it. Plus a fixed share for Cycles' kernels and the scene.
PASS_BYTES_PER_PIXEL = 256
PASS_BYTES_FIXED = 256 * 2**20
# Where the system does not say how much memory is free (no /proc/meminfo: Windows, macOS): assume what a
# machine running Blender can usually spare. Refusing a very large pass render there, with the size to lower
# to, is better than starting one that swaps the machine to a halt.
FALLBACK_AVAILABLE_MEMORY = 8 * 2**30
MEMINFO_PATH = "/proc/meminfo"
# The object-index pass is stored as 16-bit samples.
MAX_OBJECTS = 2**16 - 1


class RenderCancelled(StylepassError):
    """The render was cancelled (ESC); settings were restored and nothing was written."""


@dataclass(frozen=True)
class PassOptions(PassSettings):
    """The pass render's settings: the scene's (`PassSettings`) plus the device, which is the machine's."""

    device: str = setting(
        "CPU",
        "Pass Render Device",
        "Device Cycles uses for the data-pass render (GPU needs a compute device set in Preferences)",
        choices=(
            ("CPU", "CPU", "Always works; data passes need few samples"),
            ("GPU", "GPU", "Faster on big frames when a GPU compute device is configured"),
        ),
    )

    beauty_used: bool = setting(
        True,
        "Beauty Used",
        "Whether the engine or the finish reads the beauty pass; without it the render takes one sample, as "
        "the data passes are exact at one",
    )

    @classmethod
    def from_settings(
        cls, settings: PassSettings, device: str = "CPU", beauty_used: bool = True
    ) -> "PassOptions":
        return cls(**settings.values(), device=device, beauty_used=beauty_used)

    @property
    def render_samples(self) -> int:
        """Cycles samples of the pass render: every sample goes through the pixel centre, so depth, normals and
        indices are exact at one; only a beauty that is used needs more."""
        return self.pass_samples if self.beauty_used else 1


@dataclass
class ObjectEntry:
    index: int
    name: str
    semantic_class: str
    colour: tuple[int, int, int]


@dataclass
class PassSet:
    """One frame's passes: arrays (top row first) and where they were written."""

    frame: int
    width: int
    height: int
    maps: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    files: dict[str, list[Path]]
    json_path: Path
    objects: list[ObjectEntry]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reused: bool = False


# 1. Checks ------------------------------------------------------------------------------------------------


def pass_size(scene: bpy.types.Scene, scale_percent: float) -> tuple[int, int]:
    """The size of the pass render: the scene's output size times the Stylepass scale."""
    render = scene.render
    factor = render.resolution_percentage / 100.0 * scale_percent / 100.0
    return int(render.resolution_x * factor), int(render.resolution_y * factor)


def pass_memory_needed(width: int, height: int) -> int:
    """Bytes the pass render of a `width` x `height` frame needs at its peak (render, EXR and maps)."""
    return PASS_BYTES_FIXED + PASS_BYTES_PER_PIXEL * width * height


def available_memory() -> int:
    """Bytes this machine can give a new allocation now: MemAvailable on Linux, else a fixed cap."""
    try:
        with open(MEMINFO_PATH, encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_AVAILABLE_MEMORY


def check_memory(width: int, height: int, available: int | None = None) -> None:
    """Refuse a pass render that would need more memory than is available.

    Args:
        available: bytes free for it; default `available_memory()` (tests pass their own).

    Raises:
        StylepassError: with what the render needs, what is free and what to lower.
    """
    available = available_memory() if available is None else available
    needed = pass_memory_needed(width, height)
    if needed > available:
        fits = max(0.0, (available - PASS_BYTES_FIXED) / PASS_BYTES_PER_PIXEL)
        scale = 100.0 * math.sqrt(fits / (width * height))
        raise StylepassError(
            f"The pass render at {width} x {height} pixels needs about {_gigabytes(needed)} of memory, but "
            f"only {_gigabytes(available)} is available: lower Resolution Scale (Stylepass > Passes; about "
            f"{math.floor(scale)}% of the current size would fit) or the render resolution."
        )


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:.1f} GB"


def check_scene(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: PassOptions,
    available: int | None = None,
) -> tuple:
    """Raise StylepassError for anything that would make the render fail or meaningless; touch nothing.

    Args:
        available: bytes of memory free for the render; default `available_memory()`.

    Returns:
        (width, height, layout, warnings)
    """
    camera = scene.camera
    if camera is None:
        raise StylepassError(
            f"Scene '{scene.name}' has no active camera: add a camera and make it the scene camera "
            "(View > Cameras > Set Active Object as Camera)."
        )
    problem = camera_problem(camera)
    if problem:
        raise StylepassError(problem)
    if not view_layer.use:
        raise StylepassError(
            f"View layer '{view_layer.name}' is disabled for rendering: tick 'Use for Rendering' in View "
            "Layer Properties, or switch to a view layer that renders."
        )
    if view_layer.objects.get(camera.name) is None:
        raise StylepassError(
            f"Camera '{camera.name}' is not in view layer '{view_layer.name}' (its collection is excluded): "
            "include it, or choose another scene camera."
        )
    objects = renderable_objects(view_layer)
    if not objects:
        raise StylepassError(
            f"Nothing to render in view layer '{view_layer.name}': add objects, or enable rendering for the "
            "hidden ones."
        )
    if len(objects) > MAX_OBJECTS:
        raise StylepassError(
            f"View layer '{view_layer.name}' renders {len(objects)} objects; the object-index pass holds at "
            f"most {MAX_OBJECTS}: join objects, or exclude collections from the view layer."
        )
    width, height = pass_size(scene, options.resolution_scale)
    if width < 1 or height < 1:
        raise StylepassError(
            f"The pass resolution is {width} x {height} pixels: raise the scene resolution, its percentage "
            "or the Stylepass resolution scale."
        )
    check_memory(width, height, available)
    root, warning = resolve_output_root(options.output_dir, bpy.data.filepath)
    layout = SceneLayout(root, scene.name)
    try:
        ensure_writable(layout.passes_dir)
    except OutputError as error:
        raise StylepassError(str(error)) from error
    return width, height, layout, [warning] if warning else []


# 2.-3. Render with temporary settings ----------------------------------------------------------------------


# 4. Arrays and control maps ---------------------------------------------------------------------------------


def _pass(passes: dict[str, np.ndarray], *names: str) -> np.ndarray:
    for name in names:
        if name in passes:
            return passes[name]
    raise StylepassError(f"The render has no {names[0]} pass (found: {', '.join(sorted(passes))}).")


def compute_maps(
    passes: dict[str, np.ndarray],
    world_to_camera: np.ndarray,
    colours: dict[int, tuple[int, int, int]],
    options: PassOptions,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Control maps (display-ready, [0, 1]) and raw data from the grouped EXR passes."""
    depth = _pass(passes, "Depth")[..., 0]
    background = ~np.isfinite(depth) | (depth >= BACKGROUND_DEPTH)
    world_normals = _pass(passes, "Normal")[..., :3]
    object_index = np.rint(_pass(passes, *_INDEX_PASS_NAMES)[..., 0]).astype(np.int32)
    object_index[background] = 0
    vector = _pass(passes, "Vector")

    camera_normals = conditioning.camera_space_normals(world_normals, world_to_camera, background)
    maps = {
        **maps_from_raw(depth, camera_normals, object_index, background, colours, options),
        "object_index": object_index,
        "vector": conditioning.motion_vector_rgb(vector),
    }
    raw = {
        "depth": np.where(background, np.inf, depth).astype(np.float32),
        "normal": camera_normals,
        "vector": vector,
    }
    return maps, raw


def maps_from_raw(
    depth: np.ndarray,
    camera_normals: np.ndarray,
    object_index: np.ndarray,
    background: np.ndarray,
    colours: dict[int, tuple[int, int, int]],
    options: PassSettings,
    names: Collection[str] = conditioning.CONTROL_MAPS,
) -> dict[str, np.ndarray]:
    """The depth, normal, line-art and segmentation maps (those in `names`) from raw data, with the pass
    settings' lines.

    Shared by the pass render (`compute_maps`) and the live preview's GPU maps (`live_maps`), so both follow
    one convention; see `conditioning.control_maps` for the arrays.
    """
    return conditioning.control_maps(
        depth,
        camera_normals,
        object_index,
        background,
        colours,
        line_thickness=options.line_thickness,
        line_depth_threshold=options.line_depth_threshold,
        # Blender keeps angles in radians; line art takes degrees.
        line_crease_angle=math.degrees(options.line_crease_angle),
        names=names,
    )


def object_entries(objects: list[bpy.types.Object]) -> list[ObjectEntry]:
    """Index, name, class and segmentation colour of every rendered object (index 0 is the background)."""
    entries = []
    for index, obj in enumerate(objects, start=1):
        semantic = obj.stylepass.semantic_class if hasattr(obj, "stylepass") else "NONE"
        if semantic != "NONE":
            colour = conditioning.ADE20K_PALETTE[semantic.lower()]
        else:
            colour = conditioning.object_colour(obj.name)
        entries.append(ObjectEntry(index, obj.name, semantic, tuple(int(c) for c in colour)))
    return entries


# 5. Files and images ---------------------------------------------------------------------------------------


def _write_maps(
    layout: SceneLayout,
    frame: int,
    samples: dict[str, np.ndarray],
    raw: dict[str, np.ndarray],
) -> dict[str, list[Path]]:
    """Write each pass's PNG samples (`encode_pass`) and the raw EXRs."""
    files: dict[str, list[Path]] = {}

    def target(name: str, ext: str = "png") -> Path:
        path = layout.pass_file(name, frame, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        files.setdefault(name, []).append(path)
        return path

    # The beauty is written again by our encoder rather than moved: Blender's PNG rows use filters that
    # decode slowly, and every reuse of this frame reads the beauty.
    for name in PASS_NAMES:
        png.write_png(target(name), samples[name], bit_depth=PASS_BIT_DEPTHS[name])
    exr.write_exr(target("depth", "exr"), {"Z": raw["depth"]})
    normal = raw["normal"]
    exr.write_exr(target("normal", "exr"), {"X": normal[..., 0], "Y": normal[..., 1], "Z": normal[..., 2]})
    vector = raw["vector"]
    exr.write_exr(target("vector", "exr"), {name: vector[..., i] for i, name in enumerate("XYZW")})
    return files


def pass_fingerprint(scene, view_layer, options: PassOptions) -> str:
    """The scene state and pass options a frame's passes are made from (call with the scene at that frame)."""
    settings = {
        k: v for k, v in asdict(options).items() if k not in ("show_images", "output_dir", "beauty_used")
    }
    settings["pass_samples"] = options.render_samples
    return scene_fingerprint(scene, view_layer, settings)


@dataclass
class PassPlan:
    """A frame's pass render as decided on the main thread, in plain data: `develop` needs no bpy.

    `reused` holds the passes when the frame's files on disk are current; then nothing is rendered.
    """

    job: RenderJob | None
    layout: SceneLayout
    options: PassOptions
    entries: list[ObjectEntry]
    fingerprint: str | None
    record: dict
    work: Path | None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reused: PassSet | None = None
    started: float = field(default_factory=time.perf_counter)


def plan_passes(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: PassOptions,
    frame: int | None = None,
    reuse: bool = False,
    fingerprint: str | None = None,
) -> PassPlan:
    """Check the scene and decide the render of `frame` (default: the current frame); main thread.

    Raises:
        StylepassError: with a message for the artist; nothing was changed or written.
    """
    started = time.perf_counter()
    # Check inputs on an evaluated view layer: its object list and matrices are synced lazily.
    view_layer.update()
    width, height, layout, warnings = check_scene(scene, view_layer, options)
    frame = scene.frame_current if frame is None else frame
    objects = renderable_objects(view_layer)
    entries = object_entries(objects)
    if frame != scene.frame_current:
        fingerprint = None
    elif fingerprint is None:
        fingerprint = pass_fingerprint(scene, view_layer, options)
    record = {
        "stylepass": {"format": 1},
        "blender_version": bpy.app.version_string,
        "scene": scene.name,
        "view_layer": view_layer.name,
        "frame": frame,
    }
    plan = PassPlan(None, layout, options, entries, fingerprint, record, None, warnings, started=started)
    if reuse and fingerprint is not None:
        reused = load_passes(layout, frame, fingerprint)
        if reused is not None:
            reused.warnings.extend(warnings)
            reused.timings["total"] = time.perf_counter() - started
            if options.show_images:
                images.show_pass_files(reused.files)
            plan.reused = reused
            return plan
    plan.work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=layout.passes_dir))
    plan.job = RenderJob(
        scene=scene.name,
        view_layer=view_layer.name,
        frame=frame,
        width=width,
        height=height,
        samples=options.render_samples,
        device=options.device,
        exr_path=str(plan.work / "passes.exr"),
        beauty_path=str(plan.work / "beauty.png"),
        objects=tuple(obj.name for obj in objects),
    )
    return plan


def render_here(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, plan: PassPlan) -> dict:
    """Render `plan` in this Blender (blocks until done); see `pass_render.render`. Discards the plan on failure.

    Raises:
        StylepassError: RenderCancelled when the render was stopped.
    """
    try:
        return render(scene, view_layer, plan.job, plan.timings)
    except PassRenderCancelled as error:
        discard(plan)
        raise RenderCancelled(str(error)) from error
    except PassRenderError as error:
        discard(plan)
        raise StylepassError(str(error)) from error
    except OSError as error:
        discard(plan)
        raise StylepassError(f"Writing the pass render failed: {error}") from error
    except BaseException:
        discard(plan)
        raise


def discard(plan: PassPlan) -> None:
    """Remove the plan's temporary files (after a failure or a cancel)."""
    if plan.work is not None:
        shutil.rmtree(plan.work, ignore_errors=True)


def develop(plan: PassPlan, rendered: dict) -> PassSet:
    """The rendered files -> control maps, the predictable file layout and the frame's JSON record (any thread,
    no bpy). Always removes the render's temporary files.

    Args:
        rendered: what `pass_render.render` returned (camera record and rotation).

    Raises:
        StylepassError: a file could not be read or written; nothing of this frame is left half-written.
    """
    job, options, layout, timings = plan.job, plan.options, plan.layout, plan.timings
    try:
        # Arrays and maps
        tick = time.perf_counter()
        passes = exr.group_passes(exr.read_exr(Path(job.exr_path)), job.view_layer)
        beauty = png.read_png(Path(job.beauty_path))
        timings["read"] = time.perf_counter() - tick
        tick = time.perf_counter()
        colours = {entry.index: entry.colour for entry in plan.entries}
        world_to_camera = np.array(rendered["world_to_camera"], dtype=np.float32)
        maps, raw = compute_maps(passes, world_to_camera, colours, options)
        del passes  # the EXR's channels; what is kept of them is in `raw`
        maps["beauty"] = beauty
        # One source of truth for what an engine sees: the maps as their PNGs store them, so a reload from
        # disk (after Release Memory, a restart, in another folder) gives the very same arrays. One map at a
        # time, so that only one unquantised map is alive beside the stored ones.
        samples = {}
        for name in list(maps):
            samples[name] = encode_pass(name, maps[name])
            maps[name] = decode_pass(name, samples[name])
        timings["conditioning"] = time.perf_counter() - tick

        # Files and record
        tick = time.perf_counter()
        files = _write_maps(layout, job.frame, samples, raw)
        json_path = layout.pass_json(job.frame)
        record = _frame_record(plan, rendered["camera"], files)
        write_json(json_path, record)
        timings["write"] = time.perf_counter() - tick
    except (OSError, exr.ExrError, png.PngError) as error:
        raise StylepassError(f"Writing or reading the passes failed: {error}") from error
    finally:
        discard(plan)
    timings["total"] = time.perf_counter() - plan.started
    return PassSet(
        job.frame, job.width, job.height, maps, raw, files, json_path, plan.entries, plan.warnings, timings
    )


def publish(passes: PassSet, plan: PassPlan) -> None:
    """Show the new passes in Blender and keep them for the next reuse (main thread)."""
    if plan.options.show_images:
        images.show_pass_files(passes.files)
    if plan.fingerprint is not None:
        _remember(passes, plan.fingerprint)


def render_passes(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: PassOptions,
    frame: int | None = None,
    reuse: bool = False,
    fingerprint: str | None = None,
) -> PassSet:
    """Render the control passes of `frame` (default: the current frame) in this Blender and write them to disk.

    Args:
        reuse: when the frame's passes on disk were made from the same scene state and options (same
            fingerprint), load them instead of rendering again.
        fingerprint: `pass_fingerprint` of the current frame when the caller already has it.

    Raises:
        StylepassError: with a message for the artist; the scene is unchanged and nothing was written.
    """
    plan = plan_passes(scene, view_layer, options, frame, reuse, fingerprint)
    if plan.reused is not None:
        return plan.reused
    rendered = render_here(scene, view_layer, plan)
    passes = develop(plan, rendered)
    publish(passes, plan)
    return passes


def _frame_record(plan: PassPlan, camera: dict, files: dict[str, list[Path]]) -> dict:
    return {
        **plan.record,
        "resolution": camera["resolution"],
        "camera": camera,
        "settings": asdict(plan.options),
        "objects": [asdict(entry) for entry in plan.entries],
        "passes": {
            name: [str(path.relative_to(plan.layout.passes_dir)) for path in paths]
            for name, paths in files.items()
        },
        "conventions": CONVENTIONS,
        "fingerprint": plan.fingerprint,
    }


CONVENTIONS = {
    "depth": "PNG: normalised inverse depth (MiDaS-like): near bright, far dark, background 0; with "
    "background in the frame 0 stands for infinity; EXR: planar camera depth in scene units, background inf",
    "normal": "PNG: camera space, ControlNet 1.1 normalbae colours: R = (1 - x) / 2 (red is left), "
    "G = (1 + y) / 2 (green is up), B = (1 + z) / 2 (blue faces the camera); background = facing "
    "colour (0.5, 0.5, 1); EXR: camera-space unit vectors (+X right, +Y up, +Z towards the camera)",
    "object_index": "16-bit PNG of object indices (see 'objects'); 0 is background",
    "vector": "EXR: Blender's Vector pass in pixels, +y up: X,Y = position in the previous frame minus "
    "the current one; Z,W = current minus next (forward motion is -Z,-W)",
}


class _OnDisk(dict):
    """Pass arrays read from disk on first use: a reused frame rarely needs all of them."""

    def __init__(self, read) -> None:
        super().__init__()
        self._read = read

    def __missing__(self, name: str) -> np.ndarray:
        value = self._read(name)
        value.flags.writeable = False  # shared by every reuse of these passes
        self[name] = value
        return value


def _read_map(layout: SceneLayout, name: str, frame: int) -> np.ndarray:
    return decode_pass(name, png.read_png(layout.pass_file(name, frame)))


def read_raw(layout: SceneLayout, name: str, frame: int) -> np.ndarray:
    """A raw pass of a frame from its EXR: depth `(H, W)`, normal `(H, W, 3)`, vector `(H, W, 4)`."""
    channels = exr.read_exr(layout.pass_file(name, frame, "exr"))
    if name == "depth":
        return channels["Z"]
    return np.stack([channels[c] for c in ("XYZ" if name == "normal" else "XYZW")], axis=-1)


# The passes made or loaded last, so that reusing them again reads no files: record path -> (fingerprint,
# the record file's (mtime, size) when they were kept, passes). One frame: at 1080p all maps are ~100 MB.


def _record_stamp(json_path: Path) -> tuple[int, int] | None:
    try:
        stat = json_path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _remember(passes: PassSet, fingerprint: str) -> None:
    stamp = _record_stamp(passes.json_path)
    kept = runtime.RUNTIME.kept_passes
    kept.clear()
    if stamp is not None:
        # Shared by every later reuse: read-only, so no caller can change another's arrays.
        for arrays in (passes.maps, passes.raw):
            for array in dict.values(arrays):
                array.flags.writeable = False
        kept[passes.json_path] = (fingerprint, stamp, passes)


def _all_files_exist(files: dict[str, list[Path]]) -> bool:
    return all(path.is_file() for paths in files.values() for path in paths)


def load_passes(layout: SceneLayout, frame: int, fingerprint: str) -> PassSet | None:
    """The frame's passes when their record carries `fingerprint` and every file is there.

    From memory when they are the last ones made or loaded and the record file has not changed since (another
    Blender may have rendered the frame again); else from disk.
    """
    json_path = layout.pass_json(frame)
    tick = time.perf_counter()
    kept = runtime.RUNTIME.kept_passes.get(json_path)
    if kept is not None and kept[0] == fingerprint and kept[1] == _record_stamp(json_path):
        passes = kept[2]
        if _all_files_exist(passes.files):
            return replace(passes, warnings=[], timings={"load": time.perf_counter() - tick}, reused=True)
    try:
        with open(json_path, encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    files = {
        name: [layout.passes_dir / relative for relative in paths] for name, paths in record["passes"].items()
    }
    if not _all_files_exist(files):
        return None
    maps = _OnDisk(lambda name: _read_map(layout, name, frame))
    raw = _OnDisk(lambda name: read_raw(layout, name, frame))
    try:
        # The beauty is nearly always wanted, and reading it proves the files are readable.
        maps["beauty"]
    except (OSError, KeyError, ValueError):  # PngError and ExrError are ValueErrors
        return None
    width, height = record["resolution"]
    entries = [
        ObjectEntry(e["index"], e["name"], e["semantic_class"], tuple(e["colour"])) for e in record["objects"]
    ]
    timings = {"load": time.perf_counter() - tick}
    passes = PassSet(frame, width, height, maps, raw, files, json_path, entries, [], timings, reused=True)
    _remember(passes, fingerprint)
    return passes
