# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine worker's server: the ASGI app (`app.py`) over the job board (`board.py`), served by uvicorn.

    client --POST /v1/jobs (frame)--> JobBoard queue --runner thread--> get_engine(id).run(...)
           <--GET  /v1/jobs/<id> (JSON, long-poll)----- progress, state
           <--GET  /v1/jobs/<id>/result (frame)-------- StyleResult, handed out once

uvicorn runs with its pure-Python h11 protocol, subclassed here to cut what a server facing a network must
not wait for: a request head that does not arrive within `header_timeout` (slow-loris), a head larger than
`max_header_bytes` (431), a body that stalls for `idle_timeout`, a reply the client stops reading for as
long. `WorkerServer` binds its socket itself, so its port is known (port 0 included) before it serves.

Shutdown is graceful: SIGTERM or SIGINT (when serving on the main thread) and `POST /v1/shutdown` stop new
jobs (503), cancel the queued ones, and let a running job finish and its client fetch the result, for at
most `shutdown_grace` seconds (a job nobody follows, or a result nobody fetches, does not hold the exit:
see `JobBoard.shut_down`); then uvicorn stops. A second signal stops at once.

Only the standard library, numpy, Starlette, uvicorn and the core are imported, so the worker runs in any
Python that has the engines' own dependencies; engines import torch or onnxruntime themselves when they
first run, and stay warm (models loaded) between jobs until `POST /v1/release`.
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from http import HTTPStatus
from types import FrameType

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import create_app
from .board import Executor, JobBoard, WorkerConfig

log = logging.getLogger("stylepass.worker")

