# SPDX-License-Identifier: GPL-3.0-or-later
"""The ASGI worker (Starlette on uvicorn) where a network is unkind: slow and oversized request heads, bodies
that stop, many clients at once, and a graceful shutdown that finishes the running job; and the job board's
executor seam (several slots, release, error mapping) in this process.

Workers run as real child processes on 127.0.0.1 (short deadlines set with `--header-timeout` and
`--idle-timeout`); raw sockets play the misbehaving clients. Every wait is bounded, and timing bounds are
generous: the machine may be busy.
"""

import signal
import socket
import threading
import time

import numpy as np
import pytest
from worker_helpers import make_request, start_worker, steps_request, wait_until

from stylepass_core.engine_api import Aborted, EngineUnavailable, StyleResult
from stylepass_core.worker import protocol
from stylepass_core.worker.board import HttpError, JobBoard, WorkerConfig
from stylepass_core.worker.client import WorkerClient, WorkerRejected


@pytest.fixture(scope="module")
def strict_worker():
    """A worker with one-second deadlines for request heads and stalled bodies."""
    running = start_worker("--header-timeout", "1", "--idle-timeout", "1")
    yield running
    running.kill()


def _connect(worker) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", worker.port), timeout=10)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def _closed_within(connection: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or `timeout` s pass (False); returns what came."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, BrokenPipeError):
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def _health_ok(worker) -> bool:
    with WorkerClient(worker.url, worker.token, timeout=10) as client:
        return bool(client.health()["ok"])


# -- slow and oversized request heads -------------------------------------------------------------------


def test_a_head_trickled_byte_by_byte_is_cut_after_the_header_timeout(strict_worker):
    head = f"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {strict_worker.token}\r\n"
    head += "X-Slow: " + "a" * 200  # never finished: a slow-loris keeps a connection by sending forever
    with _connect(strict_worker) as connection:
        started = time.monotonic()
        cut = None
        for byte in head.encode():
            try:
                connection.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = time.monotonic() - started
                break
            closed, _ = _closed_within(connection, 0.05)
            if closed:
                cut = time.monotonic() - started
                break
            if time.monotonic() - started > 15:
                break
    assert cut is not None, "the worker kept a trickling request head open for 15 s"
    assert 0.8 <= cut < 6.0, cut  # --header-timeout 1
    assert _health_ok(strict_worker)


def test_a_connection_that_sends_nothing_is_closed(strict_worker):
    with _connect(strict_worker) as connection:
        started = time.monotonic()
        closed, received = _closed_within(connection, 10)
    assert closed and received == b""
    assert 0.8 <= time.monotonic() - started < 6.0


def test_the_header_timeout_does_not_cut_a_kept_alive_connection_between_requests(strict_worker):
    """The deadline runs for a request's head, not for the quiet time before the next request."""
    with WorkerClient(strict_worker.url, strict_worker.token, timeout=10) as client:
        client.health()
        time.sleep(1.5)  # longer than --header-timeout, shorter than --idle-timeout... of a head
        assert client.health()["ok"]


@pytest.mark.parametrize("shape", ["whole", "in pieces"])
def test_oversized_headers_are_refused_and_the_connection_closed(strict_worker, shape):
    head = (
        f"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {strict_worker.token}\r\n"
        f"X-Big: {'b' * (40 << 10)}\r\n\r\n"
    ).encode()
    with _connect(strict_worker) as connection:
        if shape == "whole":
            connection.sendall(head)
        else:  # a head that keeps growing past the limit, never finished
            for start in range(0, 32 << 10, 4096):
                connection.sendall(head[start : start + 4096])
                time.sleep(0.01)
        closed, reply = _closed_within(connection, 10)
    assert closed, "the connection stayed open after an oversized head"
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), reply[:200]
    assert b"exceed" in reply  # the JSON error says why
    assert _health_ok(strict_worker)  # others are still served


# -- bodies that stop ------------------------------------------------------------------------------------


def _start_upload(worker, sent: int = 4096) -> socket.socket:
    """A submit whose frame stops after `sent` bytes of the `Content-Length` it promised."""
    frame = protocol.encode_submit("TEST_STEPS", make_request((256, 256)), "exact").to_bytes()
    connection = _connect(worker)
    connection.sendall(
        (
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {worker.token}\r\n"
            f"Content-Type: {protocol.FRAME_CONTENT_TYPE}\r\nContent-Length: {len(frame)}\r\n\r\n"
        ).encode()
        + frame[:sent]
    )
    return connection


