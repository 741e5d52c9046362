# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylised animation: resume, cancel, temporal coherence and the frame-synced compositor."""

import json
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace

import bpy
import flicker  # demo/ is on sys.path through tests/pytest.ini
import numpy as np
from conftest import ROOT, ZIP_PATH, addon_module
from scenes import animated_scene

from stylepass_core import output_layout, png
from stylepass_core.settings import CoherenceSettings

animation = addon_module("addon.animation")
stylise = addon_module("addon.stylise")


def _setup(scene, out_dir, frames=4):
    objects = animated_scene(scene, frames)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.view_settings.view_transform = "Standard"
    scene.stylepass.output_dir = str(out_dir)
    scene.stylepass.neural_style.style_preset = "style_07"
    return objects


def _run(scene, overwrite=False, temporal_on=True, stop_after=None, separate_process=False, interval=12):
    run_settings = stylise.RunSettings.from_scene(scene)
    run_settings = replace(run_settings, passes=run_settings.passes.replace(show_images=False))
    anim = animation.AnimationOptions(
        scene.frame_start,
        scene.frame_end,
        overwrite=overwrite,
        coherence=CoherenceSettings(temporal_coherence=temporal_on, keyframe_interval=interval),
    )
    stop = threading.Event()
    summary = animation.AnimationSummary()
    for step in animation.animation_steps(
        scene,
        bpy.context.view_layer,
        run_settings,
        anim,
        stop=stop,
        summary=summary,
        separate_process=separate_process,
    ):
        if step.waiting and not stop.is_set():
            step.job.wait()
        if stop_after is not None and len(summary.stylised) >= stop_after:
            stop.set()
    return summary


def _stylised(out_dir, scene, frame):
    return png.read_png(out_dir / scene.name / "stylised" / f"{frame:04d}.png")[..., :3].astype(np.int32)


def test_resume_skips_done_frames_and_redoes_changed_ones(empty_file, out_dir):
    scene = empty_file
    objects = _setup(scene, out_dir)
    first = _run(scene)
    assert first.stylised == [1, 2, 3, 4] and first.skipped == []
    assert first.keyframes[1] == "first"
    assert scene.frame_current == 1
    again = _run(scene)
    assert again.stylised == [] and again.skipped == [1, 2, 3, 4]
    # Only what depends on a missing frame is redone. Frames 1 and 4 are the keyframes (first and last), 2
    # and 3 are fused from them: a missing frame between is redone alone (its keyframes are read back), and a
    # missing keyframe alone too (the frames between depend on its key, which did not change).
    folder = out_dir / scene.name / "stylised"
    for missing in (2, 4):
        (folder / f"{missing:04d}.png").unlink()
        redone = _run(scene)
        assert redone.stylised == [missing] and redone.skipped == [f for f in (1, 2, 3, 4) if f != missing]
    # Frame 3 changes: frame 4's own picture does not (it is a keyframe), but 2 and 3 are carried through
    # frame 3's motion, so both are fused again.
    objects["box"].location.x = 0.6
    objects["box"].keyframe_insert("location", frame=3)
    changed = _run(scene)
    assert changed.skipped == [1, 4] and changed.stylised == [2, 3]
    assert _run(scene, overwrite=True).stylised == [1, 2, 3, 4]


def test_cancel_keeps_finished_frames_and_resume_continues(empty_file, out_dir):
    scene = empty_file
    _setup(scene, out_dir)
    # Keyframes 1, 3 and 4: stopped once frame 1 is written, while frame 2 waits for keyframe 3.
    stopped = _run(scene, stop_after=1, interval=2)
    assert stopped.stopped_early and 1 <= len(stopped.stylised) < 4
    finished = list(stopped.stylised)
    folder = out_dir / scene.name / "stylised"
    for frame in finished:
        record = json.loads((folder / f"{frame:04d}.json").read_text())
        assert record["context"]["frame"] == frame
        assert (folder / "compositor" / f"{frame:04d}.exr").is_file()
    resumed = _run(scene, interval=2)
    assert resumed.skipped == finished and resumed.stylised == [f for f in (1, 2, 3, 4) if f not in finished]


def test_passes_from_the_second_blender_give_the_same_frames(empty_file, out_dir, tmp_path):
    """The UI renders an animation's passes in a second Blender; the frames are the very same."""
    scene = empty_file
    _setup(scene, out_dir)
    here = _run(scene)
    expected = {frame: _stylised(out_dir, scene, frame) for frame in here.stylised}
    scene.stylepass.output_dir = str(tmp_path / "second")
    there = _run(scene, separate_process=True)
    assert there.stylised == here.stylised == [1, 2, 3, 4]
    assert there.keyframes == here.keyframes
    for frame, pixels in expected.items():
        assert np.array_equal(_stylised(tmp_path / "second", scene, frame), pixels), frame
    assert not list((tmp_path / "second" / scene.name / "passes").glob(".tmp-*"))
    # Stopped after two frames: the queued renders are dropped, nothing half-made is left.
    scene.stylepass.output_dir = str(tmp_path / "stopped")
    stopped = _run(scene, stop_after=1, separate_process=True, interval=2)
    assert stopped.stopped_early and 1 <= len(stopped.stylised) < 4
    assert not list((tmp_path / "stopped" / scene.name / "passes").glob(".tmp-*"))


def test_compositor_shows_frame_k_at_frame_k(empty_file, out_dir, tmp_path):
    scene = empty_file
    _setup(scene, out_dir)
    assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "8"
    scene.render.use_file_extension = False
    for frame in (1, 3, 4):
        scene.frame_set(frame)
        scene.render.filepath = str(tmp_path / f"f{frame}.png")
        assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
        shown = png.read_png(tmp_path / f"f{frame}.png")[..., :3].astype(np.int32)
        assert np.abs(shown - _stylised(out_dir, scene, frame)).max() <= 2, frame
    assert np.abs(_stylised(out_dir, scene, 1) - _stylised(out_dir, scene, 4)).mean() > 1


def test_temporal_coherence_lowers_the_warping_error(empty_file, out_dir):
    scene = empty_file
    _setup(scene, out_dir, frames=5)
    layout = output_layout.SceneLayout(out_dir, scene.name)
    figures = {}
    for on in (False, True):
        _run(scene, overwrite=True, temporal_on=on)
        figures[on] = flicker.sequence_figures(layout, range(1, 6))
    assert figures[True]["warping_error"] < 0.5 * figures[False]["warping_error"], figures
    # Not by freezing the picture: the edges still follow the geometry about as well.
    assert figures[True]["structure_fidelity"] > 0.9 * figures[False]["structure_fidelity"], figures


def test_render_animation_from_the_command_line(empty_file, out_dir, tmp_path):
    scene = empty_file
    _setup(scene, out_dir, frames=3)
    scene.render.filepath = str(tmp_path / "render" / "frame_####")
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    script = textwrap.dedent(
        f"""
        import blender_harness as h
        h.use_throwaway_user_folder()
        import bpy
        h.install_extension({str(ZIP_PATH)!r})
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        import bpy; bpy.ops.stylepass.render_animation()
        h.disable_extension()
        print("RENDERED")
        """
    )
    # Only tools/ on the path (and not the repo as the working folder): the core comes from the zip's wheel.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path
    )
    assert "RENDERED" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    for frame in (1, 2, 3):
        rendered = png.read_png(tmp_path / "render" / f"frame_{frame:04d}.png")[..., :3].astype(np.int32)
        assert np.abs(rendered - _stylised(out_dir, scene, frame)).max() <= 2, frame
