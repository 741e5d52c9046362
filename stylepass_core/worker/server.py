# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine worker: a standard-library HTTP server that runs stylisation jobs one at a time.

    client --POST /v1/jobs (frame)--> JobBoard queue --runner thread--> get_engine(id).run(...)
           <--GET  /v1/jobs/<id> (JSON, long-poll)----- progress, state
           <--GET  /v1/jobs/<id>/result (frame)-------- StyleResult, handed out once

Only the standard library, numpy and the core are imported, so the worker runs in any Python that has the
engines' own dependencies; engines import torch or onnxruntime themselves when they first run, and stay
warm (models loaded) between jobs until `POST /v1/release`.

Every request needs `Authorization: Bearer <token>` (compared in constant time; 401 otherwise, before any
routing). Bodies are capped (413) before they are read, no route takes a file path, and model references in
a request are checked against the model folders and resolved to the real paths they name there
(`model_paths`) before the job is queued.
"""

import dataclasses
import gc
import hmac
import importlib.util
import json
import logging
import os
import platform
import re
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..engine_api import (
    Aborted,
    EngineUnavailable,
    StyleRequest,
    StyleResult,
    available_engines,
    check_abort,
    get_engine,
    release_engines,
)
from . import protocol
from .model_paths import ModelPathError, check_model_reference, resolve_references
from .protocol import API_PREFIX, FRAME_CONTENT_TYPE, JSON_CONTENT_TYPE, Limits

log = logging.getLogger("stylepass.worker")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset({DONE, FAILED, CANCELLED})
MAX_LONG_POLL = 30.0  # seconds a status request may wait for a change
_DRAIN_LIMIT = 8 << 20  # a refused body up to this size is read and dropped, so the client sees the reply
_JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker listens and what it allows.

    Attributes:
        host: Address to bind; 127.0.0.1 keeps the worker private to this machine.
        port: TCP port; 0 picks a free one (reported on stdout when listening).
        token: The bearer token every request must carry.
        model_dirs: Folders model references may point into.
        limits: Size limits for bodies and frames.
        max_queued_jobs: Jobs waiting beyond the running one; more are refused with 429.
        result_ttl: Seconds an unfetched result is kept before it is dropped.
        max_jobs_kept: Finished job records kept for status queries (oldest dropped first).
        max_connections: Concurrent connections; more are closed at once.
        events_max_seconds: Longest a `/events` stream stays open (the client reconnects after).
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


class HttpError(Exception):
    """An error reply: status code, message, and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
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


