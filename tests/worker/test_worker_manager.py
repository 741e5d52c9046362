# SPDX-License-Identifier: GPL-3.0-or-later
"""LocalWorker: start, crash, restart, stop, and no worker outliving its parent or piling up as orphans."""

import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from worker_helpers import (
    HERE,
    kill_quietly,
    make_request,
    process_gone,
    processes_with_env,
    read_ready,
    steps_request,
    wait_until,
    worker_env,
    zombie_children,
)

from stylepass_core.engine_api import Aborted
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.worker.client import WorkerClient, WorkerUnavailable
from stylepass_core.worker.manager import LocalWorker, WorkerStartError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="probes processes through /proc")


@pytest.fixture
def tag():
    """A marker in the workers' environment, to find every process a test started (and only those)."""
    return f"stylepass-test-{secrets.token_hex(6)}"


@pytest.fixture
def local(tmp_path, tag):
    worker = LocalWorker(
        sys.executable,
        pythonpath=[HERE],  # the core comes from core_dir's default: the repo root
        env={"STYLEPASS_TEST_TAG": tag},
        log_path=tmp_path / "worker.log",
        engine_modules=["engines_for_tests"],
        request_timeout=10,
    )
    yield worker
    worker.stop(timeout=2)
    for pid in processes_with_env(f"STYLEPASS_TEST_TAG={tag}".encode()):
        kill_quietly(pid)


class _Waiting:
    """A progress sink that tells when the client is waiting on its job: the submit has been answered."""

    def __init__(self):
        self.event = threading.Event()

    def update(self, done, total, message=""):
        self.event.set()


def _run_in_thread(worker, request, progress=None):
    """`worker.run` on a thread; returns (thread, outcome dict with 'result' or 'error')."""
    outcome = {}

    def run():
        try:
            outcome["result"] = worker.run("TEST_STEPS", request, progress)
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_running(client, timeout=10.0):
    """Wait until the worker reports a running job that has made a step."""

    def running():
        health = client.health()
        return health["jobs"]["running"] is not None

    assert wait_until(running, timeout, 0.02)


def test_start_run_stop(local):
    assert local.state == "not started" and local.pid is None
    client = local.ensure_running()
    assert local.state == "running" and local.url.startswith("http://127.0.0.1:")
    assert client.health()["pid"] == local.pid
    assert local.ensure_running() is client  # reused while healthy
    result = local.run("TEST_STEPS", steps_request(steps=2))
    assert result.info["engine"] == "TEST_STEPS"
    pid = local.pid
    assert local.stop() == 0  # graceful: asked to shut down, exits 0
    assert process_gone(pid) and local.pid is None and local.state == "stopped (exit code 0)"
    assert local.stop() is None


def test_kill_9_mid_job_is_reported_and_the_next_job_runs_on_a_fresh_worker(local):
    first_pid = local.ensure_running().health()["pid"]
    waiting = _Waiting()
    request = steps_request(steps=100, step_seconds=0.1)
    thread, outcome = _run_in_thread(local, request, waiting)
    _wait_running(local.ensure_running())
    # The kill must land while the client waits, not while it still reads the submit's answer (a loaded
    # machine can be that slow): the report names the phase.
    assert waiting.event.wait(10)
    os.kill(first_pid, signal.SIGKILL)
    thread.join(10)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, WorkerUnavailable), outcome
    message = str(error)
    assert "the Stylepass worker stopped (exit code -9, killed by SIGKILL) while waiting for job" in message
    assert message.endswith("it will be restarted on the next job")

    result = local.run("TEST_STEPS", steps_request(steps=1))
    assert result.info["engine"] == "TEST_STEPS"
    assert local.pid != first_pid and local.starts == 2 and local.last_exit_code == -9


def test_twenty_kills_in_a_row_leave_no_orphans(local, tag):
    marker = f"STYLEPASS_TEST_TAG={tag}".encode()
    pids = set()
    started = time.monotonic()
    for _ in range(20):
        client = local.ensure_running()
        pid = local.pid
        pids.add(pid)
        job_id = client.submit("TEST_STEPS", steps_request(steps=100, step_seconds=0.05))
        assert wait_until(lambda: client.status(job_id).state == "running", 10)  # noqa: B023
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerUnavailable, match="killed by SIGKILL"):
            client.wait(job_id, timeout=10)
        assert processes_with_env(marker) == []  # the dead one is gone, nothing else is left
    assert len(pids) == 20 and local.starts == 20
    assert time.monotonic() - started < 40
    assert local.run("TEST_STEPS", steps_request(steps=1)).image.shape == (32, 48, 3)
    assert len(processes_with_env(marker)) == 1
    local.stop()
    assert wait_until(lambda: processes_with_env(marker) == [], 5)
    assert zombie_children(os.getpid()) == []


