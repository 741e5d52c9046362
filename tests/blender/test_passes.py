# SPDX-License-Identifier: GPL-3.0-or-later
"""Control passes rendered from a scene with known geometry, on the running Blender version."""

import json

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import HEIGHT, WIDTH, erode, known_scene

from stylepass_core import conditioning, exr, output_layout, png
from stylepass_core.output_layout import SceneLayout

scene_passes = addon_module("addon.scene_passes")


@pytest.fixture
def rendered(empty_file, out_dir):
    scene = empty_file
    objects = known_scene(scene)
    objects["wall"].stylepass.semantic_class = "BUILDING"
    scene.stylepass.output_dir = str(out_dir)
    before = scene_snapshot(scene)
    assert bpy.ops.stylepass.render_passes() == {"FINISHED"}
    after = scene_snapshot(scene)
    record = json.loads((out_dir / scene.name / "passes" / "0001.json").read_text())
    index_of = {entry["name"]: entry["index"] for entry in record["objects"]}
    return scene, objects, out_dir / scene.name / "passes", record, index_of, before, after


def _read(passes_dir, name, ext="png"):
    path = passes_dir / name / f"0001.{ext}"
    assert path.is_file(), path
    return png.read_png(path) if ext == "png" else exr.read_exr(path)


def test_every_touched_setting_is_restored(rendered):
    *_, before, after = rendered
    assert diff_snapshots(before, after) == []


def test_layout_and_record(rendered):
    _, _, passes_dir, record, index_of, *_ = rendered
    for name in ("beauty", "depth", "normal", "lineart", "segmentation", "object_index", "vector"):
        assert (passes_dir / name / "0001.png").is_file(), name
    for name in ("depth", "normal", "vector"):
        assert (passes_dir / name / "0001.exr").is_file(), name
    assert record["resolution"] == [WIDTH, HEIGHT]
    assert record["camera"]["name"] == "Camera"
    assert record["camera"]["lens_mm"] == pytest.approx(50.0)
    assert record["settings"]["pass_samples"] == 2
    assert sorted(index_of) == ["Box", "Sphere", "Wall"]
    for name in ("beauty", "depth", "normal", "lineart", "segmentation", "object_index", "vector"):
        image = bpy.data.images.get(f"Stylepass {name}")
        assert image is not None and tuple(image.size) == (WIDTH, HEIGHT), name


