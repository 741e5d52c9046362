# SPDX-License-Identifier: GPL-3.0-or-later
"""`RayExecutor`: the job board's executor that runs each job on the engine deployment's replicas.

    JobBoard runner thread (slots = replicas x per-replica concurrency)
      -> RayExecutor.run(job, progress, abort)
           handle.options(stream=True, multiplexed_model_id=model_id_for(job)).run.remote(job, request parts)
           <- started / progress (-> the board's progress, so long polls and /events show steps) / result
           abort set -> response.cancel() (the replica aborts its engine at the next step)
           the replica died (its actor process ended) -> the same job once more on another replica

Results are deterministic (same request, same seed), so a job that lost its replica is run again from the
start on another one; if that one is lost too, the job fails with a message that names both replicas.

Ray is imported inside functions only (see `ray_engines`).
"""

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

from ..engine_api import Aborted, EngineUnavailable, Progress, StyleResult
from .board import Job
from .ray_engines import model_id_for

log = logging.getLogger("stylepass.worker.ray")

# A call cancelled before it reached a replica raises one of these rather than Ray's TaskCancelledError.
_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)
RELEASE_TIMEOUT = 120.0  # seconds `release` waits for every replica to free its models
_ABORT_POLL = 0.1  # seconds between looks at a running job's abort event


class ReplicaLost(RuntimeError):
    """The replicas that ran a job died (their actor processes ended) every time it was tried."""


class ReplicaError(RuntimeError):
    """An engine failed on a replica in a way that has no kind of its own; the message is the engine's."""


