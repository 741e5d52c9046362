# SPDX-License-Identifier: GPL-3.0-or-later
"""`DiffusionEngine.run_batch` on the tiny models: frames that share their settings denoise as one batch, each
from its own seed's noise, and come out as they would alone (to the last bits batched kernels may change);
a cancelled frame is dropped while the others finish; what cannot share a run runs alone, exactly as `run`.
"""

import threading
from dataclasses import replace

import numpy as np
import pytest

from stylepass_core.engine_api import Aborted, BatchItem, Regions
from stylepass_core.engines.diffusion import ControlUnit, Lora

pytestmark = pytest.mark.needs_torch

# Batched matrix products add in another order than single ones: on this CPU the pictures differ by about
# 1e-6. Anything near the size of a real change (a seed, a picture, a setting: 1e-2 and more) fails.
BATCH_TOLERANCE = 1e-4


def _frame(request, shift: int):
    """The request with its pictures moved `shift` pixels right: another frame of the shot."""
    return replace(
        request,
        beauty=np.roll(request.beauty, shift, axis=1),
        controls={name: np.roll(array, shift, axis=1) for name, array in request.controls.items()},
    )


def _controlled(tiny) -> dict:
    return {
        "controls": (
            ControlUnit(map="depth", model=str(tiny.cn_depth), weight=0.8),
            ControlUnit(map="normal", model=str(tiny.cn_normal), weight=0.6),
        ),
        "loras": (Lora(file=str(tiny.lora), weight=0.8),),
        "denoise": 0.5,
        "steps": 4,
    }


@pytest.mark.parametrize("kind", ["txt2img", "controlnets+img2img+lora"])
def test_a_batch_equals_its_frames_run_alone(engine, make_request, tiny, kind):
    values = _controlled(tiny) if kind != "txt2img" else {}
    # Without ControlNets or img2img a frame's pictures are not used: there, the seeds tell frames apart.
    frames = ((3, 0), (3, 9), (7, 20)) if values else ((3, 0), (4, 0), (7, 0))
    requests = [_frame(make_request(seed=seed, size=(64, 96), **values), shift) for seed, shift in frames]
    alone = [engine.run(request) for request in requests]
    messages: list[list[str]] = [[], [], []]
    items = [
        BatchItem(request, progress=_Messages(messages[index])) for index, request in enumerate(requests)
    ]
    assert len({engine.batch_key(request) for request in requests}) == 1
    batched = engine.run_batch(items)
    for index, (one, together) in enumerate(zip(alone, batched, strict=True)):
        assert not isinstance(together, BaseException), together
        np.testing.assert_allclose(together.image, one.image, atol=BATCH_TOLERANCE, err_msg=f"frame {index}")
        assert together.info["batch"] == {"size": 3, "index": index}
        assert together.info["seed"] == requests[index].seed
        assert together.info["loaded"] == []  # warm from the single runs: the batch loads nothing
        assert "batch" not in one.info
        # Every frame heard every step of the shared run.
        assert [m for m in messages[index] if m.startswith("Denoising step")] == [
            f"Denoising step {n}/{one.info['steps_run']}" for n in range(1, one.info["steps_run"] + 1)
        ]
    # The frames are their own: another picture or another seed.
    assert float(np.abs(batched[0].image - batched[1].image).max()) > 1e-2
    assert float(np.abs(batched[1].image - batched[2].image).max()) > 1e-2
    if kind != "txt2img":
        assert batched[0].info["mode"] == "img2img" and len(batched[0].info["controlnets"]) == 2


def test_b_a_cancelled_frame_is_dropped_and_the_others_finish(engine, make_request):
    requests = [_frame(make_request(seed=1, steps=12), shift) for shift in (0, 5, 11)]
    alone = engine.run(requests[0]).image
    cancel_one = _CancelAt(3)
    items = [
        BatchItem(requests[0]),
        BatchItem(requests[1], cancel_one, cancel_one.abort),
        BatchItem(requests[2]),
    ]
    outcomes = engine.run_batch(items)
    assert isinstance(outcomes[1], Aborted), outcomes[1]
    # The cancelled frame heard no step after its cancel; the run went on for the others.
    assert cancel_one.steps_after_cancel == 0
    np.testing.assert_allclose(outcomes[0].image, alone, atol=BATCH_TOLERANCE)
    assert outcomes[2].info["steps_run"] == 12 and outcomes[2].info["batch"]["size"] == 3

    # All cancelled: the shared run stops between two steps, and the engine serves the next frame.
    everyone = [_CancelAt(2) for _ in range(2)]
    outcomes = engine.run_batch([BatchItem(r, c, c.abort) for r, c in zip(requests, everyone, strict=False)])
    assert all(isinstance(outcome, Aborted) for outcome in outcomes), outcomes
    assert max(len(c.steps) for c in everyone) < 12
    np.testing.assert_array_equal(engine.run(requests[0]).image, alone)


def test_c_what_cannot_share_a_run_runs_alone_exactly(engine, make_request):
    house = make_request(seed=2)
    boat = make_request(seed=2, prompt="a boat on the sea")
    layer = np.zeros((64, 64), np.int32)
    layer[:, 32:] = 1
    regional = replace(
        make_request(seed=2),
        regions=Regions(layer=layer, names=("Boat",), settings=(boat.settings,)),
    )
    broken = replace(make_request(seed=2), controls={}, settings=house.settings.replace(
        controls=(ControlUnit(map="depth", model="missing-controlnet"),)))  # fmt: skip
    assert engine.batch_key(house) != engine.batch_key(boat)
    assert engine.batch_key(regional) is None
    outcomes = engine.run_batch([BatchItem(r) for r in (house, boat, regional, broken)])
    for request, outcome in zip((house, boat, regional), outcomes, strict=False):
        # Each alone: the single path, bit for bit, with no batch in its record.
        np.testing.assert_array_equal(outcome.image, engine.run(request).image)
        assert "batch" not in outcome.info
    assert isinstance(outcomes[3], ValueError), outcomes[3]


class _Messages:
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def update(self, done: int, total: int, message: str = "") -> None:
        self.into.append(message)


class _CancelAt:
    """A frame's progress that cancels the frame at its `step`th denoising step, and counts what came after."""

    def __init__(self, step: int) -> None:
        self.abort = threading.Event()
        self.step = step
        self.steps: list[str] = []
        self.steps_after_cancel = 0

    def update(self, done: int, total: int, message: str = "") -> None:
        if not message.startswith("Denoising step"):
            return
        if self.abort.is_set():
            self.steps_after_cancel += 1
        self.steps.append(message)
        if len(self.steps) >= self.step:
            self.abort.set()
