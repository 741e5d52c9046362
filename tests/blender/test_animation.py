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
import pytest
import scenes
from conftest import ROOT, ZIP_PATH, addon_module
from scenes import animated_scene

from stylepass_core import compositor_layers, exr, output_layout, png
from stylepass_core.errors import StylepassError
from stylepass_core.settings import CoherenceSettings

animation = addon_module("addon.animation")
compositor = addon_module("addon.compositor")
stylise = addon_module("addon.stylise")


def _setup(scene, out_dir, frames=4):
    objects = animated_scene(scene, frames)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.view_settings.view_transform = "Standard"
    scene.stylepass.output_dir = str(out_dir)
    scene.stylepass.neural_style.style_preset = "style_07"
    return objects


def _run(
    scene, overwrite=False, temporal_on=True, stop_after=None, separate_process=False, interval=12, step=1
):
    run_settings = stylise.RunSettings.from_scene(scene)
    run_settings = replace(run_settings, passes=run_settings.passes.replace(show_images=False))
    anim = animation.AnimationOptions(
        scene.frame_start,
        scene.frame_end,
        frame_step=step,
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
        before = _stylised(out_dir, scene, missing)
        (folder / f"{missing:04d}.png").unlink()
        redone = _run(scene)
        assert redone.stylised == [missing] and redone.skipped == [f for f in (1, 2, 3, 4) if f != missing]
        assert np.array_equal(_stylised(out_dir, scene, missing), before)  # the very same pixels
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


# ------------------------------------------------------------------------------------------------------------
# Keyframe fusion on a real shot: no pop, no blur, any frame step
# ------------------------------------------------------------------------------------------------------------
def _accelerating_shot(scene, out_dir, frames=7):
    """The box speeds up (0.03, 0.09, 0.15 ... units a frame: one frame's vectors times the step is wrong)
    and passes in front of the sphere; 160 x 120 so the stylisation has detail to lose."""
    objects = _setup(scene, out_dir, frames)
    scene.render.resolution_x, scene.render.resolution_y = 160, 120
    box = objects["box"]
    box.animation_data_clear()
    for frame in range(1, frames + 1):
        box.location.x = -0.5 + 0.03 * (frame - 1) ** 2
        box.keyframe_insert("location", frame=frame)
    scene.frame_set(1)
    return objects


def _run_into(scene, folder, step, on, interval):
    """Stylise the shot into `folder` (coherence `on`); its layout."""
    scene.stylepass.output_dir = str(folder)
    summary = _run(scene, temporal_on=on, interval=interval, step=step)
    return summary, output_layout.SceneLayout(folder, scene.name)


def test_fused_frames_have_no_keyframe_pop_and_keep_their_detail(empty_file, out_dir):
    scene = empty_file
    _accelerating_shot(scene, out_dir)
    frames = list(range(1, 8))
    figures = {}
    for on in (False, True):
        summary, layout = _run_into(scene, out_dir / str(on), 1, on, interval=12)
        figures[on] = flicker.shot_figures(layout, frames)
    assert summary.keyframes == {1: "first", 7: "last"}
    independent, fused = figures[False].warping_error, figures[True]
    # No frame stands out, the keyframe at the end included (measured on 4.2, 4.5 and 5.2: worst 0.18, mean
    # 0.11 of the independent mean; detail 1.07 of the independent frames').
    assert fused.worst_error <= 0.5 * independent, (fused, independent)
    assert fused.warping_error <= 0.2 * independent, (fused, independent)
    assert fused.detail >= 0.95 * figures[False].detail, figures
    records = [json.loads((layout.stylised_dir / f"{f:04d}.json").read_text()) for f in frames]
    between = [r for r in records if r["postprocess"]["keyframe"] is None]
    assert len(between) == 5 and all(r["postprocess"]["carried_share"] > 0.5 for r in between)
    assert all(r["context"]["keyframes"] == [1, 7] for r in between)


def test_style_group_layers_follow_the_same_motion_as_the_frame(empty_file, out_dir):
    scene = empty_file
    objects = _accelerating_shot(scene, out_dir)
    group = scene.stylepass.style_groups.add()
    group.name, group.neural_style.style_preset = "Ink", "style_03"
    group.objects.add().object = objects["box"]
    frames = list(range(1, 8))
    errors = {}
    for on in (False, True):
        _, layout = _run_into(scene, out_dir / str(on), 1, on, interval=12)
        layers = []
        for frame in frames:
            passes = exr.group_passes(exr.read_exr(layout.layers_file(frame)), compositor_layers.VIEW_LAYER)
            layers.append(np.clip(passes["Ink Layer"], 0.0, 1.0) ** (1 / 2.2))  # roughly as displayed
        motion = [flicker.motion(layout, frame) for frame in frames]
        maps = flicker.step_maps([m[0] for m in motion], [m[1] for m in motion])
        errors[on] = np.mean([e for e in flicker.carried_warping_errors(layers, maps) if e is not None])
    # The group's layer between keyframes is its keyframes' layers carried along the exact vectors, like the
    # frame itself: it no longer flickers.
    print(f"group layer warping error: independent {errors[False]:.5f}, coherent {errors[True]:.5f}")
    assert errors[True] <= 0.3 * errors[False], errors
    node = compositor.find_group_node(
        scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree
    )
    assert {"Line Art", "Ink Layer", "Ink Mask"} <= {s.name for s in node.outputs}
    assert node.node_tree.nodes["Layers"].image.source == "SEQUENCE"


def test_frame_steps_two_and_three_follow_the_motion_of_the_skipped_frames(empty_file, out_dir):
    scene = empty_file
    _accelerating_shot(scene, out_dir, frames=13)
    ratios = {}
    truth = None
    for step in (1, 2, 3):
        frames = list(range(1, 14, step))
        errors = {}
        for on in (False, True):
            summary, layout = _run_into(scene, out_dir / f"step{step}-{on}", step, on, interval=6)
            truth = truth or layout  # step 1's passes hold every frame's motion
            assert summary.stylised == frames
            errors[on] = flicker.shot_figures(truth, frames, layout.stylised_dir).warping_error
        ratios[step] = errors[True] / errors[False]
        motion = layout.scene_dir / "motion" / scene.name / "passes" / "vector"
        skipped = [f for f in range(1, 14) if f not in frames]
        assert sorted(p.name for p in motion.glob("*.exr")) == [f"{f:04d}.exr" for f in skipped]
        assert not [f for f in skipped if layout.stylised_file(f).exists()]
    # Measured 0.09, 0.05 and 0.06 (4.2, 4.5, 5.2): each step keeps step 1's coherence.
    assert ratios[2] <= ratios[1] + 0.05 and ratios[3] <= ratios[1] + 0.05, ratios
    assert max(ratios.values()) < 0.2, ratios


def test_a_cut_restarts_cleanly_and_resuming_finds_it_again(empty_file, out_dir):
    """The camera jumps at frame 5 (a cut in one shot): frame 5 is a keyframe of its own, the frames before
    it are carried from frame 1 only, none from across the cut; run again, everything is current."""
    scene = empty_file
    objects = _setup(scene, out_dir, frames=8)
    camera = objects["camera"]
    for frame, z in ((1, 0.0), (4, 0.0), (5, -2.2), (8, -2.2)):
        camera.location.z = z  # from the room view to right in front of the box
        camera.keyframe_insert("location", frame=frame)
    for fcurve in scenes._fcurves(camera):
        for point in fcurve.keyframe_points:
            point.interpolation = "CONSTANT"
    scene.frame_set(1)
    first = _run(scene)
    assert first.keyframes == {1: "first", 5: "cut", 8: "last"}
    folder = out_dir / scene.name / "stylised"
    records = {f: json.loads((folder / f"{f:04d}.json").read_text()) for f in range(1, 9)}
    assert [records[f]["context"]["keyframes"] for f in (2, 3, 4)] == [[1, None]] * 3
    assert [records[f]["context"]["keyframes"] for f in (6, 7)] == [[5, 8]] * 2
    assert records[5]["context"]["fusion"]["cut"] and not records[4]["context"]["fusion"]["cut"]
    again = _run(scene)
    assert again.stylised == [] and again.skipped == list(range(1, 9))


# ------------------------------------------------------------------------------------------------------------
# Render farms: chunks of one shot stylised apart equal one run
# ------------------------------------------------------------------------------------------------------------
def test_a_farm_chunk_widens_to_the_keyframes_around_it():
    coherence = CoherenceSettings(temporal_coherence=True, keyframe_interval=4)
    shot = animation.AnimationOptions(1, 20, coherence=coherence)
    assert shot.span_of_work() == (list(range(1, 21)), 0)
    # Keyframes of the shot 1-20 every 4 frames: 1, 5, 9, 13, 17 and 20 (the last).
    chunk = animation.AnimationOptions(6, 10, coherence=coherence, shot=(1, 20))
    assert chunk.span_of_work() == (list(range(5, 14)), 4)
    assert animation.AnimationOptions(17, 20, coherence=coherence, shot=(1, 20)).frames == list(range(17, 21))
    # Frame step 2: rendered frames 1, 3, ... 19; keyframes every 4 rendered frames: 1, 9, 17 and 19.
    stepped = animation.AnimationOptions(5, 12, frame_step=2, coherence=coherence, shot=(1, 20))
    assert stepped.span_of_work() == ([1, 3, 5, 7, 9, 11, 13, 15, 17], 0)
    # Without coherence every frame stands alone: a chunk is its own frames.
    alone = animation.AnimationOptions(
        6, 10, coherence=CoherenceSettings(temporal_coherence=False), shot=(1, 20)
    )
    assert alone.frames == [6, 7, 8, 9, 10]
    with pytest.raises(StylepassError, match="must lie within the shot"):
        animation.AnimationOptions(15, 25, coherence=coherence, shot=(1, 20)).span_of_work()


def test_two_command_line_chunks_of_a_shot_equal_one_run(empty_file, out_dir, tmp_path):
    """Frames 1-9 with keyframes every 4 (1, 5, 9): one run, then two `blender -b` processes at once, as two
    farm tasks, stylising frames 1-4 and 5-9 with Farm Chunk into another folder. The first chunk also
    stylises keyframe 5 (its frames 2-4 are fused from 1 and 5); every frame equals the one run's, bit for bit,
    and the records name the same keyframes and keys."""
    scene = empty_file
    _setup(scene, out_dir, frames=9)
    scene.render.resolution_x, scene.render.resolution_y = 96, 72
    whole = _run(scene, interval=4)
    assert whole.keyframes == {1: "first", 5: "interval", 9: "interval"}

    chunks_dir = tmp_path / "chunks"
    scene.stylepass.output_dir = str(chunks_dir)
    scene.stylepass.keyframe_interval = 4
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)

    def chunk(start: int, end: int) -> subprocess.Popen:
        script = textwrap.dedent(
            f"""
            import blender_harness as h
            h.use_throwaway_user_folder()
            import bpy
            h.install_extension({str(ZIP_PATH)!r})
            bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
            result = bpy.ops.stylepass.stylise_animation(
                use_range=True, frame_start={start}, frame_end={end}, farm_chunk=True
            )
            h.disable_extension()
            print("CHUNK", result)
            """
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
        return subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    tasks = [chunk(1, 4), chunk(5, 9)]  # at once, as a farm runs them
    outputs = [task.communicate(timeout=900) for task in tasks]
    for out, err in outputs:
        assert "CHUNK {'FINISHED'}" in out, out[-3000:] + err[-3000:]
    for frame in range(1, 10):
        one_run = _stylised(out_dir, scene, frame)
        chunked = png.read_png(chunks_dir / scene.name / "stylised" / f"{frame:04d}.png")[..., :3]
        assert np.array_equal(one_run, chunked.astype(np.int32)), f"frame {frame} differs from one run"
        record = json.loads((chunks_dir / scene.name / "stylised" / f"{frame:04d}.json").read_text())
        whole_record = json.loads((out_dir / scene.name / "stylised" / f"{frame:04d}.json").read_text())
        # The same keyframes and the same keys: a later single run finds the chunks' frames current.
        for name in ("keyframes", "state_key"):
            assert record["context"].get(name) == whole_record["context"].get(name), (frame, name)


def test_a_chunk_of_a_continuing_engine_is_refused_clearly(empty_file, out_dir):
    scene = empty_file
    _setup(scene, out_dir, frames=9)
    scene.stylepass.engine = "DIFFUSION"
    run_settings = stylise.RunSettings.from_scene(scene)
    anim = animation.AnimationOptions(
        5, 9, coherence=CoherenceSettings(temporal_coherence=True, keyframe_interval=4), shot=(1, 9)
    )
    before = sorted(out_dir.rglob("*"))
    with pytest.raises(StylepassError, match="continues each keyframe from the one before"):
        list(animation.animation_steps(scene, bpy.context.view_layer, run_settings, anim))
    assert sorted(out_dir.rglob("*")) == before and scene.frame_current == 1