class _ReplicaDied(Exception):
    """One attempt lost its replica (internal: retried or turned into `ReplicaLost`)."""

    def __init__(self, replica: dict[str, Any] | None, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.replica = replica
        self.cause = cause


class RayExecutor:
    """Runs the board's jobs on a Serve deployment of `ray_engines.EngineReplica` through its handle.

    Args:
        engines: `DeploymentHandle` of the engine deployment.
        slots: Jobs run at once: replicas x jobs per replica (the board starts this many runner threads).
        retries: Times a job is run again after its replica died (default once).
    """

    def __init__(self, engines: Any, slots: int, retries: int = 1) -> None:
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, got {slots!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.slots = slots
        self.retries = retries
        self._engines = engines
        self._lock = threading.Lock()
        self._warm: set[str] = set()
        self._replicas: dict[str, dict[str, Any]] = {}  # replica id -> its facts from its last event
        self._running: dict[str, str] = {}  # job id -> replica id
        self._lost: list[dict[str, Any]] = []  # replicas seen dying under a job, newest last

    @property
    def warm_engines(self) -> frozenset[str]:
        """Engines that ran on some replica since the last release (shown as `warm` in `/v1/health`)."""
        with self._lock:
            return frozenset(self._warm)

    def describe(self) -> dict[str, Any]:
        """The cluster as the jobs saw it: `slots`, `replicas` (each replica's facts from its latest event:
        pid, node, warm models, loads, evictions, jobs), `running` (job id -> replica id) and `lost`."""
        with self._lock:
            return {
                "slots": self.slots,
                "retries": self.retries,
                "replicas": {key: dict(value) for key, value in self._replicas.items()},
                "running": dict(self._running),
                "lost": list(self._lost[-20:]),
            }

    # -- Executor -------------------------------------------------------------------------------------

    def run(self, job: Job, progress: Progress, abort: threading.Event) -> StyleResult:
        """Run `job` on a replica chosen by Serve (one that has its model warm, if any is free).

        Raises:
            Aborted, EngineUnavailable, ValueError, MemoryError: as the engine raised them on the replica.
            ReplicaLost: every replica that ran it died. ReplicaError: any other engine failure.
        """
        assert job.request is not None
        # 1. What goes over the wire: the request's header and arrays (as on HTTP, without pickle of our
        #    own types), and the model id that routes it to a replica with the model warm
        header, arrays = job.request.to_parts()
        model_id = model_id_for(job.engine_id, job.request.settings)
        lost: list[dict[str, Any]] = []
        # 2. Run; a lost replica means the same job again from the start on another one
        for attempt in range(1, self.retries + 2):
            try:
                result, replica, seconds = self._attempt(job, model_id, header, arrays, progress, abort)
            except _ReplicaDied as died:
                facts = {**(died.replica or {}), "error": _short(died.cause)}
                lost.append(facts)
                with self._lock:
                    self._lost.append({"job": job.id, **facts})
                where = _where(died.replica)
                log.warning("job %s: %s died (%s)", job.id, where, _short(died.cause))
                if attempt > self.retries:
                    raise ReplicaLost(_lost_message(lost, attempt)) from None
                progress.update(0, 0, f"Retrying on another replica: {where} stopped")
                continue
            with self._lock:
                self._warm.add(job.engine_id)
            result.info["ray"] = {
                "replica": replica.get("replica"),
                "pid": replica.get("pid"),
                "node": replica.get("node"),
                "model_id": model_id,
                "attempts": attempt,
                "lost_replicas": lost,
                "timings": seconds,
            }
            return result
        raise AssertionError("unreachable")  # the loop returns or raises

    def release(self) -> list[str]:
        """Free the warm models on every replica (Serve's `broadcast`; called while no job runs)."""
        with self._lock:
            warm = set(self._warm)
            self._warm.clear()
        try:
            answers = self._engines.broadcast("release").results(
                timeout_s=RELEASE_TIMEOUT, return_exceptions=True
            )
        except Exception as exc:  # a replica being replaced: the others were asked; report, go on
            log.warning("release: not every replica answered: %s", _short(exc))
            answers = []
        for answer in answers:
            if isinstance(answer, list):
                warm.update(answer)
            else:
                log.warning("release: a replica failed: %s", _short(answer))
        return sorted(warm)

    def replica_stats(self, timeout: float = 10.0) -> list[Any]:
        """Each engine replica's facts now (Serve's `broadcast` of `stats`); a replica that does not answer
        within `timeout` s is an exception in the list."""
        return self._engines.broadcast("stats").results(timeout_s=timeout, return_exceptions=True)

    def close(self) -> None:
        """Nothing to let go: the handle belongs to the deployment; a job still running is abandoned."""

    # -- one attempt ----------------------------------------------------------------------------------

    def _attempt(
        self,
        job: Job,
        model_id: str,
        header: dict[str, Any],
        arrays: dict[str, Any],
        progress: Progress,
        abort: threading.Event,
    ) -> tuple[StyleResult, dict[str, Any], dict[str, float]]:
        from ray.exceptions import RayActorError, TaskCancelledError

        sent = time.perf_counter()
        handle = self._engines.options(stream=True, multiplexed_model_id=model_id)
        stream = handle.run.remote(job.id, job.engine_id, header, arrays)
        finished = threading.Event()
        watcher = threading.Thread(
            target=_cancel_on_abort, args=(stream, abort, finished), name="stylepass-ray-abort", daemon=True
        )
        watcher.start()
        replica: dict[str, Any] | None = None
        seconds: dict[str, float] = {}
        ended = False  # the stream ended (an answer or a Ray error); else this side stopped listening
        try:
            for event in stream:
                kind = event.get("event")
                if "replica" in event:
                    replica = event["replica"]
                    self._saw(replica, job.id, running=kind == "started")
                if kind == "started":
                    seconds["dispatch"] = time.perf_counter() - sent
                    seconds["started_at"] = time.time()  # wall clock: jobs on several replicas overlap
                elif kind == "progress":
                    progress.update(event["done"], event["total"], event["message"])  # raises Aborted
                elif kind == "result":
                    ended = True
                    seconds["replica_total"] = time.perf_counter() - sent
                    seconds["finished_at"] = time.time()
                    result = StyleResult.from_parts(event["header"], event["arrays"])
                    return result, replica or {}, seconds
                elif kind == "failed":
                    ended = True
                    raise _job_error(event["error"], replica)
            ended = True
            raise ReplicaError(f"{_where(replica)} ended the job's stream without a result")
        except (TaskCancelledError, *_CANCELLED) as exc:
            ended = True
            if abort.is_set():
                raise Aborted("stylisation aborted") from None
            raise ReplicaError(f"the Ray call of job {job.id} was cancelled: {_short(exc)}") from None
        except RayActorError as exc:  # the replica's actor died or became unreachable under the job
            ended = True
            if abort.is_set():
                raise Aborted("stylisation aborted") from None
            raise _ReplicaDied(replica, exc) from None
        finally:
            finished.set()
            if not ended:  # e.g. the board's progress raised Aborted: the replica stops its engine too
                stream.cancel()
            with self._lock:
                self._running.pop(job.id, None)

    def _saw(self, replica: dict[str, Any], job_id: str, running: bool) -> None:
        with self._lock:
            key = replica.get("replica") or "?"
            self._replicas[key] = replica
            if running:
                self._running[job_id] = key


def _cancel_on_abort(stream: Any, abort: threading.Event, finished: threading.Event) -> None:
    """Cancel the Ray call as soon as the job's abort event is set (the runner thread is blocked in the
    stream while the engine loads or runs a step)."""
    while not finished.is_set():
        if abort.wait(_ABORT_POLL):
            if not finished.is_set():
                stream.cancel()
            return


def _job_error(error: dict[str, Any], replica: dict[str, Any] | None) -> BaseException:
    """The exception the board maps to the same job error the plain worker reports."""
    kind, message = error.get("kind"), error.get("message", "")
    if kind == "cancelled":
        return Aborted(message or "stylisation aborted")
    if kind == "engine_unavailable":
        return EngineUnavailable(error.get("engine") or "?", error.get("reason") or message)
    if kind == "invalid_request":
        return ValueError(message)
    if kind == "out_of_memory":
        return MemoryError(message)
    return ReplicaError(f"{message} (on {_where(replica)})")


def _where(replica: dict[str, Any] | None) -> str:
    if not replica:
        return "the Ray replica"
    return f"Ray replica {replica.get('replica')} (pid {replica.get('pid')})"


def _lost_message(lost: list[dict[str, Any]], attempts: int) -> str:
    tried = "; ".join(f"{_where(r)}: {r.get('error')}" for r in lost)
    return (
        f"the job was tried {attempts} time{'s' * (attempts != 1)} and each Ray replica running it died "
        f"({tried}); nothing was lost on the worker: submit the frame again, and check the replicas' memory "
        "and logs (`ray logs`)"
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
