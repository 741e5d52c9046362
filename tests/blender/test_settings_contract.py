# SPDX-License-Identifier: GPL-3.0-or-later
"""The settings contract from Blender: generated properties match the dataclasses one to one, old files keep
their settings, errors become reports, and one runtime object owns (and releases) what stays in memory."""

import json
from pathlib import Path

import bpy
import pytest
from conftest import addon_module
from scenes import known_scene

from stylepass_core import engine_api
from stylepass_core.settings import SCENE_GROUPS, engine_settings

properties = addon_module("addon.properties")
settings_module = addon_module("addon.settings")
stylise = addon_module("addon.stylise")
runtime = addon_module("addon.runtime")
compositor = addon_module("addon.compositor")

DATA = Path(__file__).resolve().parent / "data"


def _property_matches(group, name, kind, spec, default):
    prop = group.bl_rna.properties[name]
    assert prop.name == spec.label and prop.description == spec.description, name
    if spec.item is not None:
        assert prop.type == "COLLECTION"
    elif spec.image:
        assert prop.type == "POINTER" and prop.fixed_type.identifier == "Image"
    elif spec.choices is not None:
        assert prop.type == "ENUM" and [item.identifier for item in prop.enum_items] == [
            c[0] for c in spec.choices
        ]
        assert prop.default == default
    else:
        assert prop.type == {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}[kind], name
        if kind is float:
            assert prop.default == pytest.approx(default, rel=1e-6), name
        else:
            assert prop.default == default, name
        if kind in (int, float):
            for limit in ("min", "max", "soft_min", "soft_max"):
                value = getattr(spec, limit)
                if value is not None:
                    assert getattr(prop, f"hard_{limit}" if "soft" not in limit else limit) == pytest.approx(
                        value
                    )


def test_properties_are_the_dataclasses_one_to_one():
    scene_props = settings_module.StylepassSceneSettings.bl_rna.properties
    # Beside the generated fields: the engine choice and the style groups (each holds every engine's settings).
    expected = {"rna_type", "name", "engine", "style_groups", "style_group_index"}
    for cls in SCENE_GROUPS:
        for name, kind, spec, default in cls.specs():
            _property_matches(settings_module.StylepassSceneSettings, name, kind, spec, default)
            expected.add(name)
    for cls in engine_settings():
        expected.add(cls.PROPERTY)
        group = properties.group_for(cls)
        names = set()
        for name, kind, spec, default in cls.specs():
            if name in cls.HOST_FIELDS:
                continue
            _property_matches(group, name, kind, spec, default)
            names.add(name)
        assert {p.identifier for p in group.bl_rna.properties} - {"rna_type", "name"} == names
    assert {p.identifier for p in scene_props} == expected
    group_props = {p.identifier for p in settings_module.StylepassStyleGroup.bl_rna.properties}
    assert group_props == {
        "rna_type", "name", "objects", "object_index", "collection", "semantic_class", "strength", "keep_colours",
        *(cls.PROPERTY for cls in engine_settings()),
    }  # fmt: skip
    engine = scene_props["engine"]
    assert [item.identifier for item in engine.enum_items] == [cls.ENGINE for cls in engine_settings()]


def test_scene_reads_back_into_the_dataclasses(empty_file):
    s = empty_file.stylepass
    run = stylise.RunSettings.from_scene(empty_file)
    for cls in engine_settings():
        # A fresh scene gives exactly the dataclass defaults: no second copy of a default anywhere.
        assert properties.read(settings_module.engine_group(s, cls), cls) == cls()
    assert run.frame == SCENE_GROUPS[0]()
    s.strength = 0.25
    s.neural_style.detail_scale = 0.5
    run = stylise.RunSettings.from_scene(empty_file)
    assert run.frame.strength == 0.25 and run.engine.detail_scale == 0.5