def test_a_body_that_stops_midway_is_cut_and_frees_its_upload_slot(strict_worker):
    # Two stalled uploads hold both upload slots; once they are cut, a job goes through again.
    uploads = [_start_upload(strict_worker), _start_upload(strict_worker, sent=100_000)]
    started = time.monotonic()
    try:
        for connection in uploads:
            closed, _ = _closed_within(connection, 15)
            assert closed, "a stalled body kept its connection open"
    finally:
        for connection in uploads:
            connection.close()
    assert 0.8 <= time.monotonic() - started < 10.0  # --idle-timeout 1
    with WorkerClient(strict_worker.url, strict_worker.token, timeout=10) as client:
        request = steps_request(steps=1)
        result = client.run("TEST_STEPS", request, timeout=20)
    np.testing.assert_array_equal(result.image, 1.0 - request.beauty)


# -- many clients ---------------------------------------------------------------------------------------


def test_concurrent_clients_all_get_their_own_results(worker):
    failures: list[BaseException] = []

    def client_thread(index: int) -> None:
        try:
            with WorkerClient(worker.url, worker.token, timeout=30) as client:
                for round_ in range(2):
                    request = make_request((24 + index, 40), seed=100 * index + round_)
                    job_id = client.submit("TEST_STEPS", request)
                    client.status(job_id, wait=0.2)
                    client.wait(job_id, poll_interval=0.1, timeout=60)
                    result = client.result(job_id)
                    np.testing.assert_array_equal(result.image, 1.0 - request.beauty)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=client_thread, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a client never finished"
    assert not failures, failures


def test_health_stays_fast_while_a_job_runs_and_clients_wait(worker):
    with WorkerClient(worker.url, worker.token, timeout=10) as client:
        job_id = client.submit("TEST_STEPS", steps_request(steps=30, step_seconds=0.05))
        assert wait_until(lambda: client.status(job_id).state == "running", 10)
        # Four clients long-poll the job while the health checks run.
        pollers = [
            threading.Thread(
                target=lambda: WorkerClient(worker.url, worker.token, timeout=10).status(
                    job_id, wait=1.0, since=10**6
                ),
                daemon=True,
            )
            for _ in range(4)
        ]
        for poller in pollers:
            poller.start()
        slowest = 0.0
        for _ in range(10):
            started = time.perf_counter()
            assert client.health()["jobs"]["running"] == job_id
            slowest = max(slowest, time.perf_counter() - started)
        for poller in pollers:
            poller.join(10)
        client.wait(job_id, timeout=30)
    assert slowest < 1.0, slowest  # the engine runs on its own thread, the waits on theirs


# -- graceful shutdown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGTERM", "POST /v1/shutdown"])
def test_graceful_shutdown_finishes_the_running_job(tmp_path, how):
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        running = start_worker(stderr=log)
    try:
        follower = WorkerClient(running.url, running.token, timeout=10)
        request = steps_request(steps=20, step_seconds=0.1)  # two seconds of work
        job_id = follower.submit("TEST_STEPS", request)
        queued = follower.submit("TEST_STEPS", steps_request(steps=1))
        outcome: dict = {}

        def follow() -> None:
            try:
                follower.wait(job_id, timeout=60)
                outcome["result"] = follower.result(job_id)
            except BaseException as exc:  # reported by the main thread
                outcome["error"] = exc

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        assert wait_until(lambda: follower.status(job_id).state == "running", 10)
        started = time.monotonic()
        if how == "SIGTERM":
            running.proc.send_signal(signal.SIGTERM)
        else:
            WorkerClient(running.url, running.token).shutdown()

        # New work is refused while the running job finishes; the queued job is cancelled.
        other = WorkerClient(running.url, running.token, timeout=10)
        assert wait_until(lambda: follower.status(queued).state == "cancelled", 5)
        with pytest.raises(WorkerRejected, match="shutting down") as refused:
            other.submit("TEST_STEPS", steps_request(steps=1))
        assert refused.value.status == 503

        thread.join(30)
        assert "error" not in outcome, outcome.get("error")
        np.testing.assert_array_equal(outcome["result"].image, 1.0 - request.beauty)
        assert running.proc.wait(20) == 0
        assert time.monotonic() - started < 20
    finally:
        running.kill()
    text = log_path.read_text()
    assert f"job {job_id} done" in text


def test_a_result_nobody_fetches_does_not_hold_the_exit(tmp_path):
    running = start_worker()
    try:
        client = WorkerClient(running.url, running.token, timeout=10)
        job_id = client.submit("TEST_STEPS", steps_request(steps=1))
        client.wait(job_id, timeout=10)
        started = time.monotonic()
        client.shutdown()
        assert running.proc.wait(20) == 0
        assert time.monotonic() - started < 15  # a few seconds of grace for the fetch, then it exits
    finally:
        running.kill()


