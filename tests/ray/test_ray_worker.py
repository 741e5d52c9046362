# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker on Ray Serve through the unchanged `WorkerClient`: the same frames as the plain worker, models
kept warm per replica, jobs spread over both replicas, cancel, a replica killed mid-job, the token, and a
clean stop on SIGTERM.

The tests share one cluster (session fixture) and run in file order: the replica kill comes last but one,
the stop of the whole cluster last.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
import requests
from ray_helpers import Recorder, descendants, diffusion_request, wait_until
from worker_process import process_gone

from stylepass_core.engine_api import Aborted
from stylepass_core.worker.client import WorkerAuthError, WorkerClient


def client_for(worker) -> WorkerClient:
    return WorkerClient(worker.url, worker.token)


def test_token_is_required(ray_worker):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = requests.get(f"{ray_worker.url}/v1/health", headers=headers, timeout=10)
        assert answer.status_code == 401, answer.text
        assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer")
    answer = requests.post(f"{ray_worker.url}/v1/jobs", data=b"x" * 100, timeout=10)
    assert answer.status_code == 401
    with pytest.raises(WorkerAuthError, match="refused the token"):
        WorkerClient(ray_worker.url, "not-the-token").health()
    client = client_for(ray_worker)
    health = client.health()
    assert health["instance"] == ray_worker.ready["instance"]
    assert client.slots() == 2  # what Blender keeps in flight: replicas x jobs per replica
    assert {row["id"] for row in health["engines"] if row["available"]} >= {"DIFFUSION"}


def test_a_still_equals_the_plain_workers(ray_worker, models, reference):
    recorder = Recorder()
    with client_for(ray_worker) as client:
        # A job of a few seconds: long enough for the replica's progress events (two a second) to show steps.
        result = client.run("DIFFUSION", diffusion_request(models.a, seed=5, size=128, steps=16), recorder)
    assert np.array_equal(result.image, reference(models.a, 5, size=128, steps=16))
    facts = result.info["ray"]
    assert facts["replica"] and facts["pid"] and facts["attempts"] == 1
    assert facts["model_id"].startswith("DIFFUSION:tiny-a:")
    # The engine's own steps reached the client's long polls through the board (a replica sends at most 2
    # progress events a second, and a poll sees the latest).
    assert any(m.startswith("Denoising step") for m in recorder.messages), recorder.messages
    assert "Loading models" in recorder.messages


def test_b_multiplexing_each_replica_loads_each_model_once(ray_worker, models, reference):
    with client_for(ray_worker) as client:
        results = []
        for index in range(8):
            model = models.a if index % 2 == 0 else models.b
            results.append((model, client.run("DIFFUSION", diffusion_request(model, seed=index))))
    assert np.array_equal(results[0][1].image, reference(models.a, 0))
    assert np.array_equal(results[1][1].image, reference(models.b, 1))
    ids = {result.info["ray"]["model_id"] for _, result in results}
    assert len(ids) == 2, ids

    # Each model went to a replica that had it warm: no replica made a warm engine for a model twice, and no
    # engine loaded its base twice.
    replicas = ray_worker.replica_stats()
    assert len(replicas) == 2
    for replica in replicas:
        assert all(count == 1 for count in replica["loads"].values()), replica
        for model_id, counts in replica["load_counts"].items():
            assert counts.get("base", 0) <= 1, (replica["replica"], model_id, counts)

    # Three more model ids (copies of tiny-a under other names): five on two replicas that keep two each, so
    # a replica evicts its least recently used one, which releases that engine's models (`WarmEngine`).
    with client_for(ray_worker) as client:
        extra = [
            client.run("DIFFUSION", diffusion_request(m, seed=1)) for m in (models.c, models.d, models.e)
        ]
    for result in extra:
        assert np.array_equal(result.image, reference(models.a, 1))
    replicas = ray_worker.replica_stats()
    assert all(len(replica["models"]) <= 2 for replica in replicas), replicas
    assert sum(sum(replica["evictions"].values()) for replica in replicas) >= 1, replicas
    for replica in replicas:
        assert set(replica["loaded"]) == set(replica["models"])  # evicted engines are gone from the replica


def test_d_frames_spread_over_both_replicas_and_equal_one_worker(ray_worker, models, reference):
    # Jobs of about a second: longer than Serve takes to send a job to a replica without its model.
    seeds = list(range(20, 28))
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            with client_for(ray_worker) as client:
                results[seed] = client.run("DIFFUSION", diffusion_request(models.a, seed, size=128, steps=4))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    seconds = time.perf_counter() - started
    assert not errors, errors
    replicas = {results[seed].info["ray"]["replica"] for seed in seeds}
    assert len(replicas) == 2, f"all {len(seeds)} frames ran on {replicas} ({seconds:.1f} s)"
    for seed in seeds:
        assert np.array_equal(results[seed].image, reference(models.a, seed, size=128, steps=4)), seed


