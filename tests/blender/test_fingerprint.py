# SPDX-License-Identifier: GPL-3.0-or-later
"""The scene fingerprint: what cannot change a pass leaves it alone (output settings, final samples, reopening
the file), what can changes it, and passes and stylised frames are reused accordingly."""

import threading
from dataclasses import replace

import bpy
import numpy as np
import pytest
from conftest import addon_module
from scenes import animated_scene, known_scene

from stylepass_core.settings import CoherenceSettings

scene_passes = addon_module("addon.scene_passes")
scene_fingerprint = addon_module("addon.scene_fingerprint")
runtime = addon_module("addon.runtime")
animation = addon_module("addon.animation")
stylise = addon_module("addon.stylise")


def _options(out_dir, **values):
    return scene_passes.PassOptions(output_dir=str(out_dir), show_images=False, pass_samples=1, **values)


def _fingerprint(scene, out_dir, **values):
    view_layer = bpy.context.view_layer
    view_layer.update()
    return scene_passes.pass_fingerprint(scene, view_layer, _options(out_dir, **values))


def _shaded_scene(scene):
    """`known_scene` with what the fingerprint must see through: a material whose colour comes from a node
    group, an image texture, a world with nodes, a modifier."""
    objects = known_scene(scene)
    group = bpy.data.node_groups.new("Tint", "ShaderNodeTree")
    group.interface.new_socket("Colour", in_out="OUTPUT", socket_type="NodeSocketColor")
    rgb = group.nodes.new("ShaderNodeRGB")
    rgb.name = "Tint RGB"
    rgb.outputs[0].default_value = (0.8, 0.2, 0.1, 1.0)
    group.links.new(rgb.outputs[0], group.nodes.new("NodeGroupOutput").inputs[0])
    material = bpy.data.materials.new("Paint")
    world = bpy.data.worlds.new("Sky")
    if bpy.app.version < (5, 0, 0):  # 5.x: always nodes, and the switch is deprecated
        material.use_nodes = world.use_nodes = True
    tree = material.node_tree
    node = tree.nodes.new("ShaderNodeGroup")
    node.node_tree = group
    tree.links.new(node.outputs[0], tree.nodes["Principled BSDF"].inputs["Base Color"])
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = bpy.data.images.new("Grain", 8, 8)
    tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Roughness"])
    objects["box"].data.materials.append(material)
    scene.world = world
    subsurf = objects["sphere"].modifiers.new("Smooth", "SUBSURF")
    subsurf.levels, subsurf.render_levels = 1, 2
    return objects


# Settings that cannot change a pass: the final render's output and quality, what the pass render sets itself,
# the interface.
UNCHANGED = {
    "output path": lambda scene, objects: setattr(scene.render, "filepath", "/elsewhere/shot_####"),
    "file format": lambda scene, objects: setattr(scene.render.image_settings, "file_format", "JPEG"),
    "final samples": lambda scene, objects: setattr(scene.cycles, "samples", 1024),
    "denoising": lambda scene, objects: setattr(
        scene.cycles, "use_denoising", not scene.cycles.use_denoising
    ),
    "noise threshold": lambda scene, objects: setattr(scene.cycles, "adaptive_threshold", 0.5),
    "time limit": lambda scene, objects: setattr(scene.cycles, "time_limit", 30.0),
    "view layer samples": lambda scene, objects: setattr(bpy.context.view_layer, "samples", 77),
    "render engine": lambda scene, objects: setattr(scene.render, "engine", "BLENDER_WORKBENCH"),
    "render border": lambda scene, objects: setattr(scene.render, "use_border", True),
    "compositing": lambda scene, objects: setattr(scene.render, "use_compositing", False),
    "burnt-in metadata": lambda scene, objects: setattr(scene.render, "use_stamp", True),
    "threads": lambda scene, objects: setattr(scene.render, "threads_mode", "FIXED"),
    "extra passes": lambda scene, objects: setattr(bpy.context.view_layer, "use_pass_mist", True),
    "node moved": lambda scene, objects: setattr(
        bpy.data.materials["Paint"].node_tree.nodes["Group"], "location", (300.0, -40.0)
    ),
    "node selected": lambda scene, objects: setattr(
        bpy.data.materials["Paint"].node_tree.nodes["Group"], "select", False
    ),
    "not selectable": lambda scene, objects: setattr(objects["camera"], "hide_select", True),
    "show modifier panel": lambda scene, objects: setattr(
        objects["sphere"].modifiers["Smooth"], "show_expanded", False
    ),
    "output folder": "output_dir",
    "show images": "show_images",
}


