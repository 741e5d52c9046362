# SPDX-License-Identifier: GPL-3.0-or-later
"""The frame writer (engine -> Stylepass's mix with the render -> PNG and record), background jobs, and
the contact sheet."""

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from contact_sheet import contact_sheet, text_mask  # demo/ is on the tests' pythonpath

from stylepass_core import engine_api, imageops, png, settings
from stylepass_core.engine_api import Aborted, Engine, StyleRequest, StyleResult
from stylepass_core.jobs import BackgroundJob, PartProgress, SampleClock
from stylepass_core.settings import EngineSettings, FrameSettings, setting
from stylepass_core.stylise_job import RECORD_FORMAT, Finish, array_digest, stylise_frame


@dataclass(frozen=True)
class InvertSettings(EngineSettings):
    ENGINE = "TEST_INVERT"
    LABEL = "Invert"
    DESCRIPTION = "Test engine that inverts the beauty"
    PROPERTY = "test_invert"

    gain: float = setting(1.0, "Gain", "Recorded, not used", min=0.0, max=2.0)
    picture: str = setting("", "Picture", "A picture that travels with the request", image=True)


class InvertEngine(Engine):
    """A tiny engine for plumbing tests: inverts the beauty, in two progress steps, honouring abort."""

    id = InvertSettings.ENGINE
    label = "Invert (test)"
    settings_type = InvertSettings
    started = threading.Event()
    proceed = threading.Event()

    def available(self):
        return True, ""

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
    settings.SETTINGS.pop(InvertSettings.ENGINE, None)
    engine_api.release_engines()


def _beauty() -> np.ndarray:
    return np.linspace(0, 1, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)


def _request(**overrides) -> StyleRequest:
    values = {"beauty": _beauty(), "settings": InvertSettings(gain=0.5), "seed": 7}
    values.update(overrides)
    return StyleRequest(**values)


# -- stylise_frame ------------------------------------------------------------------------------------------


def test_stylise_frame_writes_png_and_reproducible_record(tmp_path):
    InvertEngine.proceed.set()
    frame = stylise_frame(
        _request(), tmp_path / "s" / "0001.png", tmp_path / "s" / "0001.json", context={"frame": 1}
    )
    np.testing.assert_allclose(png.read_png_float(frame.png_path), 1.0 - _beauty(), atol=0.5 / 255)
    record = json.loads(frame.json_path.read_text())
    assert record == frame.record
    assert record["format"] == RECORD_FORMAT == 2
    assert record["engine"] == "TEST_INVERT"  # from the request's settings: no separate engine argument
    assert record["request"]["seed"] == 7
    assert record["request"]["settings"] == {
        "engine": "TEST_INVERT",
        "schema": 1,
        "values": {"gain": 0.5, "picture": ""},
    }
    assert record["frame"] is None and record["image_digests"] == {} and "style_image_digest" not in record
    assert record["result"] == {"engine": "TEST_INVERT"}
    assert record["context"] == {"frame": 1} and record["image"] == "0001.png"
    assert record["postprocess"] is None
    assert record["timings"]["engine"] >= 0 and record["timings"]["write"] >= 0
    rebuilt = StyleRequest.from_parts(record["request"], {"beauty": _beauty()})
    assert rebuilt.seed == 7 and rebuilt.settings == InvertSettings(gain=0.5)


def test_stylise_frame_runs_the_engine_the_settings_name(tmp_path):
    calls = []

    def runner(engine_id, request, progress, abort):
        calls.append(engine_id)
        return StyleResult(request.beauty, {"engine": engine_id, "where": "elsewhere"})

    frame = stylise_frame(_request(), tmp_path / "a.png", tmp_path / "a.json", runner=runner)
    assert calls == ["TEST_INVERT"] and frame.record["result"]["where"] == "elsewhere"
    assert not InvertEngine.started.is_set()  # the runner ran it, not this process


def test_stylise_frame_records_the_images_the_request_carried(tmp_path):
    InvertEngine.proceed.set()
    picture = np.random.default_rng(2).random((9, 7, 3), dtype=np.float32)
    request = _request(settings=InvertSettings(picture="Painting"), images={"picture": picture})
    frame = stylise_frame(request, tmp_path / "a.png", tmp_path / "a.json")
    record = json.loads(frame.json_path.read_text())
    # The pixels are not stored; a digest tells which picture was used, and the header which name it had.
    assert record["image_digests"] == {"picture": array_digest(picture)}
    assert record["request"]["images"] == ["picture"]
    assert record["request"]["settings"]["values"]["picture"] == "Painting"
    rebuilt = StyleRequest.from_parts(record["request"], {"beauty": _beauty(), "image.picture": picture})
    assert rebuilt.settings == request.settings


