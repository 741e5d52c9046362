# SPDX-License-Identifier: GPL-3.0-or-later
"""Control maps of any view, drawn on the GPU: what the live preview uses where Stylise Frame renders passes.

`MapDrawer.draw` draws the evaluated scene with one small shader into float targets and reads back the raw
data the pass render takes from Cycles (`RawMaps`); `control_maps` turns it into maps with the function the
pass render uses (`scene_passes.maps_from_raw`), so the preview and the final render see the same kind of
maps. The conventions of the Cycles passes, checked against them in tests/blender/test_live_maps.py:

* What is drawn: the objects the pass render indexes (`pass_render.renderable_objects`, passed in as names in
  index order) and the instances of instancers that render. An instance gets the index of the object it
  instances, or that object's own `pass_index` when it is not indexed, as Cycles' object-index pass does.
  Objects Cycles does not see from the camera (`visible_camera` off) are not drawn.
* Normals: the mesh's corner normals (smooth, flat, sharp edges, custom normals) interpolated across each
  triangle, turned towards the viewer on back faces as in Cycles' Normal pass.
* Depth: planar, along the view axis, in scene units; nothing behind the view's origin is drawn (a camera
  sees nothing behind itself, while an orthographic viewport clips far behind its eye).

Known differences: the geometry is the viewport's (modifiers' viewport settings and levels), objects hidden
in the viewport are not in its depsgraph, material normal maps and bump are not applied, hair curves, point
clouds and volumes are not drawn, and pixels on edges can differ (rasterised here, ray-traced there).

Main thread only, with a GPU context: in the UI a timer, handler or draw callback (but not right after a
blocking render in the same callback: Blender has no GPU context active until it redraws); in background
mode only where Blender can start one (5.2: `gpu_available` does it); 4.x refuses GPU drawing headless.
"""

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import bpy
import gpu
import numpy as np
from gpu_extras.batch import batch_for_shader
from mathutils import Matrix

from stylepass_core.conditioning import CONTROL_MAPS
from stylepass_core.errors import StylepassError
from stylepass_core.settings import PassSettings

from .pass_render import RENDERABLE_TYPES, enabled_for_render
from .scene_passes import maps_from_raw

_VERTEX_SOURCE = """
void main()
{
  vec4 position = model_view * vec4(pos, 1.0);
  view_depth = -position.z;
  view_normal = normal_matrix * nor;
  gl_Position = maps_view.projection * position;
}
"""

_FRAGMENT_SOURCE = """
void main()
{
  if (view_depth <= 0.0) {
    discard;
  }
  /* Cycles' Normal pass shows the side the ray hit: a back face's normal is turned towards the viewer.
   * `winding` is -1 for a mirrored object, whose front faces wind the other way on screen. */
  vec3 normal = normalize(view_normal) * (gl_FrontFacing ? winding : -winding);
  out_surface = vec4(normal, view_depth);
  out_object = vec2(object_index, 1.0);
}
"""


class GpuUnavailable(StylepassError):
    """Blender cannot draw on the GPU here and now (before 5.2 in background mode, or no GPU context)."""


@dataclass
class RawMaps:
    """One view's raw data, row 0 at the top, as the pass render reads it from Cycles.

    Attributes:
        depth: `(H, W)` float32 planar camera depth in scene units, > 0 on geometry, inf on the background.
        normals: `(H, W, 3)` float32 camera-space unit normals (+X right, +Y up, +Z towards the camera),
            zeros on the background.
        object_index: `(H, W)` int32 object index (1 = first name passed to `MapDrawer.draw`), 0 on the
            background.
        background: `(H, W)` bool, True where no geometry was drawn.
    """

    depth: np.ndarray
    normals: np.ndarray
    object_index: np.ndarray
    background: np.ndarray


def gpu_available() -> bool:
    """Whether this Blender can draw on the GPU here; in background mode this starts it (`gpu.init()`)."""
    try:
        if bpy.app.background and hasattr(gpu, "init"):
            gpu.init()  # Blender 5.2+: an offscreen context (EGL) for background mode; harmless when repeated
        gpu.types.GPUTexture((1, 1), format="R32F")
    except (SystemError, RuntimeError):  # 4.x headless: "not available in background mode"
        return False
    return True


