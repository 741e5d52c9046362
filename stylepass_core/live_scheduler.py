# SPDX-License-Identifier: GPL-3.0-or-later
"""When the live viewport preview starts an engine job, and which result it shows.

The viewport changes many times a second while the artist orbits or edits; the engine takes 0.1 s (neural
style) to seconds (diffusion). The rules, from what makes other tools' live modes stutter or lag:

- one job in flight and one latest-wins slot, never a queue: a newer view replaces the waiting one, so the
  picture shown is never more than one job behind the view;
- identical inputs (same hash) are never stylised twice: back to a view already shown or in flight is free;
- no waiting while the engine is fast; when its mean job takes longer than `slow_job`, a new view waits
  `grace` seconds for the edits to settle, but never longer than `max_wait` during continuous edits;
- `stop()` cancels the job in flight and drops the waiting view at once.

bpy-free and clock-injected: the Blender side calls `submit` on changes and `tick` from a timer (both on the
main thread); tests drive it with a fake clock and fake jobs.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class LiveJob(Protocol):
    """What the scheduler needs of a started job (`jobs.BackgroundJob` has it)."""

    done: bool
    cancelled: bool
    error: BaseException | None
    result: Any

    def cancel(self, wait: float | None = None) -> None: ...


@dataclass
class Shown:
    """A finished picture to show: its input's key, the result, and when its input was submitted."""

    key: str
    result: Any
    submitted: float
    finished: float

    @property
    def latency(self) -> float:
        """Seconds from the change that asked for it to the finished picture."""
        return self.finished - self.submitted


@dataclass
class _Pending:
    key: str
    request: Any
    submitted: float  # when this view was asked for
    first: float  # when the edits it belongs to began (for `max_wait`)


@dataclass
class _Running:
    key: str
    job: LiveJob
    submitted: float
    started: float


@dataclass
class LiveStats:
    """For the readout: finished pictures per second, the last latency, and whether a newer one is coming."""

    finished_times: list[float] = field(default_factory=list)
    job_seconds: list[float] = field(default_factory=list)
    last_latency: float | None = None
    working: bool = False

    def fps(self, now: float, window: float = 2.0) -> float:
        recent = [t for t in self.finished_times if now - t <= window]
        return len(recent) / window

    @property
    def mean_job(self) -> float | None:
        recent = self.job_seconds[-8:]
        return sum(recent) / len(recent) if recent else None


class LiveScheduler:
    """See the module docstring. `start(request)` starts a job and returns it."""

    def __init__(
        self,
        start: Callable[[Any], LiveJob],
        clock: Callable[[], float] = time.monotonic,
        grace: float = 0.25,
        slow_job: float = 1.5,
        max_wait: float = 3.0,
    ) -> None:
        self._start = start
        self._clock = clock
        self.grace = grace
        self.slow_job = slow_job
        self.max_wait = max_wait
        self._pending: _Pending | None = None
        self._running: _Running | None = None
        self._shown_key: str | None = None
        self.stats = LiveStats()
        self.errors: list[BaseException] = []

    @property
    def working(self) -> bool:
        """A picture newer than the one shown is on its way (in flight or waiting)."""
        return self._running is not None or self._pending is not None

    @property
    def in_flight(self) -> bool:
        """A job is running (the caller may wait to capture the view until it ends: the freshest input)."""
        return self._running is not None

    def submit(self, key: str, request: Any) -> None:
        """The view now needs the picture of `request` (its inputs hash to `key`). Never starts work itself."""
        now = self._clock()
        if self._pending is not None:
            first = self._pending.first
        else:
            first = now
        if key == self._shown_key and self._running is None:
            self._pending = None  # back to what is shown: nothing to do
            return
        if self._running is not None and key == self._running.key:
            self._pending = None  # the job in flight makes exactly this
            return
        self._pending = _Pending(key, request, now, first)

    def tick(self) -> Shown | None:
        """Collect a finished job and start the waiting view when allowed (main thread, never waits).

        Returns:
            The newest finished picture when one finished since the last tick, else None.
        """
        now = self._clock()
        shown = None
        running = self._running
        if running is not None and running.job.done:
            self._running = None
            if running.job.error is None and not running.job.cancelled:
                shown = Shown(running.key, running.job.result, running.submitted, now)
                self._shown_key = running.key
                self.stats.finished_times = [t for t in self.stats.finished_times if now - t <= 10.0] + [now]
                self.stats.job_seconds.append(now - running.started)
                self.stats.last_latency = shown.latency
            elif running.job.error is not None and not running.job.cancelled:
                self.errors.append(running.job.error)
        pending = self._pending
        if self._running is None and pending is not None:
            if pending.key == self._shown_key:
                self._pending = None
            elif self._may_start(pending, now):
                self._pending = None
                self._running = _Running(pending.key, self._start(pending.request), pending.submitted, now)
        self.stats.working = self.working
        return shown

    def _may_start(self, pending: _Pending, now: float) -> bool:
        mean = self.stats.mean_job
        if mean is None or mean <= self.slow_job:
            return True  # a fast engine never waits
        settled = now - pending.submitted >= self.grace
        return settled or now - pending.first >= self.max_wait

    def stop(self) -> None:
        """Cancel the job in flight and drop the waiting view (returns at once)."""
        if self._running is not None:
            self._running.job.cancel()
            self._running = None
        self._pending = None
        self.stats.working = False
