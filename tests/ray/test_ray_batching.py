# SPDX-License-Identifier: GPL-3.0-or-later
"""Request batching on Ray Serve (`--max-batch-size`): one replica gathers the jobs of one model that arrive
together into one engine call (`@serve.batch`, the engine's `run_batch`), each job still its own stream with
its own progress, result and cancel. The frames stay as the plain worker makes them, to the last bits batched
kernels may change.

Its own worker (1 replica, batches of up to 4, 1 s to fill one), started and stopped in this module, before
the other modules' 2-replica worker starts (file order).
"""

import threading
import time

import numpy as np
import pytest
from ray_helpers import Recorder, diffusion_request, serve_worker, wait_until

from stylepass_core.engine_api import Aborted
from stylepass_core.worker.client import WorkerClient

BATCH = 4
# Batched matrix products add in another order: about 1e-6 on this CPU. A real change is 1e-2 and more.
BATCH_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def batching(models, tmp_path_factory):
    yield from serve_worker(
        models, tmp_path_factory, 1, "--max-batch-size", str(BATCH), "--batch-wait", "1.0"
    )


def _together(worker, jobs: list[tuple], abort_for: dict | None = None) -> list:
    """Run `jobs` ((model, seed, size, steps) each) from one thread each, all at once; outcomes in order."""
    outcomes: list = [None] * len(jobs)
    recorders = [Recorder() for _ in jobs]

    def one(index: int) -> None:
        model, seed, size, steps = jobs[index]
        abort, on_update = (abort_for or {}).get(index, (None, None))
        recorders[index].on_update = on_update
        try:
            with WorkerClient(worker.url, worker.token) as client:
                request = diffusion_request(model, seed, size, steps)
                outcomes[index] = client.run("DIFFUSION", request, recorders[index], abort)
        except BaseException as exc:  # the job's outcome, checked by the test
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return outcomes


def test_a_frames_of_one_model_run_as_one_batch_and_equal_single_runs(batching, models, reference):
    with WorkerClient(batching.url, batching.token) as client:
        assert client.slots() == BATCH  # what Blender keeps in flight: a batch's worth per replica
        client.run("DIFFUSION", diffusion_request(models.a, seed=1))  # warm, so the batch is all denoising
    jobs = [(models.a, seed, 64, 4) for seed in (30, 31, 32, 33)]
    outcomes = _together(batching, jobs)
    for (model, seed, size, steps), outcome in zip(jobs, outcomes, strict=True):
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.info["batch"]["size"] >= 2, outcome.info.get("batch")
        expected = reference(model, seed, size=size, steps=steps)
        np.testing.assert_allclose(outcome.image, expected, atol=BATCH_TOLERANCE, err_msg=f"seed {seed}")
    sizes = {o.info["batch"]["size"] for o in outcomes}
    assert sum(outcome.info["batch"]["size"] == max(sizes) for outcome in outcomes) == max(sizes)
    (replica,) = batching.replica_stats()
    assert replica["max_batch_size"] == BATCH
    assert sum(size * times for size, times in replica["batch_sizes"].items() if int(size) > 1) >= 4


def test_b_two_models_never_share_a_batch(batching, models, reference):
    jobs = [(models.a, 40, 64, 4), (models.b, 41, 64, 4), (models.a, 42, 64, 4), (models.b, 43, 64, 4)]
    outcomes = _together(batching, jobs)
    for (model, seed, size, steps), outcome in zip(jobs, outcomes, strict=True):
        assert not isinstance(outcome, BaseException), outcome
        np.testing.assert_allclose(
            outcome.image, reference(model, seed, size=size, steps=steps), atol=BATCH_TOLERANCE
        )
        # Serve splits a batch by model id: a batch holds at most this model's two frames.
        assert outcome.info.get("batch", {"size": 1})["size"] <= 2
        assert outcome.info["ray"]["model_id"].startswith(f"DIFFUSION:{model.name}:")


def test_c_a_cancelled_frame_leaves_its_batch_and_the_others_finish(batching, models, reference):
    abort = threading.Event()

    def on_update(done: int, total: int, message: str) -> None:
        if message.startswith("Denoising step ") and int(message.split()[2].split("/")[0]) >= 2:
            abort.set()

    before = batching.replica_stats()[0]["jobs"].get("cancelled", 0)
    jobs = [(models.a, seed, 96, 30) for seed in (50, 51, 52)]
    started = time.perf_counter()
    outcomes = _together(batching, jobs, abort_for={1: (abort, on_update)})
    assert isinstance(outcomes[1], Aborted), outcomes[1]
    for index in (0, 2):
        outcome = outcomes[index]
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.info["steps_run"] == 30 and outcome.info["batch"]["size"] == 3
        np.testing.assert_allclose(
            outcome.image, reference(models.a, jobs[index][1], size=96, steps=30), atol=BATCH_TOLERANCE
        )

    def counted():
        replica = batching.replica_stats()[0]
        return not replica["running"] and replica["jobs"].get("cancelled", 0) > before

    assert wait_until(counted, 30, 0.2), batching.replica_stats()
    assert time.perf_counter() - started < 170
