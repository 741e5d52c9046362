# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview's GPU maps against the Cycles passes of the same camera, on scenes with known geometry.

GPU drawing needs a GPU context: Blender 5.2 starts one headless (`gpu.init()`), 4.x refuses; there the
drawing tests are skipped and only the refusal is checked.
"""

import math
import time

import bpy
import gpu
import numpy as np
import pytest
from conftest import addon_module
from mathutils import Matrix
from scenes import box, erode, known_scene, quad, sphere

live_maps = addon_module("addon.live_maps")
scene_passes = addon_module("addon.scene_passes")
pass_render = addon_module("addon.pass_render")

WIDTH, HEIGHT = 128, 96


@pytest.fixture(scope="module")
def gpu_ready():
    if not live_maps.gpu_available():
        pytest.skip(f"Blender {bpy.app.version_string} cannot draw on the GPU in background mode")


@pytest.fixture
def drawer():
    drawer = live_maps.MapDrawer()
    yield drawer
    drawer.free()


def _dilate(mask, steps=1):
    return ~erode(~mask, steps)


def _test_scene(scene):
    """`known_scene` at WIDTH x HEIGHT plus a face turned away from the camera and a mirrored, rotated box:
    flat (box, wall), smooth (sphere), back-facing and mirrored normals."""
    objects = known_scene(scene)
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    back = quad(scene, "Back", 0.25, 0.2, 0.0)
    back.location = (-0.75, 0.4, -3.5)
    back.rotation_euler = (0.0, math.radians(150.0), 0.0)
    mirrored = box(scene, "Mirrored", 0.2, (-0.6, -0.45, -3.2))
    mirrored.scale = (-1.0, 1.0, 1.0)
    mirrored.rotation_euler = (0.5, 0.6, 0.1)
    objects.update(back=back, mirrored=mirrored)
    return objects


def _cycles(scene, tmp_path):
    """The pass render of the scene camera: (PassSet, colours)."""
    options = scene_passes.PassOptions(
        output_dir=str(tmp_path), show_images=False, pass_samples=1, beauty_used=False
    )
    passes = scene_passes.render_passes(scene, bpy.context.view_layer, options)
    colours = {entry.index: entry.colour for entry in passes.objects}
    return passes, colours, options


def _gpu(drawer, scene, width=WIDTH, height=HEIGHT):
    """The GPU raw maps of the scene camera, as the live preview draws its camera view."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    camera = scene.camera.evaluated_get(depsgraph)
    view = camera.matrix_world.normalized().inverted()
    projection = camera.calc_matrix_camera(depsgraph, x=width, y=height)
    return drawer.draw(depsgraph, _indexed(), view, projection, width, height)


def _indexed():
    """Names of the objects the pass render indexes, in index order."""
    view_layer = bpy.context.view_layer
    view_layer.update()  # its object list is synced lazily
    return [obj.name for obj in pass_render.renderable_objects(view_layer)]


def _interior(index, steps=1):
    """Pixels whose neighbours `steps` deep show the same object (or background) in `index`."""
    inner = np.zeros(index.shape, dtype=bool)
    for label in np.unique(index):
        inner |= erode(index == label, steps)
    return inner


def _smooth(normals, degrees=10.0):
    """Pixels whose 4 neighbours' normals are within `degrees` of their own: away from creases."""
    cos = math.cos(math.radians(degrees))
    keep = np.ones(normals.shape[:2], dtype=bool)
    for axis in (0, 1):
        for step in (1, -1):
            near = np.roll(normals, step, axis=axis)
            keep &= np.einsum("ijk,ijk->ij", normals, near) > cos
    keep[0, :] = keep[-1, :] = keep[:, 0] = keep[:, -1] = False
    return keep


