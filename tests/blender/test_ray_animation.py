# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Animation across Ray Serve replicas (issue 17): the Remote Worker pointed at the worker on a local
Ray cluster of two CPU replicas plans frames ahead, so their engine jobs run on both replicas at once, and the
frames equal one plain worker's. Without coherence every frame is independent; with it (diffusion continues
each frame from the keyframe before) the frames of a span and the keyframe closing it run at once, spans in
order.

Needs the Ray venv (`./run test` passes its interpreter as STYLEPASS_RAY_PYTHON); the workers are real child
processes of that interpreter (`tools/worker_process.py` starts them), the tiny models are built with it.
"""

import json
import os
import secrets
import subprocess
import textwrap

import blender_harness
import bpy
import numpy as np
import pytest
import scenes
import worker_process  # tools/: workers started as a user starts them
from conftest import ROOT, addon_module
from scenes import animated_scene

from stylepass_core import png

runtime = addon_module("addon.runtime")

PYTHON = os.environ.get("STYLEPASS_RAY_PYTHON", "")
pytestmark = pytest.mark.skipif(
    not os.path.isfile(PYTHON), reason="needs the Ray venv (STYLEPASS_RAY_PYTHON, set by ./run test)"
)
FRAMES = 6
INTERVAL = (
    3  # with coherence: keyframes 1, 4 and 6; frames 2, 3 and keyframe 4 continue from 1; 5 and 6 from 4
)
SPANS = {2: 1, 3: 1, 4: 1, 5: 4, 6: 4}  # frame -> the keyframe it continues from


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-anim-models")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import tiny_models as t
        t.save_sd15_folder(Path({str(folder)!r}) / "tiny-sd15")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "diffusion")}
    subprocess.run([PYTHON, "-c", script], check=True, capture_output=True, timeout=600, env=env)
    return folder


@pytest.fixture(scope="module")
def workers(tiny_model, tmp_path_factory):
    """The plain worker (one torch thread, as a replica here) and the worker on Ray Serve (2 replicas)."""
    logs = tmp_path_factory.mktemp("ray-anim-logs")
    models = ["--model-dir", str(tiny_model)]
    plain = worker_process.start(
        "stylepass_core.worker", ["--port", "0", *models], secrets.token_urlsafe(16), logs / "plain.log", 60,
        python=PYTHON, OMP_NUM_THREADS="1",
    )  # fmt: skip
    try:
        serve_args = [
            "--replicas", "2", "--num-cpus", "2", "--num-cpus-per-replica", "1", "--port", "0", *models,
            "--shutdown-grace", "10",
        ]  # fmt: skip
        ray = worker_process.start(
            "stylepass_core.worker.serve", serve_args, secrets.token_urlsafe(16), logs / "serve.log", 180,
            python=PYTHON,
        )  # fmt: skip
    except BaseException:
        plain.stop(30)
        raise
    yield {"plain": plain, "ray": ray}
    runtime.RUNTIME.release()
    ray.stop(90)
    plain.stop(30)


@pytest.fixture
def remote_prefs():
    prefs = bpy.context.preferences.addons[blender_harness.MODULE].preferences
    saved = (prefs.engine_location, prefs.remote_url, prefs.remote_token)
    yield prefs
    runtime.RUNTIME.release()
    prefs.engine_location, prefs.remote_url, prefs.remote_token = saved


def _diffusion_shot(scene, out_dir, model, coherence, frames=FRAMES):
    animated_scene(scene, frames)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    scene.view_settings.view_transform = "Standard"
    s = scene.stylepass
    s.output_dir = str(out_dir)
    s.engine = "DIFFUSION"
    s.seed = 11
    s.temporal_coherence = coherence
    s.keyframe_interval = INTERVAL
    d = s.diffusion
    d.model = str(model)
    d.prompt = "a watercolour toy town"
    d.steps = 2
    d.denoise = 1.0
    return scene


@pytest.mark.parametrize("coherence", [False, True], ids=["independent", "coherent"])
def test_an_animation_spreads_over_both_replicas_and_equals_one_worker(
    empty_file, tmp_path, tiny_model, workers, remote_prefs, coherence
):
    scene = _diffusion_shot(empty_file, tmp_path / "plain", tiny_model / "tiny-sd15", coherence)
    folders = {}
    for name in ("plain", "ray"):
        worker = workers[name]
        remote_prefs.engine_location = "REMOTE"
        remote_prefs.remote_url, remote_prefs.remote_token = worker.url, worker.token
        scene.stylepass.output_dir = str(tmp_path / name)
        assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}, name
        folders[name] = tmp_path / name / scene.name / "stylised"
        runtime.RUNTIME.release()  # the next run asks its own worker afresh

    records = {f: json.loads((folders["ray"] / f"{f:04d}.json").read_text()) for f in range(1, FRAMES + 1)}
    replicas = {f: r["result"]["ray"]["replica"] for f, r in records.items()}
    assert len(set(replicas.values())) == 2, f"the frames ran on {replicas}"
    # At once, not by turns: frames planned ahead ran on one replica while the frame before ran on the other.
    spans = {f: (r["result"]["ray"]["timings"]["started_at"], r["result"]["ray"]["timings"]["finished_at"])
             for f, r in records.items()}  # fmt: skip
    overlapping = [f for f in range(2, FRAMES + 1) if spans[f][0] < spans[f - 1][1]]
    assert overlapping, f"every frame's engine job waited for the one before: {spans}"
    if coherence:
        # Each frame continued from its keyframe (img2img from its picture), once that picture was made.
        for frame, key in SPANS.items():
            assert spans[frame][0] >= spans[key][1], (frame, key, spans)
            assert records[frame]["result"]["mode"] == "img2img", (frame, records[frame]["result"])
        assert records[1]["result"]["mode"] == "txt2img"
    assert all(r["result"]["ray"]["attempts"] == 1 for r in records.values()), records
    for frame in range(1, FRAMES + 1):
        one = png.read_png(folders["plain"] / f"{frame:04d}.png")[..., :3].astype(int)
        spread = png.read_png(folders["ray"] / f"{frame:04d}.png")[..., :3].astype(int)
        assert np.array_equal(one, spread), (frame, np.abs(one - spread).max(), spans[frame])


def test_a_cut_found_midway_reruns_the_frames_run_ahead_from_the_old_keyframe(
    empty_file, tmp_path, tiny_model, workers, remote_prefs
):
    """The camera jumps at frame 5, which nothing on disk says yet: frames planned ahead (5 and 6, two replicas)
    start from keyframe 1 before frame 5 is found to be a cut. They are run again from keyframe 5, so the shot
    equals a run that knew the cut from the start (the records of a first run tell a second one)."""
    scene = _diffusion_shot(empty_file, tmp_path / "ray", tiny_model / "tiny-sd15", True, frames=8)
    scene.stylepass.keyframe_interval = 0  # keyframes: first, cuts and last only
    camera = scene.camera
    for frame, z in ((1, 0.0), (4, 0.0), (5, -2.2), (8, -2.2)):
        camera.location.z = z
        camera.keyframe_insert("location", frame=frame)
    for fcurve in scenes._fcurves(camera):
        for point in fcurve.keyframe_points:
            point.interpolation = "CONSTANT"
    scene.frame_set(1)
    worker = workers["ray"]
    remote_prefs.engine_location = "REMOTE"
    remote_prefs.remote_url, remote_prefs.remote_token = worker.url, worker.token
    assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}
    folder = tmp_path / "ray" / scene.name / "stylised"
    records = {f: json.loads((folder / f"{f:04d}.json").read_text()) for f in range(1, 9)}
    assert [records[f]["postprocess"]["keyframe"] for f in (1, 5, 8)] == ["first", "cut", "last"]
    assert [records[f]["context"]["keyframes"] for f in (6, 7)] == [[5, 8]] * 2
    first_run = {f: png.read_png(folder / f"{f:04d}.png") for f in range(5, 9)}

    # Again with frames 5-8 missing: their records name the cut, so it is planned from the start.
    for frame in range(5, 9):
        (folder / f"{frame:04d}.png").unlink()
    assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}
    for frame, picture in first_run.items():
        again = png.read_png(folder / f"{frame:04d}.png")
        assert np.array_equal(picture, again), (frame, np.abs(picture.astype(int) - again).max())