@pytest.mark.parametrize("change", UNCHANGED, ids=list(UNCHANGED))
def test_settings_that_cannot_change_a_pass_keep_the_fingerprint(change, empty_file, out_dir, tmp_path):
    scene = empty_file
    objects = _shaded_scene(scene)
    before = _fingerprint(scene, out_dir)
    if change == "output folder":
        after = _fingerprint(scene, tmp_path / "elsewhere")
    elif change == "show images":
        view_layer = bpy.context.view_layer
        options = replace(_options(out_dir), show_images=True)
        after = scene_passes.pass_fingerprint(scene, view_layer, options)
    else:
        UNCHANGED[change](scene, objects)
        after = _fingerprint(scene, out_dir)
    assert after == before


def _set_curve_point(scene):
    scene.view_settings.use_curve_mapping = True
    scene.view_settings.curve_mapping.curves[3].points[0].location = (0.0, 0.1)


def _flat_shading(objects):
    for polygon in objects["sphere"].data.polygons:
        polygon.use_smooth = False


# Settings that change a pass (or the beauty an engine sees). Some of these the fingerprint used to miss.
CHANGED = {
    "resolution": lambda scene, objects: setattr(scene.render, "resolution_x", 96),
    "resolution percentage": lambda scene, objects: setattr(scene.render, "resolution_percentage", 50),
    "pixel aspect": lambda scene, objects: setattr(scene.render, "pixel_aspect_x", 2.0),
    "transparent film": lambda scene, objects: setattr(scene.render, "film_transparent", True),
    "dither": lambda scene, objects: setattr(scene.render, "dither_intensity", 0.0),
    "light bounces": lambda scene, objects: setattr(scene.cycles, "max_bounces", 3),
    "sampling seed": lambda scene, objects: setattr(scene.cycles, "seed", 5),
    "exposure": lambda scene, objects: setattr(scene.view_settings, "exposure", 1.0),
    "view transform": lambda scene, objects: setattr(scene.view_settings, "view_transform", "Standard"),
    "view curve": lambda scene, objects: _set_curve_point(scene),
    "lens": lambda scene, objects: setattr(objects["camera"].data, "lens", 35.0),
    "lens shift": lambda scene, objects: setattr(objects["camera"].data, "shift_x", 0.1),
    "depth of field": lambda scene, objects: setattr(objects["camera"].data.dof, "use_dof", True),
    "camera moved": lambda scene, objects: setattr(objects["camera"], "location", (0.0, 0.0, 0.5)),
    "light energy": lambda scene, objects: setattr(bpy.data.lights["Sun"], "energy", 3.0),
    "world colour": lambda scene, objects: setattr(
        scene.world.node_tree.nodes["Background"].inputs["Color"], "default_value", (0.2, 0.3, 0.9, 1.0)
    ),
    "value inside a node group": lambda scene, objects: setattr(
        bpy.data.node_groups["Tint"].nodes["Tint RGB"].outputs[0], "default_value", (0.1, 0.9, 0.1, 1.0)
    ),
    "image colour space": lambda scene, objects: setattr(
        bpy.data.images["Grain"].colorspace_settings, "name", "Non-Color"
    ),
    "material assigned": lambda scene, objects: objects["wall"].data.materials.append(
        bpy.data.materials["Paint"]
    ),
    "flat shading": lambda scene, objects: _flat_shading(objects),
    "render subdivision": lambda scene, objects: setattr(
        objects["sphere"].modifiers["Smooth"], "render_levels", 3
    ),
    "invisible to camera": lambda scene, objects: setattr(objects["sphere"], "visible_camera", False),
    "holdout": lambda scene, objects: setattr(objects["wall"], "is_holdout", True),
    "object colour": lambda scene, objects: setattr(objects["box"], "color", (1.0, 0.0, 0.0, 1.0)),
    "semantic class": lambda scene, objects: setattr(objects["box"].stylepass, "semantic_class", "BUILDING"),
    "frame": lambda scene, objects: scene.frame_set(5),
    "resolution scale": "resolution_scale",
    "line thickness": "line_thickness",
}