def _angles(a, b):
    cos = np.clip(np.einsum("...k,...k->...", a, b), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def _compare_raw(raw, passes, min_objects):
    """Labels, background, depth and normals equal to Cycles' away from edges; returns the interior mask."""
    index = passes.maps["object_index"]
    depth = passes.raw["depth"]
    normals = passes.raw["normal"]
    assert raw.depth.shape == raw.background.shape == raw.object_index.shape == (HEIGHT, WIDTH)
    assert raw.normals.shape == (HEIGHT, WIDTH, 3)
    assert raw.depth.dtype == raw.normals.dtype == np.float32 and raw.object_index.dtype == np.int32
    assert len(np.unique(index)) >= min_objects + 1  # the scene really shows its objects (and background)

    # Labels and background: equal everywhere but on a few edge pixels, and exactly equal inside.
    inner = _interior(index, 1)
    assert inner.sum() > 0.6 * index.size
    assert np.array_equal(raw.object_index[inner], index[inner])
    assert np.array_equal(raw.background[inner], np.isinf(depth)[inner])
    assert (raw.object_index != index).mean() < 0.005
    assert np.isinf(raw.depth[raw.background]).all() and (raw.normals[raw.background] == 0).all()
    assert (raw.object_index[raw.background] == 0).all()

    # Planar depth in scene units.
    surface = inner & ~np.isinf(depth)
    relative = np.abs(raw.depth[surface] - depth[surface]) / depth[surface]
    assert relative.max() < 1e-5, relative.max()

    # Normals: unit length, and the direction Cycles' Normal pass gives, away from edges and creases.
    assert np.allclose(np.linalg.norm(raw.normals[~raw.background], axis=-1), 1.0, atol=1e-5)
    flat = surface & _smooth(normals)
    angle = _angles(raw.normals[flat], normals[flat])
    assert flat.sum() > 0.5 * surface.sum()
    assert angle.max() < 0.1, angle.max()
    return inner


def test_perspective_matches_the_cycles_passes(gpu_ready, drawer, empty_file, tmp_path):
    scene = empty_file
    _test_scene(scene)
    passes, colours, options = _cycles(scene, tmp_path)
    raw = _gpu(drawer, scene)
    inner = _compare_raw(raw, passes, min_objects=5)
    index_of = {entry.name: entry.index for entry in passes.objects}

    # Every object shows up with its own index, and the tricky normals (back face, mirrored box, sphere).
    for name in ("Wall", "Box", "Sphere", "Back", "Mirrored"):
        assert (raw.object_index == index_of[name]).sum() > 20, name
    back = erode(raw.object_index == index_of["Back"], 1)
    assert (raw.normals[back][:, 2] > 0.5).all()  # turned towards the camera, as Cycles does
    sphere = erode(raw.object_index == index_of["Sphere"], 1)
    assert np.ptp(raw.normals[sphere][:, 0]) > 0.8  # smooth: the normals sweep across the ball
    mirrored = raw.object_index == index_of["Mirrored"]
    assert len(np.unique(raw.normals[erode(mirrored, 1)].round(2), axis=0)) == 3  # flat: three faces
    assert np.allclose(raw.depth[erode(raw.object_index == index_of["Box"], 1)], 2.7, atol=1e-4)

    # The maps, made by the same function, equal the pass render's (as stored, 8 and 16 bit).
    maps = live_maps.control_maps(raw, colours, options)
    assert sorted(maps) == ["depth", "lineart", "normal", "segmentation"]
    for name, tolerance in (("segmentation", 0.0), ("normal", 1 / 255), ("depth", 1e-4)):
        difference = np.abs(maps[name][inner] - passes.maps[name][inner]).max()
        assert difference <= tolerance + 1e-6, (name, difference)
    lines, cycles_lines = maps["lineart"] > 0.5, passes.maps["lineart"] > 0.5
    assert lines.sum() > 200
    # The same lines but for a few pixels where an edge pixel went to the other object.
    assert (lines != cycles_lines).sum() < 0.02 * lines.sum()
    assert not (lines & ~_dilate(cycles_lines)).any() and not (cycles_lines & ~_dilate(lines)).any()


def test_orthographic_camera(gpu_ready, drawer, empty_file, tmp_path):
    scene = empty_file
    objects = _test_scene(scene)
    camera = objects["camera"]
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 3.2
    camera.location = (0.2, 0.1, 1.0)  # the view's origin is not the world's
    passes, _, _ = _cycles(scene, tmp_path)
    raw = _gpu(drawer, scene)
    _compare_raw(raw, passes, min_objects=5)
    wall_index = {entry.name: entry.index for entry in passes.objects}["Wall"]
    wall = erode(raw.object_index == wall_index, 1)
    assert np.allclose(raw.depth[wall], 7.0, atol=1e-4)  # planar depth from the camera at z = 1
    # Orthographic: a facing plane is (0, 0, 1) everywhere, unlike in perspective where nothing changes.
    assert np.allclose(raw.normals[wall], (0.0, 0.0, 1.0), atol=1e-5)


def test_orthographic_viewport_sees_nothing_behind_its_eye(gpu_ready, drawer, empty_file):
    """A viewport's orthographic window matrix clips far behind its eye (Blender centres the clip range on the
    view); like a camera there, the maps keep only what lies in front, so every depth stays positive."""
    scene = empty_file
    _test_scene(scene)
    near, far, half_width = -20.0, 20.0, 2.0
    half_height = half_width * HEIGHT / WIDTH
    projection = Matrix(
        (
            (1.0 / half_width, 0.0, 0.0, 0.0),
            (0.0, 1.0 / half_height, 0.0, 0.0),
            (0.0, 0.0, -2.0 / (far - near), -(far + near) / (far - near)),
            (0.0, 0.0, 0.0, 1.0),
        )
    )
    eye = Matrix.Translation((0.0, 0.0, -4.5))  # between the box (z = -2.7) and the wall (z = -6)
    names = _indexed()
    raw = drawer.draw(bpy.context.evaluated_depsgraph_get(), names, eye.inverted(), projection, WIDTH, HEIGHT)
    assert not (raw.object_index == names.index("Box") + 1).any()
    assert raw.object_index[HEIGHT // 2, WIDTH // 2] == names.index("Wall") + 1
    assert (raw.depth[~raw.background] > 0).all()
    assert np.isclose(raw.depth[HEIGHT // 2, WIDTH // 2], 1.5, atol=1e-5)


def test_instances_take_the_index_of_their_object(gpu_ready, drawer, empty_file, tmp_path):
    scene = empty_file
    _test_scene(scene)
    props = bpy.data.collections.new("Props")
    scene.collection.children.link(props)
    prop = sphere(scene, "Prop", 0.2, (-0.3, 0.45, -3.5))
    scene.collection.objects.unlink(prop)
    props.objects.link(prop)
    # An instance of the collection, to the right; the instancer's own pass index plays no part.
    instancer = bpy.data.objects.new("Instancer", None)
    instancer.instance_type = "COLLECTION"
    instancer.instance_collection = props
    instancer.location = (0.65, -0.8, 0.5)
    instancer.pass_index = 7
    scene.collection.objects.link(instancer)
    passes, _, _ = _cycles(scene, tmp_path)
    raw = _gpu(drawer, scene)
    _compare_raw(raw, passes, min_objects=6)
    prop_index = {entry.name: entry.index for entry in passes.objects}["Prop"]
    drawn = raw.object_index == prop_index
    # Two separate blobs: the object and its instance, both drawn with the object's index.
    columns = np.flatnonzero(drawn.any(axis=0))
    assert np.diff(columns).max() > 5, columns
    assert not (raw.object_index == 7).any()


def test_a_geometry_change_is_drawn_after_forget(gpu_ready, drawer, empty_file, monkeypatch):
    scene = empty_file
    objects = _test_scene(scene)
    wall_index = _indexed().index("Wall") + 1
    built = []
    original_batch = live_maps._batch

    def counting_batch(shader, obj):
        built.append(obj.name)
        return original_batch(shader, obj)

    monkeypatch.setattr(live_maps, "_batch", counting_batch)
    first = _gpu(drawer, scene)
    assert sorted(built) == ["Back", "Box", "Mirrored", "Sphere", "Wall"]
    wall = erode(first.object_index == wall_index, 1)
    assert np.allclose(first.depth[wall], 6.0, atol=1e-4)

    # Another view of the same geometry builds nothing.
    built.clear()
    objects["camera"].location.x = 0.1
    _gpu(drawer, scene)
    assert built == []

    # Forgetting an object builds its batch again, and only its.
    drawer.forget({"Wall"})
    _gpu(drawer, scene)
    assert built == ["Wall"]

    # Edit the wall's mesh and tell the drawer, as the live preview does from the depsgraph's updates.
    built.clear()
    for vertex in objects["wall"].data.vertices:
        vertex.co.z = -5.0
    objects["wall"].data.update()
    bpy.context.view_layer.update()
    drawer.forget({"Wall"})
    moved = _gpu(drawer, scene)
    assert built == ["Wall"]
    assert np.allclose(moved.depth[erode(moved.object_index == wall_index, 1)], 5.0, atol=1e-4)


def test_hidden_and_unindexed_objects_are_not_drawn(gpu_ready, drawer, empty_file):
    scene = empty_file
    objects = _test_scene(scene)
    objects["box"].hide_render = True  # not in renderable_objects: Cycles does not render it
    objects["sphere"].visible_camera = False
    raw = _gpu(drawer, scene)
    names = _indexed()
    assert "Box" not in names
    # The wall shows through where the box was, and the sphere's index is nowhere.
    assert raw.object_index[HEIGHT // 2, WIDTH // 2] == names.index("Wall") + 1
    assert not (raw.object_index == names.index("Sphere") + 1).any()


def test_curves_and_text_are_drawn(gpu_ready, drawer, empty_file):
    scene = empty_file
    _test_scene(scene)
    text = bpy.data.objects.new("Text", bpy.data.curves.new("Text", "FONT"))
    text.data.body = "II"
    text.data.size = 0.5
    text.location = (-0.5, -0.6, -2.5)
    scene.collection.objects.link(text)
    raw = _gpu(drawer, scene)
    names = _indexed()
    letters = raw.object_index == names.index("Text") + 1
    assert letters.sum() > 30
    assert np.allclose(raw.depth[erode(letters, 1)], 2.5, atol=1e-4)


def test_pixels_are_read_in_memory_order_whatever_strides_the_buffer_reports():
    """Blender 4.x's `gpu.types.Buffer` reports column-major strides over row-major pixels (seen in 4.3's UI:
    `np.asarray` alone scrambles the picture); 5.2 reports row-major ones. Both must read the same picture."""
    height, width, channels = 3, 5, 2
    picture = np.arange(height * width * channels, dtype=np.float32).reshape(height, width, channels)
    item = picture.itemsize
    reversed_strides = np.lib.stride_tricks.as_strided(
        picture.ravel(), (height, width, channels), (item, item * height, item * height * width)
    )

    class Texture:
        def __init__(self, buffer):
            self.height, self.width, self.buffer = height, width, buffer

        def read(self):
            return self.buffer

    for buffer in (picture, reversed_strides):
        assert np.array_equal(live_maps.texture_pixels(Texture(buffer), channels), picture[::-1])


def test_gpu_unavailable_is_a_clear_error(empty_file):
    if live_maps.gpu_available():
        pytest.skip("this Blender draws on the GPU here")
    _test_scene(empty_file)
    with pytest.raises(live_maps.GpuUnavailable, match="cannot draw on the GPU"):
        _gpu(live_maps.MapDrawer(), empty_file)


def test_draw_timings(gpu_ready, drawer, empty_file, capsys):
    """Prints the cost of `MapDrawer.draw` (first and later calls) on a scene of a few thousand triangles and
    of `control_maps`; asserts no time (shared machines are noisy)."""
    scene = empty_file
    _test_scene(scene)
    for i in range(6):
        sphere(scene, f"Ball{i}", 0.15, (-0.8 + 0.32 * i, -0.55, -3.0))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    meshes = [obj.evaluated_get(depsgraph).data for obj in scene.objects if obj.type == "MESH"]
    triangles = sum(len(mesh.loop_triangles) for mesh in meshes)
    assert triangles > 3000
    names = _indexed()
    camera = scene.camera.evaluated_get(depsgraph)
    view = camera.matrix_world.normalized().inverted()
    lines = [
        f"live maps, {triangles} triangles, Blender {bpy.app.version_string}, {gpu.platform.renderer_get()}:"
    ]
    for width, height in ((256, 144), (512, 288)):
        projection = camera.calc_matrix_camera(depsgraph, x=width, y=height)
        drawer.free()  # the first call makes the shader, the batches and the targets
        seconds = []
        for _ in range(6):
            start = time.perf_counter()
            raw = drawer.draw(depsgraph, names, view, projection, width, height)
            seconds.append(time.perf_counter() - start)
        maps_seconds = []
        for _ in range(3):
            start = time.perf_counter()
            live_maps.control_maps(raw, {}, scene_passes.PassOptions())
            maps_seconds.append(time.perf_counter() - start)
        assert raw.depth.shape == (height, width) and (~raw.background).sum() > 0.5 * width * height
        later = np.median(seconds[1:])
        lines.append(
            f"  {width}x{height}: first draw {seconds[0] * 1e3:.1f} ms, later draws {later * 1e3:.1f} ms "
            f"(median of 5), control_maps {np.median(maps_seconds) * 1e3:.1f} ms (median of 3)"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