def test_a_wedged_worker_is_replaced(local):
    client = local.ensure_running()
    local.request_timeout = 1.0
    client.timeout = 1.0
    pid = local.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(WorkerUnavailable, match="did not answer within"):
            client.health()
        replacement = local.ensure_running()  # health check fails, the stopped one is killed
        assert local.pid != pid and replacement.health()["ok"]
    finally:
        kill_quietly(pid)
    assert wait_until(lambda: process_gone(pid), 5)


def test_a_worker_started_from_a_short_lived_thread_survives_it(local):
    """PR_SET_PDEATHSIG fires when the forking *thread* ends; the manager forks from its own thread."""
    thread = threading.Thread(target=local.ensure_running)
    thread.start()
    thread.join(30)
    time.sleep(0.5)
    assert local.pid is not None and local.ensure_running().health()["ok"]


def test_start_failures_are_clear(tmp_path):
    missing = LocalWorker(tmp_path / "no-python", log_path=tmp_path / "a.log")
    with pytest.raises(WorkerStartError, match=r"could not be started with .*no-python"):
        missing.ensure_running()
    broken = LocalWorker(
        sys.executable, engine_modules=["no_such_engine_module"], log_path=tmp_path / "b.log"
    )
    with pytest.raises(WorkerStartError, match=re.escape("exited while starting (exit code 2)")) as error:
        broken.ensure_running()
    assert "cannot import engine module 'no_such_engine_module'" in str(error.value)
    assert str(tmp_path / "b.log") in str(error.value)


def test_client_sees_exit_code_through_the_manager_only(local):
    """A plain client (remote) cannot know an exit code and says what to check instead."""
    managed = local.ensure_running()
    plain = WorkerClient(managed.base_url, managed._session.auth._header.split(" ", 1)[1])
    os.kill(local.pid, signal.SIGKILL)
    assert wait_until(lambda: local.pid is None, 5)
    with pytest.raises(
        WorkerUnavailable, match=r"could not be reached \(connection refused\).*check that it is running"
    ):
        plain.health()


# -- the worker dies with its parent ----------------------------------------------------------------------

_PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    mode = sys.argv[1]
    if mode == "manager":
        from stylepass_core.worker.manager import LocalWorker
        worker = LocalWorker(sys.executable, env={{"STYLEPASS_TEST_TAG": {tag!r}}}, log_path={log!r})
        worker.ensure_running()
        print(worker.pid, flush=True)
    else:
        flags = {{
            "pdeathsig": ["--die-with-parent"],
            "stdin": ["--exit-on-stdin-eof"],
            "parent-pid": ["--parent-pid", str(os.getpid())],
        }}[mode]
        proc = subprocess.Popen(
            [sys.executable, "-m", "stylepass_core.worker", *flags],
            stdin=subprocess.PIPE if mode == "stdin" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        proc.stdout.readline()
        print(proc.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("mode", ["manager", "pdeathsig", "stdin", "parent-pid"])
def test_worker_dies_when_its_parent_dies(tmp_path, tag, mode):
    script = _PARENT.format(tag=tag, log=str(tmp_path / "w.log"))
    env = worker_env(None, STYLEPASS_TEST_TAG=tag)  # PYTHONPATH: the repo root, for the core
    parent = subprocess.Popen([sys.executable, "-c", script, mode], stdout=subprocess.PIPE, env=env)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"parent printed {line!r}"
        worker_pid = int(line)
        assert not process_gone(worker_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        # pdeathsig and stdin are immediate; the pid watch polls once a second.
        assert wait_until(lambda: process_gone(worker_pid), 5), (
            f"worker {worker_pid} outlived its parent ({mode})"
        )
    finally:
        parent.kill()
        parent.wait(5)
        parent.stdout.close()
        for pid in processes_with_env(f"STYLEPASS_TEST_TAG={tag}".encode()):
            kill_quietly(pid)


def test_worker_started_by_hand_prints_a_token_and_serves(tmp_path):
    """What a user does on a GPU box: no token given, one is generated and printed once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stylepass_core.worker", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=worker_env(None),
    )
    try:
        ready = read_ready(proc)
        client = WorkerClient(ready["url"], ready["token"])
        result = client.run(
            "NEURAL_STYLE", make_request((64, 64), settings=NeuralStyleSettings(style_preset="style_01"))
        )
        assert result.image.shape == (64, 64, 3) and np.isfinite(result.image).all()
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()


# -- one worker per manager, whatever the model folders ---------------------------------------------------


def test_other_model_folders_restart_the_one_worker(local, tag, tmp_path):
    """Switching between models in two folders used to leave two workers with their models loaded."""
    marker = f"STYLEPASS_TEST_TAG={tag}".encode()
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w")
    request = steps_request(steps=0, model="model.safetensors")
    assert local.run("TEST_STEPS", request, model_dirs=[first]).info["model_dirs"] == [str(first.resolve())]
    first_pid = local.pid
    result = local.run("TEST_STEPS", request, model_dirs=[second])
    assert result.info["model_path"] == str((second / "model.safetensors").resolve())
    assert local.pid != first_pid and process_gone(first_pid)
    assert processes_with_env(marker) == [local.pid]
    second_pid = local.pid
    local.run("TEST_STEPS", request, model_dirs=[second])  # the same folders: the same worker
    local.run("TEST_STEPS", request)  # none asked for: whatever it has
    assert local.pid == second_pid and local.starts == 2


def test_a_switch_of_folders_waits_for_the_jobs_running_on_the_worker(local, tmp_path):
    """The restart for other folders never cuts off a job running on the current worker."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    outcome = {}
    waiting = _Waiting()

    def long_job():
        try:
            outcome["result"] = local.run(
                "TEST_STEPS", steps_request(steps=10, step_seconds=0.05), waiting, model_dirs=[first]
            )
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=long_job, daemon=True)
    thread.start()
    assert waiting.event.wait(10)
    first_pid = local.pid
    aborted = threading.Event()
    aborted.set()
    with pytest.raises(Aborted):  # ESC while waiting for the other job: no restart, nothing cut off
        local.run("TEST_STEPS", steps_request(steps=0), abort=aborted, model_dirs=[second])
    assert local.pid == first_pid
    result = local.run("TEST_STEPS", steps_request(steps=0), model_dirs=[second])
    thread.join(10)
    assert "result" in outcome, outcome  # the first job finished on its worker
    assert result.info["model_dirs"] == [str(second.resolve())] and local.pid != first_pid


# -- threads and processes always end ---------------------------------------------------------------------


def _manager_threads(before: set[threading.Thread]) -> list[str]:
    return [
        thread.name
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith("stylepass-worker-") and thread.is_alive()
    ]


_BROKEN_PYTHONS = {
    "not executable": ("#!/bin/sh\nexit 0\n", 0o644, "could not be started with"),
    "exits at start": (
        "#!/bin/sh\necho 'no engine here' >&2\nexit 3\n",
        0o755,
        r"exited while starting \(exit code 3\)",
    ),
    # A child that keeps the worker's output open once the worker itself has gone.
    "exits leaving a child": (
        "#!/bin/sh\nsleep 60 &\nexit 3\n",
        0o755,
        r"exited while starting \(exit code 3\)",
    ),
}


@pytest.mark.parametrize("kind", sorted(_BROKEN_PYTHONS))
def test_a_worker_python_that_cannot_start_leaves_no_thread_or_process(tmp_path, tag, kind):
    """A `stylepass-worker-spawner` thread left running after Release Memory made Blender 4.5 hang on quit."""
    text, mode, message = _BROKEN_PYTHONS[kind]
    python = tmp_path / "python"
    python.write_text(text)
    python.chmod(mode)
    worker = LocalWorker(
        python,
        env={"STYLEPASS_TEST_TAG": tag},
        log_path=tmp_path / "w.log",
        startup_timeout=20,
        stop_timeout=2,
    )
    before = set(threading.enumerate())
    outcome = {}

    def start_then_release():
        try:
            worker.ensure_running()
        except WorkerStartError as error:
            outcome["error"] = error
        outcome["threads after the failed start"] = _manager_threads(before)
        outcome["stop"] = worker.stop()  # what Release Memory does

    attempt = threading.Thread(target=start_then_release, daemon=True)
    attempt.start()
    attempt.join(30)
    try:
        assert not attempt.is_alive(), "the failed start or the stop did not end"
        assert re.search(message, str(outcome.get("error"))), outcome
        assert outcome["threads after the failed start"] == [] and outcome["stop"] is None
        assert _manager_threads(before) == []
        assert processes_with_env(f"STYLEPASS_TEST_TAG={tag}".encode()) == []
        assert zombie_children(os.getpid()) == []
    finally:
        for pid in processes_with_env(f"STYLEPASS_TEST_TAG={tag}".encode()):
            kill_quietly(pid)


def test_stop_ends_the_managers_threads_after_a_run(local):
    before = set(threading.enumerate())
    local.run("TEST_STEPS", steps_request(steps=1))
    assert _manager_threads(before) == ["stylepass-worker-spawner"]  # lives with the worker (PDEATHSIG)
    local.stop()
    assert _manager_threads(before) == []
