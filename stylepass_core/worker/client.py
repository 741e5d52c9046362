# SPDX-License-Identifier: GPL-3.0-or-later
"""Talk to a Stylepass worker over HTTP: `requests` and numpy only, never torch, diffusers or onnxruntime.

    client = WorkerClient("http://127.0.0.1:8765", token)
    result = client.run("NEURAL_STYLE", request, progress, abort)   # StyleResult

`run` = `submit` + `wait` (progress polled with long-polls and handed to a `Progress`; the abort event
becomes a cancel on the worker and `Aborted` here) + `result` (fetched once). Failures raise exceptions
whose messages can go straight into `self.report({'ERROR'}, str(error))`:

- `WorkerUnavailable`: the worker cannot be reached, died, or restarted mid-job.
- `WorkerAuthError`: the token was refused (401).
- `WorkerJobFailed`: the engine failed; the message is the engine's.
- `EngineUnavailable` (engine_api): the engine cannot run on that worker; the reason says what to install.
- `WorkerRejected`: the worker refused a request (bad request 400, too large 413, queue full 429...).
- `Aborted` (engine_api): the abort event was set; the job was cancelled on the worker.

Timeouts, each stated in the message when it expires: `CONNECT_TIMEOUT` to open a connection,
`HEALTH_TIMEOUT` for the health check (which does no work, so a worker that takes longer is not answering;
`submit` checks health first, so a remote worker that never answers is reported within it), and the client's
`timeout` (default `REQUEST_TIMEOUT`) for any other single answer, on top of the time the request asks the
worker to wait (a long poll, a release). A job as a whole has no limit unless `wait`/`run` get `timeout`.
"""

import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from urllib3.connection import HTTPConnection

from ..engine_api import Aborted, EngineUnavailable, Progress, StyleRequest, StyleResult
from ..errors import StylepassError
from . import protocol
from .protocol import API_PREFIX, FRAME_CONTENT_TYPE, PRECISIONS, Limits

__all__ = [
    "CONNECT_TIMEOUT",
    "HEALTH_TIMEOUT",
    "REQUEST_TIMEOUT",
    "Aborted",
    "EngineUnavailable",
    "JobStatus",
    "WorkerAuthError",
    "WorkerClient",
    "WorkerError",
    "WorkerJobFailed",
    "WorkerRejected",
    "WorkerUnavailable",
]

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to the worker (every request; a dropped connect is reported after this)."""
HEALTH_TIMEOUT = 5.0
"""Seconds `/v1/health` has to answer. It does no work, so a worker slower than this is not answering."""
REQUEST_TIMEOUT = 30.0
"""Default seconds for any other single answer: a submit's reply once its frame is sent, a status reply on
top of its long-poll wait, a cancel, the first byte of a result, a release on top of its own wait."""
LONG_POLL = 2.0
"""Seconds one long poll of `wait` lets the worker hold its answer until the job changes."""

_JOB_ID = re.compile(r"[0-9a-f]{32}")
# A result is at most one image; these caps only stop a confused or hostile server from exhausting memory.
_RESULT_LIMITS = Limits(max_upload_bytes=4 << 30, max_decoded_bytes=8 << 30)


class WorkerError(StylepassError, RuntimeError):
    """Base of the worker client's errors."""


class WorkerUnavailable(WorkerError):
    """The worker could not be reached, stopped, or lost the job; the message says which and what happens next."""


class WorkerAuthError(WorkerError):
    """The worker refused the token (HTTP 401)."""


