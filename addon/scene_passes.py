# SPDX-License-Identifier: GPL-3.0-or-later
"""Scene -> exact control passes: render the data passes with Cycles and turn them into control images.

Steps of `render_passes`:
    1. Check the scene (camera, view layer, something to render, a size that fits in memory, a writable
       folder) before touching anything.
    2. Override render, Cycles, view-layer and object settings for a data-pass render (all restored in 3.).
    3. Render the frame, save the Render Result as an uncompressed multilayer EXR (raw data) and as PNG
       (the beauty, through the scene's own view transform), then restore every setting.
    4. Read the EXR into numpy and compute the control maps in the bpy-free core; keep each map as its PNG
       stores it, so a fresh render hands on exactly what a reload from disk gives.
    5. Write the predictable file layout and the frame's JSON record, and show the images in Blender.
"""

import json
import math
import shutil
import tempfile
import time
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
from .render_state import overridden
from .scene_fingerprint import scene_fingerprint

# Object types that put pixels into a Cycles render.
RENDERABLE_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME"}

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

    @classmethod
    def from_settings(cls, settings: PassSettings, device: str = "CPU") -> "PassOptions":
        return cls(**settings.values(), device=device)


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


def renderable_objects(view_layer: bpy.types.ViewLayer) -> list[bpy.types.Object]:
    """Objects of the view layer that can appear in a render, sorted by name for stable indices."""
    found = [
        obj
        for obj in view_layer.objects
        if obj.type in RENDERABLE_TYPES and not obj.hide_render and _collections_render(obj)
    ]
    return sorted(found, key=lambda obj: obj.name)


def _collections_render(obj: bpy.types.Object) -> bool:
    return any(not collection.hide_render for collection in obj.users_collection) or not obj.users_collection


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


def _camera_problem(camera: bpy.types.Object) -> str | None:
    """Why `camera` cannot be rendered from, or None. Its orientation must be a plain rotation: the normal
    pass is turned into the camera's view with it."""
    if camera.type != "CAMERA":
        kind = camera.type.replace("_", " ").title()
        return (
            f"The scene camera '{camera.name}' is not a camera (its type is {kind}): make a camera the scene "
            "camera (select it, View > Cameras > Set Active Object as Camera)."
        )
    rotation = np.array(camera.matrix_world.to_3x3(), dtype=np.float64)
    lengths = np.linalg.norm(rotation, axis=0)
    if not np.all(np.isfinite(rotation)) or lengths.min() < 1e-6:
        return (
            f"Camera '{camera.name}' is scaled to zero: give it (and its parents) a non-zero scale, e.g. "
            "Object > Clear > Scale."
        )
    rotation /= lengths
    if np.linalg.det(rotation) <= 0:
        return (
            f"Camera '{camera.name}' is mirrored by a negative scale: give it (and its parents) a positive "
            "scale, e.g. Object > Clear > Scale."
        )
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3):
        return (
            f"Camera '{camera.name}' is sheared (a non-uniform scale on a rotated parent): clear its "
            "parent's scale, or apply it."
        )
    return None


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
    problem = _camera_problem(camera)
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


def _set_image_format(override, settings, file_format: str, **values) -> None:
    # 5.x chooses between single- and multi-layer files with media_type before the format can be set.
    if hasattr(settings, "media_type"):
        media = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
        override.set(settings, "media_type", media)
    override.set(settings, "file_format", file_format)
    for name, value in values.items():
        override.set(settings, name, value)


def _render_to_files(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    objects: list[bpy.types.Object],
    size: tuple[int, int],
    options: PassOptions,
    exr_path: Path,
    beauty_path: Path,
    frame: int | None,
    timings: dict[str, float],
) -> tuple[np.ndarray, dict]:
    """Render once with data-pass settings, write both files, restore everything.

    Returns:
        The (3, 3) world-to-camera rotation at that frame and the camera record for the frame's JSON.
    """
    original_frame = (scene.frame_current, scene.frame_subframe)
    if frame is not None and frame != original_frame[0]:
        scene.frame_set(frame)
    try:
        # The camera may be animated into a state no pass can be made from (checked at the current frame).
        problem = _camera_problem(scene.camera)
        if problem:
            raise StylepassError(f"Frame {scene.frame_current}: {problem}")
        with overridden() as override:
            return _render_with_overrides(
                override, scene, view_layer, objects, size, options, exr_path, beauty_path, timings
            )
    finally:
        if (scene.frame_current, scene.frame_subframe) != original_frame:
            scene.frame_set(original_frame[0], subframe=original_frame[1])