_BACKLOG = 64  # connections the kernel holds before the server accepts them
_LINGER = 2.0  # seconds a refused connection is read and dropped before it closes, so the reply arrives
# Seconds uvicorn waits for requests in flight once the board has stopped (waits end at once then): a result
# still being sent over a slow link, an upload that will be refused.
_SHUTDOWN_REQUESTS = 30
_SOCKET_BUFFER = (
    4 << 20
)  # loopback is memory speed; bigger kernel buffers halve the syscalls of a 1080p frame


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines on the client (class attributes set per server)."""

    header_timeout = 10.0
    idle_timeout = 120.0
    max_header_bytes = 16 << 10

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_check: asyncio.TimerHandle | None = None
        self._write_stall: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._refused = False

    # -- connection -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                # Headers and body go out in separate writes; Nagle would hold the second for the client's
                # delayed ACK (~40 ms per request on Linux). asyncio sets this too; say it here.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_deadline, self._body_check, self._write_stall):
            if timer is not None:
                timer.cancel()
        self._header_deadline = self._body_check = self._write_stall = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the linger ends
        if self._header_deadline is None and self.conn.their_state is h11.IDLE:
            self._start_header_clock()  # a new request on a kept-alive connection
        self._last_data = self.loop.time()
        super().data_received(data)
        state = self.conn.their_state
        if state is not h11.IDLE and self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        if state is h11.SEND_BODY and self._body_check is None and not self.transport.is_closing():
            self._body_check = self.loop.call_later(self.idle_timeout, self._check_body)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already partly received gets the same deadline for the rest of its head.
        if (
            self._header_deadline is None
            and self.conn.their_state is h11.IDLE
            and not self.transport.is_closing()
            and self.conn.trailing_data[0]
        ):
            self._start_header_clock()

    # -- deadlines ------------------------------------------------------------------------------------

    def _start_header_clock(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request head within %g s",
                _peer(self.client),
                self.header_timeout,
            )
            self.transport.close()

    def _check_body(self) -> None:
        """Close a connection whose body has sent nothing for `idle_timeout` while the server was reading."""
        self._body_check = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        now = self.loop.time()
        if self.flow.read_paused or self.conn.they_are_waiting_for_100_continue:
            self._last_data = now  # the app is not reading yet: not the client's stall
        idle = now - self._last_data
        if idle >= self.idle_timeout:
            log.info("closing a connection from %s: its body stalled for %.0f s", _peer(self.client), idle)
            self.transport.close()
            return
        self._body_check = self.loop.call_later(self.idle_timeout - idle, self._check_body)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_stall is None:
            self._write_stall = self.loop.call_later(self.idle_timeout, self._writes_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _writes_stalled(self) -> None:
        self._write_stall = None
        log.info(
            "closing a connection from %s: it read nothing of the reply for %g s",
            _peer(self.client),
            self.idle_timeout,
        )
        self.transport.abort()

    # -- refusals -------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """A malformed request (400), or a head past `max_header_bytes` (431), as a JSON error; then close."""
        too_large = len(self.conn.trailing_data[0]) > self.max_header_bytes
        status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if too_large else HTTPStatus.BAD_REQUEST
        message = (
            f"request headers exceed the limit of {self.max_header_bytes} bytes"
            if too_large
            else "invalid HTTP request"
        )
        body = json.dumps({"error": {"status": int(status), "message": message}}).encode()
        head = (
            f"HTTP/1.1 {int(status)} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        self._refuse(head + body)

    def _refuse(self, reply: bytes) -> None:
        """Send `reply` and close, reading and dropping what the client still sends for `_LINGER` s first:
        closing with unread data would reset the connection, and the client might never see the reply."""
        self._refused = True
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        self.transport.write(reply)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class _Uvicorn(uvicorn.Server):
    """uvicorn's server whose SIGINT/SIGTERM starts the graceful shutdown (a second one stops at once),
    instead of stopping at once and re-raising the signal after (which would end the process by it)."""

    def __init__(self, config: uvicorn.Config, board: JobBoard, grace: float) -> None:
        super().__init__(config)
        self.board = board
        self.grace = grace
        # Set from any thread or a signal handler (a plain flag: a handler must not take locks); acted on
        # at the next tick of the event loop (every 0.1 s).
        self.shutdown_requested = False
        self._draining: threading.Thread | None = None
        self._stopped_now = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.shutdown_requested:
            log.info("signal %d again: stopping now", sig)
            self.force_exit = True
        else:
            log.info("signal %d: shutting down once the running job is done", sig)
        self.shutdown_requested = True

    async def on_tick(self, counter: int) -> bool:
        if self.force_exit and not self._stopped_now:
            self._stopped_now = True
            self.board.stop()
            self.should_exit = True
        elif self.shutdown_requested and self._draining is None:
            self._draining = threading.Thread(target=self._drain, name="stylepass-shutdown", daemon=True)
            self._draining.start()
        return await super().on_tick(counter)

    def _drain(self) -> None:
        try:
            self.board.shut_down(self.grace)
        finally:
            self.should_exit = True  # uvicorn stops at its next tick


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; IPv6 when the host has a colon."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            # On Windows SO_REUSEADDR lets another process bind the same port; use exclusive use there.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)  # now, so a client told the port right away is queued, not refused
    except BaseException:
        sock.close()
        raise
    return sock


class WorkerServer:
    """A bound worker. `start()` serves on a thread; `serve_forever()` blocks instead (graceful on SIGTERM).

    Args:
        config: Address, token, model folders, limits and timeouts. An empty token is refused.
        executor: Where jobs run (default: this process, one at a time).

    Raises:
        ValueError: no token.
        OSError: the address cannot be bound.
    """

    def __init__(self, config: WorkerConfig, executor: Executor | None = None) -> None:
        if not config.token:
            raise ValueError("a worker needs a token; generate one with secrets.token_urlsafe(32)")
        self.config = config
        self.board = JobBoard(config, executor)
        self._socket = _bind(config.host, config.port)
        self._port = int(self._socket.getsockname()[1])
        protocol = type(
            "GuardedH11Protocol",
            (_GuardedH11Protocol,),
            {
                "header_timeout": config.header_timeout,
                "idle_timeout": config.idle_timeout,
                "max_header_bytes": config.max_header_bytes,
            },
        )
        app = create_app(config, self.board, on_shutdown=self.shutdown)
        uvicorn_config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            log_config=None,  # our logging set-up, not uvicorn's
            log_level="warning",
            access_log=False,  # app._AccessLog writes one line per request
            proxy_headers=False,
            server_header=False,
            headers=[("Server", "stylepass-worker")],
            # uvicorn refuses (503) once the count of connections, this one included, reaches the limit.
            limit_concurrency=config.max_connections + 1,
            timeout_keep_alive=config.idle_timeout,
            timeout_graceful_shutdown=_SHUTDOWN_REQUESTS,
            h11_max_incomplete_event_size=config.max_header_bytes,
            backlog=_BACKLOG,
        )
        self._server = _Uvicorn(uvicorn_config, self.board, config.shutdown_grace)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
        return f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}"

    def start(self) -> "WorkerServer":
        self.board.start()
        self._thread = threading.Thread(target=self._serve, name="stylepass-http", daemon=True)
        self._thread.start()
        return self

    def catch_signals(self) -> None:
        """SIGTERM and SIGINT shut down gracefully from now on (main thread), before serving starts: a signal
        sent as soon as the ready line is read must not kill the worker by its default action."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._server.handle_exit)

    def serve_forever(self) -> None:
        """Serve on this thread until shutdown; on the main thread SIGTERM and SIGINT shut down gracefully."""
        self.board.start()
        self._serve()

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.board.close()
            self._socket.close()

    def shutdown(self) -> None:
        """Shut down gracefully (see the module docstring); returns at once. `wait()` for the end."""
        self._server.shutdown_requested = True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a started server to stop (after `/v1/shutdown`); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self) -> None:
        """Stop now: the running job is aborted, the queued ones cancelled, requests in flight answered."""
        self.board.stop()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_SHUTDOWN_REQUESTS + 5.0)
        else:
            self.board.close()
            self._socket.close()