class WorkerRejected(WorkerError):
    """The worker refused a request; `status` is the HTTP status, the message is the worker's.

    Attributes:
        status: e.g. 400 (bad request or model path), 404, 409, 410 (result already fetched), 413, 429.
        kind: The worker's error kind when it gave one (`"model_path"`, `"invalid_request"`...), else None.
        details: The worker's whole error object (e.g. `reason` for an unavailable engine).
    """

    def __init__(
        self, status: int, message: str, kind: str | None = None, details: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.details = details or {}


class WorkerJobFailed(WorkerError):
    """The engine raised while running the job; the message is its error text.

    Attributes:
        job_id: The worker's job id.
        engine_id: The engine that failed.
        kind: `"invalid_request"` (the engine refused a setting), `"out_of_memory"` or `"error"`.
    """

    def __init__(self, message: str, job_id: str, engine_id: str, kind: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.engine_id = engine_id
        self.kind = kind


@dataclass(frozen=True)
class JobStatus:
    """A job as the worker reports it.

    Attributes:
        id: Job id. engine: Engine id.
        state: `"queued"`, `"running"`, `"done"`, `"failed"` or `"cancelled"`.
        done: Steps finished. total: Steps in all (0 while unknown). message: The step now running.
        queue_position: Jobs ahead of this one while queued, else None.
        error: `{"kind", "type", "message"[, "reason"]}` when failed.
        result: None until done, then `"available"`, `"fetched"`, `"discarded"` or `"expired"`.
        version: Bumped on every change (for long polls).
        timings: Seconds: `decode` (upload), `queued`, `run` (the engine's own time).
        instance: Id of the worker process instance (changes when a worker restarts).
    """

    id: str
    engine: str
    state: str
    done: int
    total: int
    message: str
    queue_position: int | None
    error: dict[str, Any] | None
    result: str | None
    version: int
    timings: dict[str, float] = field(default_factory=dict)
    instance: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobStatus":
        try:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise WorkerError(f"the worker sent a job status this client cannot read ({exc})") from None


class _BearerAuth(requests.auth.AuthBase):
    """Sets the token per request (so a ~/.netrc entry can never replace it)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request


class _LoopbackAdapter(requests.adapters.HTTPAdapter):
    """Bigger socket buffers for this machine's worker: a 1080p frame moves in fewer, larger copies.

    Only on loopback: fixed buffers would switch off the kernel's auto-tuning on a real network.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [
            *HTTPConnection.default_socket_options,
            (socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20),
            (socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20),
        ]
        super().init_poolmanager(*args, **kwargs)


class WorkerClient:
    """A connection to one worker.

    Args:
        base_url: `http://host:port` or `https://host[:port]` (a reverse proxy with TLS), no path.
        token: The worker's bearer token.
        timeout: Seconds to wait for any single answer but the health check's (long polls add their own
            wait on top); see `REQUEST_TIMEOUT`, `HEALTH_TIMEOUT` and `CONNECT_TIMEOUT`.
        precision: How request arrays travel: `"exact"` (bit-exact float32) or `"auto"` (half the bytes or
            less, every value within 1/131070); see `protocol`. None: exact on loopback, where copying is as
            fast as converting and results match an in-process run bit for bit; auto over a network.
        exit_status: For a worker this process started: returns its exit code once it has died (waiting
            briefly), or None while it runs; used to say *how* it stopped.
        restart_hint: What happens after the worker is lost, appended to `WorkerUnavailable` messages.

    Raises:
        ValueError: a malformed URL, an empty token, or a bad timeout or precision.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = REQUEST_TIMEOUT,
        *,
        precision: str | None = None,
        exit_status: Callable[[], int | None] | None = None,
        restart_hint: str | None = None,
    ) -> None:
        # 1. Check inputs
        parts = urlsplit(base_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
        ):
            raise ValueError(f"base_url must look like http://host:port or https://host, got {base_url!r}")
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be None or one of {PRECISIONS}, got {precision!r}")

        # 2. Session
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.local = protocol.is_loopback(parts.hostname)
        self.precision = precision if precision is not None else ("exact" if self.local else "auto")
        self._exit_status = exit_status
        self._restart_hint = restart_hint
        self.max_upload_bytes: int | None = None  # learnt from health()
        self.unreachable = False  # set after a WorkerUnavailable; a manager health-checks before reuse
        self._slots: int | None = None
        self._session = requests.Session()
        self._session.auth = _BearerAuth(token)
        if self.local:
            self._session.mount("http://", _LoopbackAdapter())
        # Proxy variables and netrc must not apply to this machine's own worker; a remote one may need them.
        self._session.trust_env = not self.local

    # -- plain calls ----------------------------------------------------------------------------------

    def health(self, probe_devices: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """The worker's `/v1/health`: engines (available, reason, warm, loaded_models), devices, memory,
        jobs, limits, version, protocol, pid.

        Args:
            probe_devices: Let the worker import torch to list GPUs (seconds on first call, so this waits as
                long as any request).
            timeout: Seconds to wait for the answer; None: `HEALTH_TIMEOUT` (at most the client's timeout),
                or the client's timeout when probing devices.

        Raises:
            WorkerUnavailable, WorkerAuthError, WorkerError (a worker of another protocol version).
        """
        params = {"probe_devices": "1"} if probe_devices else None
        if timeout is None:
            timeout = self.timeout if probe_devices else min(HEALTH_TIMEOUT, self.timeout)
        data = self._json("GET", "/health", "checking its health", params=params, timeout=timeout)
        if data.get("protocol") != protocol.PROTOCOL_VERSION:
            raise WorkerError(
                f"the worker at {self.base_url} speaks protocol {data.get('protocol')!r}, this add-on "
                f"{protocol.PROTOCOL_VERSION}; update the add-on and the worker to the same version"
            )
        self.max_upload_bytes = data.get("limits", {}).get("max_upload_bytes")
        return data

    def slots(self) -> int:
        """How many jobs the worker runs at once (its `jobs.slots`: 1 for one worker, the replicas' share on
        Ray Serve); what an animation may keep in flight. Asked once, then remembered."""
        if self._slots is None:
            self._slots = max(1, int(self.health().get("jobs", {}).get("slots") or 1))
        return self._slots

    def engines(self) -> list[dict[str, Any]]:
        """Every engine on the worker with `id`, `label`, `available`, `reason`, `warm`, `loaded_models` and `settings_schema` when available."""
        return self._json("GET", "/engines", "listing its engines")["engines"]

    def submit(self, engine_id: str, request: StyleRequest) -> str:
        """Queue a job; returns its id at once.

        Raises:
            ValueError: the request does not validate (nothing was sent).
            EngineUnavailable: the engine cannot run on the worker (`reason` says what to install).
            WorkerRejected: the worker refused the request (e.g. a model path outside its model folders:
                status 400 and kind `"model_path"`; too large: 413; queue full: 429).
            WorkerUnavailable, WorkerAuthError.
        """
        frame = protocol.encode_submit(engine_id, request, self.precision)
        if self.max_upload_bytes is None:
            self.health()  # learn the upload limit once: a body over it would be cut off, not answered
        if self.max_upload_bytes is not None and len(frame) > self.max_upload_bytes:
            raise WorkerRejected(
                413,
                f"the frame is {len(frame) / 2**20:.0f} MiB, more than the worker accepts "
                f"({self.max_upload_bytes / 2**20:.0f} MiB); lower the resolution or raise --max-upload-mb",
            )
        headers = {"Content-Type": FRAME_CONTENT_TYPE}
        try:
            data = self._json("POST", "/jobs", f"sending a {engine_id} job", data=frame, headers=headers)
        except WorkerRejected as error:
            if error.kind == "engine_unavailable":
                raise EngineUnavailable(engine_id, error.details.get("reason") or str(error)) from None
            raise
        return data["id"]

    def status(self, job_id: str, wait: float = 0.0, since: int | None = None) -> JobStatus:
        """The job's status; with `wait`, the worker answers as soon as it changes after version `since`.

        Raises:
            WorkerUnavailable: also when the worker no longer knows the job (it restarted).
        """
        _check_job_id(job_id)
        params: dict[str, Any] = {}
        if wait > 0:
            params = {"wait": f"{min(wait, 30.0):.3f}", "since": since if since is not None else -1}
        try:
            data = self._json(
                "GET", f"/jobs/{job_id}", f"waiting for job {job_id}", params=params, extra=wait
            )
        except WorkerRejected as error:
            if error.status == 404:
                raise WorkerUnavailable(
                    f"the Stylepass worker at {self.base_url} no longer knows job {job_id}: it restarted "
                    f"and lost it{self._hint()}"
                ) from None
            raise
        return JobStatus.from_json(data)

    def cancel(self, job_id: str) -> JobStatus:
        """Ask the worker to stop a job (queued: dropped; running: aborted at its next step; done: result
        discarded)."""
        _check_job_id(job_id)
        return JobStatus.from_json(self._json("POST", f"/jobs/{job_id}/cancel", f"cancelling job {job_id}"))

    def result(self, job_id: str) -> StyleResult:
        """Fetch a finished job's result; the worker hands it out once (a second fetch: `WorkerRejected` 410).

        `result.info["worker"]` records where it ran: the url, the job id and the worker's timings.
        """
        _check_job_id(job_id)
        what = f"fetching the result of job {job_id}"
        response = self._send("GET", f"/jobs/{job_id}/result", what, stream=True)
        try:
            self._raise_for_status(response)
            if response.headers.get("Content-Type", "").split(";")[0] != FRAME_CONTENT_TYPE:
                raise WorkerError(
                    f"the worker sent {response.headers.get('Content-Type')!r} instead of a frame"
                )
            length = response.headers.get("Content-Length")
            try:
                meta, arrays = protocol.read_frame(
                    response.raw, int(length) if length else None, _RESULT_LIMITS
                )
            except protocol.FrameTruncated:
                raise WorkerUnavailable(self._lost_message(what, "the transfer was cut off")) from None
            except (requests.RequestException, OSError) as exc:
                raise WorkerUnavailable(self._lost_message(what, _short(exc))) from None
            except protocol.FrameError as exc:
                raise WorkerError(f"the worker sent a result this client cannot read: {exc}") from None
        finally:
            response.close()
        result, meta = protocol.decode_result(meta, arrays)
        result.info["worker"] = {"url": self.base_url, "job": job_id, "timings": meta.get("timings", {})}
        return result

    def release(self, timeout: float = 30.0) -> dict[str, Any]:
        """Free the worker's loaded models (waits up to `timeout` s for a running job). Returns what was freed."""
        return self._json(
            "POST", "/release", "releasing its models", json={"timeout": timeout}, extra=timeout
        )

    def shutdown(self) -> None:
        """Ask the worker to exit (running job aborted, queued jobs cancelled). A worker already gone is fine."""
        try:
            self._json("POST", "/shutdown", "shutting it down", timeout=min(self.timeout, 5.0))
        except WorkerUnavailable:
            pass

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs end to end ------------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
        poll_interval: float = 0.25,
        timeout: float | None = None,
        cancel_timeout: float = 30.0,
    ) -> JobStatus:
        """Follow a job until it finishes, reporting progress and turning `abort` into a cancel.

        Args:
            job_id: From `submit`.
            progress: Gets `update(done, total, message)` on every change (also "waiting behind N jobs").
                If it raises `Aborted` (as `jobs.QueueProgress` does), the job is cancelled first.
            abort: When set, the job is cancelled and this raises `Aborted` once the worker confirms (or
                after `cancel_timeout` seconds).
            poll_interval: Longest wait per long-poll; also how soon `abort` is noticed.
            timeout: Give up (cancelling the job) after this many seconds; None waits as long as it runs.
            cancel_timeout: How long to wait for the worker to confirm a cancel.

        Returns:
            The final status of a job that is `"done"`.

        Raises:
            Aborted, WorkerJobFailed, EngineUnavailable, WorkerUnavailable, WorkerAuthError, WorkerError
            (timeout).
        """
        if poll_interval <= 0 or poll_interval > 30:
            raise ValueError(f"poll_interval must be in (0, 30] seconds, got {poll_interval!r}")
        started = time.monotonic()
        since, cancel_sent, last_report = -1, None, None
        status: JobStatus | None = None
        # The long poll runs on a thread of its own and waits up to LONG_POLL for the job to change, while this
        # thread looks at `abort` and `timeout` every poll_interval: the worker answers once per change, not
        # once per poll_interval as well (through Ray Serve's proxy each answer costs CPU on the cluster).
        poller = ThreadPoolExecutor(1, thread_name_prefix="stylepass-poll")
        asked: Future | None = None
        try:
            while True:  # each pass waits up to poll_interval; ends on a final state, abort or timeout
                now = time.monotonic()
                if abort is not None and abort.is_set() and cancel_sent is None:
                    self.cancel(job_id)
                    cancel_sent = now
                if cancel_sent is not None and now - cancel_sent > cancel_timeout:
                    raise Aborted(
                        f"stylisation aborted; the worker did not stop job {job_id} within {cancel_timeout:.0f} s"
                    )
                if timeout is not None and now - started > timeout:
                    self._cancel_quietly(job_id)
                    raise WorkerError(f"job {job_id} did not finish within {timeout:.0f} s; it was cancelled")
                if asked is None:
                    asked = poller.submit(
                        self.status, job_id, wait=max(LONG_POLL, poll_interval), since=since
                    )
                try:
                    status = asked.result(timeout=poll_interval)
                except FutureTimeout:
                    continue  # no change yet: look at abort and timeout again, the same poll still waiting
                asked = None
                since = status.version
                report = (status.done, status.total, status.message, status.queue_position)
                if progress is not None and report != last_report and not status.finished:
                    last_report = report
                    if status.state == "queued":
                        ahead = status.queue_position or 0
                        progress.update(
                            0, 0, f"Waiting for the worker ({ahead} job{'s' * (ahead != 1)} ahead)"
                        )
                    else:
                        progress.update(status.done, status.total, status.message)
                if status.state == "done":
                    if cancel_sent is not None:
                        self._cancel_quietly(job_id)  # finished before the cancel landed: drop the result
                        raise Aborted("stylisation aborted")
                    final = (status.total, status.total, status.message, None)
                    if progress is not None and status.total and final != last_report:
                        progress.update(status.total, status.total, status.message)
                    return status
                if status.state == "cancelled":
                    raise Aborted(
                        "stylisation aborted" if cancel_sent else f"job {job_id} was cancelled on the worker"
                    )
                if status.state == "failed":
                    raise self._job_error(status)
        except Aborted:
            if cancel_sent is None and (status is None or not status.finished):
                self._cancel_quietly(job_id)  # the progress callback asked to stop
            raise
        finally:
            poller.shutdown(wait=False)  # a poll still waiting ends with its request, on its own

    def run(
        self,
        engine_id: str,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
        poll_interval: float = 0.25,
        timeout: float | None = None,
    ) -> StyleResult:
        """Submit, wait and fetch: the remote counterpart of `get_engine(engine_id).run(request, progress, abort)`.

        Raises:
            As `submit`, `wait` and `result`.
        """
        if abort is not None and abort.is_set():
            raise Aborted("stylisation aborted")
        job_id = self.submit(engine_id, request)
        self.wait(job_id, progress, abort, poll_interval, timeout)
        return self.result(job_id)

    # -- internals ------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        extra: float = 0.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        read_timeout = (timeout or self.timeout) + extra
        connect_timeout = min(self.timeout, CONNECT_TIMEOUT)
        try:
            response = self._session.request(
                method,
                f"{self.base_url}{API_PREFIX}{path}",
                timeout=(connect_timeout, read_timeout),
                allow_redirects=False,  # a redirect could carry the token elsewhere
                **kwargs,
            )
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # ChunkedEncodingError: the worker died while sending a reply that requests reads here in full.
            self.unreachable = True
            if not _is_timeout(exc):
                raise WorkerUnavailable(self._lost_message(what, _short(exc))) from None
            if _is_connect_timeout(exc):
                raise WorkerUnavailable(
                    f"could not connect to the Stylepass worker at {self.base_url} within "
                    f"{connect_timeout:g} s while {what}{self._hint()}"
                ) from None
            raise WorkerUnavailable(
                f"the Stylepass worker at {self.base_url} did not answer within {read_timeout:g} s while {what}"
                f"{self._hint()}"
            ) from None
        return response

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, what, **kwargs)
        try:
            self._raise_for_status(response)
            try:
                return response.json()
            except ValueError:
                raise WorkerError(
                    f"the worker at {self.base_url} sent a reply that is not JSON while {what}"
                ) from None
        except requests.RequestException as exc:  # body cut off mid-read
            self.unreachable = True
            raise WorkerUnavailable(self._lost_message(what, _short(exc))) from None
        finally:
            response.close()

    def _raise_for_status(self, response: requests.Response) -> None:
        if response.status_code < 400:
            self.unreachable = False
            return
        details: dict[str, Any] = {}
        try:
            body = response.json()
            details = body.get("error", {}) if isinstance(body, dict) else {}
        except ValueError:
            pass
        message = details.get("message") or f"HTTP {response.status_code} {response.reason}"
        if response.status_code == 401:
            raise WorkerAuthError(
                f"the Stylepass worker at {self.base_url} refused the token ({message}); "
                "check the token in the add-on preferences"
            )
        raise WorkerRejected(response.status_code, message, details.get("kind"), details)

    def _lost_message(self, what: str, cause: str) -> str:
        code = self._exit_status() if self._exit_status is not None else None
        if code is not None:
            return f"the Stylepass worker stopped ({describe_exit(code)}) while {what}{self._hint()}"
        return f"the Stylepass worker at {self.base_url} could not be reached ({cause}) while {what}{self._hint()}"

    def _hint(self) -> str:
        if self._restart_hint:
            return f"; {self._restart_hint}"
        return (
            ""
            if self._exit_status is not None
            else "; check that it is running and the URL and port are right"
        )

    def _job_error(self, status: JobStatus) -> Exception:
        error = status.error or {}
        message = error.get("message") or "the engine failed without a message"
        if error.get("kind") == "engine_unavailable":
            return EngineUnavailable(status.engine, error.get("reason") or message)
        return WorkerJobFailed(message, status.id, status.engine, error.get("kind") or "error")

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id)
        except WorkerError:
            pass  # the worker is gone or the job is finished: nothing left to stop