def _render_with_overrides(
    override,
    scene,
    view_layer,
    objects,
    size,
    options: PassOptions,
    exr_path: Path,
    beauty_path: Path,
    timings,
) -> tuple[np.ndarray, dict]:
    render = scene.render
    override.set_many(
        render,
        engine="CYCLES",
        resolution_x=size[0],
        resolution_y=size[1],
        resolution_percentage=100,
        use_border=False,
        use_compositing=False,
        use_sequencer=False,
        use_single_layer=True,
        use_motion_blur=False,
        # Burnt-in metadata would be drawn into the beauty, and a stereo render saves two views.
        use_stamp=False,
        use_multiview=False,
    )
    cycles = scene.cycles
    override.set_many(
        cycles,
        device=options.device,
        samples=options.pass_samples,
        use_adaptive_sampling=False,
        use_denoising=False,
        time_limit=0.0,
        # A view layer's own sample count would replace the pass samples.
        use_layer_samples="IGNORE",
        # Every sample through the pixel centre: depth, normals and indices stay exact per pixel
        # instead of being averaged across silhouettes into values no surface has.
        filter_width=0.01,
    )
    override.set_many(
        view_layer,
        use_pass_combined=True,
        use_pass_z=True,
        use_pass_normal=True,
        use_pass_vector=True,
        use_pass_object_index=True,
    )
    layer_cycles = getattr(view_layer, "cycles", None)
    if layer_cycles is not None and hasattr(layer_cycles, "use_denoising"):
        # Without this Cycles still writes a "Noisy Image" pass: four more float channels to save and read.
        override.set(layer_cycles, "use_denoising", False)
    for index, obj in enumerate(objects, start=1):
        override.set(obj, "pass_index", index)

    tick = time.perf_counter()
    result = bpy.ops.render.render(write_still=False, layer=view_layer.name, scene=scene.name)
    timings["render"] = time.perf_counter() - tick
    if "CANCELLED" in result:
        raise RenderCancelled("The pass render was cancelled; nothing was written.")
    image = bpy.data.images.get("Render Result")
    if image is None:
        raise StylepassError("Blender produced no Render Result; see the console for the render error.")

    # Image.save_render takes its file format from the scene: switch the artist's output format for the two
    # saves. Record the format-dependent fields first and the format last, so that restoring (newest first)
    # puts the format back before the depth and codec that are only valid for it.
    settings = render.image_settings
    override.remember(settings, "color_depth", "color_mode", "exr_codec", "compression", "file_format")
    if hasattr(settings, "media_type"):
        override.remember(settings, "media_type")
    if hasattr(settings, "color_management"):
        override.set(settings, "color_management", "FOLLOW_SCENE")
    tick = time.perf_counter()
    _set_image_format(override, settings, "OPEN_EXR_MULTILAYER", exr_codec="NONE", color_depth="32")
    image.save_render(str(exr_path), scene=scene)
    timings["save_exr"] = time.perf_counter() - tick
    # PNG is display-referred: Blender applies the scene's view transform, look and exposure, so the beauty
    # looks as it does on screen.
    tick = time.perf_counter()
    _set_image_format(override, settings, "PNG", color_mode="RGB", color_depth="8", compression=15)
    image.save_render(str(beauty_path), scene=scene)
    timings["save_beauty"] = time.perf_counter() - tick

    camera_rotation = scene.camera.matrix_world.to_3x3().normalized()
    world_to_camera = np.array(camera_rotation.transposed(), dtype=np.float32)
    camera_record = _camera_record(scene, size)
    return world_to_camera, camera_record


def _camera_record(scene: bpy.types.Scene, size: tuple[int, int]) -> dict:
    camera = scene.camera
    data = camera.data
    return {
        "name": camera.name,
        "type": data.type,
        "lens_mm": data.lens,
        "sensor_width_mm": data.sensor_width,
        "sensor_height_mm": data.sensor_height,
        "sensor_fit": data.sensor_fit,
        "ortho_scale": data.ortho_scale,
        "shift": [data.shift_x, data.shift_y],
        "clip": [data.clip_start, data.clip_end],
        "matrix_world": [list(row) for row in camera.matrix_world],
        "resolution": list(size),
        "pixel_aspect": [scene.render.pixel_aspect_x, scene.render.pixel_aspect_y],
    }


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
        "depth": conditioning.inverse_depth(depth, background),
        "normal": conditioning.normal_map_rgb(camera_normals, background),
        "lineart": conditioning.line_art(
            depth,
            camera_normals,
            object_index,
            background,
            thickness=options.line_thickness,
            depth_threshold=options.line_depth_threshold,
            crease_angle=math.degrees(options.line_crease_angle),
        ),
        "segmentation": conditioning.segmentation_map(object_index, colours),
        "object_index": object_index,
        "vector": conditioning.motion_vector_rgb(vector),
    }
    raw = {
        "depth": np.where(background, np.inf, depth).astype(np.float32),
        "normal": camera_normals,
        "vector": vector,
    }
    return maps, raw


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
    settings = {k: v for k, v in asdict(options).items() if k not in ("show_images", "output_dir")}
    return scene_fingerprint(scene, view_layer, settings)