def test_stylise_frame_applies_the_finish_before_postprocess_and_records_it(tmp_path):
    InvertEngine.proceed.set()
    beauty = _beauty()
    finish = Finish(FrameSettings(strength=0.25, seed=7, png_compression=15), beauty)
    seen = {}

    def postprocess(image):
        seen["image"] = image.copy()
        return image, {"blended": False}

    frame = stylise_frame(
        _request(), tmp_path / "a.png", tmp_path / "a.json", finish=finish, postprocess=postprocess
    )
    expected = beauty + np.float32(0.25) * ((1.0 - beauty) - beauty)
    np.testing.assert_allclose(seen["image"], expected, atol=1e-6)  # postprocess gets the finished picture
    np.testing.assert_allclose(frame.image, expected, atol=1e-6)
    np.testing.assert_allclose(png.read_png_float(frame.png_path), expected, atol=0.5 / 255)
    record = json.loads(frame.json_path.read_text())
    assert record["frame"] == FrameSettings(strength=0.25, seed=7, png_compression=15).values()
    assert record["frame"]["strength"] == 0.25 and record["postprocess"] == {"blended": False}
    assert FrameSettings.from_values(record["frame"]) == finish.frame  # the record reads back


def test_stylise_frame_runs_alongside_on_the_stored_levels(tmp_path):
    InvertEngine.proceed.set()
    seen = {}

    def alongside(levels, place):
        seen["levels"] = levels.copy()
        seen["thread"] = threading.current_thread()
        return "side result"

    frame = stylise_frame(
        _request(), tmp_path / "0001.png", tmp_path / "0001.json", alongside=alongside, png_level=0
    )
    assert frame.alongside == "side result" and seen["thread"] is threading.current_thread()
    # It gets exactly the levels the PNG stores.
    assert seen["levels"].dtype == np.uint8
    np.testing.assert_array_equal(seen["levels"], png.read_png(frame.png_path))
    assert json.loads(frame.json_path.read_text())["image"] == "0001.png"


def test_stylise_frame_png_level_is_the_zlib_level(tmp_path):
    InvertEngine.proceed.set()
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], (64, 64, 3)).copy()
    request = _request(beauty=ramp)
    sizes = {}
    for level in (0, 9):
        frame = stylise_frame(request, tmp_path / f"{level}.png", tmp_path / f"{level}.json", png_level=level)
        sizes[level] = frame.png_path.stat().st_size
        np.testing.assert_allclose(png.read_png_float(frame.png_path), 1.0 - ramp, atol=0.5 / 255)
    assert sizes[0] > 64 * 64 * 3  # stored: at least the raw samples
    assert sizes[9] < sizes[0] / 10


def test_stylise_frame_failures_alongside_and_in_the_writer(tmp_path):
    InvertEngine.proceed.set()
    first = stylise_frame(_request(), tmp_path / "a.png", tmp_path / "a.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.endswith(".lock")}

    def broken(levels, place):
        place(tmp_path / "copy.exr").write_bytes(b"half a compositor copy")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stylise_frame(_request(seed=3), tmp_path / "a.png", tmp_path / "a.json", alongside=broken)
    # One take: nothing of the failed one landed, the previous take is untouched, no temporary is left.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.endswith(".lock")} == before
    assert json.loads(first.json_path.read_text())["image"] == "a.png"

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OSError):
        stylise_frame(
            _request(), blocker / "b.png", tmp_path / "b.json", alongside=lambda levels, place: None
        )
    assert not (tmp_path / "b.json").exists()  # no record names a file that is not there


