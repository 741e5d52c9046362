# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Animation across Ray Serve replicas (issue 17): the Remote Worker pointed at the worker on a local
Ray cluster of two CPU replicas plans frames ahead, so their engine jobs run on both replicas at once, and the
frames equal one plain worker's.

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


def _diffusion_shot(scene, out_dir, model):
    animated_scene(scene, FRAMES)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 64, 100
    scene.view_settings.view_transform = "Standard"
    s = scene.stylepass
    s.output_dir = str(out_dir)
    s.engine = "DIFFUSION"
    s.seed = 11
    s.temporal_coherence = False  # every frame its own job: all of them may run at once
    d = s.diffusion
    d.model = str(model)
    d.prompt = "a watercolour toy town"
    d.steps = 2
    d.denoise = 1.0
    return scene


def test_an_animation_spreads_over_both_replicas_and_equals_one_worker(
    empty_file, tmp_path, tiny_model, workers, remote_prefs
):
    scene = _diffusion_shot(empty_file, tmp_path / "plain", tiny_model / "tiny-sd15")
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
    assert all(r["result"]["ray"]["attempts"] == 1 for r in records.values()), records
    for frame in range(1, FRAMES + 1):
        one = png.read_png(folders["plain"] / f"{frame:04d}.png")[..., :3].astype(int)
        spread = png.read_png(folders["ray"] / f"{frame:04d}.png")[..., :3].astype(int)
        assert np.array_equal(one, spread), (frame, np.abs(one - spread).max(), spans[frame])
