# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the worker tests: workers started as real child processes on 127.0.0.1, and /proc probes.

`start_worker(...)` runs `python -m stylepass_core.worker` with this folder's `engines_for_tests` loaded and
returns once it prints where it listens. Every wait is bounded; every worker started here is killed at the
end of its test or module.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from engines_for_tests import StepsSettings
from worker_process import process_gone, read_ready  # tools/

from stylepass_core.engine_api import StyleRequest
from stylepass_core.settings import EngineSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # holds the stylepass_core package
# A child process finds the core (repo root) and this folder's `engines_for_tests` the same way.
PYTHONPATH = os.pathsep.join([str(ROOT), str(HERE)])


@dataclass
class RunningWorker:
    proc: subprocess.Popen
    url: str
    port: int
    token: str
    ready: dict

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def worker_env(token: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STYLEPASS_WORKER_TOKEN")}
    env["PYTHONPATH"] = PYTHONPATH
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if token is not None:
        env["STYLEPASS_WORKER_TOKEN"] = token
    env.update(extra)
    return env


def start_worker(*args: str, token: str | None = "test-token", stderr=None, **env: str) -> RunningWorker:
    command = [sys.executable, "-m", "stylepass_core.worker", "--engine-module", "engines_for_tests"]
    command += ["--parent-pid", str(os.getpid()), "--exit-on-stdin-eof", *args]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        env=worker_env(token, **env),
        cwd=str(ROOT),
    )
    ready = read_ready(proc)
    return RunningWorker(
        proc, f"http://127.0.0.1:{ready['port']}", ready["port"], token or ready["token"], ready
    )


def make_request(
    size: tuple[int, int] = (32, 48), seed: int = 0, settings: EngineSettings | None = None, **fields
) -> StyleRequest:
    """A random beauty of `size` with `settings` (default: TEST_STEPS' defaults, 3 steps)."""
    rng = np.random.default_rng(seed)
    height, width = size
    settings = settings if settings is not None else StepsSettings()
    return StyleRequest(beauty=rng.random((height, width, 3), dtype=np.float32), settings=settings, **fields)


def steps_request(**values) -> StyleRequest:
    """A TEST_STEPS request: `steps_request(steps=6, step_seconds=0.1)`."""
    return make_request(settings=StepsSettings(**values))


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def processes_with_env(marker: bytes) -> list[int]:
    """Live (non-zombie) processes whose environment contains `marker` (read from /proc, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def zombie_children(parent: int) -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            zombies.append(int(entry.name))
    return zombies


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
