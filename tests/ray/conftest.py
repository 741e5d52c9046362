# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker on Ray Serve: one local Ray cluster (2 CPUs, 2 engine replicas of 1 CPU each) per session,
started by the entry point `python -m stylepass_core.worker.serve` as a user starts it, serving tiny
random-weight SD1.5-architecture models; a plain worker (`python -m stylepass_core.worker`) gives the
reference frames.

Run with the Ray venv: `$(./run venv ray)/bin/python -m pytest -q tests/ray`. Without Ray, torch and diffusers
every test here is skipped. Both workers run torch with one thread: CPU results differ in the last bits
between thread counts (about 1e-6), and the frames are compared bit for bit.
"""

import importlib.util
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ray_helpers import ROOT, TINY_MODELS, RayWorker, diffusion_request, serve_worker
from worker_process import Started, start

os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default; this cluster is private
HAVE_RAY = all(importlib.util.find_spec(name) is not None for name in ("ray", "torch", "diffusers"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_RAY:
        return
    skip = pytest.mark.skip(reason="needs ray[serve], torch and diffusers: use the Ray venv (./run venv ray)")
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(Path(__file__).resolve().parent):
            item.add_marker(skip)


@dataclass(frozen=True)
class Models:
    """The session's tiny models: two different ones, and copies of the first under other names (other model
    ids, the same frames)."""

    root: Path
    a: Path
    b: Path
    c: Path
    d: Path
    e: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    if not HAVE_RAY:
        pytest.skip("needs the Ray venv")
    root = tmp_path_factory.mktemp("ray-models")
    script = (
        "import shutil, sys\nfrom pathlib import Path\nimport tiny_models as t\n"
        "out = Path(sys.argv[1])\nt.save_sd15_folder(out / 'tiny-a', seed=0)\n"
        "t.save_sd15_folder(out / 'tiny-b', seed=3)\n"
        "for name in 'cde':\n    shutil.copytree(out / 'tiny-a', out / f'tiny-{name}')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TINY_MODELS), str(ROOT)])}
    subprocess.run(
        [sys.executable, "-c", script, str(root)], check=True, capture_output=True, timeout=300, env=env
    )
    return Models(root, *(root / f"tiny-{name}" for name in "abcde"))


@pytest.fixture(scope="session")
def plain(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Started:
    """The plain worker, one torch thread like a replica here."""
    log = tmp_path_factory.mktemp("plain-worker") / "worker.log"
    args = ["--host", "127.0.0.1", "--port", "0", "--model-dir", str(models.root)]
    worker = start("stylepass_core.worker", args, secrets.token_urlsafe(16), log, 60, OMP_NUM_THREADS="1")
    yield worker
    worker.stop(30)


@pytest.fixture(scope="session")
def ray_worker(models: Models, tmp_path_factory: pytest.TempPathFactory) -> RayWorker:
    """The worker on Ray Serve with 2 replicas, 1 CPU each."""
    yield from serve_worker(models, tmp_path_factory, 2)


@pytest.fixture(scope="session")
def reference(plain: Started):
    """`reference(model, seed, size=64, steps=2)` -> the plain worker's image for that request (cached)."""
    from stylepass_core.worker.client import WorkerClient

    cache: dict[tuple, np.ndarray] = {}
    client = WorkerClient(plain.url, plain.token)

    def image(model: Path, seed: int, size: int = 64, steps: int = 2) -> np.ndarray:
        key = (str(model), seed, size, steps)
        if key not in cache:
            cache[key] = client.run("DIFFUSION", diffusion_request(model, seed, size, steps)).image
        return cache[key]

    yield image
    client.close()
