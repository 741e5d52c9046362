# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the Ray Serve tests: the worker on a local Ray cluster and the plain worker, both as real child
processes on 127.0.0.1, tiny diffusion requests, and /proc probes.

Every wait is bounded; every process started here is stopped (SIGTERM, then SIGKILL) by its fixture.
"""

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from worker_process import Started, start

from stylepass_core.engine_api import StyleRequest
from stylepass_core.engines.diffusion.settings import DiffusionSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # holds the stylepass_core package
TINY_MODELS = ROOT / "tests" / "diffusion"  # tiny_models.py: random-weight SD1.5-architecture pipelines
APP_NAME = "stylepass-test"


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state not in ("Z", "X"):
            children.setdefault(int(parent), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """The predicate's first truthy value within `timeout` s, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def frame(size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A small synthetic beauty (a disc in front of a gradient) and its depth map."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((xx - 0.5) ** 2 + (yy - 0.55) ** 2) < 0.09
    beauty = np.stack([0.3 + 0.5 * xx, 0.4 + 0.3 * yy, 0.8 - 0.4 * yy], axis=-1)
    beauty[disc] = (0.9, 0.3, 0.2)
    depth = np.where(disc, 1.0 - 0.5 * yy, 0.2 * (1.0 - yy)).astype(np.float32)
    return np.clip(beauty, 0.0, 1.0).astype(np.float32), {"depth": depth}


def diffusion_request(model: Path | str, seed: int, size: int = 64, steps: int = 2) -> StyleRequest:
    """Text to image on a tiny model: `steps` Euler a steps at `size` x `size`."""
    beauty, controls = frame(size)
    settings = DiffusionSettings(
        model=str(model),
        prompt="a red house by a lake",
        steps=steps,
        guidance=5.0,
        denoise=1.0,
        scheduler="euler_a",
        device="cpu",
    )
    return StyleRequest(beauty=beauty, settings=settings, controls=controls, seed=seed)


@dataclass
class Recorder:
    """A `Progress` that keeps every message (thread-safe enough: appends only)."""

    messages: list[str] = field(default_factory=list)
    on_update: Callable[[int, int, str], None] | None = None

    def update(self, done: int, total: int, message: str = "") -> None:
        self.messages.append(message)
        if self.on_update is not None:
            self.on_update(done, total, message)


class RayWorker:
    """The entry point's process, its URL and token, and (lazily) a driver connected to its cluster."""

    def __init__(self, started: Started) -> None:
        self.started = started
        self.url, self.token, self.ready = started.url, started.token, started.ready
        self._connected = False

    def ingress(self) -> Any:
        """A handle on the application's ingress (this test process joins the cluster as a driver)."""
        import ray
        from ray import serve

        if not self._connected:
            ray.init(address=self.ready["ray"]["address"], log_to_driver=False)
            self._connected = True
        return serve.get_app_handle(APP_NAME)

    def cluster(self) -> dict[str, Any]:
        """The executor's view: replicas (pid, models, loads, evictions, jobs) and running jobs."""
        return self.ingress().cluster.remote().result(timeout_s=30)

    def replica_stats(self) -> list[dict[str, Any]]:
        """Each live replica's own facts (a broadcast)."""
        answers = self.ingress().replica_stats.remote().result(timeout_s=60)
        return [a for a in answers if isinstance(a, dict)]

    def disconnect(self) -> None:
        if self._connected:
            import ray
            from ray.serve import context

            # Serve caches its controller's handle per driver job id, and every new cluster's first driver
            # is job 1 again: without this, the next cluster's handles would go to this one's dead actors.
            context._set_global_client(None)
            ray.shutdown()
            self._connected = False


def serve_worker(models: Any, tmp_path_factory: Any, replicas: int, *extra: str) -> Iterator[RayWorker]:
    """`python -m stylepass_core.worker.serve` on a fresh local Ray instance of 2 CPUs, 1 CPU per replica;
    a generator for a fixture: the worker, then its clean stop checked."""
    log = tmp_path_factory.mktemp("ray-worker") / "serve.log"
    args = [
        "--replicas", str(replicas), "--num-cpus", "2", "--num-cpus-per-replica", "1",
        "--max-models-per-replica", "2", "--app-name", APP_NAME, "--model-dir", str(models.root),
        "--shutdown-grace", "10", *extra,
    ]  # fmt: skip
    started = start("stylepass_core.worker.serve", args, secrets.token_urlsafe(16), log, 180)
    worker = RayWorker(started)
    yield worker
    worker.disconnect()
    code = started.stop(90)
    assert code == 0, f"the Ray worker exited with {code}; its log:\n{started.log_tail()}"
