# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker's job board: the queue, the job records, the runner threads and the executor they run jobs on.

    submit() --> queue --runner thread(s), executor.slots of them--> executor.run(job, progress, abort)
    status() / wait_for_change() <-- progress, state                 (LocalExecutor: get_engine(id).run)
    take_result() <-- StyleResult, handed out once

No HTTP here beyond `HttpError`, the refusal a board call hands its caller (the ASGI app in `app.py` turns it
into a JSON reply). The board is the one owner of job state: the app, and a Ray Serve deployment that
dispatches jobs to many replicas, both drive it through the same calls; only the `Executor` differs.
"""

import gc
import logging
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from ..engine_api import (
    Aborted,
    EngineUnavailable,
    Progress,
    StyleRequest,
    StyleResult,
    check_abort,
    get_engine,
    release_engines,
)
from .protocol import Limits

log = logging.getLogger("stylepass.worker")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset({DONE, FAILED, CANCELLED})
_JOB_ID = re.compile(r"[0-9a-f]{32}")

# Graceful shutdown: a running job holds the exit only while a client follows it (a status request or event
# stream on it in flight, or one less than FOLLOW_GAP seconds ago: a waiting client polls back to back), and
# a finished job's result only for RESULT_GRACE seconds after the job ended.
FOLLOW_GAP = 2.0
RESULT_GRACE = 5.0


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker listens and what it allows.

    Attributes:
        host: Address to bind; 127.0.0.1 keeps the worker private to this machine.
        port: TCP port; 0 picks a free one (reported on stdout when listening).
        token: The bearer token every request must carry.
        model_dirs: Folders model references may point into.
        limits: Size limits for bodies and frames.
        max_queued_jobs: Jobs waiting beyond the running ones; more are refused with 429.
        result_ttl: Seconds an unfetched result is kept before it is dropped.
        max_jobs_kept: Finished job records kept for status queries (oldest dropped first).
        max_connections: Concurrent connections; a request on one more is refused with 503.
        events_max_seconds: Longest a `/events` stream stays open (the client reconnects after).
        header_timeout: Seconds a connection has to send a request line and headers once it opens (or once
            a new request starts on a kept-alive one); then it is closed (slow-loris).
        idle_timeout: Seconds a connection may sit idle between requests, or stall while sending a body or
            reading a reply; then it is closed.
        max_header_bytes: Largest request line plus headers; more is refused (431) and the connection closed.
        shutdown_grace: Longest a graceful shutdown waits for the running job and the fetch of its result.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    model_dirs: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    max_queued_jobs: int = 16
    result_ttl: float = 600.0
    max_jobs_kept: int = 256
    max_connections: int = 32
    events_max_seconds: float = 3600.0
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_header_bytes: int = 16 << 10
    shutdown_grace: float = 60.0


class HttpError(Exception):
    """An error reply: status code, message, and extra JSON fields.

    Args:
        status: The HTTP status.
        message: What went wrong, for a person.
        close: Close the connection after the reply (a request body may be left unread).
        **extra: More fields of the JSON error object (`kind`, `reason`, `limit`, ...).
    """

    def __init__(self, status: int, message: str, *, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.extra = extra


# --------------------------------------------------------------------------------------------------------
# Jobs


@dataclass(eq=False)
class Job:
    id: str
    engine_id: str
    request: StyleRequest | None
    precision: str
    created: float = field(default_factory=time.monotonic)
    state: str = QUEUED
    done: int = 0
    total: int = 0
    message: str = "Queued"
    error: dict[str, str] | None = None
    result: StyleResult | None = None
    result_state: str | None = None  # None until done, then available / fetched / discarded / expired
    version: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    abort: threading.Event = field(default_factory=threading.Event)


class _JobProgress:
    """The `Progress` a job's engine reports to; also the place abort is noticed between steps."""

    def __init__(self, board: "JobBoard", job: Job) -> None:
        self._board = board
        self._job = job

    def update(self, done: int, total: int, message: str = "") -> None:
        with self._board.changed:
            self._job.done, self._job.total, self._job.message = int(done), int(total), str(message)[:500]
            self._board.touch(self._job)
        check_abort(self._job.abort)


# --------------------------------------------------------------------------------------------------------
# Executors