def control_maps(
    raw: RawMaps,
    colours: dict[int, tuple[int, int, int]],
    options: PassSettings,
    names: Collection[str] = CONTROL_MAPS,
) -> dict[str, np.ndarray]:
    """The "depth", "normal", "lineart" and "segmentation" maps of `raw` (those in `names`), exactly as the
    pass render makes them from Cycles' passes (float32 in [0, 1]; `scene_passes.maps_from_raw`).

    Args:
        colours: RGB in [0, 255] per object index (`scene_passes.object_entries`).
        options: the pass settings (`PassSettings` or `PassOptions`); the line-art settings are used.
        names: the maps to make (the engine's; making line art costs most).
    """
    return maps_from_raw(raw.depth, raw.normals, raw.object_index, raw.background, colours, options, names)


@dataclass
class _Geometry:
    batch: gpu.types.GPUBatch | None  # None: the object has no triangles
    names: frozenset[str]  # objects whose geometry update makes it stale (the object and its instancer)


class MapDrawer:
    """Draws `RawMaps` of views of one scene; keeps a GPU batch per evaluated geometry between draws, so a
    new view (orbit, zoom) draws without rebuilding anything. One owner, one `free()`."""

    def __init__(self) -> None:
        self._shader: gpu.types.GPUShader | None = None
        self._view_block: gpu.types.GPUUniformBuf | None = None
        self._targets: tuple | None = None  # (width, height), framebuffer, surface, object, depth textures
        self._geometry: dict[tuple[str, int], _Geometry] = {}

    def forget(self, names: Iterable[str]) -> None:
        """Objects whose geometry changed (depsgraph updates with `is_updated_geometry`): their batches, and
        those of the instances they make, are built again on the next draw."""
        stale = set(names)
        self._geometry = {key: geo for key, geo in self._geometry.items() if not geo.names & stale}

    def free(self) -> None:
        """Release every GPU resource (main thread); the drawer can still draw later and builds them again."""
        self._geometry.clear()
        self._targets = None
        self._view_block = None
        self._shader = None

    def draw(
        self,
        depsgraph: bpy.types.Depsgraph,
        objects: Sequence[str],
        view_matrix: Matrix,
        projection_matrix: Matrix,
        width: int,
        height: int,
    ) -> RawMaps:
        """Draw the raw maps of one view of `depsgraph`'s evaluated scene.

        Args:
            objects: names of the indexed objects in index order (object index i + 1 is `objects[i]`), as the
                pass render's `RenderJob.objects`; other objects are not drawn (see the module docstring).
            view_matrix: world -> view, a rigid transform (the camera's `matrix_world.inverted()` or a
                viewport's `view_matrix`).
            projection_matrix: view -> clip, perspective or orthographic (`Object.calc_matrix_camera` or a
                viewport's `window_matrix`).
            width, height: the size in pixels.

        Raises:
            GpuUnavailable: no GPU drawing here and now (see `gpu_available`).
            ValueError: a size below one pixel or a matrix that is not 4x4.
        """
        # 1. Check inputs
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (width, height)):
            raise ValueError(f"width and height must be ints >= 1, got {width!r} x {height!r}")
        view_matrix, projection_matrix = Matrix(view_matrix), Matrix(projection_matrix)
        if any(len(m.row) != 4 or len(m.col) != 4 for m in (view_matrix, projection_matrix)):
            raise ValueError(
                f"view and projection matrices must be 4x4, got {view_matrix!r}, {projection_matrix!r}"
            )
        # A few microseconds, and it turns a draw without a GPU context (which crashes Blender) into an error.
        if not gpu_available():
            raise GpuUnavailable(
                "Blender cannot draw on the GPU here: before 5.2 background mode has no GPU, and right after a "
                "blocking render there is no GPU context until the next redraw."
            )
        if self._shader is None:
            self._shader = _make_shader()
        index_of = {name: index for index, name in enumerate(objects, start=1)}

        # 2. Targets and the per-view constants
        framebuffer, surface, object_target = self._targets_for(width, height)
        projection = np.array(projection_matrix, dtype=np.float32).T.copy()  # std140: column after column
        if self._view_block is None:
            self._view_block = gpu.types.GPUUniformBuf(projection)
        else:
            self._view_block.update(projection)

        # 3. Every instance that renders, with its object's index
        used: set[tuple[str, int]] = set()
        with framebuffer.bind(), _opaque_drawing():
            framebuffer.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            shader = self._shader
            shader.bind()
            shader.uniform_block("maps_view", self._view_block)
            for instance in depsgraph.object_instances:
                index = _drawn_index(instance, index_of)
                if index is None:
                    continue
                geometry = self._geometry_of(instance, used)
                if geometry.batch is None:
                    continue
                model_view = view_matrix @ instance.matrix_world
                linear = model_view.to_3x3()
                shader.uniform_float("model_view", model_view)
                shader.uniform_float("normal_matrix", linear.inverted_safe().transposed())
                shader.uniform_float("winding", -1.0 if linear.determinant() < 0.0 else 1.0)
                shader.uniform_float("object_index", float(index))
                geometry.batch.draw(shader)
        # What was not drawn this time (deleted, hidden, or evaluated again into new geometry) is dropped.
        self._geometry = {key: geo for key, geo in self._geometry.items() if key in used}

        # 4. Read back
        surface_pixels = texture_pixels(surface, 4)
        object_pixels = texture_pixels(object_target, 2)
        background = object_pixels[..., 1] == 0.0
        object_index = np.rint(object_pixels[..., 0]).astype(np.int32)
        object_index[background] = 0
        depth = np.where(background, np.float32(np.inf), surface_pixels[..., 3])
        normals = np.where(background[..., None], np.float32(0.0), surface_pixels[..., :3])
        return RawMaps(depth, normals, object_index, background)

    def _targets_for(self, width: int, height: int) -> tuple:
        if self._targets is None or self._targets[0] != (width, height):
            surface = gpu.types.GPUTexture((width, height), format="RGBA32F")  # normal xyz, planar depth
            object_target = gpu.types.GPUTexture((width, height), format="RG32F")  # index, 1 where drawn
            depth = gpu.types.GPUTexture((width, height), format="DEPTH_COMPONENT32F")
            framebuffer = gpu.types.GPUFrameBuffer(depth_slot=depth, color_slots=(surface, object_target))
            self._targets = ((width, height), framebuffer, surface, object_target, depth)
        return self._targets[1:4]

    def _geometry_of(self, instance: bpy.types.DepsgraphObjectInstance, used: set) -> _Geometry:
        obj = instance.object
        # The evaluated data's session id tells apart the geometries one instancer makes (geometry-node
        # instances are temporary objects named after their instancer).
        key = (obj.name, obj.data.session_uid if obj.data is not None else 0)
        used.add(key)
        geometry = self._geometry.get(key)
        if geometry is None:
            names = {obj.name}
            if instance.is_instance and instance.parent is not None:
                names.add(instance.parent.name)
            geometry = _Geometry(_batch(self._shader, obj), frozenset(names))
            self._geometry[key] = geometry
        return geometry