def describe_exit(code: int) -> str:
    """`"exit code 1"`, or `"exit code -9, killed by SIGKILL"` for a POSIX return code from a signal."""
    if code < 0:
        try:
            return f"exit code {code}, killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"exit code {code}, killed by signal {-code}"
    return f"exit code {code}"


def _check_job_id(job_id: object) -> None:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job_id must be the 32 hex digits submit() returned, got {job_id!r:.80}")


def _reason(exc: BaseException) -> object:
    """What requests wrapped: urllib3's error behind a ConnectionError, unwrapped from MaxRetryError."""
    inner = exc.args[0] if exc.args else None
    return inner.reason if isinstance(inner, urllib3.exceptions.MaxRetryError) else inner


def _is_timeout(exc: BaseException) -> bool:
    """A timeout, also when requests wraps urllib3's ReadTimeoutError in a ConnectionError (it does when a
    pooled connection times out). Only the wrapping chain counts, not `__context__`: urllib3 handles
    timeouts of its own along the way."""
    if isinstance(exc, requests.Timeout):
        return True
    inner = _reason(exc)
    # NewConnectionError (refused) subclasses ConnectTimeoutError for historical reasons; it is no timeout.
    return isinstance(inner, urllib3.exceptions.TimeoutError) and not isinstance(
        inner, urllib3.exceptions.NewConnectionError
    )


def _is_connect_timeout(exc: BaseException) -> bool:
    """A timeout while opening the connection (as opposed to waiting for an answer)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    inner = _reason(exc)
    return isinstance(inner, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
        inner, urllib3.exceptions.NewConnectionError
    )


def _short(exc: BaseException) -> str:
    """The innermost, most telling part of a requests error ("Connection refused", "Connection reset")."""
    inner: BaseException | None = exc
    seen = 0
    while inner is not None and seen < 8:
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, ConnectionResetError | BrokenPipeError):
            return "connection reset"
        text = str(inner)
        if "Connection refused" in text:
            return "connection refused"
        if "RemoteDisconnected" in text or "Connection aborted" in text or "reset by peer" in text:
            return "connection closed by the worker"
        inner = inner.__context__ or (
            inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        )
        seen += 1
    return type(exc).__name__