class Executor(Protocol):
    """Where the board's runner threads run jobs.

    The board starts `slots` runner threads; each calls `run` for one job at a time, in queue order. `run`
    reports through `progress` (which raises `Aborted` once `abort` is set) and honours `abort` between
    steps. Whatever it raises becomes the job's error (`Aborted`: cancelled; `EngineUnavailable`;
    `ValueError`: invalid request; `MemoryError`; anything else), so every executor gets the same mapping.
    An executor may also offer `warm_engines` (a collection of engine ids with models loaded), shown in
    `/v1/health`.
    """

    slots: int  # how many jobs the board runs at once (1 for the local executor)

    def run(self, job: Job, progress: Progress, abort: threading.Event) -> StyleResult:
        """Run `job.request` on engine `job.engine_id`; the result is validated by the board."""
        ...

    def release(self) -> list[str]:
        """Free warm models (called while no job runs); returns the engine ids that were warm."""
        ...

    def close(self) -> None:
        """Let go of everything; the board runs no job on it afterwards."""
        ...


class LocalExecutor:
    """Runs jobs in this process, one at a time: `get_engine(job.engine_id).run(...)`, models kept warm."""

    slots = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warm: set[str] = set()

    @property
    def warm_engines(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._warm)

    def run(self, job: Job, progress: Progress, abort: threading.Event) -> StyleResult:
        assert job.request is not None
        engine = get_engine(job.engine_id)
        with self._lock:
            self._warm.add(job.engine_id)
        check_abort(abort)
        return engine.run(job.request, progress, abort)

    def release(self) -> list[str]:
        with self._lock:
            warm = sorted(self._warm)
            self._warm.clear()
        release_engines()
        gc.collect()
        torch = sys.modules.get("torch")  # only if an engine already imported it
        if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return warm

    def close(self) -> None:
        """Nothing to let go: engines stay registered in this process (`release` frees their models)."""


# --------------------------------------------------------------------------------------------------------
# The board


