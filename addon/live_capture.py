# SPDX-License-Identifier: GPL-3.0-or-later
"""What the live preview stylises: one 3D viewport's view, captured at preview size on the GPU.

* `frame_of(...)` says which view: the viewport's own (its view and window matrices, the region's shape) or, in
  camera view, the scene camera's (the render's shape), so only the camera frame is stylised;
* `Capturer.capture(...)` draws that view's colour with `GPUOffScreen.draw_view3d` (colour managed, without
  overlays: the grid and gizmos are not the scene) and, when the engine needs control maps, the GPU maps of
  `live_maps` with the same matrices;
* `picture_rect(...)` is where the picture goes in the region, recomputed every redraw (panning in camera view
  moves the frame without changing the picture).

Main thread only (GPU drawing). Nothing here writes a file or touches a datablock: the capture hides the
overlays for the one draw and puts the artist's setting back at once.
"""

import hashlib
from dataclasses import dataclass, field

import bpy
import gpu
import numpy as np
from bpy_extras import view3d_utils
from mathutils import Matrix, Vector

from . import live_maps
from .pass_render import renderable_objects
from .scene_passes import object_entries


@dataclass(frozen=True)
class ViewFrame:
    """The view one capture draws: matrices, preview size, and whether it is the camera's frame."""

    view_matrix: Matrix
    projection_matrix: Matrix
    width: int
    height: int
    camera: bool

    def signature(self) -> tuple:
        return (
            tuple(map(tuple, self.view_matrix)),
            tuple(map(tuple, self.projection_matrix)),
            self.width,
            self.height,
            self.camera,
        )


@dataclass
class Captured:
    """A captured view: the colour as the engine's beauty and the control maps asked for."""

    frame: ViewFrame
    colour: np.ndarray  # (H, W, 3) float32 in [0, 1], display-referred, row 0 at the top
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    object_index: np.ndarray | None = None  # (H, W) int32 when maps were drawn

    def digest(self) -> str:
        """A content hash of the pixels (and their size): identical views hash the same."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr(self.colour.shape).encode())
        digest.update(np.ascontiguousarray(self.colour).tobytes())
        for name in sorted(self.maps):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.maps[name]).tobytes())
        return digest.hexdigest()


def preview_size(aspect: float, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side `long_side`, both multiples of 8 (what diffusion needs)."""

    def snap(value: float) -> int:
        return max(8, round(value / 8) * 8)

    if aspect >= 1.0:
        return snap(long_side), snap(long_side / aspect)
    return snap(long_side * aspect), snap(long_side)


def in_camera_view(scene: bpy.types.Scene, region_3d: bpy.types.RegionView3D) -> bool:
    return region_3d.view_perspective == "CAMERA" and scene.camera is not None


def frame_of(
    scene: bpy.types.Scene,
    depsgraph: bpy.types.Depsgraph,
    region: bpy.types.Region,
    region_3d: bpy.types.RegionView3D,
    long_side: int,
) -> ViewFrame:
    """The view to capture: the camera's (render shape) in camera view, else the viewport's (region shape)."""
    if in_camera_view(scene, region_3d):
        render = scene.render
        aspect = (render.resolution_x * render.pixel_aspect_x) / (render.resolution_y * render.pixel_aspect_y)
        width, height = preview_size(aspect, long_side)
        camera = scene.camera.evaluated_get(depsgraph)
        view = camera.matrix_world.normalized().inverted()
        projection = camera.calc_matrix_camera(
            depsgraph, x=width, y=height, scale_x=render.pixel_aspect_x, scale_y=render.pixel_aspect_y
        )
        return ViewFrame(view, projection, width, height, camera=True)
    width, height = preview_size(region.width / max(1, region.height), long_side)
    return ViewFrame(
        region_3d.view_matrix.copy(), region_3d.window_matrix.copy(), width, height, camera=False
    )