def test_a_results_file_that_cannot_be_written_leaves_the_whole_previous_take(tmp_path, monkeypatch):
    # A read-only results folder (whose compositor/ folder can still be written) used to get a new compositor
    # copy beside the old PNG, so F12 showed a picture that was not the one on disk.
    InvertEngine.proceed.set()
    results, copies = tmp_path / "stylised", tmp_path / "stylised" / "compositor"

    def copy(levels, place):
        place(copies / "0001.exr").write_bytes(levels.tobytes())

    stylise_frame(_request(), results / "0001.png", results / "0001.json", alongside=copy)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}

    def read_only(path, *args, **kwargs):
        raise PermissionError(f"[Errno 13] Permission denied: {str(path)!r}")

    monkeypatch.setattr(png, "write_png", read_only)  # as a read-only folder does (root ignores chmod)
    with pytest.raises(PermissionError):
        stylise_frame(_request(seed=9), results / "0001.png", results / "0001.json", alongside=copy)
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


def test_two_runs_on_one_frame_never_mix_their_files(tmp_path):
    """Threads write takes of one frame at once; every take on disk is whole: PNG, record and copy agree."""
    InvertEngine.proceed.set()
    png_path, json_path, copy_path = (
        tmp_path / "0001.png",
        tmp_path / "0001.json",
        tmp_path / "c" / "0001.bin",
    )

    def run(seed: int) -> None:
        def copy(levels, place):
            place(copy_path).write_text(str(seed))
            time.sleep(0.002)  # widen the window in which another run could slip its files in

        for _ in range(15):
            stylise_frame(_request(seed=seed), png_path, json_path, alongside=copy, png_level=0)
            record = json.loads(json_path.read_text())
            seen.append((record["request"]["seed"], copy_path.read_text(), png.read_png(png_path).shape))

    seen: list = []
    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = json.loads(json_path.read_text())
    assert str(record["request"]["seed"]) == copy_path.read_text()
    assert not list(tmp_path.glob(".*.take")) and not list((tmp_path / "c").glob(".*.take"))


# -- Finish: Stylepass's mix with the render, after the engine ------------------------------------------------


def _labels() -> np.ndarray:
    """(8, 12) object indices: object 1 in the top-left block, object 2 in the bottom-right one."""
    index = np.zeros((8, 12), np.int32)
    index[1:5, 1:6] = 1
    index[4:8, 7:12] = 2
    return index


