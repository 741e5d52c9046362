# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad-input suite: every case gets a clear report (never a traceback) and changes nothing.

Each case sets up a scene, runs an operator and asserts: the message; the scene's settings as they were; the
artist's datablocks (images, node groups) untouched; no stylised result on disk. Out-of-range values are made
for every numeric setting of every settings class (as a script writing the raw ID property could), so a new
setting is covered the day it is declared.
"""

import bpy
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import known_scene

from stylepass_core.settings import SCENE_GROUPS, LiveSettings, SettingsError, engine_settings

properties = addon_module("addon.properties")
settings_module = addon_module("addon.settings")


def _datablocks() -> dict:
    """The artist's images and node groups: names, files, and what is inside the groups."""
    return {
        "images": sorted((i.name, i.filepath_raw, i.source) for i in bpy.data.images),
        "groups": sorted((g.name, g.bl_idname, len(g.nodes), len(g.links)) for g in bpy.data.node_groups),
    }


def _run(scene, out_dir, operator: str, match: str, **arguments) -> None:
    scene.stylepass.output_dir = str(out_dir)
    before, blocks = scene_snapshot(scene), _datablocks()
    with pytest.raises(RuntimeError) as error:
        getattr(bpy.ops.stylepass, operator)(**arguments)
    message = str(error.value)
    assert "Traceback" not in message and "Stylepass" in message, message
    assert __import__("re").search(match, message), f"{match!r} not in {message!r}"
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert _datablocks() == blocks
    assert not list(out_dir.rglob("stylised/*.png")) and not list(out_dir.rglob("stylised/*.json"))


# -- Out-of-range values written behind the properties' back -----------------------------------------------


def _numeric_cases():
    cases = []
    for cls in SCENE_GROUPS:
        for name, kind, spec, _ in cls.specs():
            if kind in (int, float) and (spec.min is not None or spec.max is not None):
                cases.append(pytest.param(None, name, kind, spec, id=f"{cls.__name__}.{name}"))
    for cls in engine_settings():
        for name, kind, spec, _ in cls.specs():
            if (
                name not in cls.HOST_FIELDS
                and kind in (int, float)
                and (spec.min is not None or spec.max is not None)
            ):
                cases.append(pytest.param(cls, name, kind, spec, id=f"{cls.__name__}.{name}"))
    return cases


@pytest.mark.parametrize(("cls", "name", "kind", "spec"), _numeric_cases())
def test_a_value_out_of_range_is_a_report_naming_the_setting(empty_file, out_dir, cls, name, kind, spec):
    scene = empty_file
    known_scene(scene)
    group = scene.stylepass
    if cls is not None:
        group.engine = cls.ENGINE
        group = settings_module.engine_group(group, cls)
        if cls.NEEDS_WORKER:
            settings_module.engine_group(scene.stylepass, cls).model = "some/model"
    bad = (spec.max + 1000) if spec.max is not None else (spec.min - 1000)
    group[name] = kind(bad)  # the raw ID property: no clamping, as a careless script or an old file could
    if any(name == n for n, *_ in LiveSettings.specs()):
        # The live preview needs a viewport (not in background mode): its start check is what refuses.
        before = scene_snapshot(scene)
        with pytest.raises(SettingsError, match=rf"{name} must be in"):
            addon_module("addon.live_preview").check_can_start(bpy.context)
        assert diff_snapshots(before, scene_snapshot(scene)) == []
        return
    # Coherence settings are read by the animation only.
    operator = "stylise_animation" if any(name == n for n, *_ in SCENE_GROUPS[2].specs()) else "stylise"
    _run(scene, out_dir, operator, rf"{name} must be in")


# -- Engine settings that cannot work together --------------------------------------------------------------


def _diffusion(scene):
    known_scene(scene)
    scene.stylepass.engine = "DIFFUSION"
    return scene.stylepass.diffusion


def _control(d, map_name="depth", model="some/controlnet"):
    control = d.controls.add()
    control.map, control.model = map_name, model
    return control