def test_shutdown_with_nothing_running_is_quick():
    running = start_worker()
    try:
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        running.kill()


# -- the board's executor seam (in this process) ---------------------------------------------------------


class GatedExecutor:
    """Runs each job until the test opens its gate; records the order jobs started in."""

    def __init__(self, slots: int, fail: BaseException | None = None) -> None:
        self.slots = slots
        self.fail = fail
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.released = 0
        self.closed = False
        self._lock = threading.Lock()

    def run(self, job, progress, abort):
        with self._lock:
            self.started.append(job.id)
            gate = self.gates.setdefault(job.id, threading.Event())
        progress.update(0, 1, "waiting at the gate")
        if not gate.wait(10):
            raise AssertionError("the test never opened the gate")
        if self.fail is not None:
            raise self.fail
        return StyleResult(image=1.0 - job.request.beauty)

    def open(self, job_id: str) -> None:
        with self._lock:
            self.gates.setdefault(job_id, threading.Event()).set()

    def release(self) -> list[str]:
        self.released += 1
        return ["TEST_STEPS"]

    def close(self) -> None:
        self.closed = True


def _board(executor) -> JobBoard:
    board = JobBoard(WorkerConfig(token="t"), executor)
    board.start()
    return board


def _state(board: JobBoard, job) -> str:
    return board.status(job)["state"]


def test_the_board_runs_as_many_jobs_as_the_executor_has_slots_in_queue_order():
    executor = GatedExecutor(slots=2)
    board = _board(executor)
    try:
        jobs = [board.submit("TEST_STEPS", make_request(seed=i), "exact", 0.0) for i in range(4)]
        assert wait_until(lambda: len(executor.started) == 2, 5)
        time.sleep(0.1)  # a third runner would start the third job now
        assert executor.started == [jobs[0].id, jobs[1].id]
        assert [_state(board, job) for job in jobs] == ["running", "running", "queued", "queued"]
        assert board.counts()["slots"] == 2 and board.counts()["running"] == jobs[0].id
        executor.open(jobs[1].id)  # the second finishing first frees its slot for the third
        assert wait_until(lambda: len(executor.started) == 3, 5)
        assert executor.started[2] == jobs[2].id
        for job in jobs:
            executor.open(job.id)
        assert wait_until(lambda: all(_state(board, job) == "done" for job in jobs), 5)
        result = board.take_result(jobs[3])
        np.testing.assert_array_equal(result.image, 1.0 - make_request(seed=3).beauty)
    finally:
        for job_id in list(executor.gates):
            executor.open(job_id)
        board.close()
    assert executor.closed


def test_release_waits_for_every_running_job_and_holds_the_queue():
    executor = GatedExecutor(slots=2)
    board = _board(executor)
    try:
        jobs = [board.submit("TEST_STEPS", make_request(seed=i), "exact", 0.0) for i in range(3)]
        assert wait_until(lambda: len(executor.started) == 2, 5)
        with pytest.raises(HttpError, match="still running") as busy:
            board.release(0.2)
        assert busy.value.status == 409 and executor.released == 0
        released: dict = {}
        waiting = threading.Thread(target=lambda: released.update(names=board.release(10)), daemon=True)
        waiting.start()
        executor.open(jobs[0].id)
        time.sleep(0.2)
        assert len(executor.started) == 2  # the queued job waits while release does
        executor.open(jobs[1].id)
        waiting.join(10)
        assert released["names"] == ["TEST_STEPS"] and executor.released == 1
        executor.open(jobs[2].id)
        assert wait_until(lambda: _state(board, jobs[2]) == "done", 5)  # and then it runs
    finally:
        for job_id in list(executor.gates):
            executor.open(job_id)
        board.close()


@pytest.mark.parametrize(
    "raised, state, kind",
    [
        (Aborted("stop"), "cancelled", None),
        (EngineUnavailable("TEST_STEPS", "no GPU here"), "failed", "engine_unavailable"),
        (ValueError("bad size"), "failed", "invalid_request"),
        (MemoryError(), "failed", "out_of_memory"),
        (RuntimeError("replica lost"), "failed", "error"),
    ],
)
def test_every_executor_gets_the_same_job_errors(raised, state, kind):
    executor = GatedExecutor(slots=1, fail=raised)
    board = _board(executor)
    try:
        job = board.submit("TEST_STEPS", make_request(), "exact", 0.0)
        executor.open(job.id)
        assert wait_until(lambda: _state(board, job) in ("done", "failed", "cancelled"), 5)
        status = board.status(job)
        assert status["state"] == state
        assert (status["error"] or {}).get("kind") == kind
    finally:
        board.close()
