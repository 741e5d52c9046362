# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups on known geometry (issue 15, neural style): each group's pixels come from its own style, none of
a group's style reaches beyond 3 px outside its objects, the record and the animation key hold the groups,
the groups survive save and reload, and bad groups are refused with the group named."""

import json

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, readme_python_examples, scene_snapshot
from scenes import known_scene

from stylepass_core import compositor_layers, exr, png
from stylepass_core.errors import StylepassError

compositor = addon_module("addon.compositor")
runtime = addon_module("addon.runtime")
stylise = addon_module("addon.stylise")
takes = addon_module("addon.takes")


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
    scene.stylepass.style_groups.remove(0)
    cone = bpy.data.objects.new("Cone", bpy.data.meshes.new("Cone"))
    scene.collection.objects.link(cone)
    _add_group(scene, "Gone", "style_03", cone)
    bpy.data.objects.remove(cone)
    before = scene_snapshot(scene)
    with pytest.raises(StylepassError, match=r"Style group 'Gone' has no objects \(its object was deleted\)"):
        _stylise(scene)
    assert diff_snapshots(before, scene_snapshot(scene)) == []
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


def _final_input(scene):
    if compositor.COMPOSITOR_IS_GROUP:
        tree = scene.compositing_node_group
        return tree, next(n for n in tree.nodes if n.bl_idname == "NodeGroupOutput").inputs[0]
    tree = scene.node_tree
    return tree, next(n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite").inputs["Image"]


def _composited(scene, socket, path):
    """F12 with `socket` as the compositor's result, saved as a 32-bit EXR: its scene-linear RGB."""
    tree, final = _final_input(scene)
    tree.links.new(socket, final)
    scene.render.filepath = str(path)
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "OPEN_EXR"
    settings.color_depth, settings.exr_codec, settings.color_mode = "32", "NONE", "RGB"
    scene.render.use_file_extension = False
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    channels = exr.read_exr(path)
    return np.stack([channels[c] for c in "RGB"], axis=-1)


def test_the_compositor_shows_each_groups_layer_and_mask_as_on_disk(empty_file, out_dir, tmp_path):
    scene, objects = _scene(empty_file, out_dir)
    scene.view_settings.view_transform = "Standard"
    _add_group(scene, "Ink", "style_03", objects["box"]).strength = 0.8
    _add_group(scene, "Wash.2", "style_05", objects["sphere"])
    _, result = _stylise(scene)
    layers_file = out_dir / scene.name / "stylised" / "layers" / "0001.exr"
    on_disk = exr.group_passes(exr.read_exr(layers_file), compositor_layers.VIEW_LAYER)
    # A dot would split the channel name: "Wash.2" becomes "Wash_2".
    assert sorted(on_disk) == ["Ink Layer", "Ink Mask", "Line Art", "Wash_2 Layer", "Wash_2 Mask"]
    tree, final = _final_input(scene)
    node = compositor.find_group_node(tree)
    assert [s.name for s in node.outputs] == [
        "Image", "Stylised", "Line Art", "Ink Layer", "Ink Mask", "Wash_2 Layer", "Wash_2 Mask"
    ]  # fmt: skip
    wired_to_final = final.links[0].from_socket
    for name, passes in on_disk.items():
        shown = _composited(scene, node.outputs[name], tmp_path / f"{name}.exr")
        expected = passes if passes.shape[-1] == 3 else np.repeat(passes, 3, axis=-1)
        np.testing.assert_array_equal(shown, expected, err_msg=name)
    # The masks: 1 inside each group's objects (3 px in), 0 far outside; the layers are the whole frame.
    box = _erode(_mask(result, "Box"), 3)
    assert on_disk["Ink Mask"][box].min() == 1.0 and on_disk["Wash_2 Mask"][box].max() == 0.0
    assert np.abs(np.diff(on_disk["Ink Layer"], axis=1)).mean() > 0.01  # a style, not a flat colour
    assert 0.0 < on_disk["Line Art"].mean() < 0.5
    tree.links.new(wired_to_final, final)

    # A group removed: its outputs go, the artist's link from Image stays, and the first take still has its layers.
    scene.stylepass.style_groups.remove(1)
    runtime.RUNTIME.kept_passes.clear()  # the passes come back from disk, each map read on first use
    _, again = _stylise(scene)
    assert again.passes.reused
    assert "Line Art" in exr.group_passes(exr.read_exr(layers_file), compositor_layers.VIEW_LAYER)
    assert [s.name for s in node.outputs] == ["Image", "Stylised", "Line Art", "Ink Layer", "Ink Mask"]
    assert final.links[0].from_socket == node.outputs["Image"]
    takes.choose(scene, 1)
    assert [s.name for s in node.outputs][-2:] == ["Wash_2 Layer", "Wash_2 Mask"]
    kept = out_dir / scene.name / "stylised" / "takes" / "0001"
    assert sorted(p.name for p in kept.glob("001.*")) == ["001.exr", "001.json", "001.layers.exr", "001.png"]
    assert exr.read_exr(layers_file).keys() == exr.read_exr(kept / "001.layers.exr").keys()
