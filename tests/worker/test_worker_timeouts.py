# SPDX-License-Identifier: GPL-3.0-or-later
"""A worker that accepts connections and never answers is reported within the stated health timeout, and the
message names the timeout that expired (it took the 30 s request timeout before)."""

import socket
import threading
import time

import pytest
from worker_helpers import steps_request

from stylepass_core.worker import client as client_module
from stylepass_core.worker.client import (
    CONNECT_TIMEOUT,
    HEALTH_TIMEOUT,
    REQUEST_TIMEOUT,
    WorkerClient,
    WorkerUnavailable,
)


@pytest.fixture
def silent_worker():
    """A socket that accepts every connection and never sends a byte; closed at the end of the test."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, name="silent-worker", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()
    for connection in held:
        connection.close()


def test_the_timeouts_are_stated_and_the_health_check_is_fast():
    assert CONNECT_TIMEOUT <= 10 and HEALTH_TIMEOUT <= 10  # "a few seconds"
    assert REQUEST_TIMEOUT > HEALTH_TIMEOUT  # jobs get their own, longer timeout
    assert WorkerClient("http://gpu.example:8765", "t").timeout == REQUEST_TIMEOUT
    for name in ("CONNECT_TIMEOUT", "HEALTH_TIMEOUT", "REQUEST_TIMEOUT"):
        assert name in client_module.__all__


@pytest.mark.parametrize("call", ["health", "run"])
def test_a_worker_that_never_answers_is_reported_within_the_health_timeout(silent_worker, call):
    """`run` is what Blender calls for a remote worker: its submit checks health first."""
    client = WorkerClient(silent_worker, "token")  # the default request timeout, as Blender makes it
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable) as error:
        if call == "health":
            client.health()
        else:
            client.run("TEST_STEPS", steps_request(steps=0))
    elapsed = time.monotonic() - started
    assert elapsed < HEALTH_TIMEOUT + 0.5 * (REQUEST_TIMEOUT - HEALTH_TIMEOUT), elapsed
    assert elapsed >= HEALTH_TIMEOUT * 0.9  # it did wait the stated time, not less
    message = str(error.value)
    assert f"did not answer within {HEALTH_TIMEOUT:g} s while checking its health" in message
    assert silent_worker in message


def test_other_requests_keep_the_request_timeout(silent_worker):
    """Only the health check is short: a request that does work (here a cancel, with a short client
    timeout so the test stays quick) waits the client's timeout, and says so."""
    client = WorkerClient(silent_worker, "token", timeout=HEALTH_TIMEOUT + 1)
    started = time.monotonic()
    with pytest.raises(
        WorkerUnavailable, match=rf"did not answer within {HEALTH_TIMEOUT + 1:g} s while cancel"
    ):
        client.cancel("0" * 32)
    assert time.monotonic() - started >= HEALTH_TIMEOUT + 0.9


def test_a_connect_that_hangs_says_it_is_the_connect_timeout(monkeypatch):
    """A connection that cannot be opened in time is reported as such, with the connect timeout."""
    import requests

    def hanging(*args, **kwargs):
        raise requests.ConnectTimeout("connect timed out")

    client = WorkerClient("http://gpu.example:8765", "token")
    monkeypatch.setattr(client._session, "request", hanging)
    with pytest.raises(WorkerUnavailable) as error:
        client.health()
    assert (
        f"could not connect to the Stylepass worker at http://gpu.example:8765 within {CONNECT_TIMEOUT:g} s"
        in str(error.value)
    )