class JobBoard:
    """The queue, the job records and the single runner thread.

    All job fields are read and written under `changed`, a Condition that is notified on every change so
    that long polls and event streams wake up at once.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.changed = threading.Condition()
        self.instance = secrets.token_hex(8)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._stopping = False
        self._engine_lock = threading.Lock()  # held while an engine runs; `release` waits on it
        self.warm_engines: set[str] = set()
        self._thread = threading.Thread(target=self._runner, name="stylepass-job-runner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def touch(self, job: Job) -> None:
        """Mark a change (caller holds `changed`)."""
        job.version += 1
        self.changed.notify_all()

    # -- requests from handlers -----------------------------------------------------------------------

    def submit(self, engine_id: str, request: StyleRequest, precision: str, decode_seconds: float) -> Job:
        with self.changed:
            if self._stopping:
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
            self.touch(job)
            return job

    def get(self, job_id: str) -> Job:
        with self.changed:
            job = self._jobs.get(job_id) if _JOB_ID.fullmatch(job_id) else None
            if job is None:
                raise HttpError(
                    HTTPStatus.NOT_FOUND, f"no job {job_id!r} on this worker (instance {self.instance})"
                )
            return job

    def wait_for_change(self, job: Job, since: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: job.version > since or self._stopping, timeout)

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
        """Free every engine's models once no job is running; returns the engines that were warm."""
        if not self._engine_lock.acquire(timeout=timeout):
            raise HttpError(
                HTTPStatus.CONFLICT, f"a job is still running after {timeout:.0f} s; cancel it first"
            )
        try:
            warm = sorted(self.warm_engines)
            release_engines()
            self.warm_engines.clear()
        finally:
            self._engine_lock.release()
        gc.collect()
        torch = sys.modules.get("torch")  # only if an engine already imported it
        if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return warm

    def stop(self) -> None:
        """Abort the running job and cancel the queued ones; the runner exits."""
        with self.changed:
            self._stopping = True
            for job in list(self._queue):
                self._finish(job, CANCELLED, "Cancelled: the worker is shutting down")
            self._queue.clear()
            if self._current is not None:
                self._current.abort.set()
            self.changed.notify_all()

    def counts(self) -> dict[str, Any]:
        with self.changed:
            return {
                "queued": len(self._queue),
                "running": self._current.id if self._current is not None else None,
                "kept": len(self._jobs),
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

    # -- the runner -----------------------------------------------------------------------------------

    def _runner(self) -> None:
        while True:
            with self.changed:
                while not self._queue and not self._stopping:
                    self.changed.wait(timeout=1.0)
                    self._expire()
                if self._stopping:
                    return
                job = self._current = self._queue.popleft()
                job.state, job.started, job.message = RUNNING, time.monotonic(), "Starting"
                job.timings["queued"] = job.started - job.created
                self.touch(job)
            with self._engine_lock:
                self._run(job)
            with self.changed:
                self._current = None
                self.changed.notify_all()

    def _run(self, job: Job) -> None:
        assert job.request is not None
        state, message, error, result = FAILED, "Failed", None, None
        run_started = time.perf_counter()
        try:
            engine = get_engine(job.engine_id)
            self.warm_engines.add(job.engine_id)
            check_abort(job.abort)
            result = engine.run(job.request, _JobProgress(self, job), job.abort)
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


def _request_bytes(request: StyleRequest | None) -> int:
    if request is None:
        return 0
    arrays = [request.beauty, *request.controls.values(), *request.images.values()]
    return sum(a.nbytes for a in arrays)


# --------------------------------------------------------------------------------------------------------
# Health


def device_info(probe: bool = False) -> dict[str, Any]:
    """Devices as the engines would see them, without importing torch unless `probe` (it takes seconds)."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is None and probe and importlib.util.find_spec("torch") is not None:
        try:
            import torch
        except Exception as exc:  # a broken torch install is a fact to report, not a crash
            info["torch"] = {"state": "broken", "error": f"{type(exc).__name__}: {exc}"}
    if torch is None:
        info.setdefault(
            "torch",
            {"state": "installed, not loaded" if importlib.util.find_spec("torch") else "not installed"},
        )
    else:
        gpus = []
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                gpus.append({"index": index, "name": props.name, "memory_bytes": props.total_memory})
        mps = getattr(torch.backends, "mps", None)
        info["torch"] = {
            "state": "loaded",
            "version": torch.__version__,
            "cuda": gpus,
            "mps": bool(mps is not None and mps.is_available()),
        }
    ort = sys.modules.get("onnxruntime")
    info["onnxruntime"] = (
        {"state": "loaded", "providers": ort.get_available_providers()}
        if ort is not None
        else {
            "state": "installed, not loaded" if importlib.util.find_spec("onnxruntime") else "not installed"
        }
    )
    return info


def memory_info() -> dict[str, int | None]:
    """Resident and peak resident memory of this process in bytes (Linux exact; elsewhere peak only)."""
    rss = peak = None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        try:
            import resource

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss if sys.platform == "darwin" else maxrss * 1024
        except ImportError:  # Windows
            pass
    return {"rss_bytes": rss, "peak_rss_bytes": peak}


def _engine_rows(board: JobBoard) -> list[dict[str, Any]]:
    rows = []
    for engine_id, label, ok, reason in available_engines():
        row: dict[str, Any] = {"id": engine_id, "label": label, "available": ok, "reason": reason}
        row["warm"] = engine_id in board.warm_engines
        if ok:
            engine = get_engine(engine_id)
            # Optional engine hook: `loaded_models() -> list[str]` names what is in memory now.
            describe = getattr(engine, "loaded_models", None)
            row["loaded_models"] = list(describe()) if callable(describe) else None
            row["settings_schema"] = engine.settings_type.SCHEMA
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets another process bind the same port; use exclusive use there instead.
    allow_reuse_address = os.name != "nt"
    request_queue_size = 32

    def __init__(self, config: WorkerConfig, board: JobBoard) -> None:
        self.config = config
        self.board = board
        self.token = config.token.encode("utf-8")
        self.started = time.monotonic()
        self._slots = threading.BoundedSemaphore(config.max_connections)
        # Frames are read whole into memory: two at a time bound what uploads can hold at once.
        self.upload_slots = threading.BoundedSemaphore(2)
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.port), _Handler)

    def server_bind(self) -> None:
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("too many connections; closing one from %s", client_address)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stylepass-worker"
    sys_version = ""
    timeout = 120  # seconds a connection may sit idle or trickle a body
    # Headers and body go out in separate writes; with Nagle's algorithm the second waits for the client's
    # delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Loopback is memory speed; bigger kernel buffers halve the syscalls for a 1080p frame.
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            pass

    def handle_expect_100(self) -> bool:
        """Answer `Expect: 100-continue` (curl sends it for large bodies) only to an authorised client with an
        acceptable size; anyone else gets the error before sending the body."""
        try:
            self._check_token(body_sent=False)  # the client waits for this answer before sending it
            length = self._content_length() or 0
            if length > self.server.config.limits.max_upload_bytes:
                raise HttpError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"upload of {length} bytes exceeds the worker's limit of "
                    f"{self.server.config.limits.max_upload_bytes} bytes",
                )
        except HttpError as error:
            self.close_connection = True
            self._send_error_json(error)
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        status = 500
        try:
            self._check_token()
            url = urlsplit(self.path)
            handler, args = self._route(method, url.path)
            status = handler(*args, query=parse_qs(url.query, max_num_fields=10)) or 200
        except HttpError as error:
            status = error.status
            self._send_error_json(error)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            self.close_connection = True  # the client went away or stalled; nobody to answer
            log.info("connection lost during %s %s: %s", method, self.path[:200], exc)
            return
        except Exception as exc:  # a bug in a handler must not take the worker down
            log.exception("internal error handling %s %s", method, self.path)
            status = 500
            self._send_error_json(HttpError(500, f"internal worker error: {type(exc).__name__}: {exc}"))
        level = logging.DEBUG if status < 400 and method == "GET" else logging.INFO
        log.log(
            level,
            "%s %s -> %d in %.1f ms",
            method,
            self.path[:200],
            status,
            1000 * (time.perf_counter() - started),
        )

    def _check_token(self, body_sent: bool = True) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), self.server.token
        )
        if not ok:
            if body_sent:
                self._refuse_body()
            self.close_connection = True
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong token: send 'Authorization: Bearer <token>'" if given else "missing token",
            )

    def _route(self, method: str, path: str) -> tuple[Any, tuple[str, ...]]:
        if not path.startswith(API_PREFIX + "/"):
            raise HttpError(
                HTTPStatus.NOT_FOUND, f"unknown path {path[:200]!r}; this worker serves {API_PREFIX}/..."
            )
        parts = path[len(API_PREFIX) + 1 :].split("/")
        routes = {
            ("health",): {"GET": self._health},
            ("engines",): {"GET": self._engines},
            ("jobs",): {"POST": self._submit},
            ("jobs", "*"): {"GET": self._status},
            ("jobs", "*", "events"): {"GET": self._events},
            ("jobs", "*", "cancel"): {"POST": self._cancel},
            ("jobs", "*", "result"): {"GET": self._result},
            ("release",): {"POST": self._release},
            ("shutdown",): {"POST": self._shutdown},
        }
        key = tuple("*" if i == 1 and parts[0] == "jobs" else p for i, p in enumerate(parts))
        methods = routes.get(key)
        if methods is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"unknown path {path[:200]!r}")
        if method not in methods:
            self._refuse_body()
            raise HttpError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}; use {', '.join(methods)}"
            )
        return methods[method], tuple(parts[1:2]) if key[0] == "jobs" and len(parts) > 1 else ()

    def _content_length(self) -> int | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(
                HTTPStatus.LENGTH_REQUIRED, "send a Content-Length; chunked bodies are not accepted"
            )
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if not value.isdigit():
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {value[:40]!r}")
        return int(value)

    def _refuse_body(self) -> None:
        """Drop an unread body: read a small one so the reply arrives, close the connection after."""
        self.close_connection = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= _DRAIN_LIMIT:
            remaining = length
            while remaining > 0:  # bounded: each read consumes bytes or the peer has gone
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _read_json_body(self) -> dict[str, Any]:
        length = self._content_length() or 0
        limit = self.server.config.limits.max_json_body_bytes
        if length > limit:
            self._refuse_body()
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes exceeds the limit of {limit}"
            )
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def _send_json(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_error_json(self, error: HttpError) -> None:
        payload = {"error": {"status": int(error.status), "message": error.message, **error.extra}}
        if error.status == HTTPStatus.UNAUTHORIZED:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(error.status)
            self.send_header("WWW-Authenticate", 'Bearer realm="stylepass-worker"')
            self.send_header("Content-Type", JSON_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return
        try:
            self._send_json(payload, int(error.status))
        except OSError:  # the client went away
            self.close_connection = True

    def _query_float(
        self, query: dict[str, list[str]], name: str, default: float, high: float, low: float = 0.0
    ) -> float:
        values = query.get(name)
        if not values:
            return default
        try:
            value = float(values[0])
        except ValueError:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"{name} must be a number, got {values[0][:40]!r}"
            ) from None
        if not low <= value <= high:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be in [{low:g}, {high:g}], got {value}")
        return value

    # -- routes ---------------------------------------------------------------------------------------

    def _health(self, query: dict[str, list[str]]) -> int:
        server, board = self.server, self.server.board
        payload = {
            "ok": True,
            "service": "stylepass-worker",
            "version": protocol.WORKER_VERSION,
            "protocol": protocol.PROTOCOL_VERSION,
            "instance": board.instance,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "uptime_seconds": time.monotonic() - server.started,
            "engines": _engine_rows(board),
            "devices": device_info(probe=query.get("probe_devices") == ["1"]),
            "memory": memory_info(),
            "jobs": board.counts(),
            "limits": server.config.limits.to_json(),
            "model_dirs": [str(d) for d in server.config.model_dirs],
        }
        self._send_json(payload)
        return 200

    def _engines(self, query: dict[str, list[str]]) -> int:
        self._send_json({"engines": _engine_rows(self.server.board)})
        return 200

    def _submit(self, query: dict[str, list[str]]) -> int:
        config = self.server.config
        # 1. Check the body's size and type before reading a byte of it
        length = self._content_length()
        if length is None:
            self.close_connection = True
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length with the frame")
        if length > config.limits.max_upload_bytes:
            self._refuse_body()
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {length} bytes exceeds the worker's limit of {config.limits.max_upload_bytes} bytes",
                limit=config.limits.max_upload_bytes,
            )
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != FRAME_CONTENT_TYPE:
            self._refuse_body()
            raise HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"send the job as {FRAME_CONTENT_TYPE}, got {content_type!r}",
            )

        # 2. Read and decode the frame
        if not self.server.upload_slots.acquire(timeout=60.0):
            self._refuse_body()
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "two other uploads are in progress; try again")
        started = time.perf_counter()
        try:
            meta, arrays = protocol.read_frame(self.rfile, length, config.limits)
        except protocol.FrameTooLarge as exc:
            self.close_connection = True
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
        except protocol.FrameError as exc:
            self.close_connection = True  # the body may be partly unread
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad frame: {exc}") from None
        finally:
            self.server.upload_slots.release()
        try:
            engine_id, request, precision = protocol.decode_submit(meta, arrays)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad request: {exc}", kind="invalid_request") from None
        decode_seconds = time.perf_counter() - started

        # 3. Model references stay inside the model folders; those found there become their real paths
        for name, value in request.settings.model_references().items():
            if value:
                try:
                    check_model_reference(value, config.model_dirs)
                except ModelPathError as exc:
                    raise HttpError(HTTPStatus.BAD_REQUEST, f"{name}: {exc}", kind="model_path") from None
        # Engines load what they are given, relative to their working folder: a name in a model folder
        # must reach them as the path it names there (names not on disk stay: hub ids).
        request = dataclasses.replace(
            request, settings=resolve_references(request.settings, config.model_dirs)
        )

        # 4. The engine must exist and be able to run here
        try:
            get_engine(engine_id)
        except EngineUnavailable as exc:
            raise HttpError(
                HTTPStatus.CONFLICT, str(exc), kind="engine_unavailable", reason=exc.reason
            ) from None
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc), kind="unknown_engine") from None

        job = self.server.board.submit(engine_id, request, precision, decode_seconds)
        self._send_json(self.server.board.status(job), HTTPStatus.ACCEPTED)
        return HTTPStatus.ACCEPTED

    def _status(self, job_id: str, query: dict[str, list[str]]) -> int:
        board = self.server.board
        job = board.get(job_id)
        wait = self._query_float(query, "wait", 0.0, MAX_LONG_POLL)
        since = self._query_float(query, "since", -1.0, float(2**53), low=-1.0)
        if wait > 0:
            board.wait_for_change(job, int(since), wait)
        self._send_json(board.status(job))
        return 200

    def _events(self, job_id: str, query: dict[str, list[str]]) -> int:
        """Server-sent events: one `status` event per change until the job finishes (or a time cap)."""
        board = self.server.board
        job = board.get(job_id)
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        deadline = time.monotonic() + self.server.config.events_max_seconds
        since = -1
        while time.monotonic() < deadline:
            board.wait_for_change(job, since, 15.0)
            status = board.status(job)
            try:
                if status["version"] == since:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    since = status["version"]
                    self.wfile.write(b"event: status\ndata: " + json.dumps(status).encode() + b"\n\n")
            except OSError:
                return 200
            if status["state"] in FINISHED:
                break
        return 200

    def _cancel(self, job_id: str, query: dict[str, list[str]]) -> int:
        self._read_json_body()
        board = self.server.board
        job = board.get(job_id)
        board.cancel(job)
        self._send_json(board.status(job))
        return 200

    def _result(self, job_id: str, query: dict[str, list[str]]) -> int:
        board = self.server.board
        job = board.get(job_id)
        result = board.take_result(job)
        started = time.perf_counter()
        timings = board.status(job)["timings"]
        frame = protocol.encode_result(job.id, result, timings, job.precision)
        del result
        self.send_response(200)
        self.send_header("Content-Type", FRAME_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(frame)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        for chunk in frame:
            self.wfile.write(chunk)
        log.debug(
            "result of %s: %d bytes in %.1f ms", job.id, len(frame), 1000 * (time.perf_counter() - started)
        )
        return 200

    def _release(self, query: dict[str, list[str]]) -> int:
        body = self._read_json_body()
        timeout = body.get("timeout", 30.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 <= timeout <= 600:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"timeout must be a number of seconds in [0, 600], got {timeout!r}"
            )
        released = self.server.board.release(float(timeout))
        self._send_json({"released": released, "memory": memory_info()})
        return 200

    def _shutdown(self, query: dict[str, list[str]]) -> int:
        self._read_json_body()
        self.close_connection = True
        self._send_json({"ok": True, "pid": os.getpid()})
        log.info("shutdown requested by a client")
        threading.Thread(
            target=_stop_server, args=(self.server,), name="stylepass-shutdown", daemon=True
        ).start()
        return 200


def _stop_server(server: _Server) -> None:
    server.board.stop()
    server.shutdown()  # returns once serve_forever has stopped


# --------------------------------------------------------------------------------------------------------
# Running


class WorkerServer:
    """A bound, serving worker. `start()` binds and serves on a thread; `serve_forever()` blocks instead.

    Args:
        config: Address, token, model folders and limits. An empty token is refused.
    """

    def __init__(self, config: WorkerConfig) -> None:
        if not config.token:
            raise ValueError("a worker needs a token; generate one with secrets.token_urlsafe(32)")
        self.config = config
        self.board = JobBoard(config)
        self._server = _Server(config, self.board)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
        return f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}"

    def start(self) -> "WorkerServer":
        self.board.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="stylepass-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.board.start()
        self._server.serve_forever(poll_interval=0.2)  # how soon a shutdown request takes effect

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a started server to stop (after `/v1/shutdown`); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self) -> None:
        _stop_server(self._server)
        self._server.server_close()