def _pictures(h: int = 8, w: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.random((h, w, 3), dtype=np.float32), rng.random((h, w, 3), dtype=np.float32)


def test_finish_defaults_leave_the_engine_picture_alone():
    beauty, image = _pictures()
    assert Finish(FrameSettings(), beauty).apply(image) is image
    # "All but Selected" with nothing selected stylises everything too.
    exclude_nothing = Finish(FrameSettings(object_filter="EXCLUDE"), beauty, _labels(), ())
    assert exclude_nothing.apply(image) is image


def test_finish_strength_mixes_linearly_and_zero_is_the_render_bit_for_bit():
    beauty, image = _pictures()
    none = Finish(FrameSettings(strength=0.0), beauty).apply(image)
    np.testing.assert_array_equal(none, beauty)
    assert none is not beauty and none.dtype == np.float32
    half = Finish(FrameSettings(strength=0.5), beauty).apply(image)
    np.testing.assert_allclose(half, 0.5 * beauty + 0.5 * image, atol=1e-6)


def test_finish_keep_colours_keeps_chroma():
    beauty, image = _pictures()
    beauty = 0.25 + 0.5 * beauty  # mid-tones: the recombined colours stay in gamut
    image = 0.25 + 0.5 * image
    kept = Finish(FrameSettings(keep_colours=True), beauty).apply(image)
    yuv_kept, yuv_beauty, yuv_image = (imageops.rgb_to_yuv(a) for a in (kept, beauty, image))
    np.testing.assert_allclose(yuv_kept[..., 1:], yuv_beauty[..., 1:], atol=1e-5)
    np.testing.assert_allclose(yuv_kept[..., 0], yuv_image[..., 0], atol=1e-5)


def test_finish_include_and_exclude_masks():
    beauty, image = _pictures()
    index = _labels()

    included = Finish(FrameSettings(object_filter="INCLUDE"), beauty, index, (1,)).apply(image)
    np.testing.assert_array_equal(included[index != 1], beauty[index != 1])
    inner = imageops.soften_inward(index == 1) == 1.0
    np.testing.assert_allclose(included[inner], image[inner], atol=1e-6)
    edge = (index == 1) & ~inner  # the soft edge lies inside the object, between render and picture
    assert edge.any()
    low, high = np.minimum(beauty, image)[edge], np.maximum(beauty, image)[edge]
    assert np.all((included[edge] >= low - 1e-6) & (included[edge] <= high + 1e-6))

    excluded = Finish(FrameSettings(object_filter="EXCLUDE"), beauty, index, (2,)).apply(image)
    np.testing.assert_array_equal(excluded[index == 2], beauty[index == 2])
    full = imageops.soften_inward(index != 2) == 1.0
    np.testing.assert_allclose(excluded[full], image[full], atol=1e-6)

    # Strength applies inside the selection only.
    half = Finish(FrameSettings(object_filter="INCLUDE", strength=0.5), beauty, index, (1,)).apply(image)
    np.testing.assert_array_equal(half[index != 1], beauty[index != 1])
    np.testing.assert_allclose(half[inner], 0.5 * (beauty + image)[inner], atol=1e-6)


def test_finish_only_selected_with_nothing_of_it_in_view_is_the_render():
    beauty, image = _pictures()
    for selection in ((9,), ()):  # selected objects the camera does not see, or none selected
        only = Finish(FrameSettings(object_filter="INCLUDE"), beauty, _labels(), selection).apply(image)
        np.testing.assert_array_equal(only, beauty)


def test_finish_brings_the_render_and_mask_to_the_output_size():
    # Passes at the render's pass size, the engine's picture at the output size (twice as large).
    beauty, _ = _pictures()
    index = _labels()
    image = np.random.default_rng(5).random((16, 24, 3), dtype=np.float32)
    none = Finish(FrameSettings(strength=0.0), beauty).apply(image)
    assert none.shape == (16, 24, 3)
    np.testing.assert_array_equal(none, imageops.resize(beauty, (16, 24)))
    excluded = Finish(FrameSettings(object_filter="EXCLUDE"), beauty, index, (2,)).apply(image)
    big_index = imageops.resize_nearest(index, (16, 24))
    np.testing.assert_array_equal(excluded[big_index == 2], imageops.resize(beauty, (16, 24))[big_index == 2])


def test_finish_needs_the_object_index_for_a_selection():
    beauty, _ = _pictures()
    for object_filter in ("INCLUDE", "EXCLUDE"):
        with pytest.raises(ValueError, match=f"object_filter '{object_filter}' needs the object_index pass"):
            Finish(FrameSettings(object_filter=object_filter), beauty, None, (1,))
    Finish(FrameSettings(), beauty, None, (1,))  # "All" ignores the selection and needs no index


# -- Background jobs ----------------------------------------------------------------------------------------


def test_background_job_progress_cancel_and_nothing_written(tmp_path):
    target = tmp_path / "0001.png"
    job = BackgroundJob(
        lambda progress, abort: stylise_frame(
            _request(), target, tmp_path / "0001.json", progress=progress, abort=abort
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


# -- Contact sheet ------------------------------------------------------------------------------------------


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


def test_part_progress_maps_each_part_into_its_share_of_one_bar():
    seen = []

    class Whole:
        def update(self, done, total, message=""):
            seen.append((done / total, message))

    passes, engine = PartProgress(Whole(), 0.0, 0.4), PartProgress(Whole(), 0.5, 1.0)
    passes.update(1, 4, "sample 1")
    passes.update(4, 4, "sample 4")
    engine.update(0, 10, "loading")
    engine.update(5, 10, "tile 5")
    engine.update(12, 10, "past the end")  # clamped: a part never reports beyond its share
    assert seen == [
        (0.1, "sample 1"),
        (0.4, "sample 4"),
        (0.5, "loading"),
        (0.75, "tile 5"),
        (1.0, "past the end"),
    ]


def test_sample_clock_moves_on_between_rare_reports_but_never_past_the_next():
    clock = SampleClock()
    assert clock.estimate(0.0) is None
    clock.started(10.0)
    assert clock.estimate(10.5) is None  # nothing reported yet: no pace to go by
    clock.reported(1, 2000, 11.0)  # the first sample took 1 s (scene sync included)
    assert clock.estimate(11.0) == 1.0
    assert clock.estimate(21.0) == 11.0  # ten seconds on at that pace
    assert clock.estimate(10_000.0) == 1999.5  # never the last sample before Cycles says so
    clock.reported(500, 2000, 30.0)  # Cycles' next report corrects the pace
    assert clock.estimate(30.0) == 500.0
    assert abs(clock.estimate(31.0) - (500 + 1 / (20 / 500))) < 1e-9
