# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker's `/v1` API as an ASGI application (Starlette): served by uvicorn here (`server.py`), and usable
as it is behind Ray Serve (`@serve.ingress(create_app(...))`).

    request --> _AccessLog --> _Gatekeeper (header size, bearer token) --> Starlette router --> _Api.<route>
                                                  401/431 before any routing      board calls, frames

All state lives in the `JobBoard` and `WorkerConfig` handed to `create_app`; no module globals.
The event loop never blocks: long polls, engine look-ups, frame decoding and encoding, and `release` run on
worker threads (`anyio.to_thread`), the quick board calls (a lock held for microseconds) on the loop.

Every request needs `Authorization: Bearer <token>` (compared in constant time; 401 for every path, before
routing). Bodies are capped: the declared `Content-Length` is checked before a byte is read (413), and the
bytes are counted while they stream in. Chunked bodies are refused (411). A refused body up to 8 MiB is read
and dropped so that the client sees the reply, and the connection is closed after it; a client that sent
`Expect: 100-continue` is refused before it sends the body (uvicorn sends `100 Continue` only once the app
first reads the body).
"""

import asyncio
import dataclasses
import functools
import hmac
import importlib.util
import json
import logging
import os
import platform
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine_api import EngineUnavailable, StyleResult, available_engines, get_engine
from . import protocol
from .board import FINISHED, HttpError, Job, JobBoard, WorkerConfig
from .model_paths import ModelPathError, check_model_reference, resolve_references
from .protocol import API_PREFIX, FRAME_CONTENT_TYPE, JSON_CONTENT_TYPE

log = logging.getLogger("stylepass.worker")

MAX_LONG_POLL = 30.0  # seconds a status request may wait for a change
_DRAIN_LIMIT = 8 << 20  # a refused body up to this size is read and dropped, so the client sees the reply
_UPLOADS_AT_ONCE = 2  # frames are read whole into memory: two at a time bound what uploads hold
_UPLOAD_WAIT = 60.0  # seconds an upload waits for one of those slots
_PIPE_HIGH_WATER = 8 << 20  # bytes of an upload buffered between the event loop and the decoding thread
_SEND_SLICE = 1 << 20  # a result frame goes out in pieces of this size (flow control, bounded copies)
_EVENTS_KEEPALIVE = 15.0  # seconds between `: keep-alive` lines of an idle event stream


def create_app(
    config: WorkerConfig, board: JobBoard, on_shutdown: Callable[[], None] | None = None
) -> Starlette:
    """The worker's ASGI application.

    Args:
        config: Token, limits and model folders.
        board: The job board the routes drive (its runner threads are started by the caller).
        on_shutdown: Called (on the event loop, after the reply is sent) when a client asks for
            `POST /v1/shutdown`; must return at once. None: that route answers 501.
    """
    if not config.token:
        raise ValueError("a worker needs a token; generate one with secrets.token_urlsafe(32)")
    api = _Api(config, board, on_shutdown)
    prefix = API_PREFIX
    routes = [
        Route(f"{prefix}/health", api.health, methods=["GET"]),
        Route(f"{prefix}/engines", api.engines, methods=["GET"]),
        Route(f"{prefix}/jobs", api.submit, methods=["POST"]),
        Route(f"{prefix}/jobs/{{job_id}}", api.status, methods=["GET"]),
        Route(f"{prefix}/jobs/{{job_id}}/events", api.events, methods=["GET"]),
        Route(f"{prefix}/jobs/{{job_id}}/cancel", api.cancel, methods=["POST"]),
        Route(f"{prefix}/jobs/{{job_id}}/result", api.result, methods=["GET"]),
        Route(f"{prefix}/release", api.release, methods=["POST"]),
        Route(f"{prefix}/shutdown", api.shutdown, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _routing_error})
    app.router.redirect_slashes = False  # `/v1/health/` is an unknown path (404), not a redirect
    # Innermost first: the gatekeeper runs before routing, the access log around everything.
    app.add_middleware(_Gatekeeper, token=config.token, max_header_bytes=config.max_header_bytes)
    app.add_middleware(_AccessLog)
    return app


# --------------------------------------------------------------------------------------------------------
# Replies


def _json(
    payload: Any, status: int = 200, close: bool = False, background: BackgroundTask | None = None
) -> Response:
    headers = {"Content-Type": JSON_CONTENT_TYPE, "Cache-Control": "no-store"}
    if close:
        headers["Connection"] = "close"
    body = json.dumps(payload, allow_nan=False).encode("utf-8")
    return Response(body, status_code=int(status), headers=headers, background=background)


def _error(error: HttpError) -> Response:
    payload = {"error": {"status": int(error.status), "message": error.message, **error.extra}}
    return _json(payload, error.status, close=error.close)


async def _send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """An error reply from plain ASGI (before routing), closing the connection after it."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode("utf-8")
    raw = [
        (b"content-type", JSON_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value
    return None


async def _drain_small_body(scope: Scope, receive: Receive) -> None:
    """Read and drop an unread body of at most `_DRAIN_LIMIT` bytes, so that a client still sending it sees
    the reply (closing a socket with unread data resets the connection). Never for a client that waits for
    `100 Continue`: reading would invite the body the reply refuses."""
    if (_header(scope, b"expect") or b"").lower() == b"100-continue" or _header(scope, b"transfer-encoding"):
        return
    try:
        length = int(_header(scope, b"content-length") or b"0")
    except ValueError:
        return
    if not 0 < length <= _DRAIN_LIMIT:
        return
    received = 0
    while received <= _DRAIN_LIMIT:  # bounded even if a server delivered more than the length
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Unknown paths (404) and wrong methods (405) as JSON errors, in the worker's own words."""
    assert isinstance(exc, HTTPException)
    path = request.url.path[:200]
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        await _drain_small_body(request.scope, request.receive)
        allowed = sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip())
        allowed = [m for m in allowed if m != "HEAD"] or allowed
        message = f"{request.method} is not allowed on {path}; use {', '.join(allowed)}"
        return _error(HttpError(exc.status_code, message, close=True))
    if exc.status_code == HTTPStatus.NOT_FOUND:
        message = f"unknown path {path!r}"
        if not request.url.path.startswith(API_PREFIX + "/"):
            message += f"; this worker serves {API_PREFIX}/..."
        has_body = bool(
            request.headers.get("transfer-encoding") or request.headers.get("content-length", "0") != "0"
        )
        if has_body:
            await _drain_small_body(request.scope, request.receive)
        return _error(HttpError(exc.status_code, message, close=has_body))
    return _error(HttpError(exc.status_code, str(exc.detail)))


def _endpoint(
    handler: Callable[["_Api", Request], Awaitable[Response]],
) -> Callable[["_Api", Request], Awaitable[Response]]:
    """A route's refusals (`HttpError`) become JSON replies; a bug becomes a 500, never a dead worker.

    HEAD is refused: Starlette routes it to GET handlers, and a result handed out to a HEAD would be lost.
    """

    @functools.wraps(handler)
    async def wrapper(self: "_Api", request: Request) -> Response:
        try:
            if request.method == "HEAD":
                raise HttpError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"HEAD is not allowed on {request.url.path[:200]}; use GET"
                )
            return await handler(self, request)
        except HttpError as error:
            return _error(error)
        except Exception as exc:
            log.exception("internal error handling %s %s", request.method, request.url.path[:200])
            message = f"internal worker error: {type(exc).__name__}: {exc}"
            return _error(HttpError(500, message, close=True))  # a body may be left half read

    return wrapper