def test_e_cancel_stops_the_engine_between_steps(ray_worker, models):
    abort = threading.Event()

    def on_update(done: int, total: int, message: str) -> None:
        if message.startswith("Denoising step ") and int(message.split()[2].split("/")[0]) >= 2:
            abort.set()

    recorder = Recorder(on_update=on_update)
    before = {r["replica"]: r["jobs"].get("cancelled", 0) for r in ray_worker.replica_stats()}
    started = time.perf_counter()
    with client_for(ray_worker) as client:
        with pytest.raises(Aborted):
            client.run("DIFFUSION", diffusion_request(models.a, seed=3, size=96, steps=60), recorder, abort)
    assert time.perf_counter() - started < 30
    steps = [m for m in recorder.messages if m.startswith("Denoising step")]
    assert steps and len(steps) < 60

    def cancelled_on_a_replica():
        now = ray_worker.replica_stats()
        counts = {r["replica"]: r["jobs"].get("cancelled", 0) for r in now}
        idle = all(not r["running"] for r in now)
        return idle and any(counts[k] > before.get(k, 0) for k in counts)

    assert wait_until(cancelled_on_a_replica, 30, 0.2), ray_worker.replica_stats()
    with client_for(ray_worker) as client:  # the replica is free again
        assert client.run("DIFFUSION", diffusion_request(models.a, seed=4)).image.shape == (64, 64, 3)


def test_release_frees_every_replica(ray_worker, models):
    with client_for(ray_worker) as client:
        client.run("DIFFUSION", diffusion_request(models.a, seed=8))
        released = client.release()
        assert released["released"] == ["DIFFUSION"]
        for replica in ray_worker.replica_stats():
            assert all(not models for models in replica["loaded"].values()), replica
        client.run("DIFFUSION", diffusion_request(models.a, seed=8))  # loads again where it runs


def test_c_replica_killed_mid_job_is_retried_and_others_unaffected(ray_worker, models, reference):
    long_request = diffusion_request(models.a, seed=11, size=128, steps=40)
    outcome: dict[str, object] = {}

    def run(name: str, request) -> None:
        try:
            with client_for(ray_worker) as client:
                outcome[name] = client.run("DIFFUSION", request)
        except BaseException as exc:
            outcome[name] = exc

    long_job = threading.Thread(target=run, args=("long", long_request))
    long_job.start()

    def victim():
        cluster = ray_worker.cluster()
        for job_id, replica_id in cluster["running"].items():
            facts = cluster["replicas"][replica_id]
            if facts["running"].get(job_id, "").startswith("DIFFUSION:tiny-a:"):
                return facts
        return None

    facts = wait_until(victim, 60, 0.1)
    assert facts, ray_worker.cluster()
    time.sleep(1.0)  # well into its steps
    short_job = threading.Thread(target=run, args=("short", diffusion_request(models.b, seed=12)))
    short_job.start()
    os.kill(facts["pid"], signal.SIGKILL)
    long_job.join(180)
    short_job.join(180)

    long_result, short_result = outcome["long"], outcome["short"]
    assert not isinstance(long_result, BaseException), long_result
    assert not isinstance(short_result, BaseException), short_result
    info = long_result.info["ray"]
    assert info["attempts"] == 2 and info["replica"] != facts["replica"], info
    assert info["lost_replicas"][0]["pid"] == facts["pid"]
    assert "ActorDiedError" in info["lost_replicas"][0]["error"]
    assert np.array_equal(long_result.image, reference(models.a, 11, size=128, steps=40))
    assert np.array_equal(short_result.image, reference(models.b, 12))
    # Serve replaces the dead replica.
    assert wait_until(lambda: len(ray_worker.replica_stats()) == 2, 90, 1.0)


def test_sigterm_drains_and_stops_everything(ray_worker):
    pid = ray_worker.started.proc.pid
    below = descendants(pid)
    assert below, "Ray's processes run below the entry point"
    ray_worker.disconnect()
    assert ray_worker.started.stop(90) == 0, ray_worker.started.log_tail()
    assert wait_until(lambda: all(process_gone(p) for p in below), 30, 0.2), [
        p for p in below if not process_gone(p)
    ]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{ray_worker.url}/v1/health", timeout=5)
