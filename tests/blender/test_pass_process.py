# SPDX-License-Identifier: GPL-3.0-or-later
"""The pass render in a second Blender (what keeps the UI free): the same passes as a render in this Blender,
progress on the way, ESC (abort) ends it at once and leaves nothing behind, failures are reported, and the
artist's scene is never touched."""

import json
import threading
import time

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import known_scene

from stylepass_core import png
from stylepass_core.engine_api import Aborted

scene_passes = addon_module("addon.scene_passes")
pass_process = addon_module("addon.pass_process")
stylise = addon_module("addon.stylise")


class Recorder:
    def __init__(self) -> None:
        self.events = []

    def update(self, done: int, total: int, message: str = "") -> None:
        self.events.append((done / total, message))


def _scene(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    scene.stylepass.output_dir = str(out_dir)
    return scene


def _options(out_dir, **values):
    return scene_passes.PassOptions(output_dir=str(out_dir), show_images=False, **values)


def _leftovers(out_dir, scene):
    return sorted(p.name for p in (out_dir / scene.name / "passes").glob(".tmp-*"))


def test_same_passes_as_a_render_in_this_blender(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    view_layer = bpy.context.view_layer
    options = _options(out_dir, pass_samples=4)
    here = scene_passes.render_passes(scene, view_layer, options)
    before = scene_snapshot(scene)

    plan = scene_passes.plan_passes(scene, view_layer, options)
    process = pass_process.PassProcess.start(scene)
    progress = Recorder()
    try:
        rendered = process.render(plan.job, progress, threading.Event())
    finally:
        process.close(wait=True)
    there = scene_passes.develop(plan, rendered)

    assert diff_snapshots(before, scene_snapshot(scene)) == []
    for name in here.maps:
        assert np.array_equal(here.maps[name], there.maps[name]), name
    for name in here.raw:
        assert np.array_equal(here.raw[name], there.raw[name], equal_nan=True), name
    assert [e.name for e in here.objects] == [e.name for e in there.objects]
    record = json.loads(there.json_path.read_text())
    assert record["camera"]["resolution"] == [here.width, here.height]
    # Progress moved forward through the samples, and the temporary files are gone.
    fractions = [fraction for fraction, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[-1] > 0.8, progress.events
    assert any("sample" in message for _, message in progress.events), progress.events
    assert _leftovers(out_dir, scene) == []
    assert not process.alive
    # It quit on its own when asked (a handler left registered hung Blender 4.5 at exit until it was killed).
    assert process._process.returncode == 0


def test_abort_kills_the_render_and_leaves_nothing(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    plan = scene_passes.plan_passes(scene, bpy.context.view_layer, _options(out_dir, pass_samples=4096))
    process = pass_process.PassProcess.start(scene)
    abort = threading.Event()

    class AbortOnFirstSample(Recorder):
        def update(self, done, total, message=""):
            super().update(done, total, message)
            if "sample" in message:
                abort.set()

    progress = AbortOnFirstSample()
    with pytest.raises(Aborted):
        process.render(plan.job, progress, abort)
    aborted_at = time.monotonic()
    scene_passes.discard(plan)
    assert not process.alive
    assert time.monotonic() - aborted_at < 1.0
    assert not (out_dir / scene.name / "passes" / "beauty").exists()
    assert _leftovers(out_dir, scene) == []
    assert not process._folder.exists(), "the scene copy must be removed"


def test_a_failure_in_the_second_blender_is_reported(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    plan = scene_passes.plan_passes(scene, bpy.context.view_layer, _options(out_dir))
    job = plan.job.__class__.from_plain({**plan.job.to_plain(), "objects": ["No Such Object"]})
    process = pass_process.PassProcess.start(scene)
    try:
        with pytest.raises(pass_process.PassProcessError, match="No Such Object"):
            process.render(job)
        # The second Blender takes the next job after a failed one.
        rendered = process.render(plan.job)
    finally:
        process.close()
        scene_passes.discard(plan)
    assert rendered["camera"]["name"] == scene.camera.name


def test_a_dead_second_blender_is_reported_with_its_output(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    plan = scene_passes.plan_passes(scene, bpy.context.view_layer, _options(out_dir))
    process = pass_process.PassProcess.start(scene)
    process._process.kill()
    with pytest.raises(pass_process.PassProcessError, match="exit code"):
        process.render(plan.job)
    scene_passes.discard(plan)


def test_unsaved_edit_mode_changes_reach_the_copy(empty_file, out_dir):
    """The copy holds what the artist sees, also for a mesh still in Edit Mode."""
    scene = _scene(empty_file, out_dir)
    obj = next(o for o in scene.objects if o.type == "MESH")
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    bpy.ops.transform.translate(value=(0.0, 0.0, 0.25))
    try:
        path = pass_process.write_scene_copy(scene, out_dir)
        with bpy.data.libraries.load(str(path)) as (_data_from, data_to):
            data_to.meshes = [obj.data.name]
        copied = data_to.meshes[0]
        assert abs(copied.vertices[0].co.z - obj.data.vertices[0].co.z) < 1e-6
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_stylise_frame_through_the_second_blender(empty_file, out_dir, strength):
    """What the UI's Stylise Frame runs (`FrameJob`: off the main thread, passes from the second Blender) gives
    the same PNG as the synchronous run, with progress moving forward and the scene untouched."""
    scene = _scene(empty_file, out_dir)
    scene.stylepass.neural_style.style_preset = "style_03"
    scene.stylepass.strength = strength
    view_layer = bpy.context.view_layer
    run_settings = stylise.RunSettings.from_scene(scene)
    assert (
        run_settings.passes.render_samples == run_settings.passes.pass_samples
    )  # neural style reads the beauty
    synchronous = stylise.stylise(scene, view_layer, run_settings)
    expected = png.read_png(synchronous.frame.png_path)
    for path in (out_dir / scene.name / "passes").rglob("*.json"):
        path.unlink()
    addon_module("addon.runtime").RUNTIME.kept_passes.clear()

    before = scene_snapshot(scene)
    job = stylise.FrameJob(scene, view_layer, run_settings)
    assert job._plan.reused is None
    fractions = []
    while not job.done:
        fractions += [event.fraction for event in job.poll()]
        time.sleep(0.01)
    fractions += [event.fraction for event in job.poll()]
    _prepared, frame, image, _warnings = job.complete(scene)
    assert np.array_equal(png.read_png(frame.png_path), expected)
    assert fractions == sorted(fractions), fractions
    assert fractions[0] < stylise.PASS_SHARE < fractions[-1]
    assert image.name == stylise.STYLISED_IMAGE
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert next(name for name, _ in job.main_thread) == "start" and job.main_thread[-1][0] == "complete"


def test_a_cancelled_frame_job_stops_the_second_blender(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    scene.stylepass.pass_samples = 4096
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    before = scene_snapshot(scene)
    job = stylise.FrameJob(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    deadline = time.monotonic() + 60
    while not any("sample" in event.message for event in job.poll()):
        assert time.monotonic() < deadline, "the pass render never reported a sample"
        time.sleep(0.01)
    process = job._process
    job.cancel()
    cancelled_at = time.monotonic()
    while not job.done:
        time.sleep(0.01)
    assert time.monotonic() - cancelled_at < 1.0
    assert job.cancelled
    job.close()
    assert not process.alive
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert not (out_dir / scene.name / "stylised").exists()
    assert _leftovers(out_dir, scene) == []


def test_one_sample_when_nothing_reads_the_beauty(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    scene.stylepass.engine = "DIFFUSION"
    diffusion = scene.stylepass.diffusion
    diffusion.denoise = 1.0  # text to image: the beauty is not read
    assert stylise.RunSettings.from_scene(scene).passes.render_samples == 1
    scene.stylepass.strength = 0.5  # the finish mixes the render back in
    assert stylise.RunSettings.from_scene(scene).passes.render_samples == scene.stylepass.pass_samples
    scene.stylepass.strength = 1.0
    diffusion.denoise = 0.6  # image to image
    assert stylise.RunSettings.from_scene(scene).passes.render_samples == scene.stylepass.pass_samples


def test_a_new_colour_view_is_inverted_in_the_second_blender(empty_file, out_dir, monkeypatch):
    """The first Stylise Frame under a colour view never met before builds its inverse (1-4 s of Blender's
    view transform) in the second Blender, not in the artist's."""
    scene = _scene(empty_file, out_dir)
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.exposure = 0.123456  # a view no earlier test has inverted
    display_colour = addon_module("addon.display_colour")
    plan = display_colour.plan_target(scene)
    assert plan.needs_inverse

    def not_here(*args, **kwargs):
        raise AssertionError("the inverse was built in the artist's Blender")

    monkeypatch.setattr(display_colour, "build_inverse", not_here)
    job = stylise.FrameJob(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    messages = []
    while not job.done:
        messages += [event.message for event in job.poll()]
        time.sleep(0.01)
    prepared, frame, _image, _warnings = job.complete(scene)
    assert not plan.needs_inverse
    assert any("colour view" in message for message in messages), messages
    assert prepared.compositor.inverse is not None and frame.png_path.is_file()