# --------------------------------------------------------------------------------------------------------
# Middleware


class _AccessLog:
    """One log line per request: `POST /v1/jobs -> 202 in 41.3 ms` (GETs that succeed at DEBUG)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"]
            level = logging.DEBUG if status < 400 and method == "GET" else logging.INFO
            log.log(
                level,
                "%s %s -> %d in %.1f ms",
                method,
                scope["path"][:200],
                status,
                1000 * (time.perf_counter() - started),
            )


class _Gatekeeper:
    """Before any routing: refuse oversized request heads (431) and requests without the token (401).

    Pure ASGI, so nothing reads the body first: a client that sent `Expect: 100-continue` gets the refusal
    instead of `100 Continue`.
    """

    def __init__(self, app: ASGIApp, token: str, max_header_bytes: int) -> None:
        if not token:
            raise ValueError("the worker needs a token")
        self.app = app
        self._token = token.encode("utf-8")
        self._max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        # The h11 server refuses a head that arrives in pieces past the limit; this catches one that arrived
        # whole (and any server's).
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(key) + len(value) + 4 for key, value in scope["headers"])
        if size > self._max_header_bytes:
            await _send_error(
                send,
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request headers of {size} bytes exceed the limit of {self._max_header_bytes}",
            )
            return
        given = _header(scope, b"authorization") or b""
        scheme, _, value = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self._token):
            await self.app(scope, receive, send)
            return
        await _drain_small_body(scope, receive)
        await _send_error(
            send,
            HTTPStatus.UNAUTHORIZED,
            "missing or wrong token: send 'Authorization: Bearer <token>'" if given else "missing token",
            headers={"WWW-Authenticate": 'Bearer realm="stylepass-worker"'},
        )


# --------------------------------------------------------------------------------------------------------
# Uploads: a body streamed from the event loop into a decoding thread


class _BodyPipe:
    """A request body handed from the event loop to a thread that reads it as a blocking stream.

    The loop side (`pump`) receives the body's chunks and queues them, pausing while `_PIPE_HIGH_WATER`
    bytes wait; the thread side (`readinto`, what `protocol.read_frame` calls) copies them out. Decoding
    overlaps receiving, and an upload holds at most its frame plus the high-water mark.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into the first chunk
        self._buffered = 0
        self._ended = False
        self._space = asyncio.Event()
        self._space.set()
        self._want_space = False

    async def pump(self, receive: Receive, length: int) -> None:
        """Queue the body until it ends (or the client goes away, which the reader sees as truncation)."""
        received = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > length:  # h11 keeps to Content-Length; another server might not
                    return
                if chunk:
                    await self._put(chunk)
                if not message.get("more_body", False):
                    return
        finally:
            self.close()

    async def _put(self, chunk: bytes) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            self._lock.notify()
            full = self._buffered >= _PIPE_HIGH_WATER
            if full:
                self._space.clear()
                self._want_space = True
        if full:
            await self._space.wait()

    def close(self) -> None:
        """No more chunks: the reader gets what is queued, then end-of-stream."""
        with self._lock:
            self._ended = True
            self._lock.notify()

    def readinto(self, view: memoryview) -> int:
        """Blocking: copy up to `len(view)` bytes; 0 at the end of the body."""
        with self._lock:
            while not self._chunks and not self._ended:
                self._lock.wait()
            if not self._chunks:
                return 0
            chunk, offset = self._chunks[0], self._offset
        # Only this thread takes chunks out, so the first one stays put while it is copied without the lock.
        count = min(len(chunk) - offset, view.nbytes)
        view[:count] = memoryview(chunk)[offset : offset + count]
        with self._lock:
            self._offset += count
            self._buffered -= count
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
            if self._want_space and self._buffered <= _PIPE_HIGH_WATER // 2:
                self._want_space = False
                try:
                    self._loop.call_soon_threadsafe(self._space.set)
                except RuntimeError:  # the loop has closed: nobody is waiting any more
                    pass
        return count