def test_object_index_matches_geometry(rendered):
    _, _, passes_dir, _, index_of, *_ = rendered
    index = _read(passes_dir, "object_index")[..., 0].astype(int)
    assert index.dtype.kind in "iu"
    # The box sits on the optical axis in front of the wall; corners of the frame see nothing.
    assert index[HEIGHT // 2, WIDTH // 2] == index_of["Box"]
    assert index[0, 0] == 0 and index[-1, -1] == 0
    assert (index == index_of["Wall"]).sum() > 200
    assert (index == index_of["Sphere"]).sum() > 20


def test_depth_nearer_is_brighter_background_black(rendered):
    _, _, passes_dir, _, index_of, *_ = rendered
    index = _read(passes_dir, "object_index")[..., 0].astype(int)
    depth = _read(passes_dir, "depth")[..., 0].astype(np.float64) / 65535.0
    box, wall, sphere = (index == index_of[n] for n in ("Box", "Wall", "Sphere"))
    assert depth[index == 0].max() == 0.0
    assert depth[box].mean() > depth[sphere].mean() > depth[wall].mean() > 0.0
    raw = exr.read_exr(passes_dir / "depth" / "0001.exr")["Z"]
    # Planar camera depth in scene units: the box's front face is at 3 - 0.3, the wall at 6.
    assert np.allclose(raw[erode(box, 1)], 2.7, atol=1e-3)
    assert np.allclose(raw[erode(wall, 1)], 6.0, atol=1e-3)
    assert np.isinf(raw[index == 0]).all()


def test_normals_facing_colour(rendered):
    _, _, passes_dir, _, index_of, *_ = rendered
    index = _read(passes_dir, "object_index")[..., 0].astype(int)
    normal = _read(passes_dir, "normal").astype(np.float64) / 255.0
    facing = np.asarray(conditioning.NORMAL_FACING_RGB, dtype=np.float64)
    for name in ("Box", "Wall"):
        inner = erode(index == index_of[name], 1)
        assert np.abs(normal[inner] - facing).max() <= 1.5 / 255.0, name
    # The sphere's normals turn away from the camera towards its rim: not all facing.
    sphere = index == index_of["Sphere"]
    assert np.abs(normal[sphere] - facing).max() > 0.2


def test_line_art_on_silhouette_not_inside(rendered):
    _, _, passes_dir, _, index_of, *_ = rendered
    index = _read(passes_dir, "object_index")[..., 0].astype(int)
    lines = _read(passes_dir, "lineart")[..., 0].astype(np.float64) / 255.0
    box = index == index_of["Box"]
    rim = box & ~erode(box, 1)
    assert lines[rim].mean() > 0.8
    assert lines[erode(box, 2)].max() < 0.05
    # The wall's outline against the empty background is drawn too.
    wall = index == index_of["Wall"]
    wall_against_sky = wall & ~erode(index != 0, 1)
    assert wall_against_sky.sum() > 20
    assert lines[wall_against_sky].mean() > 0.8


def test_segmentation_colours(rendered):
    _, _, passes_dir, record, index_of, *_ = rendered
    index = _read(passes_dir, "object_index")[..., 0].astype(int)
    seg = _read(passes_dir, "segmentation")
    assert tuple(seg[index == index_of["Wall"]][0]) == tuple(conditioning.ADE20K_PALETTE["building"])
    expected_box = tuple(conditioning.object_colour("Box"))
    assert (seg[index == index_of["Box"]] == expected_box).all()
    assert (seg[index == 0] == 0).all()
    by_name = {entry["name"]: entry for entry in record["objects"]}
    assert by_name["Wall"]["semantic_class"] == "BUILDING"
    assert tuple(by_name["Box"]["colour"]) == expected_box


def test_motion_vectors_zero_for_static_scene(rendered):
    _, _, passes_dir, *_ = rendered
    vector = exr.read_exr(passes_dir / "vector" / "0001.exr")
    assert sorted(vector) == ["W", "X", "Y", "Z"]
    assert all(np.abs(v).max() < 1e-3 for v in vector.values())


def test_settings_restored_when_the_render_fails(empty_file, out_dir, monkeypatch):
    scene = empty_file
    known_scene(scene)
    scene.stylepass.output_dir = str(out_dir)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.image_settings.file_format = "JPEG"
    before = scene_snapshot(scene)

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(addon_module("addon.pass_render"), "set_image_format", broken)
    with pytest.raises(scene_passes.StylepassError, match="simulated"):
        scene_passes.render_passes(
            scene, bpy.context.view_layer, scene_passes.PassOptions(output_dir=str(out_dir))
        )
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert not list((out_dir / scene.name / "passes").glob("*/0001.png"))


def test_resolution_scale_and_other_frame(empty_file, out_dir):
    scene = empty_file
    known_scene(scene)
    scene.frame_current = 3
    options = scene_passes.PassOptions(
        output_dir=str(out_dir), resolution_scale=50.0, pass_samples=1, show_images=False
    )
    result = scene_passes.render_passes(scene, bpy.context.view_layer, options, frame=7)
    assert (result.width, result.height) == (WIDTH // 2, HEIGHT // 2)
    assert result.maps["depth"].shape == (HEIGHT // 2, WIDTH // 2)
    assert (out_dir / scene.name / "passes" / "beauty" / "0007.png").is_file()
    assert scene.frame_current == 3


def test_fresh_maps_are_exactly_what_a_reload_from_disk_gives(empty_file, out_dir):
    """One source of truth for what an engine sees: the same seed must reproduce the same picture after
    Release Memory, a restart or from another output folder, where the maps come back from the PNGs."""
    scene = empty_file
    objects = known_scene(scene)
    objects["wall"].stylepass.semantic_class = "BUILDING"
    scene.view_settings.view_transform = "Standard"
    options = scene_passes.PassOptions(output_dir=str(out_dir), show_images=False, line_thickness=1.7)
    view_layer = bpy.context.view_layer
    fresh = scene_passes.render_passes(scene, view_layer, options)
    assert not fresh.reused
    addon_module("addon.runtime").RUNTIME.release()  # nothing from memory
    fingerprint = scene_passes.pass_fingerprint(scene, view_layer, options)
    reloaded = scene_passes.load_passes(SceneLayout(out_dir, scene.name), scene.frame_current, fingerprint)
    assert reloaded is not None and reloaded.reused
    # Every map an engine can be handed, and the raw data animation reads.
    assert sorted(fresh.maps) == sorted(output_layout.PASS_NAMES)
    for name in output_layout.PASS_NAMES:
        assert reloaded.maps[name].dtype == fresh.maps[name].dtype, name
        assert reloaded.maps[name].shape == fresh.maps[name].shape, name
        assert np.array_equal(reloaded.maps[name], fresh.maps[name]), name
    for name in output_layout.RAW_PASSES:
        assert reloaded.raw[name].dtype == fresh.raw[name].dtype, name
        assert np.array_equal(reloaded.raw[name], fresh.raw[name]), name
    # Still continuous where it should be: 16-bit depth, and values that are not all 0 or 1.
    assert len(np.unique(fresh.maps["depth"])) > 10