class JobBoard:
    """The queue, the job records and the runner threads (`executor.slots` of them).

    All job fields are read and written under `changed`, a Condition that is notified on every change so
    that long polls and event streams wake up at once.

    Args:
        config: Queue and result limits.
        executor: Where jobs run; default a `LocalExecutor` (this process, one at a time).
    """

    def __init__(self, config: WorkerConfig, executor: Executor | None = None) -> None:
        self.config = config
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        slots = self.executor.slots
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"an executor needs slots >= 1, got {slots!r}")
        self.changed = threading.Condition()
        self.instance = secrets.token_hex(8)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []  # in the order they started
        self._draining = False  # graceful shutdown: no new jobs, running ones finish
        self._stopping = False
        self._closed = False
        self._releases_waiting = 0  # `release` calls waiting for the running jobs; no new job starts
        self._watchers: dict[str, int] = {}  # job id -> status waits and event streams in flight
        self._last_seen: dict[str, float] = {}  # job id -> when a client last asked about it
        self._threads = [
            threading.Thread(target=self._runner, name=f"stylepass-job-runner-{i}", daemon=True)
            for i in range(slots)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def touch(self, job: Job) -> None:
        """Mark a change (caller holds `changed`)."""
        job.version += 1
        self.changed.notify_all()

    @property
    def warm_engines(self) -> frozenset[str]:
        """Engines with models loaded, when the executor tells (`LocalExecutor` does)."""
        return frozenset(getattr(self.executor, "warm_engines", ()))

    @property
    def stopped(self) -> bool:
        """True once `stop()` ran: no job runs any more and waits return at once."""
        with self.changed:
            return self._stopping

    # -- requests from the app ------------------------------------------------------------------------

    def submit(self, engine_id: str, request: StyleRequest, precision: str, decode_seconds: float) -> Job:
        with self.changed:
            if self._stopping or self._draining:
                raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the worker is shutting down")
            self._expire()
            if len(self._queue) >= self.config.max_queued_jobs:
                raise HttpError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"{len(self._queue)} jobs are already queued (limit {self.config.max_queued_jobs}); "
                    "wait for them or cancel some",
                )
            queued_bytes = sum(_request_bytes(j.request) for j in self._queue)
            if queued_bytes + _request_bytes(request) > self.config.limits.max_decoded_bytes:
                raise HttpError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"queued jobs already hold {queued_bytes / 2**20:.0f} MiB of pixels; wait for them",
                )
            job = Job(secrets.token_hex(16), engine_id, request, precision)
            job.timings["decode"] = decode_seconds
            self._jobs[job.id] = job
            self._queue.append(job)
            self._last_seen[job.id] = time.monotonic()
            self.touch(job)
            return job

    def get(self, job_id: str) -> Job:
        with self.changed:
            job = self._jobs.get(job_id) if _JOB_ID.fullmatch(job_id) else None
            if job is None:
                raise HttpError(
                    HTTPStatus.NOT_FOUND, f"no job {job_id!r} on this worker (instance {self.instance})"
                )
            self._last_seen[job.id] = time.monotonic()
            return job

    def wait_for_change(self, job: Job, since: int, timeout: float) -> None:
        """Block until `job.version` exceeds `since`, the board stops, or `timeout` s pass."""
        with self.changed:
            self._watchers[job.id] = self._watchers.get(job.id, 0) + 1
            try:
                self.changed.wait_for(lambda: job.version > since or self._stopping, timeout)
            finally:
                self._watchers[job.id] -= 1
                if not self._watchers[job.id]:
                    del self._watchers[job.id]
                self._last_seen[job.id] = time.monotonic()

    def cancel(self, job: Job) -> None:
        """Queued: cancelled now. Running: abort requested. Done: its result is discarded."""
        with self.changed:
            job.abort.set()
            if job.state == QUEUED:
                self._queue.remove(job)
                self._finish(job, CANCELLED, "Cancelled")
            elif job.state == DONE and job.result is not None:
                job.result, job.result_state = None, "discarded"
                self.touch(job)

    def take_result(self, job: Job) -> StyleResult:
        """The result, handed out once."""
        with self.changed:
            if job.state != DONE:
                if job.state in (FAILED, CANCELLED):
                    raise HttpError(
                        HTTPStatus.CONFLICT, f"job {job.id} has no result: it {job.state}", error=job.error
                    )
                raise HttpError(
                    HTTPStatus.CONFLICT, f"job {job.id} is still {job.state}; poll its status first"
                )
            if job.result is None:
                raise HttpError(HTTPStatus.GONE, f"the result of job {job.id} is gone: {job.result_state}")
            result, job.result, job.result_state = job.result, None, "fetched"
            self.touch(job)
            return result

    def release(self, timeout: float) -> list[str]:
        """Free the executor's warm models once no job is running; returns the engines that were warm.

        No new job starts while this waits (at most `timeout` s), so a busy queue cannot starve it.
        """
        with self.changed:
            self._releases_waiting += 1
        try:
            with self.changed:
                idle = self.changed.wait_for(lambda: not self._running or self._stopping, timeout)
                if self._stopping:
                    raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the worker is shutting down")
                if not idle:
                    raise HttpError(
                        HTTPStatus.CONFLICT, f"a job is still running after {timeout:.0f} s; cancel it first"
                    )
            # Outside the lock (status requests go on), still counted as waiting: no job starts meanwhile.
            return self.executor.release()
        finally:
            with self.changed:
                self._releases_waiting -= 1
                self.changed.notify_all()

    def shut_down(self, grace: float) -> None:
        """Graceful shutdown: refuse new jobs, cancel the queued ones, let the running jobs finish and their
        results be fetched, then `stop()`. Blocks at most `grace` s (plus the abort of what still runs).

        A running job nobody follows (no status request or event stream on it for `FOLLOW_GAP` s) is aborted
        at once, and a result not fetched within `RESULT_GRACE` s after its job ended does not hold the exit.
        """
        deadline = time.monotonic() + grace
        with self.changed:
            self._draining = True
            for job in list(self._queue):
                self._finish(job, CANCELLED, "Cancelled: the worker is shutting down")
            self._queue.clear()
            while True:
                now = time.monotonic()
                holding = self._holding(now)
                if not holding or now >= deadline or self._stopping:  # stopping: `stop()` came first
                    break
                self.changed.wait(timeout=min(0.1, deadline - now))
            if holding and not self._stopping:
                log.warning("shutdown grace of %.0f s over; aborting %d job(s)", grace, len(holding))
        self.stop()

    def stop(self) -> None:
        """Abort the running jobs and cancel the queued ones; the runners exit."""
        with self.changed:
            self._stopping = True
            for job in list(self._queue):
                self._finish(job, CANCELLED, "Cancelled: the worker is shutting down")
            self._queue.clear()
            for job in self._running:
                job.abort.set()
            self.changed.notify_all()

    def close(self) -> None:
        """`stop()`, then close the executor once (a job still in it is abandoned: runners are daemons)."""
        self.stop()
        with self.changed:
            if self._closed:
                return
            self._closed = True
        self.executor.close()

    def counts(self) -> dict[str, Any]:
        """`/v1/health`'s `jobs`: queued, running (the oldest running job's id, or None), kept (records), and
        slots (jobs run at once: what a client may keep in flight)."""
        with self.changed:
            return {
                "queued": len(self._queue),
                "running": self._running[0].id if self._running else None,
                "kept": len(self._jobs),
                "slots": self.executor.slots,
            }

    def status(self, job: Job) -> dict[str, Any]:
        with self.changed:
            position = None
            if job.state == QUEUED:
                position = next((i for i, queued in enumerate(self._queue) if queued is job), None)
            return {
                "id": job.id,
                "engine": job.engine_id,
                "state": job.state,
                "done": job.done,
                "total": job.total,
                "message": job.message,
                "queue_position": position,
                "error": job.error,
                "result": job.result_state,
                "version": job.version,
                "timings": dict(job.timings),
                "instance": self.instance,
            }

    # -- the runners ----------------------------------------------------------------------------------

    def _runner(self) -> None:
        while True:
            with self.changed:
                while not self._stopping and (not self._queue or self._releases_waiting):
                    self.changed.wait(timeout=1.0)
                    self._expire()
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._running.append(job)
                job.state, job.started, job.message = RUNNING, time.monotonic(), "Starting"
                job.timings["queued"] = job.started - job.created
                self.touch(job)
            try:
                self._run(job)
            finally:
                with self.changed:
                    self._running.remove(job)
                    self.changed.notify_all()

    def _run(self, job: Job) -> None:
        assert job.request is not None
        state, message, error, result = FAILED, "Failed", None, None
        run_started = time.perf_counter()
        try:
            check_abort(job.abort)
            result = self.executor.run(job, _JobProgress(self, job), job.abort)
            result.validate()
            state, message = DONE, "Done"
        except Aborted:
            state, message = CANCELLED, "Cancelled"
        except EngineUnavailable as exc:
            error = {
                "kind": "engine_unavailable",
                "type": type(exc).__name__,
                "message": str(exc),
                "reason": exc.reason,
            }
        except ValueError as exc:
            error = {"kind": "invalid_request", "type": type(exc).__name__, "message": str(exc)}
        except MemoryError:
            error = {
                "kind": "out_of_memory",
                "type": "MemoryError",
                "message": "the worker ran out of memory",
            }
        except (
            BaseException
        ) as exc:  # any engine failure (even SystemExit) is the job's error; the runner lives on
            log.exception("job %s (%s) failed", job.id, job.engine_id)
            error = {"kind": "error", "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"}
        run_seconds = time.perf_counter() - run_started
        with self.changed:
            job.request = None  # the frame's arrays can be large; they are not needed any more
            job.timings["run"] = run_seconds
            if error is not None:
                job.error = error
                message = f"Failed: {error['message']}"[:500]
            job.result = result if state == DONE else None
            job.result_state = "available" if state == DONE else None
            self._finish(job, state, message)
        log.info(
            "job %s %s in %.3f s%s", job.id, state, run_seconds, f": {error['message']}" if error else ""
        )

    def _finish(self, job: Job, state: str, message: str) -> None:
        job.state, job.message, job.finished = state, message, time.monotonic()
        self.touch(job)

    def _holding(self, now: float) -> list[Job]:
        """Jobs a graceful shutdown still waits for (caller holds `changed`); unfollowed running jobs are
        aborted here."""
        holding = []
        for job in self._running:
            followed = (
                self._watchers.get(job.id, 0) > 0 or now - self._last_seen.get(job.id, 0.0) < FOLLOW_GAP
            )
            if not followed and not job.abort.is_set():
                log.info("shutting down: job %s has nobody waiting for it; aborting it", job.id)
                job.abort.set()
            holding.append(job)
        for job in self._jobs.values():
            if job.result is not None and job.finished is not None and now - job.finished < RESULT_GRACE:
                holding.append(job)
        return holding

    def _expire(self) -> None:
        """Drop results nobody fetched in time and the oldest finished records (caller holds `changed`)."""
        now = time.monotonic()
        for job in self._jobs.values():
            if (
                job.result is not None
                and job.finished is not None
                and now - job.finished > self.config.result_ttl
            ):
                job.result, job.result_state = None, "expired"
                self.touch(job)
        finished = [job_id for job_id, job in self._jobs.items() if job.state in FINISHED]
        for job_id in finished[: max(0, len(finished) - self.config.max_jobs_kept)]:
            del self._jobs[job_id]
            self._last_seen.pop(job_id, None)


def _request_bytes(request: StyleRequest | None) -> int:
    if request is None:
        return 0
    arrays = [request.beauty, *request.controls.values(), *request.images.values()]
    return sum(a.nbytes for a in arrays)
