# SPDX-License-Identifier: GPL-3.0-or-later
"""Bad input gets a clear report, and the scene and the output folder stay as they were."""

import time

import bpy
import pytest
from conftest import diff_snapshots, scene_snapshot
from scenes import known_scene


def _expect_error(scene, out_dir, match):
    before = scene_snapshot(scene)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.stylepass.render_passes()
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert not any(out_dir.rglob("*.png"))


def test_no_camera(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.camera = None
    empty_file.stylepass.output_dir = str(out_dir)
    _expect_error(empty_file, out_dir, "has no active camera")


def test_camera_not_in_view_layer(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    hidden = bpy.data.collections.new("Cameras")
    scene.collection.children.link(hidden)
    hidden.objects.link(objects["camera"])
    scene.collection.objects.unlink(objects["camera"])
    bpy.context.view_layer.layer_collection.children["Cameras"].exclude = True
    scene.stylepass.output_dir = str(out_dir)
    _expect_error(scene, out_dir, "is not in view layer")


def test_empty_scene(empty_file, out_dir):
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    empty_file.collection.objects.link(cam)
    empty_file.camera = cam
    empty_file.stylepass.output_dir = str(out_dir)
    _expect_error(empty_file, out_dir, "Nothing to render")


def test_zero_resolution(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.render.resolution_x = 4
    empty_file.render.resolution_percentage = 1
    empty_file.stylepass.output_dir = str(out_dir)
    _expect_error(empty_file, out_dir, "resolution is 0 x")


def test_unwritable_output_folder(empty_file, out_dir, tmp_path):
    known_scene(empty_file)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    empty_file.stylepass.output_dir = str(blocker / "passes")
    _expect_error(empty_file, out_dir, "Cannot write to the output folder")
    assert blocker.read_text() == "not a folder"


def test_unsaved_file_falls_back_to_temp_with_warning(empty_file):
    known_scene(empty_file)
    empty_file.stylepass.output_dir = "//stylepass/"
    assert bpy.data.filepath == ""
    scene_passes = __import__("conftest").addon_module("addon.scene_passes")
    options = scene_passes.PassOptions(output_dir=empty_file.stylepass.output_dir, show_images=False)
    result = scene_passes.render_passes(empty_file, bpy.context.view_layer, options)
    assert result.warnings and "not saved" in result.warnings[0]
    assert result.json_path.is_file()


def _expect_refusal(scene, out_dir, match):
    """The operator reports `match`, the scene is as it was, and not a single file was written."""
    _expect_error(scene, out_dir, match)
    assert not [path for path in out_dir.rglob("*") if path.is_file()]


def test_an_empty_as_scene_camera(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    empty = bpy.data.objects.new("Rig", None)
    scene.collection.objects.link(empty)
    scene.camera = empty
    scene.stylepass.output_dir = str(out_dir)
    _expect_refusal(scene, out_dir, r"scene camera 'Rig' is not a camera \(its type is Empty\)")


@pytest.mark.parametrize(
    ("scale", "match"),
    [((0.0, 0.0, 0.0), "is scaled to zero"), ((-1.0, 1.0, 1.0), "is mirrored by a negative scale")],
    ids=["zero", "mirrored"],
)
def test_a_camera_scaled_to_zero_or_mirrored(empty_file, out_dir, scale, match):
    scene = empty_file
    objects = known_scene(scene)
    objects["camera"].scale = scale
    scene.stylepass.output_dir = str(out_dir)
    _expect_refusal(scene, out_dir, f"Camera 'Camera' {match}")


def test_a_sheared_camera(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    parent = bpy.data.objects.new("Squash", None)
    scene.collection.objects.link(parent)
    parent.scale = (1.0, 3.0, 1.0)
    objects["camera"].parent = parent
    objects["camera"].rotation_euler = (0.0, 0.0, 0.6)
    scene.stylepass.output_dir = str(out_dir)
    _expect_refusal(scene, out_dir, "Camera 'Camera' is sheared")


def test_a_disabled_view_layer(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    bpy.context.view_layer.use = False
    scene.stylepass.output_dir = str(out_dir)
    _expect_refusal(scene, out_dir, "View layer 'ViewLayer' is disabled for rendering")


@pytest.mark.parametrize(
    ("size", "percentage"), [((20000, 20000), 100), ((5120, 2880), 400)], ids=["20000x20000", "400% of 5K"]
)
def test_a_pass_render_too_big_for_memory_is_refused_up_front(empty_file, out_dir, size, percentage):
    scene = empty_file
    known_scene(scene)
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = percentage
    scene.stylepass.output_dir = str(out_dir)
    started = time.perf_counter()
    _expect_refusal(scene, out_dir, r"needs about [\d.]+ GB of memory, but only [\d.]+ GB is available")
    assert time.perf_counter() - started < 5.0  # refused, not rendered
    with pytest.raises(RuntimeError, match=r"lower Resolution Scale .* or the render resolution"):
        bpy.ops.stylepass.render_passes()
