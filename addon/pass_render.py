# SPDX-License-Identifier: GPL-3.0-or-later
"""The data-pass render itself: Cycles with temporary settings, the Render Result saved as two files.

Used in two places with the same code, so both give the very same passes:
- in Blender's own process (`scene_passes.render_passes`: background mode, scripts, render farms);
- in a separate Blender that renders a copy of the scene while the artist's Blender stays responsive
  (`pass_process`, `pass_child`). That Blender has no Stylepass installed, so this module needs only bpy,
  numpy and `render_state`: no `stylepass_core`.
"""

import time
from dataclasses import asdict, dataclass

import bpy
import numpy as np

from .render_state import SettingsOverride, overridden

# Object types that put pixels into a Cycles render.
RENDERABLE_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME"}


class PassRenderError(Exception):
    """The render cannot be made; the message is for the artist."""


class PassRenderCancelled(PassRenderError):
    """Cycles stopped the render (ESC in Blender's render, or a stop request)."""


@dataclass(frozen=True)
class RenderJob:
    """One frame's pass render as plain data, so it can cross to another process as JSON.

    `objects` are the rendered objects' names in index order: object index i + 1 is `objects[i]` (0 is the
    background); the render checks it finds the same objects.
    """

    scene: str
    view_layer: str
    frame: int
    width: int
    height: int
    samples: int
    device: str
    exr_path: str
    beauty_path: str
    objects: tuple[str, ...]

    def to_plain(self) -> dict:
        return asdict(self)

    @classmethod
    def from_plain(cls, values: dict) -> "RenderJob":
        return cls(**{**values, "objects": tuple(values["objects"])})


def renderable_objects(view_layer: bpy.types.ViewLayer) -> list[bpy.types.Object]:
    """Objects of the view layer that can appear in a render, sorted by name for stable indices."""
    found = [obj for obj in view_layer.objects if obj.type in RENDERABLE_TYPES and enabled_for_render(obj)]
    return sorted(found, key=lambda obj: obj.name)


def enabled_for_render(obj: bpy.types.Object) -> bool:
    """Whether renders may show `obj`: not disabled itself, nor through every collection it is in."""
    collections = obj.users_collection
    return not obj.hide_render and (not collections or any(not c.hide_render for c in collections))


def camera_problem(camera: bpy.types.Object) -> str | None:
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


def set_image_format(override, settings, file_format: str, **values) -> None:
    # 5.x chooses between single- and multi-layer files with media_type before the format can be set.
    if hasattr(settings, "media_type"):
        media = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
        override.set(settings, "media_type", media)
    override.set(settings, "file_format", file_format)
    for name, value in values.items():
        override.set(settings, name, value)


def render(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, job: RenderJob, timings: dict) -> dict:
    """Render `job` once with data-pass settings, write its two files, restore every setting.

    Returns:
        {"world_to_camera": 3x3 rotation (rows) at that frame, "camera": the camera record for the frame's JSON}

    Raises:
        PassRenderError: the camera is unusable at that frame, an object of `job.objects` is gone, or
            Blender made no Render Result; PassRenderCancelled when Cycles was stopped.
    """
    original_frame = (scene.frame_current, scene.frame_subframe)
    if job.frame != original_frame[0]:
        scene.frame_set(job.frame)
    try:
        # The camera may be animated into a state no pass can be made from (checked at the current frame).
        problem = camera_problem(scene.camera)
        if problem:
            raise PassRenderError(f"Frame {scene.frame_current}: {problem}")
        objects = [view_layer.objects.get(name) for name in job.objects]
        if None in objects:
            missing = job.objects[objects.index(None)]
            raise PassRenderError(f"Object '{missing}' went away while the passes were prepared; run again.")
        with overridden() as override:
            return _render_with_overrides(override, scene, view_layer, objects, job, timings)
    finally:
        if (scene.frame_current, scene.frame_subframe) != original_frame:
            scene.frame_set(original_frame[0], subframe=original_frame[1])


def _render_with_overrides(
    override: SettingsOverride,
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    objects: list[bpy.types.Object],
    job: RenderJob,
    timings: dict,
) -> dict:
    render = scene.render
    override.set_many(
        render,
        engine="CYCLES",
        resolution_x=job.width,
        resolution_y=job.height,
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
        device=job.device,
        samples=job.samples,
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
        raise PassRenderCancelled("The pass render was cancelled; nothing was written.")
    image = bpy.data.images.get("Render Result")
    if image is None:
        raise PassRenderError("Blender produced no Render Result; see the console for the render error.")

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
    set_image_format(override, settings, "OPEN_EXR_MULTILAYER", exr_codec="NONE", color_depth="32")
    image.save_render(job.exr_path, scene=scene)
    timings["save_exr"] = time.perf_counter() - tick
    # PNG is display-referred: Blender applies the scene's view transform, look and exposure, so the beauty
    # looks as it does on screen.
    tick = time.perf_counter()
    set_image_format(override, settings, "PNG", color_mode="RGB", color_depth="8", compression=15)
    image.save_render(job.beauty_path, scene=scene)
    timings["save_beauty"] = time.perf_counter() - tick

    camera_rotation = scene.camera.matrix_world.to_3x3().normalized()
    world_to_camera = [list(row) for row in camera_rotation.transposed()]
    return {"world_to_camera": world_to_camera, "camera": camera_record(scene, (job.width, job.height))}


def camera_record(scene: bpy.types.Scene, size: tuple[int, int]) -> dict:
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
