# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass never renames, rewrites or re-points a datablock it did not create: it recognises its own by a
stored marker, and when its name is taken it uses another and says so."""

import bpy
import pytest
from conftest import addon_module
from scenes import known_scene

compositor = addon_module("addon.compositor")
stylise = addon_module("addon.stylise")
ownership = addon_module("addon.ownership")


def _scene(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.stylepass.output_dir = str(out_dir)
    return empty_file


def _tree(scene):
    return scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree


@pytest.mark.parametrize("kind", ["CompositorNodeTree", "ShaderNodeTree"])
def test_an_artists_group_called_stylepass_is_left_alone(empty_file, out_dir, kind):
    scene = _scene(empty_file, out_dir)
    mine = bpy.data.node_groups.new(compositor.GROUP_NAME, kind)
    mine.nodes.new("NodeGroupInput" if kind == "CompositorNodeTree" else "ShaderNodeMath")
    result = stylise.stylise(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    assert any("did not create" in warning and "left it alone" in warning for warning in result.warnings)
    ours = compositor.find_group()
    assert ours is not None and ours != mine and ours.name.startswith(compositor.GROUP_NAME + ".")
    assert mine.name == compositor.GROUP_NAME and len(mine.nodes) == 1 and mine.bl_idname == kind
    assert ownership.ROLE_KEY not in mine.keys()
    assert compositor.find_group_node(_tree(scene)).node_tree == ours
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}  # a second run finds its own again, by its marker
    assert compositor.find_group() == ours and len(mine.nodes) == 1


def test_nodes_the_artist_put_inside_the_group_survive_a_rerun(empty_file, out_dir):
    _scene(empty_file, out_dir)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    group = compositor.find_group()
    grade = group.nodes.new("CompositorNodeBlur")
    grade.name = "My Grade"
    link_count = len(group.links)
    image_before = group.nodes["Stylised"].image
    empty_file.stylepass.neural_style.style_preset = "style_12"
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    assert compositor.find_group() == group and group.nodes.get("My Grade") == grade
    assert len(group.links) == link_count
    assert group.nodes["Stylised"].image == image_before  # the same (ours), now showing the new file


def test_a_group_edited_so_it_shows_nothing_becomes_the_artists(empty_file, out_dir):
    _scene(empty_file, out_dir)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    group = compositor.find_group()
    group.nodes.new("CompositorNodeBlur").name = "My Grade"
    group.nodes.remove(group.nodes["Stylised"])
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    assert compositor.find_group() != group and group.nodes.get("My Grade") is not None
    assert ownership.ROLE_KEY not in group.keys()


def test_an_artists_image_with_the_result_name_is_not_re_pointed(empty_file, out_dir, tmp_path):
    _scene(empty_file, out_dir)
    texture = bpy.data.images.new(compositor.STYLISED_IMAGE, 8, 8)
    texture.filepath_raw = str(tmp_path / "brick.png")
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    assert texture.name == compositor.STYLISED_IMAGE and texture.filepath_raw == str(tmp_path / "brick.png")
    assert texture.source == "GENERATED" and ownership.ROLE_KEY not in texture.keys()
    ours = ownership.find(bpy.data.images, compositor.STYLISED_ROLE)
    assert ours is not None and ours != texture and "compositor" in ours.filepath
    assert compositor.find_group().nodes["Stylised"].image == ours