def render_passes(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    options: PassOptions,
    frame: int | None = None,
    reuse: bool = False,
    fingerprint: str | None = None,
) -> PassSet:
    """Render the control passes of `frame` (default: the current frame) and write them to disk.

    Args:
        reuse: when the frame's passes on disk were made from the same scene state and options (same
            fingerprint), load them instead of rendering again.
        fingerprint: `pass_fingerprint` of the current frame when the caller already has it.

    Raises:
        StylepassError: with a message for the artist; the scene is unchanged and nothing was written.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Check inputs (on an evaluated view layer: its object list and matrices are synced lazily)
    view_layer.update()
    width, height, layout, warnings = check_scene(scene, view_layer, options)
    frame = scene.frame_current if frame is None else frame
    objects = renderable_objects(view_layer)
    entries = object_entries(objects)
    if frame != scene.frame_current:
        fingerprint = None
    elif fingerprint is None:
        fingerprint = pass_fingerprint(scene, view_layer, options)
    if reuse and fingerprint is not None:
        reused = load_passes(layout, frame, fingerprint)
        if reused is not None:
            reused.warnings.extend(warnings)
            reused.timings["total"] = time.perf_counter() - start
            if options.show_images:
                images.show_pass_files(reused.files)
            return reused

    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=layout.passes_dir))
    try:
        # 2.-3. Render and save with temporary settings
        exr_path, beauty_tmp = work / "passes.exr", work / "beauty.png"
        world_to_camera, camera = _render_to_files(
            scene, view_layer, objects, (width, height), options, exr_path, beauty_tmp, frame, timings
        )

        # 4. Arrays and maps
        tick = time.perf_counter()
        passes = exr.group_passes(exr.read_exr(exr_path), view_layer.name)
        beauty = png.read_png(beauty_tmp)
        timings["read"] = time.perf_counter() - tick
        tick = time.perf_counter()
        colours = {entry.index: entry.colour for entry in entries}
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

        # 5. Files, record, images
        tick = time.perf_counter()
        files = _write_maps(layout, frame, samples, raw)
        json_path = layout.pass_json(frame)
        record = _frame_record(scene, view_layer, frame, camera, options, entries, files, layout)
        record["fingerprint"] = fingerprint
        write_json(json_path, record)
        timings["write"] = time.perf_counter() - tick
    except (OSError, exr.ExrError, png.PngError) as error:
        raise StylepassError(f"Writing or reading the passes failed: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if options.show_images:
        images.show_pass_files(files)
    timings["total"] = time.perf_counter() - start
    passes = PassSet(frame, width, height, maps, raw, files, json_path, entries, warnings, timings)
    if fingerprint is not None:
        _remember(passes, fingerprint)
    return passes


def _frame_record(scene, view_layer, frame, camera, options, entries, files, layout) -> dict:
    return {
        "stylepass": {"format": 1},
        "blender_version": bpy.app.version_string,
        "scene": scene.name,
        "view_layer": view_layer.name,
        "frame": frame,
        "resolution": camera["resolution"],
        "camera": camera,
        "settings": asdict(options),
        "objects": [asdict(entry) for entry in entries],
        "passes": {
            name: [str(path.relative_to(layout.passes_dir)) for path in paths]
            for name, paths in files.items()
        },
        "conventions": {
            "depth": "PNG: normalised inverse depth (MiDaS-like): near bright, far dark, background 0; with "
            "background in the frame 0 stands for infinity; EXR: planar camera depth in scene units, background inf",
            "normal": "PNG: camera space, ControlNet 1.1 normalbae colours: R = (1 - x) / 2 (red is left), "
            "G = (1 + y) / 2 (green is up), B = (1 + z) / 2 (blue faces the camera); background = facing "
            "colour (0.5, 0.5, 1); EXR: camera-space unit vectors (+X right, +Y up, +Z towards the camera)",
            "object_index": "16-bit PNG of object indices (see 'objects'); 0 is background",
            "vector": "EXR: Blender's Vector pass in pixels, +y up: X,Y = position in the previous frame minus "
            "the current one; Z,W = current minus next (forward motion is -Z,-W)",
        },
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


def _read_raw(layout: SceneLayout, name: str, frame: int) -> np.ndarray:
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
    raw = _OnDisk(lambda name: _read_raw(layout, name, frame))
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
