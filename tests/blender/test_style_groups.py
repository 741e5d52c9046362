# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups on known geometry (issue 15, neural style): each group's pixels come from its own style, none of
a group's style reaches beyond 3 px outside its objects, the record and the animation key hold the groups,
the groups survive save and reload, and bad groups are refused with the group named."""

import json

import bpy
import numpy as np
import pytest
from conftest import addon_module, readme_python_examples
from scenes import known_scene

from stylepass_core import png
from stylepass_core.errors import StylepassError

stylise = addon_module("addon.stylise")


def _scene(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = 160, 120
    scene.cycles.samples = 2
    scene.stylepass.output_dir = str(out_dir)
    scene.stylepass.neural_style.style_preset = "style_07"
    return scene, objects


def _add_group(scene, name, preset, *objects):
    group = scene.stylepass.style_groups.add()
    group.name = name
    group.neural_style.style_preset = preset
    for obj in objects:
        group.objects.add().object = obj
    return group


def _stylise(scene):
    options = stylise.RunSettings.from_scene(scene)
    options = stylise.replace(options, passes=options.passes.replace(show_images=False))
    result = stylise.stylise(scene, bpy.context.view_layer, options)
    return png.read_png(result.frame.png_path)[..., :3].astype(np.int32), result


def _mask(result, name):
    entry = next(e for e in result.passes.objects if e.name == name)
    return np.asarray(result.passes.maps["object_index"]) == entry.index


def _erode(mask, steps):
    out = mask.copy()
    for _ in range(steps):
        out[1:] &= mask[:-1]
        out[:-1] &= mask[1:]
        out[:, 1:] &= mask[:, :-1]
        out[:, :-1] &= mask[:, 1:]
        mask = out.copy()
    return out


def _dilate(mask, steps):
    return ~_erode(~mask, steps)


def test_each_group_gets_its_own_style_and_nothing_of_it_leaks(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    singles = {}
    for preset in ("style_07", "style_03", "style_05"):
        scene.stylepass.neural_style.style_preset = preset
        singles[preset], _ = _stylise(scene)
    scene.stylepass.neural_style.style_preset = "style_07"
    _add_group(scene, "Ink", "style_03", objects["box"])
    _add_group(scene, "Wash", "style_05", objects["sphere"])
    grouped, result = _stylise(scene)
    box, sphere, wall = (_mask(result, name) for name in ("Box", "Sphere", "Wall"))
    # Inside each object (3 px in from its outline) the pixels are that style's own single run, exactly.
    for mask, preset in (
        (box, "style_03"),
        (sphere, "style_05"),
        (wall & ~_dilate(box | sphere, 4), "style_07"),
    ):
        inner = _erode(mask, 3)
        assert inner.any()
        np.testing.assert_array_equal(grouped[inner], singles[preset][inner])
    # More than 3 px outside a group's objects nothing of its style remains.
    away = ~_dilate(box | sphere, 3)
    np.testing.assert_array_equal(grouped[away], singles["style_07"][away])
    record = json.loads(result.frame.json_path.read_text())
    groups = record["context"]["style_groups"]
    assert [(g["name"], g["objects"], g["settings"]["values"]["style_preset"]) for g in groups] == [
        ("Ink", ["Box"], "style_03"),
        ("Wash", ["Sphere"], "style_05"),
    ]


def test_groups_survive_save_and_reload(empty_file, out_dir, tmp_path):
    scene, objects = _scene(empty_file, out_dir)
    group = _add_group(scene, "Ink", "style_03", objects["box"])
    group.strength, group.keep_colours, group.semantic_class = 0.6, True, "WALL"
    collection = bpy.data.collections.new("Props")
    group.collection = collection
    path = tmp_path / "groups.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    loaded = bpy.context.scene.stylepass.style_groups[0]
    assert (loaded.name, loaded.neural_style.style_preset, loaded.strength, loaded.keep_colours) == (
        "Ink",
        "style_03",
        pytest.approx(0.6),
        True,
    )
    assert [e.object.name for e in loaded.objects] == ["Box"] and loaded.collection.name == "Props"
    assert loaded.semantic_class == "WALL"


def test_bad_groups_are_refused_with_the_group_named_and_nothing_written(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    empty = _add_group(scene, "Empty", "style_03")
    with pytest.raises(StylepassError, match="Style group 'Empty' has no objects"):
        _stylise(scene)
    scene.stylepass.style_groups.remove(0)
    image_group = _add_group(scene, "Picture", "style_03", objects["box"])
    image_group.neural_style.style_source = "IMAGE"
    with pytest.raises(StylepassError, match="Style group 'Picture': Style Image is needed"):
        _stylise(scene)
    scene.stylepass.engine = "DIFFUSION"
    scene.stylepass.diffusion.model = "some/model"
    with pytest.raises(StylepassError, match="Style groups work with the Neural Style engine so far"):
        stylise.check(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    assert not list(out_dir.rglob("*.png"))
    del empty


def test_an_object_in_two_groups_takes_the_first_and_the_artist_is_told(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    _add_group(scene, "Ink", "style_03", objects["box"])
    _add_group(scene, "Wash", "style_05", objects["box"], objects["sphere"])
    grouped, result = _stylise(scene)
    assert "'Box' is in style groups 'Ink' and 'Wash': the first wins" in result.warnings
    single = scene.stylepass.style_groups
    assert len(single) == 2
    inner = _erode(_mask(result, "Box"), 3)
    scene.stylepass.style_groups.clear()
    scene.stylepass.neural_style.style_preset = "style_03"
    ink, _ = _stylise(scene)
    np.testing.assert_array_equal(grouped[inner], ink[inner])


def test_groups_are_made_from_the_selection_and_start_from_the_scenes_style(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    scene.stylepass.strength = 0.8
    for obj in scene.objects:
        obj.select_set(obj in (objects["box"], objects["sphere"]))
    assert bpy.ops.stylepass.style_group_add() == {"FINISHED"}
    assert bpy.ops.stylepass.style_group_add() == {"FINISHED"}
    groups = scene.stylepass.style_groups
    assert [g.name for g in groups] == ["Group 1", "Group 2"] and scene.stylepass.style_group_index == 1
    first = groups[0]
    assert sorted(e.object.name for e in first.objects) == ["Box", "Sphere"]
    assert first.neural_style.style_preset == "style_07" and first.strength == pytest.approx(0.8)
    scene.stylepass.style_group_index = 0
    for obj in scene.objects:
        obj.select_set(obj == objects["wall"])
    assert bpy.ops.stylepass.style_group_assign() == {"FINISHED"}
    assert bpy.ops.stylepass.style_group_assign() == {"FINISHED"}  # already in: listed once
    assert sorted(e.object.name for e in first.objects) == ["Box", "Sphere", "Wall"]
    first.object_index = 0
    assert bpy.ops.stylepass.style_group_unassign() == {"FINISHED"}
    assert len(first.objects) == 2
    assert bpy.ops.stylepass.style_group_remove() == {"FINISHED"}
    assert [g.name for g in groups] == ["Group 2"] and scene.stylepass.style_group_index == 0


def test_the_readme_style_group_example_runs(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    buildings = bpy.data.collections.new("Buildings")
    scene.collection.children.link(buildings)
    buildings.objects.link(objects["box"])
    example = next(e for e in readme_python_examples() if "style_groups" in e)
    exec(compile(example, "README.md", "exec"), {})
    record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
    assert [(g["name"], g["objects"]) for g in record["context"]["style_groups"]] == [("Buildings", ["Box"])]
