# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the Ray Serve tests: the worker on a local Ray cluster and the plain worker, both as real child
processes on 127.0.0.1, tiny diffusion requests, and /proc probes.

Every wait is bounded; every process started here is stopped (SIGTERM, then SIGKILL) by its fixture.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from worker_process import read_ready  # tools/

from stylepass_core.engine_api import StyleRequest
from stylepass_core.engines.diffusion.settings import DiffusionSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # holds the stylepass_core package
TINY_MODELS = ROOT / "tests" / "diffusion"  # tiny_models.py: random-weight SD1.5-architecture pipelines
APP_NAME = "stylepass-test"


def child_env(token: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a worker started here: the repo's core, no byte code, Ray's token auth off."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STYLEPASS_WORKER_TOKEN")}
    env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", RAY_AUTH_MODE="disabled")
    if token is not None:
        env["STYLEPASS_WORKER_TOKEN"] = token
    env.update(extra)
    return env


@dataclass
class Started:
    """A worker process started here and what its ready line said."""

    proc: subprocess.Popen
    url: str
    token: str
    ready: dict
    log: Path

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait; SIGKILL after `timeout` s. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    module: str, args: list[str], token: str, log: Path, timeout: float, python: str | None = None, **env: str
) -> Started:
    """`<python> -m <module> <args>` (default: this interpreter) with its stderr in `log`; returns once it
    printed its ready line. `env` is added to the child's environment (`child_env`)."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(token, **env),
            cwd=str(ROOT),
            start_new_session=True,  # a SIGINT to pytest does not reach Ray's processes half-way
        )
    try:
        ready = read_ready(proc, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n" + log.read_text(errors="replace")[-4000:]) from None
    return Started(proc, f"http://127.0.0.1:{ready['port']}", token, ready, log)


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
