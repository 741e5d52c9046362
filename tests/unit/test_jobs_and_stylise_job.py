# SPDX-License-Identifier: GPL-3.0-or-later
import json
import threading

import numpy as np
import pytest
from stylepass_core import engine_api, png
from stylepass_core.contact_sheet import contact_sheet, text_mask
from stylepass_core.engine_api import Aborted, Engine, StyleRequest, StyleResult
from stylepass_core.jobs import BackgroundJob
from stylepass_core.stylise_job import array_digest, stylise_frame


class InvertEngine(Engine):
    """A tiny engine for plumbing tests: inverts the beauty, in two progress steps, honouring abort."""

    id = "TEST_INVERT"
    label = "Invert (test)"
    started = threading.Event()
    proceed = threading.Event()

    def available(self):
        return True, ""

    def styles(self):
        return [("x", "X")]

    def run(self, request, progress=None, abort=None):
        progress.update(0, 2, "thinking")
        type(self).started.set()
        type(self).proceed.wait(5)
        engine_api.check_abort(abort)
        progress.update(1, 2, "inverting")
        return StyleResult(1.0 - request.beauty, {"engine": self.id})


@pytest.fixture(autouse=True)
def registered():
    engine_api.register_engine(InvertEngine)
    InvertEngine.started.clear()
    InvertEngine.proceed.clear()
    yield
    engine_api.ENGINES.pop(InvertEngine.id, None)
    engine_api.release_engines()


def _request():
    beauty = np.linspace(0, 1, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    return StyleRequest(beauty=beauty, style="x", seed=7, strength=0.8)


def test_stylise_frame_writes_png_and_reproducible_record(tmp_path):
    InvertEngine.proceed.set()
    frame = stylise_frame(
        "TEST_INVERT", _request(), tmp_path / "s" / "0001.png", tmp_path / "s" / "0001.json", {"frame": 1}
    )
    np.testing.assert_allclose(png.read_png_float(frame.png_path), 1.0 - _request().beauty, atol=0.5 / 255)
    record = json.loads(frame.json_path.read_text())
    assert record["engine"] == "TEST_INVERT"
    assert record["request"]["seed"] == 7 and record["request"]["strength"] == 0.8
    assert record["context"] == {"frame": 1} and record["image"] == "0001.png"
    assert record["timings"]["engine"] >= 0
    rebuilt = StyleRequest.from_parts(record["request"], {"beauty": _request().beauty})
    assert rebuilt.seed == 7 and rebuilt.style == "x"


def test_stylise_frame_runs_alongside_on_the_stored_levels(tmp_path):
    InvertEngine.proceed.set()
    seen = {}

    def alongside(levels):
        seen["levels"] = levels.copy()
        seen["thread"] = threading.current_thread()
        return "side result"

    frame = stylise_frame(
        "TEST_INVERT",
        _request(),
        tmp_path / "0001.png",
        tmp_path / "0001.json",
        alongside=alongside,
        png_level=0,
    )
    assert frame.alongside == "side result" and seen["thread"] is threading.current_thread()
    # It gets exactly the levels the PNG stores.
    assert seen["levels"].dtype == np.uint8
    np.testing.assert_array_equal(seen["levels"], png.read_png(frame.png_path))
    assert json.loads(frame.json_path.read_text())["image"] == "0001.png"


def test_stylise_frame_png_level_is_the_zlib_level(tmp_path):
    InvertEngine.proceed.set()
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], (64, 64, 3)).copy()
    request = StyleRequest(beauty=ramp, style="x")
    sizes = {}
    for level in (0, 9):
        frame = stylise_frame(
            "TEST_INVERT", request, tmp_path / f"{level}.png", tmp_path / f"{level}.json", png_level=level
        )
        sizes[level] = frame.png_path.stat().st_size
        np.testing.assert_allclose(png.read_png_float(frame.png_path), 1.0 - ramp, atol=0.5 / 255)
    assert sizes[0] > 64 * 64 * 3  # stored: at least the raw samples
    assert sizes[9] < sizes[0] / 10


def test_stylise_frame_failures_alongside_and_in_the_writer(tmp_path):
    InvertEngine.proceed.set()

    def broken(levels):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stylise_frame("TEST_INVERT", _request(), tmp_path / "a.png", tmp_path / "a.json", alongside=broken)
    # The result itself was finished first: a whole PNG and its record.
    assert png.read_png(tmp_path / "a.png").shape == (4, 6, 3)
    assert json.loads((tmp_path / "a.json").read_text())["image"] == "a.png"

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OSError):
        stylise_frame(
            "TEST_INVERT", _request(), blocker / "b.png", tmp_path / "b.json", alongside=lambda levels: None
        )
    assert not (tmp_path / "b.json").exists()  # no record names a file that is not there


def test_background_job_progress_cancel_and_nothing_written(tmp_path):
    target = tmp_path / "0001.png"
    job = BackgroundJob(
        lambda progress, abort: stylise_frame(
            "TEST_INVERT", _request(), target, tmp_path / "0001.json", progress=progress, abort=abort
        )
    )
    job.start()
    assert InvertEngine.started.wait(5)
    events = job.poll()
    assert events and events[0].message == "thinking" and events[0].fraction == 0.0
    job.cancel()
    InvertEngine.proceed.set()
    assert job.wait(5)
    assert job.cancelled and isinstance(job.error, Aborted)
    assert not target.exists() and not (tmp_path / "0001.json").exists()


def test_background_job_result_and_error():
    ok = BackgroundJob(lambda progress, abort: 42).start()
    assert ok.wait(5) and ok.result == 42 and ok.error is None and not ok.cancelled

    def fail(progress, abort):
        raise ValueError("bad style")

    bad = BackgroundJob(fail).start()
    assert bad.wait(5) and isinstance(bad.error, ValueError) and not bad.cancelled


def test_array_digest_tells_images_apart():
    a = np.zeros((2, 2, 3), np.float32)
    b = a.copy()
    b[0, 0, 0] = 1e-3
    assert array_digest(a) == array_digest(a.copy()) != array_digest(b)
    assert array_digest(None) is None


def test_contact_sheet_layout_and_labels():
    red = np.zeros((10, 20, 3), np.float32)
    red[..., 0] = 1
    gray16 = np.full((10, 20), 65535, np.uint16)
    sheet = contact_sheet(
        [("RED", red), ("GRAY", gray16), ("third", np.zeros((10, 20), np.uint8))], columns=2, tile_width=40
    )
    caption = 7 * 2 + 8
    assert sheet.shape == (2 * (20 + caption), 80, 3)
    # First tile body is red, second white, third black.
    np.testing.assert_allclose(sheet[caption + 5, 10], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(sheet[caption + 5, 50], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(sheet[20 + 2 * caption + 5, 10], [0, 0, 0], atol=1e-6)
    # Captions are drawn in white on the dark band.
    assert (sheet[4:18, 4:36] == 1.0).any()
    mask = text_mask("I", scale=1)
    assert mask.shape == (7, 6) and mask[:, 2].all()
    with pytest.raises(ValueError, match="at least one tile"):
        contact_sheet([])