def test_a_value_out_of_range_from_python_is_a_clear_report(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.stylepass.output_dir = str(out_dir)
    empty_file.stylepass.engine = "DIFFUSION"
    d = empty_file.stylepass.diffusion
    d.model, d.steps, d.denoise = "some/model", 2, 0.3  # 2 x 0.3 leaves no denoising step
    with pytest.raises(RuntimeError) as error:
        bpy.ops.stylepass.stylise()
    assert "no denoising step" in str(error.value) and "Traceback" not in str(error.value)
    assert not (out_dir / empty_file.name).exists()


def test_render_animation_refuses_before_stylising_anything(empty_file, out_dir, tmp_path):
    known_scene(empty_file)
    empty_file.stylepass.output_dir = str(out_dir)
    empty_file.frame_start, empty_file.frame_end = 1, 2
    empty_file.render.use_compositing = False
    with pytest.raises(RuntimeError, match="Compositing is off"):
        bpy.ops.stylepass.render_animation()
    assert (
        not (out_dir / empty_file.name).exists() and bpy.data.node_groups.get(compositor.GROUP_NAME) is None
    )
    empty_file.render.use_compositing = True
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    empty_file.render.filepath = str(blocker / "frame_####")
    with pytest.raises(RuntimeError, match="cannot be written"):
        bpy.ops.stylepass.render_animation()
    assert not (out_dir / empty_file.name).exists()


def test_a_file_saved_by_stylepass_0_1_keeps_its_settings():
    expected = json.loads((DATA / "settings_0_1.json").read_text())
    bpy.ops.wm.open_mainfile(filepath=str(DATA / "settings_0_1.blend"))
    s = bpy.data.scenes["OldSettings"].stylepass
    ns, d = s.neural_style, s.diffusion
    for name in ("style_source", "style_preset", "style_blend_preset", "style_blend_amount", "detail_scale"):
        assert getattr(ns, name) == pytest.approx(expected[name]), name
    assert ns.style_image is not None and ns.style_image.name == expected["style_image"]
    for name in ("model", "prompt", "negative_prompt", "steps", "guidance", "denoise", "scheduler"):
        assert getattr(d, name) == pytest.approx(expected[name]), name
    assert [{key: c[key] if key != "map" else c.map for key in c.keys()} for c in d.controls] and [
        (c.map, c.model, c.enabled) for c in d.controls
    ] == [(c["map"], c["model"], c["enabled"]) for c in expected["controls"]]
    assert [c.weight for c in d.controls] == pytest.approx([c["weight"] for c in expected["controls"]])
    shared = ("engine", "strength", "keep_colours", "object_filter", "seed", "seed_locked", "png_compression",
              "output_dir", "resolution_scale", "pass_samples", "line_thickness", "show_images",
              "temporal_coherence", "temporal_weight", "keyframe_interval")  # fmt: skip
    for name in shared:
        assert getattr(s, name) == pytest.approx(expected[name]), name
    assert not set(s.keys()) & set(addon_module("addon.legacy").MOVED)  # the old raw values are gone
    cube = bpy.data.objects["OldCube"].stylepass
    assert (cube.semantic_class, cube.in_selection) == ("BUILDING", True)
    bpy.ops.wm.read_homefile(use_empty=True)


def test_release_memory_frees_everything_the_runtime_holds(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.stylepass.output_dir = str(out_dir)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    held = runtime.RUNTIME
    assert held.kept_passes and held.colour_tables and held.inverse_views
    assert "NEURAL_STYLE" in engine_api._instances
    assert bpy.ops.stylepass.release_memory() == {"FINISHED"}
    assert not (held.kept_passes or held.colour_tables or held.inverse_views or held.workers)
    assert not held.remote_clients and "NEURAL_STYLE" not in engine_api._instances
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}  # everything loads again


def test_an_unlocked_seed_is_written_only_after_success(empty_file, out_dir):
    known_scene(empty_file)
    s = empty_file.stylepass
    s.output_dir, s.seed, s.seed_locked = str(out_dir), 5, False
    blocker = out_dir / empty_file.name / "stylised"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the results folder goes")
    with pytest.raises(RuntimeError, match="Cannot write"):
        bpy.ops.stylepass.stylise()
    assert s.seed == 5  # chosen for the run, but the run failed: the scene keeps its seed
    blocker.unlink()
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    record = json.loads((blocker / "0001.json").read_text())
    assert s.seed == record["request"]["seed"] != 5


def test_a_missing_model_file_is_refused_before_the_passes_are_rendered(empty_file, out_dir):
    known_scene(empty_file)
    s = empty_file.stylepass
    s.output_dir, s.engine = str(out_dir), "DIFFUSION"
    d = s.diffusion
    d.model = str(out_dir / "models")
    (out_dir / "models").mkdir()
    control = d.controls.add()
    control.model = str(out_dir / "no-such-controlnet")
    with pytest.raises(RuntimeError, match=r"Controls 1: ControlNet: '.*no-such-controlnet' does not exist"):
        bpy.ops.stylepass.stylise()
    assert not (out_dir / empty_file.name).exists()  # nothing rendered
