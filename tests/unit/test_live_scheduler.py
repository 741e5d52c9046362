# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview's scheduler with a fake clock and fake jobs: latest wins, dedupe, debounce, stop."""

from stylepass_core.live_scheduler import LiveScheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeJob:
    def __init__(self, request) -> None:
        self.request = request
        self.done = False
        self.cancelled = False
        self.error = None
        self.result = None

    def finish(self, error=None) -> None:
        self.done = True
        self.error = error
        self.result = f"picture of {self.request}"

    def cancel(self, wait=None) -> None:
        self.cancelled = True
        self.done = True


def _scheduler(**options):
    clock, started = Clock(), []

    def start(request):
        started.append(FakeJob(request))
        return started[-1]

    return LiveScheduler(start, clock=clock, **options), clock, started


def test_one_job_in_flight_and_the_latest_view_wins():
    live, clock, started = _scheduler()
    live.submit("a", "view a")
    live.tick()
    assert [job.request for job in started] == ["view a"]
    for view in ("b", "c", "d"):  # the artist orbits on while a is stylised
        live.submit(view, f"view {view}")
        clock.now += 0.03
        assert live.tick() is None
    assert len(started) == 1 and live.working
    started[0].finish()
    clock.now += 0.1
    shown = live.tick()
    assert shown.key == "a" and shown.result == "picture of view a"
    assert [job.request for job in started] == ["view a", "view d"]  # b and c were never stylised
    started[1].finish()
    clock.now += 0.1
    assert live.tick().key == "d"
    assert not live.working


def test_the_same_inputs_are_never_stylised_twice():
    live, clock, started = _scheduler()
    live.submit("a", "view a")
    live.tick()
    live.submit("a", "view a")  # the same view again while in flight
    started[0].finish()
    clock.now += 0.1
    assert live.tick().key == "a"
    live.submit("a", "view a")  # back to what is shown
    live.tick()
    assert len(started) == 1 and not live.working
    live.submit("b", "view b")
    live.submit("a", "view a")  # away and back before anything started
    live.tick()
    assert len(started) == 1


def test_a_fast_engine_never_waits_a_slow_one_waits_for_edits_to_settle_but_not_forever():
    live, clock, started = _scheduler(grace=0.25, slow_job=1.5, max_wait=3.0)
    live.submit("a", "a")
    live.tick()
    clock.now += 2.0  # a slow job: 2 s
    started[0].finish()
    live.tick()
    assert live.stats.mean_job == 2.0
    # Continuous edits every 0.1 s: each resets the grace, so none starts...
    for index in range(25):
        live.submit(f"e{index}", f"edit {index}")
        live.tick()
        clock.now += 0.1
    assert len(started) == 1
    # ...until the edits have gone on for max_wait: then the newest starts.
    for index in range(25, 32):
        live.submit(f"e{index}", f"edit {index}")
        live.tick()
        clock.now += 0.1
    assert len(started) == 2 and started[1].request in ("edit 30", "edit 31")
    started[1].finish()
    clock.now += 2.0
    live.tick()
    # A single change with a slow engine starts once it has settled for `grace`.
    live.submit("f", "final")
    clock.now += 0.1
    live.tick()
    assert len(started) == 2
    clock.now += 0.2
    live.tick()
    assert started[-1].request == "final"


def test_stop_cancels_at_once_and_drops_the_waiting_view():
    live, clock, started = _scheduler()
    live.submit("a", "a")
    live.tick()
    live.submit("b", "b")
    live.stop()
    assert started[0].cancelled and not live.working
    clock.now += 1.0
    assert live.tick() is None and len(started) == 1


def test_a_failed_job_is_kept_for_the_readout_and_the_preview_goes_on():
    live, clock, started = _scheduler()
    live.submit("a", "a")
    live.tick()
    live.submit("b", "b")
    started[0].finish(error=RuntimeError("engine crashed"))
    clock.now += 0.1
    assert live.tick() is None
    assert [str(e) for e in live.errors] == ["engine crashed"]
    assert started[-1].request == "b"


def test_stats_give_frames_per_second_and_latency():
    live, clock, started = _scheduler()
    for index in range(8):
        live.submit(str(index), index)
        live.tick()
        clock.now += 0.25
        started[-1].finish()
        shown = live.tick()
        assert abs(shown.latency - 0.25) < 1e-9
    assert live.stats.fps(clock.now) == 4.0
    assert abs(live.stats.last_latency - 0.25) < 1e-9
