# SPDX-License-Identifier: GPL-3.0-or-later
"""Worker processes as the test suites that start them see them (tests/worker, tests/ray): the one JSON line
a worker prints once it listens (`stylepass_core.worker.startup.announce`), and whether a process is gone."""

import json
import os
import subprocess
import time


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