def texture_pixels(texture: gpu.types.GPUTexture, channels: int, dtype=np.float32) -> np.ndarray:
    """`(H, W, channels)` pixels of `texture` as `dtype` (its format's), row 0 at the top (GPU rows run
    bottom-up).

    Blender 4.x's `gpu.types.Buffer` reports its strides reversed (as if column-major) over memory that is
    row-major, so `np.asarray` alone scrambles the picture there (seen in 4.3's UI; 5.2 is right). Reading the
    elements in memory order ("K") and reshaping is right in every version, and copies nothing.
    """
    memory = np.asarray(texture.read(), dtype=dtype).ravel(order="K")
    return memory.reshape(texture.height, texture.width, channels)[::-1]


@contextmanager
def _opaque_drawing() -> Iterator[None]:
    """Depth-tested, unblended drawing of both sides of every face; the caller's depth and blend state come
    back afterwards. Culling and facing have no getters: they are left at Blender's defaults."""
    depth_test, depth_mask, blend = (
        gpu.state.depth_test_get(),
        gpu.state.depth_mask_get(),
        gpu.state.blend_get(),
    )
    gpu.state.depth_test_set("LESS_EQUAL")
    gpu.state.depth_mask_set(True)
    gpu.state.blend_set("NONE")
    gpu.state.face_culling_set("NONE")
    gpu.state.front_facing_set(False)
    try:
        yield
    finally:
        gpu.state.depth_test_set(depth_test)
        gpu.state.depth_mask_set(depth_mask)
        gpu.state.blend_set(blend)