CONFLICTS = {
    "no model": (lambda d: None, "needs a model"),
    "control without a ControlNet": (
        lambda d: (setattr(d, "model", "m"), _control(d, model="")),
        "no ControlNet",
    ),
    "two controls on one pass": (
        lambda d: (setattr(d, "model", "m"), _control(d), _control(d)),
        "two enabled controls use the depth pass",
    ),
    "control ends before it starts": (
        lambda d: (
            setattr(d, "model", "m"),
            setattr(_control(d), "start", 0.9),
            setattr(d.controls[0], "end", 0.2),
        ),
        "starts at 0.9 but ends at 0.2",
    ),
    "lora without a file": (lambda d: (setattr(d, "model", "m"), d.loras.add()), "LoRA has no file"),
    "the same lora twice": (
        lambda d: (
            setattr(d, "model", "m"),
            setattr(d.loras.add(), "file", "x.safetensors"),
            setattr(d.loras.add(), "file", "x.safetensors"),
        ),
        "listed twice",
    ),
    "denoise leaves no step": (
        lambda d: (setattr(d, "model", "m"), setattr(d, "steps", 2), setattr(d, "denoise", 0.3)),
        "no denoising step",
    ),
    "ip-adapter with attention slicing": (
        lambda d: (
            setattr(d, "model", "m"),
            setattr(d, "ip_adapter_model", "h"),
            setattr(d, "attention_slicing", True),
        ),
        "Attention Slicing cannot be combined",
    ),
    "ip-adapter without a reference image": (
        lambda d: (setattr(d, "model", "m"), setattr(d, "ip_adapter_model", "h")),
        r"Reference Image is needed \(an IP-Adapter is set\)",
    ),
    "model file missing": (
        lambda d: setattr(d, "model", "/no/such/model.safetensors"),
        "/no/such/model.safetensors' does not exist",
    ),
    "vae file missing": (
        lambda d: (setattr(d, "model", "m"), setattr(d, "vae", "/no/such/vae")),
        r"VAE: '/no/such/vae' does not exist",
    ),
    "lora file missing": (
        lambda d: (setattr(d, "model", "m"), setattr(d.loras.add(), "file", "/no/such/lora.safetensors")),
        "LoRAs 1: LoRA: '/no/such/lora.safetensors' does not exist",
    ),
}


@pytest.mark.parametrize("case", list(CONFLICTS))
def test_diffusion_settings_that_cannot_work_are_refused_before_rendering(empty_file, out_dir, case):
    setup, match = CONFLICTS[case]
    setup(_diffusion(empty_file))
    _run(empty_file, out_dir, "stylise", match)
    assert not list(out_dir.rglob("*.png"))  # refused before the passes were rendered


NEURAL = {
    "image source without an image": (
        lambda s: setattr(s, "style_source", "IMAGE"),
        r"Style Image is needed \(Style Source is Image\)",
    ),
    "style image without pixels": (
        lambda s: (setattr(s, "style_source", "IMAGE"), _missing_painting(s)),
        "has no pixels",
    ),
}


def _missing_painting(style) -> None:
    image = bpy.data.images.new("Painting", 4, 4)
    image.source = "FILE"
    image.filepath = "/no/such/painting.png"
    style.style_image = image


@pytest.mark.parametrize("case", list(NEURAL))
def test_neural_style_settings_that_cannot_work(empty_file, out_dir, case):
    known_scene(empty_file)
    setup, match = NEURAL[case]
    setup(empty_file.stylepass.neural_style)
    _run(empty_file, out_dir, "stylise", match)


# -- The scene and the objects ------------------------------------------------------------------------------


def test_only_selected_with_nothing_selected(empty_file, out_dir):
    known_scene(empty_file)
    empty_file.stylepass.object_filter = "INCLUDE"
    _run(empty_file, out_dir, "stylise", "no object is in the Stylepass selection")


def test_only_selected_with_a_selected_object_the_camera_cannot_see(empty_file, out_dir):
    objects = known_scene(empty_file)
    empty_file.stylepass.object_filter = "INCLUDE"
    hidden = next(obj for obj in objects.values() if obj.type == "MESH")
    hidden.stylepass.in_selection = True
    hidden.hide_render = True
    _run(empty_file, out_dir, "stylise", "no rendered object is in the Stylepass selection")


@pytest.mark.parametrize("operator", ["stylise", "render_passes", "stylise_animation"])
def test_no_camera_for_every_operator(empty_file, out_dir, operator):
    known_scene(empty_file)
    empty_file.camera = None
    _run(empty_file, out_dir, operator, "has no active camera")


@pytest.mark.parametrize("operator", ["stylise", "stylise_animation"])
def test_an_output_folder_that_is_a_file(empty_file, out_dir, tmp_path, operator):
    known_scene(empty_file)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    empty_file.stylepass.output_dir = str(blocker)
    before = scene_snapshot(empty_file)
    with pytest.raises(RuntimeError, match="Cannot write to the output folder"):
        getattr(bpy.ops.stylepass, operator)()
    assert diff_snapshots(before, scene_snapshot(empty_file)) == [] and blocker.read_text() == "x"


def test_an_empty_frame_range(empty_file, out_dir):
    known_scene(empty_file)
    _run(
        empty_file,
        out_dir,
        "stylise_animation",
        "frame range 10-5 is empty",
        use_range=True,
        frame_start=10,
        frame_end=5,
    )
