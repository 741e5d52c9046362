# SPDX-License-Identifier: GPL-3.0-or-later
"""Worker processes as the test suites and benchmarks that start them see them (tests/worker, tests/ray,
tests/blender/test_ray_animation.py, bench/bench_ray.py): started as a user starts them (`start`, any Python:
the Ray venv's from a Blender test), the one JSON line a worker prints once it listens
(`stylepass_core.worker.startup.announce`), and whether a process is gone. Every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # holds the stylepass_core package


def read_ready(proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    """The worker's ready line; fails the test (AssertionError) if the process exits or stays silent."""
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buffer = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buffer += chunk
            if b"\n" in buffer:
                return json.loads(buffer.split(b"\n", 1)[0])
        elif proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before listening")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"worker did not print its address within {timeout:.0f} s")


def process_gone(pid: int) -> bool:
    """True when `pid` no longer exists or is a zombie (dead, only waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


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