class _FrameResponse(Response):
    """A frame sent from its chunks (raw arrays straight from their memory) in `_SEND_SLICE` pieces."""

    def __init__(self, frame: protocol.Frame) -> None:
        super().__init__(
            None,
            headers={
                "Content-Type": FRAME_CONTENT_TYPE,
                "Content-Length": str(len(frame)),
                "Cache-Control": "no-store",
            },
        )
        self._frame = frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for chunk in self._frame:
            view = memoryview(chunk).cast("B")
            for start in range(0, view.nbytes, _SEND_SLICE):
                piece = bytes(view[start : start + _SEND_SLICE])  # ASGI bodies are bytes
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# --------------------------------------------------------------------------------------------------------
# Routes


class _Api:
    """The routes, over one board and config."""

    def __init__(self, config: WorkerConfig, board: JobBoard, on_shutdown: Callable[[], None] | None) -> None:
        self.config = config
        self.board = board
        self.on_shutdown = on_shutdown
        self.started = time.monotonic()
        # anyio primitives belong to the event loop that first uses them: made on the first request.
        self._uploads: anyio.Semaphore | None = None
        self._waits: anyio.CapacityLimiter | None = None

    def _upload_slots(self) -> anyio.Semaphore:
        if self._uploads is None:
            self._uploads = anyio.Semaphore(_UPLOADS_AT_ONCE)
        return self._uploads

    def _wait_threads(self) -> anyio.CapacityLimiter:
        """Threads for blocking waits (long polls, event streams, release): their own pool, so that waiting
        clients never hold the threads that decoding and health need."""
        if self._waits is None:
            self._waits = anyio.CapacityLimiter(max(4, self.config.max_connections))
        return self._waits

    async def _wait_for_change(self, job: Job, since: int, timeout: float) -> None:
        await anyio.to_thread.run_sync(
            self.board.wait_for_change, job, since, timeout, limiter=self._wait_threads()
        )

    # -- plumbing -------------------------------------------------------------------------------------

    def _content_length(self, request: Request) -> int | None:
        if request.headers.get("transfer-encoding"):
            raise HttpError(
                HTTPStatus.LENGTH_REQUIRED,
                "send a Content-Length; chunked bodies are not accepted",
                close=True,
            )
        value = request.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {value[:40]!r}", close=True)
        return int(value)

    async def _read_json_body(self, request: Request) -> dict[str, Any]:
        length = self._content_length(request) or 0
        limit = self.config.limits.max_json_body_bytes
        if length > limit:
            await _drain_small_body(request.scope, request.receive)
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes exceeds the limit of {limit}",
                close=True,
            )
        if not length:
            return {}
        body = bytearray()
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                raise HttpError(HTTPStatus.BAD_REQUEST, "the body ended early", close=True)
            body += message.get("body", b"")
            if len(body) > limit:
                raise HttpError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body exceeds the limit of {limit}", close=True
                )
            if not message.get("more_body", False):
                break
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return parsed

    @staticmethod
    def _query(request: Request) -> dict[str, list[str]]:
        try:
            return parse_qs(request.scope.get("query_string", b"").decode("latin-1"), max_num_fields=10)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad query: {exc}") from None

    @staticmethod
    def _query_float(
        query: dict[str, list[str]], name: str, default: float, high: float, low: float = 0.0
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

    # -- health ---------------------------------------------------------------------------------------

    @_endpoint
    async def health(self, request: Request) -> Response:
        probe = self._query(request).get("probe_devices") == ["1"]
        # Engines answer `available()` and may import their libraries the first time: off the loop.
        return _json(await anyio.to_thread.run_sync(self._health_payload, probe))

    def _health_payload(self, probe: bool) -> dict[str, Any]:
        board = self.board
        return {
            "ok": True,
            "service": "stylepass-worker",
            "version": protocol.WORKER_VERSION,
            "protocol": protocol.PROTOCOL_VERSION,
            "instance": board.instance,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "uptime_seconds": time.monotonic() - self.started,
            "engines": engine_rows(board),
            "devices": device_info(probe=probe),
            "memory": memory_info(),
            "jobs": board.counts(),
            "limits": self.config.limits.to_json(),
            "model_dirs": [str(d) for d in self.config.model_dirs],
        }

    @_endpoint
    async def engines(self, request: Request) -> Response:
        return _json({"engines": await anyio.to_thread.run_sync(engine_rows, self.board)})

    # -- jobs -----------------------------------------------------------------------------------------

    @_endpoint
    async def submit(self, request: Request) -> Response:
        limits = self.config.limits
        # 1. Check the body's size and type before reading a byte of it
        length = self._content_length(request)
        if length is None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length with the frame", close=True)
        if length > limits.max_upload_bytes:
            await _drain_small_body(request.scope, request.receive)
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload of {length} bytes exceeds the worker's limit of {limits.max_upload_bytes} bytes",
                close=True,
                limit=limits.max_upload_bytes,
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != FRAME_CONTENT_TYPE:
            await _drain_small_body(request.scope, request.receive)
            raise HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"send the job as {FRAME_CONTENT_TYPE}, got {content_type!r}",
                close=True,
            )

        # 2. Read and decode the frame, two uploads at a time
        slots = self._upload_slots()
        with anyio.move_on_after(_UPLOAD_WAIT) as waited:
            await slots.acquire()
        if waited.cancelled_caught:
            await _drain_small_body(request.scope, request.receive)
            raise HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, "two other uploads are in progress; try again", close=True
            )
        started = time.perf_counter()
        try:
            meta, arrays = await self._read_frame(request.receive, length)
        finally:
            slots.release()

        # 3. Request, model references and engine, checked off the loop (engines may import on first use)
        engine_id, style_request, precision = await anyio.to_thread.run_sync(self._check_submit, meta, arrays)
        decode_seconds = time.perf_counter() - started
        job = self.board.submit(engine_id, style_request, precision, decode_seconds)
        return _json(self.board.status(job), HTTPStatus.ACCEPTED)

    async def _read_frame(self, receive: Receive, length: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Stream the body into `protocol.read_frame` on a thread; frame errors become 400/413 replies."""
        pipe = _BodyPipe(asyncio.get_running_loop())
        outcome: dict[str, Any] = {}
        async with anyio.create_task_group() as group:
            group.start_soon(pipe.pump, receive, length)
            try:
                outcome["frame"] = await anyio.to_thread.run_sync(
                    protocol.read_frame, pipe, length, self.config.limits
                )
            except protocol.FrameError as exc:  # raised once the pump has stopped too
                outcome["error"] = exc
            group.cancel_scope.cancel()  # a frame refused early leaves the rest of the body unread
        error = outcome.get("error")
        if isinstance(error, protocol.FrameTooLarge):
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), close=True)
        if error is not None:  # the body may be partly unread
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad frame: {error}", close=True)
        return outcome["frame"]

    def _check_submit(self, meta: dict[str, Any], arrays: dict[str, Any]) -> tuple[str, Any, str]:
        config = self.config
        try:
            engine_id, request, precision = protocol.decode_submit(meta, arrays)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"bad request: {exc}", kind="invalid_request") from None

        # Model references stay inside the model folders; those found there become their real paths
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

        # The engine must exist and be able to run here
        try:
            get_engine(engine_id)
        except EngineUnavailable as exc:
            raise HttpError(
                HTTPStatus.CONFLICT, str(exc), kind="engine_unavailable", reason=exc.reason
            ) from None
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc), kind="unknown_engine") from None
        return engine_id, request, precision

    @_endpoint
    async def status(self, request: Request) -> Response:
        job = self.board.get(request.path_params["job_id"])
        query = self._query(request)
        wait = self._query_float(query, "wait", 0.0, MAX_LONG_POLL)
        since = self._query_float(query, "since", -1.0, float(2**53), low=-1.0)
        if wait > 0:
            await self._wait_for_change(job, int(since), wait)
        return _json(self.board.status(job))

    @_endpoint
    async def events(self, request: Request) -> Response:
        """Server-sent events: one `status` event per change until the job finishes (or a time cap)."""
        job = self.board.get(request.path_params["job_id"])
        deadline = time.monotonic() + self.config.events_max_seconds

        async def stream():
            since = -1
            while time.monotonic() < deadline:
                await self._wait_for_change(job, since, _EVENTS_KEEPALIVE)
                status = self.board.status(job)
                if status["version"] == since:
                    yield b": keep-alive\n\n"
                else:
                    since = status["version"]
                    yield b"event: status\ndata: " + json.dumps(status).encode() + b"\n\n"
                if status["state"] in FINISHED or self.board.stopped:
                    break

        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "Connection": "close"}
        return StreamingResponse(stream(), headers=headers)

    @_endpoint
    async def cancel(self, request: Request) -> Response:
        await self._read_json_body(request)
        job = self.board.get(request.path_params["job_id"])
        self.board.cancel(job)
        return _json(self.board.status(job))

    @_endpoint
    async def result(self, request: Request) -> Response:
        job = self.board.get(request.path_params["job_id"])
        result = self.board.take_result(job)
        frame = await anyio.to_thread.run_sync(self._encode_result, job, result)
        return _FrameResponse(frame)

    def _encode_result(self, job: Job, result: StyleResult) -> protocol.Frame:
        started = time.perf_counter()
        frame = protocol.encode_result(job.id, result, self.board.status(job)["timings"], job.precision)
        log.debug(
            "result of %s: %d bytes encoded in %.1f ms",
            job.id,
            len(frame),
            1000 * (time.perf_counter() - started),
        )
        return frame

    # -- the worker -----------------------------------------------------------------------------------

    @_endpoint
    async def release(self, request: Request) -> Response:
        body = await self._read_json_body(request)
        timeout = body.get("timeout", 30.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 <= timeout <= 600:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"timeout must be a number of seconds in [0, 600], got {timeout!r}"
            )
        released = await anyio.to_thread.run_sync(
            self.board.release, float(timeout), limiter=self._wait_threads()
        )
        return _json({"released": released, "memory": memory_info()})

    @_endpoint
    async def shutdown(self, request: Request) -> Response:
        await self._read_json_body(request)
        if self.on_shutdown is None:
            raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "this worker is not stopped over HTTP")
        log.info("shutdown requested by a client")
        return _json(
            {"ok": True, "pid": os.getpid()}, close=True, background=BackgroundTask(self.on_shutdown)
        )


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


def engine_rows(board: JobBoard) -> list[dict[str, Any]]:
    """The engines this worker knows: id, label, available, reason, warm, and for available ones their loaded
    models and settings schema."""
    warm = board.warm_engines
    rows = []
    for engine_id, label, ok, reason in available_engines():
        row: dict[str, Any] = {"id": engine_id, "label": label, "available": ok, "reason": reason}
        row["warm"] = engine_id in warm
        if ok:
            engine = get_engine(engine_id)
            # Optional engine hook: `loaded_models() -> list[str]` names what is in memory now.
            describe = getattr(engine, "loaded_models", None)
            row["loaded_models"] = list(describe()) if callable(describe) else None
            row["settings_schema"] = engine.settings_type.SCHEMA
        rows.append(row)
    return rows
