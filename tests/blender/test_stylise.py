# SPDX-License-Identifier: GPL-3.0-or-later
"""A stylised still, end to end: passes -> neural style (real weights) -> files -> compositor -> F12."""

import json

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, readme_python_examples, scene_snapshot
from scenes import HEIGHT, WIDTH, known_scene

from stylepass_core import engine_api, exr, png

compositor = addon_module("addon.compositor")
display_colour = addon_module("addon.display_colour")
stylise = addon_module("addon.stylise")


def _scene(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 2
    scene.cycles.device = "CPU"
    scene.stylepass.output_dir = str(out_dir)
    scene.stylepass.neural_style.style_preset = "style_07"
    return scene, objects


def _stylised(out_dir, scene, frame=1):
    folder = out_dir / scene.name / "stylised"
    return png.read_png(folder / f"{frame:04d}.png")[..., :3], json.loads(
        (folder / f"{frame:04d}.json").read_text()
    )


def _tree(scene):
    return scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree


def _f12(scene, path, file_format="PNG"):
    """An ordinary F12 render through the compositor, saved in `file_format`; returns the pixels."""
    scene.render.filepath = str(path)
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = file_format
    if file_format == "OPEN_EXR":
        settings.color_depth = "32"
        settings.exr_codec = "NONE"
    else:
        settings.color_depth = "8"
    settings.color_mode = "RGB"
    scene.render.use_file_extension = False
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    if file_format == "OPEN_EXR":
        channels = exr.read_exr(path)
        return np.stack([channels[c] for c in "RGB"], axis=-1)
    return png.read_png(path)[..., :3].astype(np.int32)


def test_stylise_writes_image_record_and_group(empty_file, out_dir):
    scene, _ = _scene(empty_file, out_dir)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    image, record = _stylised(out_dir, scene)
    assert image.shape == (HEIGHT, WIDTH, 3)
    beauty = png.read_png(out_dir / scene.name / "passes" / "beauty" / "0001.png")[..., :3]
    assert np.abs(image.astype(int) - beauty.astype(int)).mean() > 10, "the style must change the picture"
    assert record["engine"] == "NEURAL_STYLE"
    assert record["request"]["settings"]["values"]["style_preset"] == "style_07"
    assert record["frame"]["strength"] == 1.0
    assert record["result"]["versions"]["onnxruntime"]
    assert record["timings"]["engine"] > 0
    assert record["context"]["frame"] == 1 and record["context"]["passes_reused"] is False
    # The compositor shows it: one group datablock, one node using it, wired into the default tree.
    assert bpy.data.images.get(compositor.STYLISED_IMAGE) is not None
    groups = [g for g in bpy.data.node_groups if g.name.startswith(compositor.GROUP_NAME)]
    assert [g.name for g in groups] == [compositor.GROUP_NAME]
    node = compositor.find_group_node(_tree(scene))
    assert node is not None and node.inputs["Image"].is_linked and node.outputs["Image"].is_linked


def test_second_run_reuses_passes_and_keeps_one_group(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    bpy.ops.stylepass.stylise()
    node = compositor.find_group_node(_tree(scene))
    node.inputs["Factor"].default_value = 0.25  # the artist's choice survives an update
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    assert _stylised(out_dir, scene)[1]["context"]["passes_reused"] is True
    tree = _tree(scene)
    group_nodes = [n for n in tree.nodes if n.bl_idname == "CompositorNodeGroup"]
    assert len(group_nodes) == 1 and group_nodes[0].inputs["Factor"].default_value == pytest.approx(0.25)
    assert len([g for g in bpy.data.node_groups if g.name.startswith(compositor.GROUP_NAME)]) == 1
    # A change to the scene means new passes.
    objects["box"].location.x += 0.2
    bpy.ops.stylepass.stylise()
    assert _stylised(out_dir, scene)[1]["context"]["passes_reused"] is False


def test_rerun_shows_the_new_result_in_f12(empty_file, out_dir, tmp_path):
    # A re-run only drops the image's pixels (Blender reads the new file when the render needs it) and keeps
    # the group as it is: F12 must still show the new result, not the first.
    scene, _ = _scene(empty_file, out_dir)
    scene.view_settings.view_transform = "Standard"
    bpy.ops.stylepass.stylise()
    first = _f12(scene, tmp_path / "first.png")
    group = bpy.data.node_groups[compositor.GROUP_NAME]
    inside = {node.name: node.as_pointer() for node in group.nodes}
    scene.stylepass.neural_style.style_preset = "style_12"
    bpy.ops.stylepass.stylise()
    stylised, record = _stylised(out_dir, scene)
    assert record["request"]["settings"]["values"]["style_preset"] == "style_12"
    second = _f12(scene, tmp_path / "second.png")
    assert np.abs(second - first).mean() > 5, "F12 still shows the first result"
    assert np.abs(second - stylised.astype(np.int32)).max() <= 2
    assert {node.name: node.as_pointer() for node in group.nodes} == inside  # updated, not rebuilt


def test_a_changed_group_inside_is_rebuilt(empty_file, out_dir):
    _scene(empty_file, out_dir)
    bpy.ops.stylepass.stylise()
    group = bpy.data.node_groups[compositor.GROUP_NAME]
    group.nodes.remove(group.nodes["Mix by Mask"])  # the artist (or an old version) broke the inside
    bpy.ops.stylepass.stylise()
    group = bpy.data.node_groups[compositor.GROUP_NAME]
    assert {node.name for node in group.nodes} >= {"Mix by Factor", "Mix by Mask", "Stylised", "Layers"}
    assert len(group.links) == 9  # 8 for the mix, 1 for the line art
    assert group.nodes["Stylised"].image == bpy.data.images[compositor.STYLISED_IMAGE]


def test_passes_kept_in_memory_follow_the_files(empty_file, out_dir):
    scene, _ = _scene(empty_file, out_dir)
    view_layer = bpy.context.view_layer
    options = stylise.RunSettings.from_scene(scene)
    first = stylise.prepare(scene, view_layer, options).passes
    again = stylise.prepare(scene, view_layer, options).passes
    assert again.reused and again.maps["beauty"] is first.maps["beauty"]  # from memory: no file read
    with pytest.raises(ValueError):
        again.maps["beauty"][0, 0, 0] = 0.5  # shared by every reuse, so nobody may change it
    # Another Blender rendered the frame again: the record changed on disk, so the memory copy is stale.
    record_path = again.json_path
    record = json.loads(record_path.read_text())
    beauty_path = out_dir / scene.name / "passes" / "beauty" / "0001.png"
    png.write_png(beauty_path, np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    record["note"] = "rendered elsewhere"
    record_path.write_text(json.dumps(record))
    reread = stylise.prepare(scene, view_layer, options).passes
    assert reread.reused and reread.maps["beauty"] is not first.maps["beauty"]
    assert reread.maps["beauty"].max() == 0.0


def test_users_nodes_and_links_survive(empty_file, out_dir):
    scene, _ = _scene(empty_file, out_dir)
    if compositor.COMPOSITOR_IS_GROUP:
        tree = bpy.data.node_groups.new("Mine", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        output = tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
        final = output.inputs[0]
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        final = next(n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite").inputs["Image"]
    layers = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"), None)
    layers = layers or tree.nodes.new("CompositorNodeRLayers")
    blur = tree.nodes.new("CompositorNodeBlur")
    blur.name = "My Blur"
    for link in list(final.links):
        tree.links.remove(link)
    tree.links.new(layers.outputs["Image"], blur.inputs[0])
    tree.links.new(blur.outputs[0], final)

    def state():
        nodes = sorted((n.name, n.bl_idname) for n in tree.nodes)
        links = sorted(
            (lk.from_node.name, lk.from_socket.identifier, lk.to_node.name, lk.to_socket.identifier)
            for lk in tree.links
        )
        return nodes, links

    nodes_before, links_before = state()
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    nodes_after, links_after = state()
    assert set(nodes_before) <= set(nodes_after) and len(nodes_after) == len(nodes_before) + 1
    assert set(links_before) <= set(links_after)
    node = compositor.find_group_node(tree)
    assert node.inputs["Image"].is_linked and not node.outputs["Image"].is_linked
    assert _source(final) == blur.outputs[0]


def _source(socket):
    return socket.links[0].from_socket if socket.is_linked else None


def test_f12_composite_is_the_mix_at_the_factor(empty_file, out_dir, tmp_path):
    scene, _ = _scene(empty_file, out_dir)
    scene.cycles.seed = 3
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    node = compositor.find_group_node(_tree(scene))
    linear = {}
    for factor in (0.0, 0.5, 1.0):
        node.inputs["Factor"].default_value = factor
        linear[factor] = _f12(scene, tmp_path / f"f{factor}.exr", "OPEN_EXR")
    # Scene-linear numbers: factor 0.5 is exactly halfway between the plain render and the stylised image.
    np.testing.assert_allclose(linear[0.5], 0.5 * linear[0.0] + 0.5 * linear[1.0], atol=1e-5)
    assert np.abs(linear[1.0] - linear[0.0]).mean() > 0.02
    # Factor 0 is the plain render: the same as rendering with compositing off.
    scene.render.use_compositing = False
    plain = _f12(scene, tmp_path / "plain.exr", "OPEN_EXR")
    scene.render.use_compositing = True
    np.testing.assert_allclose(linear[0.0], plain, atol=1e-6)


@pytest.mark.parametrize("view", ["Standard", "Filmic", "AgX"])
def test_f12_at_factor_one_matches_the_stylised_png(empty_file, out_dir, tmp_path, view):
    scene, _ = _scene(empty_file, out_dir)
    scene.view_settings.view_transform = view
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    stylised, _ = _stylised(out_dir, scene)
    shown = _f12(scene, tmp_path / "f12.png")
    difference = np.abs(shown - stylised.astype(np.int32))
    # A view transform cannot show every display colour (AgX leaves about a third of the cube out, many
    # saturated colours among them): compare where the view can reproduce the colour, and require a warning
    # when a visible share of the image is out of its reach.
    display = stylised.astype(np.float32) / 255.0
    reachable = display_colour.inverse_view(scene).distance_at(display, worst=True) <= 1.0 / 255.0
    warnings = _compositor_pixels(scene, display)[2]
    if view in ("Standard", "Filmic"):
        assert reachable.mean() > 0.99, (view, reachable.mean())
    if reachable.mean() < 0.995:
        assert any("reach" in w or "cannot" in w or "level" in w for w in warnings), warnings
    assert reachable.mean() > 0.5
    close = difference[reachable]
    figures = (view, close.max(), close.mean(), np.percentile(close, 99))
    assert close.mean() < 0.5 and np.percentile(close, 99) <= 2, figures
    if view in ("Standard", "Filmic"):
        assert close.max() <= 2, figures
    else:
        # AgX bends sharply near the edge of what it can show; a few pixels there land further off.
        assert close.max() <= 16, figures


def test_mask_keeps_excluded_objects_as_rendered(empty_file, out_dir):
    scene, objects = _scene(empty_file, out_dir)
    objects["box"].stylepass.in_selection = True
    scene.stylepass.object_filter = "EXCLUDE"
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    stylised, record = _stylised(out_dir, scene)
    passes = out_dir / scene.name / "passes"
    beauty = png.read_png(passes / "beauty" / "0001.png")[..., :3].astype(int)
    index = png.read_png(passes / "object_index" / "0001.png")[..., 0]
    box = {e["name"]: e["index"] for e in json.loads((passes / "0001.json").read_text())["objects"]}["Box"]
    assert record["frame"]["object_filter"] == "EXCLUDE" and record["selection"] == [box]
    inside = index == box
    assert np.abs(stylised[inside].astype(int) - beauty[inside]).max() <= 1
    assert np.abs(stylised[~inside].astype(int) - beauty[~inside]).mean() > 10


def _expect_error(scene, match):
    before = scene_snapshot(scene)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.stylepass.stylise()
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert bpy.data.node_groups.get(compositor.GROUP_NAME) is None


def test_missing_style_image(empty_file, out_dir):
    scene, _ = _scene(empty_file, out_dir)
    scene.stylepass.neural_style.style_source = "IMAGE"
    _expect_error(scene, r"Style Image is needed \(Style Source is Image\)")
    image = bpy.data.images.new("Painting", 4, 4)
    image.source = "FILE"
    image.filepath = str(out_dir / "gone.png")
    scene.stylepass.neural_style.style_image = image
    _expect_error(scene, "has no pixels")
    assert not (out_dir / scene.name).exists()


def test_engine_unavailable(empty_file, out_dir, monkeypatch):
    scene, _ = _scene(empty_file, out_dir)

    def unavailable(engine_id):
        raise engine_api.EngineUnavailable(engine_id, "onnxruntime is not installed")

    monkeypatch.setattr(stylise, "get_engine", unavailable)
    _expect_error(scene, "onnxruntime is not installed")
    assert not (out_dir / scene.name).exists()


def test_unwritable_output_folder(empty_file, out_dir, tmp_path):
    scene, _ = _scene(empty_file, out_dir)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    scene.stylepass.output_dir = str(blocker)
    _expect_error(scene, "Cannot write to the output folder")


def _compositor_pixels(scene, display_rgb):
    """(scene-linear float32 pixels, colour space, warnings) for `display_rgb` under the scene's view."""
    target = display_colour.compositor_target(scene)
    pixels, warnings = target.convert(display_rgb)
    return pixels.astype(np.float32), target.colour_space, warnings


def test_the_readme_scripting_example_runs(empty_file, out_dir):
    scene, _ = _scene(empty_file, out_dir)
    painting = out_dir / "painting.png"
    png.write_png(painting, np.full((64, 64, 3), 200, np.uint8))
    example = next(e for e in readme_python_examples() if "painting.jpg" in e).replace(
        "/path/painting.jpg", str(painting)
    )
    example = example.replace('"//stylepass/"', repr(str(out_dir)))
    exec(compile(example, "README.md", "exec"), {})
    _, record = _stylised(out_dir, scene)
    assert record["request"]["settings"]["values"]["style_preset"] == "style_07"
    assert record["frame"]["strength"] == pytest.approx(0.8)
    assert compositor.find_group_node(_tree(scene)).inputs["Factor"].default_value == pytest.approx(0.7)


def test_a_texture_missing_its_file_is_reported(empty_file, out_dir, tmp_path):
    scene, objects = _scene(empty_file, out_dir)
    material = bpy.data.materials.new("Bricks")
    if material.node_tree is None:  # 5.x materials always have nodes (use_nodes is deprecated there)
        material.use_nodes = True
    texture = material.node_tree.nodes.new("ShaderNodeTexImage")
    image = bpy.data.images.new("bricks.png", 4, 4)
    image.source = "FILE"
    image.filepath = str(tmp_path / "gone" / "bricks.png")
    texture.image = image
    objects["box"].data.materials.append(material)
    result = stylise.stylise(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    assert any("'bricks.png' is missing its file" in warning for warning in result.warnings), result.warnings
