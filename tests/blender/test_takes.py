# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes in Blender: two Stylise Frames keep two takes, the panels list them with the current one marked,
choosing one shows it in the compositor group, and a take with missing files is refused with nothing changed."""

import json

import bpy
import numpy as np
import pytest
from conftest import addon_module
from scenes import known_scene

from stylepass_core import exr
from stylepass_core.engines.neural_style import NeuralStyleSettings

compositor = addon_module("addon.compositor")
draw_common = addon_module("panels.draw_common")
takes_panels = addon_module("panels.takes")

PRESET_NAMES = {
    choice[0]: choice[1]
    for name, _, spec, _ in NeuralStyleSettings.specs()
    if name == "style_preset"
    for choice in spec.choices
}


def _scene(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 2
    scene.cycles.device = "CPU"
    scene.stylepass.output_dir = str(out_dir)
    return scene


def _stylise(scene, preset):
    scene.stylepass.neural_style.style_preset = preset
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}


def _folders(out_dir, scene):
    stylised = out_dir / scene.name / "stylised"
    return stylised, stylised / "takes" / "0001"


def _group_image():
    group = compositor.find_group()
    return group.nodes["Stylised"]


def _pixels(image) -> np.ndarray:
    """The image's RGB as Blender holds it, top row first."""
    width, height = image.size
    flat = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(flat)
    return flat.reshape(height, width, image.channels)[::-1, :, :3]


def _exr_rgb(path) -> np.ndarray:
    channels = exr.read_exr(path)
    return np.stack([channels[c] for c in "RGB"], axis=-1).astype(np.float32)


def _files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_two_stylisations_keep_two_takes_and_choosing_one_shows_it(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    _stylise(scene, "style_07")
    _stylise(scene, "style_12")
    stylised, folder = _folders(out_dir, scene)

    # 1. Two takes, named after their styles, the second current
    index = json.loads((folder / "takes.json").read_text())
    assert [t["number"] for t in index["takes"]] == [1, 2] and index["current"] == 2
    first, second = index["takes"]
    assert first["name"] == f"Take 1 · {PRESET_NAMES['style_07']}"
    assert second["name"] == f"Take 2 · {PRESET_NAMES['style_12']}"
    assert first["engine"] == "NEURAL_STYLE" and isinstance(first["seed"], int) and first["colour_space"]
    take_one, take_two = _exr_rgb(folder / "001.exr"), _exr_rgb(folder / "002.exr")
    assert np.abs(take_one - take_two).mean() > 0.01, "two styles, two pictures"
    node = _group_image()
    assert node.label == second["name"]
    np.testing.assert_allclose(_pixels(node.image), take_two, atol=2e-3)

    # 2. The panels list them newest first, the current one pressed
    calls = _draw(draw_common.draw_takes, scene)
    buttons = [c for c in calls if c[0] == "stylepass.choose_take"]
    assert [(b[1]["text"], b[1]["depress"], b[2]["take"]) for b in buttons] == [
        (second["name"], True, 2),
        (first["name"], False, 1),
    ]

    # 3. Choosing take 1 makes it current and shows it in the group; take 2 stays
    assert bpy.ops.stylepass.choose_take(take=1) == {"FINISHED"}
    assert (stylised / "0001.png").read_bytes() == (folder / "001.png").read_bytes()
    assert (stylised / "compositor" / "0001.exr").read_bytes() == (folder / "001.exr").read_bytes()
    assert json.loads((stylised / "0001.json").read_text())["take"] == 1
    assert json.loads((folder / "takes.json").read_text())["current"] == 1
    node = _group_image()
    assert node.label == first["name"]
    np.testing.assert_allclose(_pixels(node.image), take_one, atol=2e-3)
    assert all((folder / f"002.{ext}").is_file() for ext in ("png", "json", "exr"))
    calls = _draw(draw_common.draw_takes, scene)
    assert [c[1]["depress"] for c in calls if c[0] == "stylepass.choose_take"] == [False, True]

    # 4. A take whose files are gone is refused, and nothing changes
    (folder / "002.exr").unlink()
    before = _files(stylised)
    with pytest.raises(RuntimeError, match=r"Take 2 .* is missing 002\.exr .* nothing was changed"):
        bpy.ops.stylepass.choose_take(take=2)
    with pytest.raises(RuntimeError, match=r"Frame 1 has no take 9 \(its takes: 1, 2\)"):
        bpy.ops.stylepass.choose_take(take=9)
    assert _files(stylised) == before
    node = _group_image()
    assert node.label == first["name"]
    np.testing.assert_allclose(_pixels(node.image), take_one, atol=2e-3)


def test_an_animation_never_removes_takes_and_its_result_is_kept_when_a_take_is_chosen(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    scene.frame_start = scene.frame_end = 1
    scene.view_settings.view_transform = "Standard"
    _stylise(scene, "style_07")
    stylised, folder = _folders(out_dir, scene)
    kept = _files(folder)
    scene.stylepass.neural_style.style_preset = "style_12"
    assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}
    assert _files(folder) == kept, "Stylise Animation wrote or removed a take"
    animated = (stylised / "0001.png").read_bytes()
    assert animated != (folder / "001.png").read_bytes()
    calls = _draw(draw_common.draw_takes, scene)
    assert [c[1]["depress"] for c in calls if c[0] == "stylepass.choose_take"] == [
        False
    ]  # no take is current

    assert bpy.ops.stylepass.choose_take(take=1) == {"FINISHED"}
    index = json.loads((folder / "takes.json").read_text())
    assert [t["number"] for t in index["takes"]] == [1, 2] and index["current"] == 1
    assert index["takes"][1]["source"] == "Stylise Animation"
    assert (folder / "002.png").read_bytes() == animated  # the animation's frame is a take now
    assert (stylised / "0001.png").read_bytes() == (folder / "001.png").read_bytes()
    # The group still shows the animation as a sequence; its frame 1 is the chosen take now.
    node = _group_image()
    assert node.image.source == "SEQUENCE"


def test_the_compositor_sidebar_offers_takes_beside_the_group(empty_file, out_dir):
    scene = _scene(empty_file, out_dir)
    _stylise(scene, "style_07")
    tree = scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree
    node = compositor.find_group_node(tree)
    other = next(n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers")
    assert compositor.is_group_in_editor(tree, node)
    assert not compositor.is_group_in_editor(tree, other)
    assert compositor.is_group_in_editor(node.node_tree, None)  # inside the group (Tab)
    assert not compositor.is_group_in_editor(None, None)
    calls = _draw(takes_panels.NODE_PT_stylepass_takes.draw, scene, panel=True)
    assert [c[2]["take"] for c in calls if c[0] == "stylepass.choose_take"] == [1]


# -- A recording layout: what the panels drew -----------------------------------------------------------------


class _Recorder:
    def __init__(self, calls):
        self.calls = calls

    def operator(self, idname, **kwargs):
        category, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, category), name), idname
        button = _Button()
        self.calls.append((idname, kwargs, button.values))
        return button

    def label(self, **kwargs):
        self.calls.append(("label", kwargs, {}))

    def row(self, **kwargs):
        return self

    column = row


class _Button:
    def __init__(self):
        object.__setattr__(self, "values", {})

    def __setattr__(self, name, value):
        self.values[name] = value


def _draw(draw, scene, panel=False) -> list:
    calls = []
    layout = _Recorder(calls)
    if panel:
        holder = type("Panel", (), {"layout": layout})()
        draw(holder, bpy.context)
    else:
        draw(layout, scene)
    return calls
