# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker over real HTTP on 127.0.0.1: health, auth, jobs, progress, cancel, results, limits, paths."""

import json
import re
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import requests
from engines_for_tests import OrphanSettings, StepsSettings, UnavailableSettings
from worker_helpers import make_request, start_worker, steps_request, wait_until

from stylepass_core.engine_api import Aborted, EngineUnavailable, get_engine
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.settings import EngineSettings, register_settings
from stylepass_core.worker import protocol
from stylepass_core.worker.client import (
    JobStatus,
    WorkerAuthError,
    WorkerClient,
    WorkerJobFailed,
    WorkerRejected,
    WorkerUnavailable,
)


@pytest.fixture
def client(worker):
    with WorkerClient(worker.url, worker.token, timeout=10) as client:
        yield client


class RecordingProgress:
    def __init__(self):
        self.events = []

    def update(self, done, total, message=""):
        self.events.append((done, total, message))


def _wait_state(client, job_id, states, timeout=10.0) -> JobStatus:
    status = None

    def reached():
        nonlocal status
        status = client.status(job_id)
        return status.state in states

    assert wait_until(reached, timeout), f"job never reached {states}: {status}"
    return status


# -- start, health, binding -------------------------------------------------------------------------------


def test_health_reports_engines_devices_memory_and_version(worker, client):
    health = client.health()
    assert health["ok"] and health["protocol"] == protocol.PROTOCOL_VERSION
    assert health["pid"] == worker.proc.pid and health["version"] == protocol.WORKER_VERSION
    engines = {row["id"]: row for row in health["engines"]}
    assert engines["NEURAL_STYLE"]["available"] is True
    assert engines["TEST_UNAVAILABLE"] == {
        "id": "TEST_UNAVAILABLE",
        "label": "Unavailable (test)",
        "available": False,
        "reason": "the test says so; install nothing",
        "warm": False,
    }
    assert engines["TEST_STEPS"]["loaded_models"] == ["nothing (test engine)"]
    assert "torch" in health["devices"] and health["devices"]["cpu_count"] >= 1
    assert health["memory"]["peak_rss_bytes"] > 10e6
    assert health["limits"]["max_upload_bytes"] == 1024 << 20
    # The style presets are settings choices now, known on both sides; the rows say which settings schema
    # each engine reads, so a client can tell a worker that is too old for its settings.
    rows = {row["id"]: row for row in client.engines()}
    assert rows["TEST_STEPS"]["settings_schema"] == StepsSettings.SCHEMA
    assert rows["NEURAL_STYLE"]["settings_schema"] == NeuralStyleSettings.SCHEMA
    assert "settings_schema" not in rows["TEST_UNAVAILABLE"]
    assert not any("styles" in row for row in rows.values())


def test_health_is_cheap(client):
    client.health()
    started = time.perf_counter()
    for _ in range(5):
        client.health()
    assert (time.perf_counter() - started) / 5 < 0.1


def test_binds_loopback_only_by_default(worker):
    assert worker.ready["host"] == "127.0.0.1"
    listening = []
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == worker.port:
                listening.append(local.split(":")[0])
    assert listening == ["0100007F"]  # 127.0.0.1 in /proc's byte order


def test_ready_line_shows_only_a_generated_token():
    given = start_worker(token="given-token")
    generated = start_worker(token=None)
    try:
        assert "token" not in given.ready
        assert len(generated.ready["token"]) >= 40
        assert WorkerClient(generated.url, generated.ready["token"]).health()["ok"]
    finally:
        given.kill()
        generated.kill()


