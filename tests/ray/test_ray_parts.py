# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ray parts without a cluster: model ids, the executor against a scripted deployment handle (progress,
retry after a lost replica, a clear failure after two, error kinds, cancel), and eviction releasing models.
"""

import threading
import time

import numpy as np
import pytest
from ray_helpers import Recorder, diffusion_request

from stylepass_core.engine_api import Aborted, EngineUnavailable, StyleResult
from stylepass_core.engines.diffusion.settings import ControlUnit, DiffusionSettings, Lora
from stylepass_core.worker.board import DONE, FAILED, Job, JobBoard, WorkerConfig
from stylepass_core.worker.ray_engines import WarmEngine, engine_of, model_id_for
from stylepass_core.worker.ray_executor import RayExecutor, ReplicaError

REPLICA_1 = {"replica": "r1", "pid": 101, "node": "n", "running": {}}
REPLICA_2 = {"replica": "r2", "pid": 102, "node": "n", "running": {}}


def result_event(replica: dict) -> dict:
    header, arrays = StyleResult(np.full((8, 8, 3), 0.5, np.float32), {"engine": "DIFFUSION"}).to_parts()
    return {"event": "result", "header": header, "arrays": arrays, "replica": replica}


def progress_event(done: int, total: int, message: str) -> dict:
    return {"event": "progress", "done": done, "total": total, "message": message}


class ScriptedStream:
    """What `handle.options(stream=True).run.remote(...)` returns: events, or an exception to raise."""

    def __init__(self, script: list, pause: float = 0.0) -> None:
        self.script = script
        self.pause = pause
        self._cancelled = threading.Event()

    def __iter__(self):
        from ray.serve.exceptions import RequestCancelledError

        for item in self.script:
            if self._cancelled.is_set():
                raise RequestCancelledError("scripted")
            if isinstance(item, BaseException):
                raise item
            yield item
            time.sleep(self.pause)
        if self._cancelled.is_set():
            raise RequestCancelledError("scripted")

    def cancel(self) -> None:
        self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class ScriptedEngines:
    """A stand-in `DeploymentHandle`: each `run.remote` plays the next script."""

    def __init__(self, *scripts: list, pause: float = 0.0) -> None:
        self.scripts = list(scripts)
        self.pause = pause
        self.calls: list[dict] = []
        self.streams: list[ScriptedStream] = []
        self._options: dict = {}

    def options(self, **options):
        self._options = options
        return self

    @property
    def run(self):
        return self

    def remote(self, *args):
        self.calls.append({"options": dict(self._options), "args": args})
        stream = ScriptedStream(self.scripts.pop(0), self.pause)
        self.streams.append(stream)
        return stream


def a_job(seed: int = 0) -> Job:
    return Job("0" * 32, "DIFFUSION", diffusion_request("/models/tiny-a", seed), "exact")


@pytest.fixture(autouse=True)
def _needs_ray():
    pytest.importorskip("ray.serve")


# -- model ids ------------------------------------------------------------------------------------------


def test_model_id_follows_the_base_model_not_what_the_engine_swaps():
    base = DiffusionSettings(model="/models/sd15/dreamshaper", prompt="x")
    same_base = base.replace(
        prompt="y",
        vae="/models/vae",
        loras=(Lora(file="/models/lora.safetensors"),),
        controls=(ControlUnit(map="depth", model="/models/cn-depth"),),
    )
    other = base.replace(model="/models/sd15/other")
    assert model_id_for("DIFFUSION", base) == model_id_for("DIFFUSION", same_base)
    assert model_id_for("DIFFUSION", base) != model_id_for("DIFFUSION", other)
    assert model_id_for("DIFFUSION", base).startswith("DIFFUSION:dreamshaper:")
    assert engine_of(model_id_for("DIFFUSION", base)) == "DIFFUSION"
    with pytest.raises(ValueError, match="not a Stylepass model id"):
        engine_of("dreamshaper")


# -- the executor ---------------------------------------------------------------------------------------


def test_progress_streams_into_the_board_and_the_replica_is_recorded():
    engines = ScriptedEngines(
        [
            {"event": "started", "replica": REPLICA_1},
            progress_event(1, 3, "Denoising step 1/2"),
            progress_event(2, 3, "Denoising step 2/2"),
            result_event(REPLICA_1),
        ]
    )
    executor = RayExecutor(engines, slots=2)
    recorder = Recorder()
    job = a_job()
    result = executor.run(job, recorder, threading.Event())
    assert recorder.messages == ["Denoising step 1/2", "Denoising step 2/2"]
    assert result.info["ray"]["replica"] == "r1" and result.info["ray"]["attempts"] == 1
    options = engines.calls[0]["options"]
    assert options["stream"] is True and options["multiplexed_model_id"].startswith("DIFFUSION:tiny-a:")
    assert executor.warm_engines == {"DIFFUSION"} and executor.describe()["running"] == {}


def test_a_lost_replica_is_retried_once_on_another():
    from ray.exceptions import ActorDiedError

    engines = ScriptedEngines(
        [
            {"event": "started", "replica": REPLICA_1},
            progress_event(1, 3, "Denoising step 1/2"),
            ActorDiedError(),
        ],
        [{"event": "started", "replica": REPLICA_2}, result_event(REPLICA_2)],
    )
    recorder = Recorder()
    result = RayExecutor(engines, slots=2).run(a_job(), recorder, threading.Event())
    info = result.info["ray"]
    assert info["attempts"] == 2 and info["replica"] == "r2"
    assert (
        info["lost_replicas"][0]["replica"] == "r1" and "ActorDiedError" in info["lost_replicas"][0]["error"]
    )
    assert "Retrying on another replica: Ray replica r1 (pid 101) stopped" in recorder.messages
    assert engines.calls[0]["args"] == engines.calls[1]["args"]  # the very same request again


def test_replicas_lost_twice_fail_the_job_with_a_clear_message():
    from ray.exceptions import ActorDiedError

    engines = ScriptedEngines(
        [{"event": "started", "replica": REPLICA_1}, ActorDiedError()],
        [{"event": "started", "replica": REPLICA_2}, ActorDiedError()],
    )
    board = JobBoard(WorkerConfig(token="t"), RayExecutor(engines, slots=1))
    board.start()
    try:
        job = board.submit("DIFFUSION", diffusion_request("/models/tiny-a", 0), "exact", 0.0)
        deadline = time.monotonic() + 10
        while board.status(job)["state"] not in (DONE, FAILED) and time.monotonic() < deadline:
            board.wait_for_change(job, board.status(job)["version"], 1.0)
        status = board.status(job)
    finally:
        board.close()
    assert status["state"] == FAILED
    message = status["error"]["message"]
    assert status["error"]["type"] == "ReplicaLost"
    assert "tried 2 times" in message and "r1 (pid 101)" in message and "r2 (pid 102)" in message
    assert "nothing was lost on the worker: submit the frame again" in message


def test_engine_errors_keep_their_kind():
    engines = ScriptedEngines(
        [
            {
                "event": "failed",
                "error": {"kind": "invalid_request", "type": "ValueError", "message": "bad steps"},
            }
        ],
        [
            {
                "event": "failed",
                "error": {
                    "kind": "engine_unavailable",
                    "type": "EngineUnavailable",
                    "message": "m",
                    "reason": "torch missing",
                    "engine": "DIFFUSION",
                },
            }
        ],
        [
            {
                "event": "failed",
                "error": {"kind": "error", "type": "RuntimeError", "message": "RuntimeError: boom"},
            }
        ],
        [
            {
                "event": "failed",
                "error": {"kind": "cancelled", "type": "Aborted", "message": "stylisation aborted"},
            }
        ],
    )
    executor = RayExecutor(engines, slots=1)
    with pytest.raises(ValueError, match="bad steps"):
        executor.run(a_job(), Recorder(), threading.Event())
    with pytest.raises(EngineUnavailable, match="torch missing"):
        executor.run(a_job(), Recorder(), threading.Event())
    with pytest.raises(ReplicaError, match="RuntimeError: boom"):
        executor.run(a_job(), Recorder(), threading.Event())
    with pytest.raises(Aborted):
        executor.run(a_job(), Recorder(), threading.Event())


def test_abort_cancels_the_ray_call():
    script = [{"event": "started", "replica": REPLICA_1}] + [
        progress_event(i, 100, "step") for i in range(100)
    ]
    engines = ScriptedEngines(script, pause=0.02)
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    started = time.monotonic()
    with pytest.raises(Aborted):
        RayExecutor(engines, slots=1).run(a_job(), Recorder(), abort)
    assert time.monotonic() - started < 1.5
    assert engines.streams[0].cancelled()


# -- eviction -------------------------------------------------------------------------------------------


class CountingEngine:
    def __init__(self) -> None:
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


def test_evicting_a_warm_engine_releases_its_models_once():
    released: list[str] = []
    engine = CountingEngine()
    warm = WarmEngine("DIFFUSION:tiny:0123", engine, on_release=released.append)
    warm.__del__()  # what Serve's multiplexer calls on the least recently used model
    warm.__del__()  # and the interpreter again later
    assert engine.releases == 1 and released == ["DIFFUSION:tiny:0123"]


# -- the application from a Serve config's args ----------------------------------------------------------


def test_app_builder_takes_plain_args_and_needs_the_token(monkeypatch, tmp_path):
    from stylepass_core.worker.serve import ServeOptions, app_builder

    monkeypatch.delenv("STYLEPASS_WORKER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="STYLEPASS_WORKER_TOKEN"):
        app_builder({})
    monkeypatch.setenv("STYLEPASS_WORKER_TOKEN", "secret")
    with pytest.raises(ValueError, match="unknown argument"):
        app_builder({"replica": 2})
    # `serve run ... replicas=2 model_dirs=a,b` gives strings; a config file gives numbers and lists.
    assert app_builder({"replicas": "2", "num_gpus_per_replica": "1", "model_dirs": f"{tmp_path},{tmp_path}"})
    assert app_builder({"replicas": 8, "num_gpus_per_replica": 1, "model_dirs": [str(tmp_path)]})
    with pytest.raises(ValueError, match="replicas must be an int"):
        ServeOptions(replicas=0)
    assert ServeOptions(replicas=3, jobs_per_replica=2).slots == 6
    assert ServeOptions(num_cpus_per_replica=4).replica_threads() == 4
    assert ServeOptions(num_gpus_per_replica=1).replica_threads() is None
