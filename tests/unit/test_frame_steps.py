# SPDX-License-Identifier: GPL-3.0-or-later
"""The animation step machine never waits on a running job, so a modal operator answers ESC at once.

Timing-free: the jobs here are controlled by the test, and `wait()` raises, so a single blocking call fails.
"""

import threading

import pytest

from stylepass_core.engine_api import Aborted
from stylepass_core.errors import StylepassError
from stylepass_core.frame_steps import Collected, FrameTally, frame_steps, run_to_end


class FakeJob:
    """A job the test finishes by hand; waiting on it is a test failure."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.done = False
        self.error: BaseException | None = None
        self.result = f"result {frame}"
        self.cancel_requests = 0

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Aborted)

    def cancel(self, wait=None) -> None:
        self.cancel_requests += 1

    def wait(self, timeout=None) -> bool:
        raise AssertionError("the step machine waited on a job")

    def finish(self, error: BaseException | None = None) -> None:
        self.done, self.error = True, error


class Loop:
    def __init__(self, frames, current=()):
        self.frames, self.current = frames, set(current)
        self.jobs: dict[int, FakeJob] = {}
        self.events: list[str] = []
        self.stop = threading.Event()
        self.tally = FrameTally()

    def plan(self, frame):
        self.events.append(f"plan {frame}")
        return None if frame in self.current else f"work {frame}"

    def launch(self, frame, work):
        self.events.append(f"launch {frame}")
        self.jobs[frame] = FakeJob(frame)
        return self.jobs[frame]

    def collect(self, frame, job):
        self.events.append(f"collect {frame}")

    def skipped(self, frame):
        self.events.append(f"skipped {frame}")

    def steps(self, overlap=True, ahead=1):
        return frame_steps(
            self.frames,
            self.plan,
            self.launch,
            self.collect,
            self.stop,
            self.tally,
            overlap,
            self.skipped,
            ahead=ahead,
        )


def test_a_running_job_never_blocks_a_step_and_the_next_passes_overlap_it():
    loop = Loop([1, 2])
    steps = loop.steps()
    assert next(steps).message == "frame 1: passes rendered"
    assert next(steps).message == "frame 1: stylising"
    assert next(steps).message == "frame 2: passes rendered"  # rendered while frame 1's engine runs
    for _ in range(100):  # a slow engine: every step returns at once with a wait
        step = next(steps)
        assert step.waiting and step.job is loop.jobs[1] and step.frame == 1
    loop.jobs[1].finish()
    assert next(steps).message == "frame 2: stylising"
    assert loop.events == ["plan 1", "launch 1", "plan 2", "collect 1", "launch 2"]
    assert next(steps).waiting
    loop.jobs[2].finish()
    with pytest.raises(StopIteration):
        next(steps)
    assert loop.tally.stylised == [1, 2] and not loop.tally.stopped_early


def test_escape_is_answered_while_the_job_runs_by_cancelling_it():
    loop = Loop([1, 2, 3])
    steps = loop.steps()
    for _ in range(4):
        next(steps)
    assert next(steps).waiting
    loop.stop.set()  # ESC
    step = next(steps)  # answered at the very next step, with the job still running
    assert step.waiting and step.message == "frame 1: stopping" and loop.jobs[1].cancel_requests == 1
    next(steps)
    assert loop.jobs[1].cancel_requests == 1  # asked once
    loop.jobs[1].finish(Aborted("stop"))
    assert list(steps) == []
    assert loop.tally.stopped_early and loop.tally.stylised == [] and 2 not in loop.jobs


def test_with_replicas_several_frames_are_planned_ahead_and_still_launched_in_order():
    """`ahead` 3 (a worker with three replicas): frames 2-4 are planned (their passes and early engine work
    handed out) while frame 1 runs; launching and collecting stay one at a time, in frame order; a current
    frame waits for the planned frames before it; the machine reads `ahead` as it goes."""
    loop = Loop([1, 2, 3, 4, 5, 6, 7], current={6})
    far = {"ahead": 3}
    steps = loop.steps(ahead=lambda: far["ahead"])

    def until_waiting():
        return next(step for step in steps if step.waiting)

    assert until_waiting().job is loop.jobs[1]
    assert loop.events == ["plan 1", "launch 1", "plan 2", "plan 3", "plan 4"]
    loop.jobs[1].finish()
    assert until_waiting().job is loop.jobs[2]
    assert loop.events[5:] == ["collect 1", "launch 2", "plan 5"]
    far["ahead"] = 1  # the worker now says one replica: no more planned beyond the running frame
    for frame in (2, 3, 4, 5, 7):
        loop.jobs[frame].finish()
        if frame != 7:
            until_waiting()
    assert list(steps) == []
    order = [e for e in loop.events if e.split()[0] in ("launch", "collect", "skipped")]
    assert order == [
        "launch 1", "collect 1", "launch 2", "collect 2", "launch 3", "collect 3", "launch 4", "collect 4",
        "launch 5", "collect 5", "skipped 6", "launch 7", "collect 7",
    ]  # fmt: skip
    assert loop.tally.stylised == [1, 2, 3, 4, 5, 7] and loop.tally.skipped == [6]


def test_skipped_frames_are_reported_after_the_frame_before_is_collected():
    loop = Loop([1, 2, 3], current={2})
    steps = loop.steps()
    next(steps), next(steps)
    assert next(steps).waiting  # frame 2 is current, but frame 1 is still being stylised
    loop.jobs[1].finish()
    assert next(steps).message == "frame 2: up to date, skipped"
    assert loop.events[:4] == ["plan 1", "launch 1", "plan 2", "collect 1"]
    assert loop.events[4] == "skipped 2"


def test_a_failed_frame_raises_with_its_number_and_keeps_earlier_frames():
    loop = Loop([1, 2])
    steps = loop.steps(overlap=False)
    next(steps)
    next(steps)
    loop.jobs[1].finish(StylepassError("no model"))
    with pytest.raises(StylepassError, match="Frame 1 failed: no model"):
        list(steps)


def test_closing_the_machine_cancels_the_running_job():
    loop = Loop([1, 2])
    steps = loop.steps()
    next(steps), next(steps)
    steps.close()  # Blender ends the operator (file load, quit)
    assert loop.jobs[1].cancel_requests == 1


def test_run_to_end_waits_between_steps_for_scripts():
    class WaitingJob(FakeJob):
        def wait(self, timeout=None):
            self.finish()
            return True

    loop = Loop([1, 2, 3])
    loop.launch = lambda frame, work: loop.jobs.setdefault(frame, WaitingJob(frame))
    reported = []
    run_to_end(loop.steps(), reported.append)
    assert loop.tally.stylised == [1, 2, 3] and not any(step.waiting for step in reported)


def test_a_job_may_finish_other_frames_and_count_its_own_as_skipped():
    """Frames between keyframes are written by the keyframe's job: their own job finishes nothing, and a
    current keyframe whose job only writes the frames before it counts as skipped."""
    loop = Loop([1, 2, 3])
    finished = {1: Collected(), 2: Collected(), 3: Collected(stylised=[1, 2], skipped=[3])}
    loop.collect = lambda frame, job: finished[frame]
    steps = loop.steps(overlap=False)
    for frame in (1, 2, 3):
        step = next(steps)
        while not step.waiting:
            step = next(steps)
        assert loop.tally.stylised == []  # nothing is written before the last job
        loop.jobs[frame].finish()
    for _ in steps:
        pass
    assert loop.tally.stylised == [1, 2] and loop.tally.skipped == [3]
