# SPDX-License-Identifier: GPL-3.0-or-later
"""Run long work on a thread and hand its progress to the UI thread through a queue.

Blender's data may only be touched on the main thread, so the UI side polls `BackgroundJob.poll()` from a
modal timer and reads plain progress events; ESC becomes `cancel()`, which sets the abort event the work
checks between steps.
"""

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .engine_api import Aborted, Progress, check_abort


@dataclass(frozen=True)
class ProgressEvent:
    done: int
    total: int
    message: str
    preview: tuple[bytes, str] | None = None  # an engine's picture of the step (encoded bytes, "jpeg"/"png")

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))


class QueueProgress:
    """A `Progress` that forwards updates into a thread-safe queue and raises `Aborted` when asked to stop."""

    def __init__(self, events: "queue.Queue[ProgressEvent]", abort: threading.Event) -> None:
        self._events = events
        self._abort = abort
        self._last = (0, 0, "")

    def update(self, done: int, total: int, message: str = "") -> None:
        self._last = (done, total, message)
        self._events.put(ProgressEvent(done, total, message))
        check_abort(self._abort)

    def preview(self, data: bytes, kind: str) -> None:
        """An engine's step preview (a ComfyUI server sends them), with the bar where it was."""
        self._events.put(ProgressEvent(*self._last, preview=(data, kind)))


class BackgroundJob:
    """`work(progress, abort)` on a daemon thread; result or error collected for the main thread."""

    def __init__(
        self, work: Callable[[QueueProgress, threading.Event], Any], name: str = "stylepass-job"
    ) -> None:
        self.abort = threading.Event()
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        self._work = work
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = 0.0

    def start(self) -> "BackgroundJob":
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._work(QueueProgress(self._events, self.abort), self.abort)
        except BaseException as error:  # handed to the main thread, which reports it
            self.error = error

    @property
    def done(self) -> bool:
        return self.started > 0 and not self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Aborted)

    def poll(self) -> list[ProgressEvent]:
        """Progress events since the last poll (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def cancel(self, wait: float | None = None) -> None:
        """Ask the work to stop at its next step; optionally wait up to `wait` seconds for it."""
        self.abort.set()
        if wait is not None and self._thread.is_alive():
            self._thread.join(wait)

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done


class PartProgress:
    """A `Progress` for one part of a longer job: its own done/total lands in [start, end] of the whole.

    A Stylise Frame is a pass render and then an engine run; each reports against its own total, and the
    artist sees one bar that moves forward through both.
    """

    STEPS = 1000

    def __init__(self, progress: Progress, start: float, end: float) -> None:
        self._progress = progress
        self._start = start
        self._span = end - start

    def update(self, done: int, total: int, message: str = "") -> None:
        fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        self._progress.update(round((self._start + self._span * fraction) * self.STEPS), self.STEPS, message)

    def preview(self, data: bytes, kind: str) -> None:
        forward = getattr(self._progress, "preview", None)
        if forward is not None:
            forward(data, kind)


class SampleClock:
    """How far a render is between the sample counts it reports.

    Cycles in a background Blender reports its samples rarely (after the first one only every 30 s), so a
    2000-sample pass render would sit at "sample 1" for half a minute. Between two reports the estimate moves
    on at the pace seen so far, counted from the render's start (which includes the scene sync, so the pace is
    if anything too slow), and never reaches the next count before Cycles reports it.
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.done = 0
        self.total = 0
        self.at = 0.0

    def started(self, now: float) -> None:
        self.start, self.done, self.total, self.at = now, 0, 0, now

    def reported(self, done: int, total: int, now: float) -> None:
        if self.start is None:
            self.start = now
        self.done, self.total, self.at = done, max(1, total), now

    def estimate(self, now: float) -> float | None:
        """Samples done by `now` (fractional), or None before the first report."""
        if self.start is None or self.total == 0:
            return None
        if self.done <= 0 or self.at <= self.start:
            return float(self.done)
        pace = (self.at - self.start) / self.done  # seconds per sample so far
        ahead = (now - self.at) / pace
        return min(self.done + ahead, max(float(self.done), self.total - 0.5))
