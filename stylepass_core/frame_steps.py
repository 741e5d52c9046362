# SPDX-License-Identifier: GPL-3.0-or-later
"""The frame loop of a stylised animation as a step machine that never waits.

Each `next()` does one short piece of main-thread work (decide whether a frame is current, render its passes,
collect a finished frame) or, while the engine job of a frame still runs, returns at once with a `waiting`
step. So a modal operator can call it from a timer and Blender keeps drawing and reading ESC however slow the
engine is; a script or a render farm drives the same machine and waits on `FrameStep.job` between steps.

While the engine works on frame N, the caller already renders the passes of frame N + 1 (`overlap`), or of
frames N + 1 .. N + k with `ahead` k (an engine on several replicas starts their engine work early: `plan`
can hand that out; jobs are still launched and collected one at a time, in frame order).
Stopping (`stop` set) cancels the running job; frames already written stay on disk.

    for step in frame_steps(frames, plan, launch, collect, stop):
        ...   # update progress; in a modal operator return to Blender between steps

bpy-free: the callbacks hold everything that touches Blender.
"""

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import StylepassError


class Job(Protocol):
    """What the machine needs of a running job (`jobs.BackgroundJob` has it)."""

    done: bool
    cancelled: bool
    error: BaseException | None
    result: Any

    def cancel(self, wait: float | None = None) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class FrameStep:
    """One step's report.

    Attributes:
        done: Frames finished (stylised or skipped). total: Frames in the range.
        frame: The frame the step was about. message: What happened, for the status bar.
        job: The running engine job when the step is a wait (`waiting`), else None.
    """

    done: int
    total: int
    frame: int
    message: str
    job: Job | None = None

    @property
    def waiting(self) -> bool:
        return self.job is not None


@dataclass
class FrameTally:
    """What the loop did, filled in as it goes."""

    stylised: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    stopped_early: bool = False


# plan(frame) -> the work to launch for the frame, or None when its result is current (skipped).
Plan = Callable[[int], Any]
# launch(frame, work) -> a started job.
Launch = Callable[[int, Any], Job]


@dataclass
class Collected:
    """What a job finished, when that is not simply its own frame: a frame may be written later by another
    frame's job (an animation's frames between keyframes are written with the keyframe after them), and a job
    may only serve other frames (its own frame was current: skipped)."""

    stylised: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


# collect(frame, job) -> on the main thread once the job finished without error: None when the job stylised
# its frame, else what it finished.
Collect = Callable[[int, Job], Collected | None]
# skipped(frame) -> None, after the frame before it was collected, for a frame `plan` found current.
Skipped = Callable[[int], None]


def frame_steps(
    frames: list[int],
    plan: Plan,
    launch: Launch,
    collect: Collect,
    stop: threading.Event,
    tally: FrameTally | None = None,
    overlap: bool = True,
    skipped: Skipped | None = None,
    ahead: Callable[[], int] | int = 1,
) -> Iterator[FrameStep]:
    """Stylise `frames` in order, one job at a time; see the module docstring. `ahead` (or what it returns,
    read as the frames go) is how many frames are planned beyond the running one (1: the next).

    Raises:
        StylepassError: a frame's job failed (frames before it stay on disk), or `plan` refused a frame.
    """
    tally = tally if tally is not None else FrameTally()
    total = len(frames)
    pending: tuple[int, Job] | None = None
    planned: deque[tuple[int, Any]] = deque()  # planned, not launched yet (frame order)

    def how_far() -> int:
        return max(1, int(ahead() if callable(ahead) else ahead))

    def step(frame: int, message: str, job: Job | None = None) -> FrameStep:
        return FrameStep(len(tally.stylised) + len(tally.skipped), total, frame, message, job)

    def finish_pending() -> Iterator[FrameStep]:
        nonlocal pending
        frame, job = pending
        cancelling = False
        while not job.done:
            if stop.is_set() and not cancelling:
                job.cancel()
                cancelling = True
            yield step(frame, f"frame {frame}: {'stopping' if cancelling else 'stylising'}", job)
        pending = None
        if job.cancelled:
            tally.stopped_early = True
            return
        if job.error is not None:
            if isinstance(job.error, StylepassError):
                raise StylepassError(f"Frame {frame} failed: {job.error}") from job.error
            raise job.error
        collected = collect(frame, job)
        if collected is None:
            tally.stylised.append(frame)
        else:
            tally.stylised.extend(collected.stylised)
            tally.skipped.extend(collected.skipped)

    def launch_next() -> Iterator[FrameStep]:
        """Collect the running job (if any), then launch the first planned frame."""
        nonlocal pending
        if pending is not None:
            yield from finish_pending()
            if tally.stopped_early:
                return
        frame, work = planned.popleft()
        pending = (frame, launch(frame, work))
        if not overlap:
            yield from finish_pending()
        yield step(frame, f"frame {frame}: stylising")

    try:
        for frame in frames:
            if stop.is_set():
                tally.stopped_early = True
                break
            work = plan(frame)
            if work is None:
                while planned and not tally.stopped_early:  # the frames before it come first
                    yield from launch_next()
                if tally.stopped_early:
                    break
                if pending is not None:
                    yield from finish_pending()
                if skipped is not None:
                    skipped(frame)
                tally.skipped.append(frame)
                yield step(frame, f"frame {frame}: up to date, skipped")
                continue
            yield step(frame, f"frame {frame}: passes rendered")
            planned.append((frame, work))
            if pending is None or len(planned) >= how_far():
                yield from launch_next()
                if tally.stopped_early:
                    break
        while planned and not tally.stopped_early:
            yield from launch_next()
        if pending is not None:
            yield from finish_pending()
        if stop.is_set() and len(tally.stylised) + len(tally.skipped) < total:
            tally.stopped_early = True
    finally:
        if pending is not None:
            # Stopped by an error or closed early: end the running frame (its files are atomic either way).
            pending[1].cancel(wait=10.0)


def run_to_end(steps: Iterator[FrameStep], report: Callable[[FrameStep], None] | None = None) -> None:
    """Drive the machine synchronously (background mode, scripts): wait on each running job between steps."""
    for current in steps:
        if current.waiting:
            current.job.wait()
        elif report is not None:
            report(current)
