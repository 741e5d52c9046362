# SPDX-License-Identifier: GPL-3.0-or-later
"""The pass render's own checks and settings: the memory it needs against the memory there is, a camera
animated into a state no pass can be made from, and scene settings that must not reach the passes
(burnt-in metadata, stereo, a view layer's own samples)."""

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import HEIGHT, WIDTH, known_scene

scene_passes = addon_module("addon.scene_passes")
runtime = addon_module("addon.runtime")

GB = 2**30


def _options(out_dir, **values):
    return scene_passes.PassOptions(output_dir=str(out_dir), show_images=False, pass_samples=1, **values)


def _files(folder):
    return [path for path in folder.rglob("*") if path.is_file()]


def test_memory_estimate_grows_with_the_pass_size():
    small = scene_passes.pass_memory_needed(WIDTH, HEIGHT)
    hd = scene_passes.pass_memory_needed(1920, 1080)
    assert scene_passes.PASS_BYTES_FIXED < small < hd
    # Measured: ~220-290 bytes per pixel for the render, the EXR read back and the maps.
    assert 200 * 1920 * 1080 < hd - scene_passes.PASS_BYTES_FIXED < 300 * 1920 * 1080
    assert scene_passes.pass_memory_needed(20000, 20000) > 90 * GB


def test_check_memory_states_the_need_and_a_scale_that_fits():
    scene_passes.check_memory(1920, 1080, available=2 * GB)
    with pytest.raises(scene_passes.StylepassError) as refused:
        scene_passes.check_memory(8000, 8000, available=4 * GB)
    message = str(refused.value)
    assert "8000 x 8000 pixels needs about 15.5 GB of memory, but only 4.0 GB is available" in message
    assert "lower Resolution Scale" in message and "or the render resolution" in message
    scale = int(message.split("about ")[2].split("%")[0])
    side = int(8000 * scale / 100)
    assert scene_passes.pass_memory_needed(side, side) <= 4 * GB
    assert scene_passes.pass_memory_needed(int(side * 1.05), int(side * 1.05)) > 4 * GB


def test_available_memory_reads_meminfo_or_falls_back(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    3000000 kB\n"
    )
    monkeypatch.setattr(scene_passes, "MEMINFO_PATH", str(meminfo))
    assert scene_passes.available_memory() == 3000000 * 1024
    monkeypatch.setattr(scene_passes, "MEMINFO_PATH", str(tmp_path / "no-such-file"))
    assert scene_passes.available_memory() == scene_passes.FALLBACK_AVAILABLE_MEMORY


def test_this_machine_reports_its_available_memory():
    available = scene_passes.available_memory()
    assert 256 * 2**20 < available < 2**50


def test_check_scene_weighs_the_pass_size_against_the_memory_given(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    view_layer = bpy.context.view_layer
    view_layer.update()
    scene.render.resolution_x, scene.render.resolution_y = 2000, 2000
    before = scene_snapshot(scene)
    with pytest.raises(scene_passes.StylepassError, match=r"2000 x 2000 pixels needs about 1\.2 GB"):
        scene_passes.check_scene(scene, view_layer, _options(out_dir), available=GB)
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert _files(out_dir) == []
    # The same scene at half the size fits in that memory, and a normal size in this machine's.
    width, height, *_ = scene_passes.check_scene(
        scene, view_layer, _options(out_dir, resolution_scale=50.0), GB
    )
    assert (width, height) == (1000, 1000)
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    assert scene_passes.render_passes(scene, view_layer, _options(out_dir)).width == WIDTH


def test_a_camera_animated_to_zero_scale_is_refused_at_that_frame(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    camera = objects["camera"]
    camera.keyframe_insert("scale", frame=1)
    camera.scale = (0.0, 0.0, 0.0)
    camera.keyframe_insert("scale", frame=5)
    scene.frame_set(1)
    before = scene_snapshot(scene)
    with pytest.raises(scene_passes.StylepassError, match="Frame 5: Camera 'Camera' is scaled to zero"):
        scene_passes.render_passes(scene, bpy.context.view_layer, _options(out_dir), frame=5)
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert scene.frame_current == 1
    assert _files(out_dir) == []


def _beauty(scene, out_dir):
    runtime.RUNTIME.release()
    return scene_passes.render_passes(scene, bpy.context.view_layer, _options(out_dir)).maps["beauty"]


def test_burnt_in_metadata_and_stereo_do_not_reach_the_passes(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    plain = _beauty(scene, out_dir).copy()
    scene.render.use_stamp = True  # "Burn Into Image": text drawn over the final render
    scene.render.use_stamp_note = True
    scene.render.stamp_note_text = "TAKE 3"
    assert np.array_equal(_beauty(scene, out_dir), plain)
    scene.render.use_multiview = True  # stereo: the final render saves two views
    before = scene_snapshot(scene)
    assert np.array_equal(_beauty(scene, out_dir), plain)
    assert diff_snapshots(before, scene_snapshot(scene)) == []


def test_a_view_layer_sample_count_does_not_replace_the_pass_samples(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    bpy.context.view_layer.samples = 4096
    scene.cycles.use_layer_samples = "USE"
    seen = []

    def record(render_scene, *_):
        seen.append((render_scene.cycles.use_layer_samples, render_scene.cycles.samples))

    bpy.app.handlers.render_pre.append(record)
    try:
        scene_passes.render_passes(scene, bpy.context.view_layer, _options(out_dir))
    finally:
        bpy.app.handlers.render_pre.remove(record)
    assert seen == [("IGNORE", 1)]
    assert scene.cycles.use_layer_samples == "USE" and bpy.context.view_layer.samples == 4096