@pytest.mark.parametrize("change", CHANGED, ids=list(CHANGED))
def test_what_shapes_a_pass_changes_the_fingerprint(change, empty_file, out_dir):
    scene = empty_file
    objects = _shaded_scene(scene)
    before = _fingerprint(scene, out_dir)
    if change == "resolution scale":
        after = _fingerprint(scene, out_dir, resolution_scale=50.0)
    elif change == "line thickness":
        after = _fingerprint(scene, out_dir, line_thickness=3.0)
    else:
        CHANGED[change](scene, objects)
        after = _fingerprint(scene, out_dir)
    assert after != before


def test_the_pass_render_ignores_every_setting_the_fingerprint_leaves_out(empty_file, out_dir, monkeypatch):
    """What the pass render overrides is exactly what `SET_BY_PASS_RENDER` names (plus the size, which it
    computes from hashed settings): the two lists cannot drift apart."""
    scene = empty_file
    known_scene(scene)
    touched = set()
    render_state = addon_module("addon.render_state")
    original = render_state.SettingsOverride.set

    def recording(self, owner, attribute, value):
        touched.add((owner.bl_rna.identifier, attribute))
        return original(self, owner, attribute, value)

    monkeypatch.setattr(render_state.SettingsOverride, "set", recording)
    scene_passes.render_passes(scene, bpy.context.view_layer, _options(out_dir))
    computed = {("RenderSettings", n) for n in ("resolution_x", "resolution_y", "resolution_percentage")}
    # The passes it switches on, and the pass index it gives every object: read back from the render itself.
    own = {(kind, name) for kind, name in touched if name.startswith("use_pass_") or name == "pass_index"}
    # Where the beauty is saved: the image format is not hashed at all.
    saving = {(kind, name) for kind, name in touched if kind == "ImageFormatSettings"}
    listed = {(kind, name) for kind, names in scene_fingerprint.SET_BY_PASS_RENDER.items() for name in names}
    assert touched - computed - own - saving <= listed


def _render(scene, out_dir, reuse=True):
    return scene_passes.render_passes(scene, bpy.context.view_layer, _options(out_dir), reuse=reuse)


def test_output_path_and_final_samples_reuse_the_passes(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    first = _render(scene, out_dir)
    assert not first.reused
    scene.render.filepath = "/renders/final/shot_"
    scene.cycles.samples = 2048
    runtime.RUNTIME.release()  # from disk, not from memory
    again = _render(scene, out_dir)
    assert again.reused
    scene.render.resolution_x += 8
    assert not _render(scene, out_dir).reused


def test_reopening_the_file_keeps_the_fingerprint_and_reuses_the_passes(empty_file, out_dir, tmp_path):
    scene = empty_file
    _shaded_scene(scene)
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    first = _render(bpy.context.scene, out_dir)
    before = _fingerprint(bpy.context.scene, out_dir)

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    assert _fingerprint(scene, out_dir) == before
    assert _render(scene, out_dir).reused
    runtime.RUNTIME.release()
    reloaded = _render(scene, out_dir)
    assert reloaded.reused
    for name, array in first.maps.items():
        assert np.array_equal(reloaded.maps[name], array), name


def _animate(scene):
    run_settings = stylise.RunSettings.from_scene(scene)
    run_settings = replace(run_settings, passes=run_settings.passes.replace(show_images=False))
    anim = animation.AnimationOptions(
        scene.frame_start, scene.frame_end, coherence=CoherenceSettings(temporal_coherence=True)
    )
    summary = animation.AnimationSummary()
    stop = threading.Event()
    for step in animation.animation_steps(
        scene, bpy.context.view_layer, run_settings, anim, stop=stop, summary=summary
    ):
        if step.waiting:
            step.job.wait()
    return summary


def test_an_animation_is_not_stylised_again_for_an_output_path_or_a_reopened_file(
    empty_file, out_dir, tmp_path
):
    scene = empty_file
    animated_scene(scene, 3)
    scene.stylepass.output_dir = str(out_dir)
    scene.stylepass.neural_style.style_preset = "style_07"
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert _animate(scene).stylised == [1, 2, 3]

    scene.render.filepath = str(tmp_path / "final" / "shot_")
    scene.cycles.samples = 512
    assert _animate(scene).skipped == [1, 2, 3]

    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    runtime.RUNTIME.release()
    again = _animate(bpy.context.scene)
    assert again.skipped == [1, 2, 3] and again.stylised == []