# -- token ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/health"),
        ("GET", "/v1/engines"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/" + "0" * 32),
        ("GET", "/v1/jobs/" + "0" * 32 + "/result"),
        ("POST", "/v1/release"),
        ("POST", "/v1/shutdown"),
        ("GET", "/v1/nothing-here"),
        ("GET", "/"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer "])
def test_every_route_needs_the_token(worker, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.request(method, worker.url + path, headers=headers, data=b"x" * 100, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in response.json()["error"]["message"]
    assert worker.alive()


def test_wrong_token_raises_worker_auth_error(worker):
    with pytest.raises(WorkerAuthError, match="refused the token"):
        WorkerClient(worker.url, "not-the-token").health()


# -- jobs: progress, queue, cancel, result ----------------------------------------------------------------


def test_progress_is_visible_during_a_job(client):
    request = steps_request(steps=6, step_seconds=0.1)
    job_id = client.submit("TEST_STEPS", request)
    seen = set()
    deadline = time.monotonic() + 10
    status = client.status(job_id)
    while not status.finished and time.monotonic() < deadline:
        if status.state == "running":
            seen.add((status.done, status.total))
        status = client.status(job_id, wait=0.5, since=status.version)
    assert status.state == "done"
    assert {(1, 6), (2, 6), (3, 6)} <= seen  # mid-job progress, not just start and end
    assert status.timings["run"] >= 0.5 and status.result == "available"
    result = client.result(job_id)
    np.testing.assert_allclose(result.image, 1.0 - request.beauty, atol=2e-5)  # auto precision


def test_wait_maps_progress_onto_the_progress_protocol(client):
    progress = RecordingProgress()
    result = client.run("TEST_STEPS", steps_request(steps=4, step_seconds=0.05), progress)
    steps = [event for event in progress.events if event[1] == 4]
    assert [d for d, _, _ in steps] == sorted(d for d, _, _ in steps)
    assert steps[-1][:2] == (4, 4) and any(0 < d < 4 for d, _, _ in steps)
    assert result.info["steps"] == 4 and result.info["worker"]["timings"]["run"] > 0.15


def test_jobs_queue_and_run_one_at_a_time(client):
    first = client.submit("TEST_STEPS", steps_request(steps=3, step_seconds=0.1))
    second = client.submit("TEST_STEPS", steps_request(steps=1))
    queued = client.status(second)
    assert queued.state == "queued" and queued.queue_position == 0
    progress = RecordingProgress()
    client.wait(second, progress, timeout=10)
    assert progress.events[0] == (0, 0, "Waiting for the worker (0 jobs ahead)")
    assert client.status(first).state == "done"
    assert client.status(second).timings["queued"] >= 0.2  # it waited for the first


def test_cancel_mid_job_with_the_abort_event(client):
    abort = threading.Event()
    progress = RecordingProgress()
    job_id = client.submit("TEST_STEPS", steps_request(steps=100, step_seconds=0.1))
    _wait_state(client, job_id, {"running"})
    threading.Timer(0.3, abort.set).start()
    started = time.monotonic()
    with pytest.raises(Aborted, match="aborted"):
        client.wait(job_id, progress, abort, poll_interval=0.1)
    assert time.monotonic() - started < 2.0  # 10 s of work stopped at once
    status = client.status(job_id)
    assert status.state == "cancelled" and 0 < status.done < 100
    with pytest.raises(WorkerRejected) as error:
        client.result(job_id)
    assert error.value.status == 409


def test_progress_callback_raising_aborted_cancels_the_job(client):
    class StopAtTwo:
        def update(self, done, total, message=""):
            if done >= 2:
                raise Aborted("stylisation aborted")

    job_id = client.submit("TEST_STEPS", steps_request(steps=50, step_seconds=0.05))
    with pytest.raises(Aborted):
        client.wait(job_id, StopAtTwo(), poll_interval=0.1)
    assert _wait_state(client, job_id, {"cancelled"}).done < 50


def test_cancel_a_queued_job(client):
    running = client.submit("TEST_STEPS", steps_request(steps=10, step_seconds=0.05))
    queued = client.submit("TEST_STEPS", steps_request(steps=1))
    status = client.cancel(queued)
    assert status.state == "cancelled"
    client.cancel(running)
    _wait_state(client, running, {"cancelled"})


def test_result_is_fetched_once(client):
    job_id = client.submit("TEST_STEPS", steps_request(steps=1))
    client.wait(job_id, timeout=10)
    client.result(job_id)
    with pytest.raises(WorkerRejected, match="is gone: fetched") as error:
        client.result(job_id)
    assert error.value.status == 410
    assert client.status(job_id).result == "fetched"


def test_unknown_job_and_wrong_method(worker, client):
    headers = {"Authorization": f"Bearer {worker.token}"}
    assert requests.get(f"{worker.url}/v1/jobs/{'f' * 32}", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{worker.url}/v1/jobs/../health", headers=headers, timeout=5).status_code in (
        200,
        404,
    )
    response = requests.delete(f"{worker.url}/v1/health", headers=headers, timeout=5)
    assert response.status_code == 405 and "GET" in response.json()["error"]["message"]
    with pytest.raises(WorkerUnavailable, match="no longer knows job"):
        client.status("f" * 32)  # what a restarted worker looks like
    with pytest.raises(ValueError, match="32 hex"):
        client.status("../shutdown")


def test_event_stream_follows_a_job(worker, client):
    job_id = client.submit("TEST_STEPS", steps_request(steps=3, step_seconds=0.05))
    headers = {"Authorization": f"Bearer {worker.token}"}
    states = []
    with requests.get(
        f"{worker.url}/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=10
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        for line in response.iter_lines():  # ends when the worker closes the stream after the final state
            if line.startswith(b"data: "):
                states.append(json.loads(line[6:])["state"])
            assert len(states) < 100
    assert states[-1] == "done" and "running" in states


# -- engine errors ----------------------------------------------------------------------------------------


def test_engine_errors_become_clear_exceptions(client):
    with pytest.raises(WorkerJobFailed, match="refuses this setting") as error:
        client.run("TEST_STEPS", steps_request(steps=1, fail="value"))
    assert error.value.kind == "invalid_request" and error.value.engine_id == "TEST_STEPS"
    with pytest.raises(WorkerJobFailed, match="RuntimeError: the test engine broke down"):
        client.run("TEST_STEPS", steps_request(steps=1, fail="runtime"))
    with pytest.raises(EngineUnavailable, match="the test says so") as unavailable:
        client.submit("TEST_UNAVAILABLE", make_request(settings=UnavailableSettings()))
    assert unavailable.value.reason == "the test says so; install nothing"
    # Settings the worker knows, of an engine it does not have.
    with pytest.raises(WorkerRejected, match="unknown engine 'TEST_NO_ENGINE'") as unknown:
        client.submit("TEST_NO_ENGINE", make_request(settings=OrphanSettings()))
    assert unknown.value.status == 400 and unknown.value.kind == "unknown_engine"
    # Settings of an engine only this side knows (a newer add-on than the worker): refused while decoding.
    with pytest.raises(WorkerRejected, match="unknown engine 'TEST_CLIENT_ONLY'") as client_only:
        client.submit("TEST_CLIENT_ONLY", make_request(settings=ClientOnlySettings()))
    assert client_only.value.status == 400 and client_only.value.kind == "invalid_request"
    # The engine id and the settings' engine must agree; the client refuses before sending anything.
    with pytest.raises(ValueError, match="differs from the request settings' engine 'TEST_STEPS'"):
        client.submit("NEURAL_STYLE", steps_request(steps=1))
    assert client.health()["ok"]  # the worker survived all of it


@register_settings
@dataclass(frozen=True)
class ClientOnlySettings(EngineSettings):
    """Settings registered in the test process only: the worker has never heard of this engine."""

    ENGINE = "TEST_CLIENT_ONLY"
    LABEL = "Client Only"
    DESCRIPTION = "test settings the worker does not know"
    PROPERTY = "test_client_only"


def _post_submit(worker, meta: dict, arrays: dict) -> requests.Response:
    """POST a submit frame built by hand (what an older or newer client could send)."""
    frame = protocol.encode_frame(meta, arrays, "exact")
    headers = {"Authorization": f"Bearer {worker.token}", "Content-Type": protocol.FRAME_CONTENT_TYPE}
    return requests.post(f"{worker.url}/v1/jobs", data=frame, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.update(schema=StepsSettings.SCHEMA + 1),
            "schema 2 is not understood here.*update Stylepass",
        ),
        (lambda s: s["values"].update(colour="red"), r"unknown StepsSettings settings \['colour'\]"),
        (lambda s: s["values"].update(steps=-1), r"StepsSettings.steps must be in \[0, 1000\], got -1"),
        (lambda s: s["values"].update(steps=2.5), "StepsSettings.steps must be an integer, got 2.5"),
        (lambda s: s.pop("schema"), "settings must be {engine, schema, values}"),
    ],
)
def test_settings_the_worker_cannot_read_are_refused_clearly(worker, change, message):
    frame = protocol.encode_submit("TEST_STEPS", steps_request(steps=1), "exact")
    meta, arrays = protocol.decode_frame(frame.to_bytes())
    change(meta["request"]["settings"])
    response = _post_submit(worker, meta, arrays)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["kind"] == "invalid_request" and re.search(message, error["message"]), error


def test_the_submitted_engine_must_be_the_settings_engine(worker):
    frame = protocol.encode_submit("TEST_STEPS", steps_request(steps=1), "exact")
    meta, arrays = protocol.decode_frame(frame.to_bytes())
    meta["engine"] = "NEURAL_STYLE"
    response = _post_submit(worker, meta, arrays)
    assert response.status_code == 400
    assert "differs from the request settings' engine 'TEST_STEPS'" in response.json()["error"]["message"]


# -- limits and paths -------------------------------------------------------------------------------------


def test_oversize_upload_is_refused_with_413():
    small = start_worker("--max-upload-mb", "1")
    try:
        request = make_request((512, 512))  # 3 MiB of float32 beauty
        frame = protocol.encode_submit("TEST_STEPS", request, "exact")
        headers = {"Authorization": f"Bearer {small.token}", "Content-Type": protocol.FRAME_CONTENT_TYPE}
        response = requests.post(f"{small.url}/v1/jobs", data=frame, headers=headers, timeout=10)
        assert response.status_code == 413
        assert "exceeds the worker's limit" in response.json()["error"]["message"]
        # curl-style `Expect: 100-continue`: the refusal comes before the body is sent.
        assert _expect_continue(small, small.token, 5 << 20).startswith(b"HTTP/1.1 413")
        assert _expect_continue(small, "wrong", 100).startswith(b"HTTP/1.1 401")
        assert _expect_continue(small, small.token, 100).startswith(b"HTTP/1.1 100")
        # The client learns the limit from /health and refuses before sending.
        client = WorkerClient(small.url, small.token, precision="exact")
        with pytest.raises(WorkerRejected, match="more than the worker accepts") as error:
            client.submit("TEST_STEPS", request)
        assert error.value.status == 413
        assert client.submit("TEST_STEPS", make_request((64, 64)))  # small jobs still go through
        assert small.alive()
    finally:
        small.kill()


def _expect_continue(worker, token: str, length: int) -> bytes:
    """Send only the headers of an upload with `Expect: 100-continue`; return the first reply line."""
    with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as connection:
        connection.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {protocol.FRAME_CONTENT_TYPE}\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        return connection.recv(4096).split(b"\r\n", 1)[0]


def test_body_rules_length_type_and_json(worker):
    headers = {"Authorization": f"Bearer {worker.token}"}
    chunked = requests.post(
        f"{worker.url}/v1/jobs",
        data=iter([b"SPF1", b"xx"]),
        headers={**headers, "Content-Type": protocol.FRAME_CONTENT_TYPE},
        timeout=5,
    )
    assert chunked.status_code == 411
    wrong_type = requests.post(
        f"{worker.url}/v1/jobs",
        data=b"{}",
        headers={**headers, "Content-Type": "application/json"},
        timeout=5,
    )
    assert wrong_type.status_code == 415
    garbage = requests.post(
        f"{worker.url}/v1/jobs",
        data=b"GIF89a" + bytes(64),
        headers={**headers, "Content-Type": protocol.FRAME_CONTENT_TYPE},
        timeout=5,
    )
    assert garbage.status_code == 400 and "magic" in garbage.json()["error"]["message"]
    too_big_json = requests.post(f"{worker.url}/v1/release", data=b" " * 100_000, headers=headers, timeout=5)
    assert too_big_json.status_code == 413


@pytest.mark.parametrize(
    "reference, accepted",
    [
        ("sd15/tiny.safetensors", True),
        ("org/hub-model", True),  # not on disk: a hub id, left to the engine
        ("/etc/passwd", False),
        ("../outside/secret.safetensors", False),
        ("escape/secret.safetensors", False),  # symlink out of the model folder
        ("~/.ssh/id_rsa", False),
    ],
)
def test_model_paths_outside_the_model_folders_are_refused(client, model_dir, reference, accepted):
    request = steps_request(steps=0, model=reference)
    if accepted:
        job_id = client.submit("TEST_STEPS", request)
        status = client.wait(job_id, timeout=10) if reference.startswith("sd15") else None
        if status is not None:
            info = client.result(job_id).info
            assert info["model_path"] == str((model_dir / reference).resolve())
            assert info["model_dirs"] == [str(model_dir.resolve())]  # the engine sees the worker's folders
        return
    with pytest.raises(WorkerRejected) as error:
        client.submit("TEST_STEPS", request)
    assert error.value.status == 400 and error.value.kind == "model_path"
    assert "model" in str(error.value) and str(model_dir.resolve()) in str(error.value)


def test_every_model_reference_in_the_settings_is_checked(client, model_dir):
    """Nested references (a ControlNet unit's model, a LoRA file) and parts of a model (the IP-Adapter's
    subfolder and weight file) are checked like `model`, before the engine is looked up: the diffusion engine
    need not be installed in this worker for its requests to be refused."""
    outside = "../outside/secret.safetensors"
    inside = DiffusionSettings(
        model="sd15/tiny.safetensors",
        vae="org/hub-vae",
        controls=(ControlUnit(map="depth", model="sd15"), ControlUnit(map="normal", model="org/cn")),
        loras=(Lora(file="sd15/tiny.safetensors"),),
        ip_adapter_model="org/ip-adapter",
    )
    maps = {name: np.zeros((32, 48), np.float32) for name in ("depth", "normal")}
    images = {"ip_adapter_image": np.zeros((8, 8, 3), np.float32)}
    bad = {
        "model_config": inside.replace(model_config="/etc"),
        "controls.1.model": inside.replace(
            controls=(inside.controls[0], ControlUnit(map="normal", model=outside))
        ),
        "loras.1.file": inside.replace(loras=(*inside.loras, Lora(file="escape/secret.safetensors"))),
        "ip_adapter_subfolder": inside.replace(ip_adapter_subfolder="../.."),
        "ip_adapter_weight_name": inside.replace(ip_adapter_weight_name="~/.ssh/id_rsa"),
    }
    for name, settings in bad.items():
        with pytest.raises(WorkerRejected) as error:
            client.submit("DIFFUSION", make_request(settings=settings, controls=maps, images=images))
        assert error.value.status == 400 and error.value.kind == "model_path", name
        assert str(error.value).startswith(f"{name}: "), str(error.value)
        assert str(model_dir.resolve()) in str(error.value)
    # A disabled unit's reference is still a reference the worker receives, so it is checked too.
    disabled = inside.replace(
        controls=(*inside.controls, ControlUnit(enabled=False, map="lineart", model=outside))
    )
    with pytest.raises(WorkerRejected, match=r"controls\.2\.model"):
        client.submit("DIFFUSION", make_request(settings=disabled, controls=maps, images=images))
    # Everything inside (or a hub id) passes the check; this worker may then lack torch for the engine.
    try:
        job_id = client.submit("DIFFUSION", make_request(settings=inside, controls=maps, images=images))
    except EngineUnavailable as unavailable:
        assert unavailable.engine_id == "DIFFUSION"
    else:
        client.cancel(job_id)


# -- the real engine, warm models, release, shutdown ------------------------------------------------------


def test_neural_style_through_the_worker_matches_in_process(worker):
    request = make_request((96, 128), settings=NeuralStyleSettings(style_preset="style_05"))
    local = get_engine("NEURAL_STYLE").run(request)
    with WorkerClient(worker.url, worker.token, precision="exact") as exact:
        remote = exact.run("NEURAL_STYLE", request)
        health = exact.health()
    np.testing.assert_allclose(remote.image, local.image, atol=1e-5)
    assert remote.info["engine"] == "NEURAL_STYLE" and remote.info["models"] == local.info["models"]
    neural = next(row for row in health["engines"] if row["id"] == "NEURAL_STYLE")
    assert neural["warm"] is True

    # Warm: the second run does not load the model again.
    with WorkerClient(worker.url, worker.token) as auto:
        again = auto.run("NEURAL_STYLE", request)
        assert again.info["timings"]["load"] < 0.01
        np.testing.assert_allclose(again.image, local.image, atol=2e-3)  # beauty sent as unorm16
        released = auto.release()
        assert "NEURAL_STYLE" in released["released"]
        assert not next(row for row in auto.health()["engines"] if row["id"] == "NEURAL_STYLE")["warm"]


def test_shutdown_stops_the_worker(tmp_path):
    running = start_worker(stderr=open(tmp_path / "log", "wb"))
    try:
        client = WorkerClient(running.url, running.token)
        job_id = client.submit("TEST_STEPS", steps_request(steps=100, step_seconds=0.1))
        _wait_state(client, job_id, {"running"})
        client.shutdown()
        assert running.proc.wait(5) == 0
        with pytest.raises(
            WorkerUnavailable, match=re.escape("could not be reached (connection refused) while checking")
        ):
            client.health()
    finally:
        running.kill()
    assert "shutdown requested" in (tmp_path / "log").read_text()


def test_engines_do_not_inherit_the_token(client):
    # The worker removes the variable after reading it, so an engine's own subprocesses never see it.
    result = client.run("TEST_STEPS", steps_request(steps=0))
    assert result.info["token_in_environ"] is False


def test_a_reply_cut_off_mid_body_is_a_lost_worker():
    # A worker killed while it sends a chunked reply: requests reads the body inside the request itself and
    # raises ChunkedEncodingError, which must read as "the worker is gone" like any broken connection.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'100\r\n{"ok": tr'  # promises 256 bytes, sends 9, then the process is gone
            )

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    try:
        with WorkerClient(f"http://127.0.0.1:{port}", "token", timeout=5) as client:
            with pytest.raises(WorkerUnavailable):
                client.health()
            assert client.unreachable
    finally:
        server.join(5)
        listener.close()
