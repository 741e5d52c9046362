# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the Ray Serve tests: the worker on a local Ray cluster and the plain worker, both as real child
processes on 127.0.0.1, tiny diffusion requests, and /proc probes.

Every wait is bounded; every process started here is stopped (SIGTERM, then SIGKILL) by its fixture.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