def _drawn_index(instance: bpy.types.DepsgraphObjectInstance, index_of: dict[str, int]) -> int | None:
    """The object index `instance` is drawn with, or None when the pass render would not show it."""
    obj = instance.object
    if obj.type not in RENDERABLE_TYPES or not obj.visible_camera:
        return None
    if not instance.is_instance:
        if obj.is_instancer and not obj.show_instancer_for_render:
            return None
        return index_of.get(obj.name)
    parent = instance.parent
    if obj.original.hide_render or not parent.visible_camera or not _instancer_renders(parent, index_of):
        return None
    return index_of.get(obj.name, obj.pass_index)


def _instancer_renders(parent: bpy.types.Object, index_of: dict[str, int]) -> bool:
    """Whether Cycles renders `parent`'s instances: an indexed object does; an empty (never indexed) does when
    it is not disabled for renders, itself or through all its collections (as in `renderable_objects`)."""
    if parent.name in index_of:
        return True
    if parent.type in RENDERABLE_TYPES:
        return False  # a renderable type missing from the list is disabled for renders
    return enabled_for_render(parent.original)


def _batch(shader: gpu.types.GPUShader, obj: bpy.types.Object) -> gpu.types.GPUBatch | None:
    """One triangle list of the evaluated `obj` (meshes, curves, text, metaballs via `to_mesh`), with the
    corner normals Cycles shades with; None when it has no faces."""
    mesh = obj.to_mesh()
    try:
        if mesh is None or not len(mesh.polygons):
            return None
        triangles = mesh.loop_triangles
        corners = np.empty(len(triangles) * 3, dtype=np.int32)
        triangles.foreach_get("loops", corners)
        corner_vertices = np.empty(len(mesh.loops), dtype=np.int32)
        mesh.loops.foreach_get("vertex_index", corner_vertices)
        positions = np.empty((len(mesh.vertices), 3), dtype=np.float32)
        mesh.vertices.foreach_get("co", positions.ravel())
        corner_normals = np.empty((len(mesh.loops), 3), dtype=np.float32)
        mesh.corner_normals.foreach_get("vector", corner_normals.ravel())
        return batch_for_shader(
            shader, "TRIS", {"pos": positions[corner_vertices[corners]], "nor": corner_normals[corners]}
        )
    finally:
        obj.to_mesh_clear()


def _make_shader() -> gpu.types.GPUShader:
    info = gpu.types.GPUShaderCreateInfo()
    # The projection is the same for every object: a uniform block, so the per-object push constants stay
    # under the 128 bytes every backend guarantees.
    info.typedef_source("struct StylepassMapsView { mat4 projection; };")
    info.uniform_buf(0, "StylepassMapsView", "maps_view")
    info.push_constant("MAT4", "model_view")
    info.push_constant("MAT3", "normal_matrix")
    info.push_constant("FLOAT", "winding")
    info.push_constant("FLOAT", "object_index")
    info.vertex_in(0, "VEC3", "pos")
    info.vertex_in(1, "VEC3", "nor")
    interface = gpu.types.GPUStageInterfaceInfo("stylepass_maps_interface")
    interface.smooth("VEC3", "view_normal")
    interface.smooth("FLOAT", "view_depth")
    info.vertex_out(interface)
    info.fragment_out(0, "VEC4", "out_surface")
    info.fragment_out(1, "VEC2", "out_object")
    info.vertex_source(_VERTEX_SOURCE)
    info.fragment_source(_FRAGMENT_SOURCE)
    return gpu.shader.create_from_info(info)