def picture_rect(
    scene: bpy.types.Scene, region: bpy.types.Region, region_3d: bpy.types.RegionView3D, camera: bool
) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in region pixels where the picture is drawn: the whole region, or the camera frame.

    None when the camera frame cannot be placed (e.g. the camera's frame is behind the view).
    """
    if not camera:
        return 0.0, 0.0, float(region.width), float(region.height)
    obj = scene.camera
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.data.view_frame(scene=scene)]
    points = [view3d_utils.location_3d_to_region_2d(region, region_3d, corner) for corner in corners]
    if any(point is None for point in points):
        return None
    xs = [point.x for point in points]
    ys = [point.y for point in points]
    return min(xs), min(ys), max(xs), max(ys)


def rect_minus(rect: tuple, hole: tuple | None) -> list[tuple]:
    """Rectangles (x0, y0, x1, y1) that together cover `rect` except `hole`: below, above, left, right of it."""
    x0, y0, x1, y1 = rect
    if hole is None:
        return [rect]
    hx0, hy0, hx1, hy1 = max(hole[0], x0), max(hole[1], y0), min(hole[2], x1), min(hole[3], y1)
    if hx0 >= hx1 or hy0 >= hy1:
        return [rect]
    pieces = [(x0, y0, x1, hy0), (x0, hy1, x1, y1), (x0, hy0, hx0, hy1), (hx1, hy0, x1, hy1)]
    return [piece for piece in pieces if piece[2] > piece[0] and piece[3] > piece[1]]


class Capturer:
    """One viewport's off-screen buffers and map drawer, kept between captures (made again on a size change)."""

    def __init__(self) -> None:
        self._offscreen: gpu.types.GPUOffScreen | None = None
        self._maps: live_maps.MapDrawer | None = None  # made on the first capture that needs maps

    def forget_geometry(self, names: set[str]) -> None:
        """Objects whose geometry changed: their GPU batches are built again on the next map capture."""
        if self._maps is not None and names:
            self._maps.forget(names)

    def capture(
        self,
        context: dict,
        frame: ViewFrame,
        map_names: tuple[str, ...],
        options,
        object_index: bool = False,
    ) -> Captured:
        """Draw `frame` of the viewport in `context` (scene, view_layer, depsgraph, space, region).

        `map_names`: control maps to draw as well (none for the neural-style engine); `options`: the pass
        settings whose line-art thresholds the maps follow, as the rendered passes do; `object_index`: draw
        the object index too (what an object selection needs), also without maps.
        """
        scene, view_layer, space = context["scene"], context["view_layer"], context["space"]
        offscreen = self._offscreen_for(frame.width, frame.height)
        overlays = space.overlay.show_overlays
        if overlays:
            space.overlay.show_overlays = False  # the artist's setting is back before this call returns
        try:
            offscreen.draw_view3d(
                scene,
                view_layer,
                space,
                context["region"],
                frame.view_matrix,
                frame.projection_matrix,
                do_color_management=True,
            )
        finally:
            if overlays:
                space.overlay.show_overlays = True
        pixels = live_maps.texture_pixels(offscreen.texture_color, 4, np.uint8)
        captured = Captured(frame, pixels[..., :3].astype(np.float32) * np.float32(1 / 255))
        if map_names or object_index:
            self._draw_maps(captured, context, map_names, options)
        return captured

    def _draw_maps(self, captured: Captured, context: dict, map_names, options) -> None:
        if self._maps is None:
            self._maps = live_maps.MapDrawer()
        objects = renderable_objects(context["view_layer"])
        frame = captured.frame
        raw = self._maps.draw(
            context["depsgraph"],
            [obj.name for obj in objects],
            frame.view_matrix,
            frame.projection_matrix,
            frame.width,
            frame.height,
        )
        if map_names:
            colours = {entry.index: entry.colour for entry in object_entries(objects)}
            captured.maps = live_maps.control_maps(raw, colours, options, map_names)
        captured.object_index = raw.object_index

    def _offscreen_for(self, width: int, height: int) -> gpu.types.GPUOffScreen:
        offscreen = self._offscreen
        if offscreen is None or (offscreen.width, offscreen.height) != (width, height):
            self._free_offscreen()
            self._offscreen = gpu.types.GPUOffScreen(width, height)
        return self._offscreen

    def _free_offscreen(self) -> None:
        if self._offscreen is not None:
            self._offscreen.free()
            self._offscreen = None

    def free(self) -> None:
        self._free_offscreen()
        if self._maps is not None:
            self._maps.free()
            self._maps = None
