# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview's Blender side that runs without a window: sizes, the engine job and its finish, Pin,
the start check, and the settings hook. Capture, drawing, orbiting and toggling are in the real-UI suite
(tests/ui/test_live_preview.py): background mode has no viewport to draw."""

import threading
import time

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import known_scene

from stylepass_core.engine_api import StyleRequest
from stylepass_core.errors import StylepassError
from stylepass_core.settings import FrameSettings, LiveSettings
from stylepass_core.stylise_job import Finish, run_in_process

live_preview = addon_module("addon.live_preview")
live_capture = addon_module("addon.live_capture")
properties = addon_module("addon.properties")
stylise = addon_module("addon.stylise")


def _scene_picture(height=64, width=96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x / width, y / height, 0.5 + 0 * x], axis=-1)
    return picture.astype(np.float32)


@pytest.mark.parametrize(
    ("aspect", "long_side", "expected"),
    [(16 / 9, 256, (256, 144)), (9 / 16, 256, (144, 256)), (1.0, 384, (384, 384)), (2.39, 512, (512, 216))],
)
def test_preview_size_keeps_the_long_side_and_multiples_of_eight(aspect, long_side, expected):
    assert live_capture.preview_size(aspect, long_side) == expected


def _live_request(scene, frame: FrameSettings, tmp_path) -> "live_preview.LiveRequest":
    run = stylise.RunSettings.from_scene(scene)
    inputs = stylise.engine_inputs(scene, bpy.context.view_layer, run)
    beauty = _scene_picture()
    request = StyleRequest(beauty=beauty, settings=inputs.settings.live(), seed=frame.seed)
    view = live_capture.ViewFrame(None, None, beauty.shape[1], beauty.shape[0], camera=False)
    return live_preview.LiveRequest(request, Finish(frame=frame, beauty=beauty), inputs.runner, view)


def test_a_live_job_runs_the_engine_on_a_thread_applies_the_finish_and_writes_no_files(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    scene.stylepass.output_dir = str(out_dir)
    frame = FrameSettings(strength=0.5)
    live = _live_request(scene, frame, out_dir)
    job = live_preview._start_job(live)
    assert job._thread.name == live_preview.THREAD_NAME
    assert job.wait(60) and job.error is None, job.error
    image, returned, _info = job.result
    assert returned is live
    engine_alone = run_in_process(live.request.engine, live.request, None, None).image
    # Strength 0.5: half the engine's picture, half the view, as Stylise Frame's finish makes it.
    assert np.allclose(image, 0.5 * engine_alone + 0.5 * live.request.beauty, atol=1e-5)
    assert list(out_dir.rglob("*")) == []


def test_turning_off_cancels_the_job_in_flight_at_once(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    view = live_preview.LiveView(key=1)
    started = threading.Event()

    def slow(engine_id, request, progress, abort):
        started.set()
        while not abort.wait(0.01):
            pass
        from stylepass_core.engine_api import Aborted

        raise Aborted("stopped")

    live = _live_request(scene, FrameSettings(), out_dir)
    live.runner = slow
    view.scheduler.submit("a", live)
    view.scheduler.tick()
    assert started.wait(10)
    stopped_at = time.monotonic()
    view.stop()
    for thread in threading.enumerate():
        if thread.name == live_preview.THREAD_NAME:
            thread.join(2)
    assert not [t for t in threading.enumerate() if t.name == live_preview.THREAD_NAME]
    assert time.monotonic() - stopped_at < 2
    assert not view.scheduler.working


def test_pin_keeps_the_picture_as_a_new_packed_image_and_never_overwrites(empty_file):
    view = live_preview.LiveView(key=2)
    with pytest.raises(StylepassError, match="no picture yet"):
        live_preview.pin(view)
    view.picture = _scene_picture()
    first = live_preview.pin(view)
    second = live_preview.pin(view)
    assert first.name != second.name and first.name.startswith(live_preview.PIN_NAME)
    assert first.packed_file is not None and tuple(first.size) == (96, 64)
    pixels = np.empty(96 * 64 * 4, np.float32)
    first.pixels.foreach_get(pixels)
    shown = pixels.reshape(64, 96, 4)[::-1, :, :3]  # Blender's rows start at the bottom
    assert np.abs(shown - view.picture).max() <= 1 / 255 + 1e-6


def test_the_start_check_refuses_what_stylise_frame_refuses_and_changes_nothing(empty_file):
    scene = empty_file
    known_scene(scene)
    scene.stylepass.object_filter = "INCLUDE"  # nothing is in the Stylepass selection
    before = scene_snapshot(scene)
    with pytest.raises(StylepassError, match="no object is in the Stylepass selection"):
        live_preview.check_can_start(bpy.context)
    assert diff_snapshots(before, scene_snapshot(scene)) == []


def test_the_toggle_needs_a_viewport(empty_file):
    assert not bpy.ops.stylepass.live_preview.poll()


def test_every_stylepass_setting_change_reaches_the_live_preview(empty_file):
    """Python-defined properties tag no depsgraph update; the update callbacks tell the preview instead."""
    heard = []
    properties.changed_listeners.append(lambda: heard.append(1))
    try:
        s = empty_file.stylepass
        s.strength = 0.3
        s.neural_style.detail_scale = 0.5
        s.engine = s.engine
        s.live_wipe = 0.5
        bpy.data.objects.new("Empty", None).stylepass.in_selection = True
    finally:
        properties.changed_listeners.pop()
    assert len(heard) == 5


def test_live_settings_defaults_and_readout(empty_file):
    settings = properties.read(empty_file.stylepass, LiveSettings)
    assert settings == LiveSettings() and settings.long_side == 256 and settings.look == (1.0, 1.0)
    view = live_preview.LiveView(key=3)
    assert live_preview.readout_text(view, 0.0) == "Stylepass Live  ·  starting…"
    view.error = "Style Image is needed"
    assert live_preview.readout_text(view, 0.0) == "Stylepass Live: Style Image is needed"


def test_the_picture_is_drawn_around_the_readout():
    rect, hole = (0.0, 0.0, 100.0, 50.0), (5.0, 5.0, 40.0, 15.0)
    pieces = live_capture.rect_minus(rect, hole)
    area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in pieces)
    assert area == 100 * 50 - 35 * 10
    # No piece overlaps the hole or another piece; every piece lies inside the rect.
    for i, (x0, y0, x1, y1) in enumerate(pieces):
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 50
        assert x1 <= 5 or x0 >= 40 or y1 <= 5 or y0 >= 15
        for a0, b0, a1, b1 in pieces[i + 1 :]:
            assert x1 <= a0 or a1 <= x0 or y1 <= b0 or b1 <= y0
    assert live_capture.rect_minus(rect, None) == [rect]
    assert live_capture.rect_minus(rect, (200.0, 0.0, 220.0, 10.0)) == [
        rect
    ]  # the hole is elsewhere (a wipe)
