# SPDX-License-Identifier: GPL-3.0-or-later
"""A display-referred image put through the compositor at Factor 1 comes out of an ordinary F12 render as made,
whatever the scene's view transform, on the running Blender version."""

import colorsys
import time

import bpy
import numpy as np
import pytest
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import HEIGHT, WIDTH, known_scene

from stylepass_core import png, view_inverse

display_colour = addon_module("addon.display_colour")

COMPOSITOR_IS_GROUP = bpy.app.version >= (5, 0, 0)

# (view, look, exposure, gamma, curves)
VIEWS = {
    "standard": ("Standard", "None", 0.0, 1.0, False),
    "filmic": ("Filmic", "None", 0.0, 1.0, False),
    "agx": ("AgX", "None", 0.0, 1.0, False),
    "agx-punchy-exposure": ("AgX", "AgX - Punchy", 0.5, 1.0, False),
    "filmic-graded": ("Filmic", "Medium High Contrast", -0.3, 1.2, True),
    # Display white needs 2**16 in scene linear: beyond float16, so the compositor's copy stays float32.
    "standard-exposure-minus-16": ("Standard", "None", -16.0, 1.0, False),
}


def stylised_image(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A display-referred test image, `(H, W, 3)` float32 on the 8-bit grid (what an engine's PNG holds).

    Bands from the top: a grey ramp; smooth hue/saturation/value gradients; swatches of saturated but natural
    colours (skin, sky, foliage, brick...); and a painterly field of smooth blobs in a warm/cool palette.
    """
    y, x = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
    image = np.zeros((height, width, 3))
    bands = np.searchsorted([0.15, 0.5, 0.75], y, side="right")
    # 1. Grey ramp.
    image[bands == 0] = x[bands == 0][..., None]
    # 2. Hue across, saturation and value down.
    rows = bands == 1
    t = (y[rows] - 0.15) / 0.35
    hsv = np.stack([x[rows], 0.15 + 0.55 * t, 0.95 - 0.6 * t], axis=-1)
    image[rows] = np.array([colorsys.hsv_to_rgb(*p) for p in hsv.reshape(-1, 3)]).reshape(hsv.shape)
    # 3. Natural swatches.
    swatches = np.array(
        [
            (224, 172, 140),  # light skin
            (141, 85, 60),  # dark skin
            (110, 160, 215),  # sky
            (70, 120, 50),  # foliage
            (160, 60, 45),  # brick
            (200, 160, 60),  # ochre
            (150, 130, 190),  # lavender
            (40, 90, 110),  # deep teal
            (230, 200, 80),  # sunlit straw
            (90, 40, 70),  # plum
        ]
    )
    rows = bands == 2
    image[rows] = swatches[np.minimum((x[rows] * len(swatches)).astype(int), len(swatches) - 1)] / 255
    # 4. Painterly: smooth blobs between a warm and a cool colour, with a light glaze.
    rows = bands == 3
    field = np.sin(7 * x[rows] + 3 * np.sin(5 * y[rows])) * np.cos(9 * y[rows] - 2 * x[rows])
    field = (field + 1) / 2
    warm, cool = np.array([0.85, 0.45, 0.25]), np.array([0.2, 0.35, 0.6])
    image[rows] = warm * field[:, None] + cool * (1 - field[:, None]) + 0.1 * np.sin(20 * x[rows])[:, None]
    return (np.round(np.clip(image, 0, 1) * 255) / 255).astype(np.float32)


def set_colour_management(scene, view, look, exposure, gamma, curves) -> None:
    settings = scene.view_settings
    settings.view_transform = view
    settings.look = look
    settings.exposure = exposure
    settings.gamma = gamma
    settings.use_curve_mapping = curves
    if curves:
        # Lift the shadows of the combined curve a little.
        curve = settings.curve_mapping.curves[3]
        curve.points.new(0.25, 0.32)
        settings.curve_mapping.update()


def image_datablock(name: str, pixels: np.ndarray, colour_space: str):
    height, width = pixels.shape[:2]
    image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=True)
    image.colorspace_settings.name = colour_space
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = pixels
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender rows run bottom-up
    return image


def show_in_compositor(scene, image) -> None:
    """The smallest compositor: the image straight to the output (what Factor 1 of the Stylepass group does)."""
    if COMPOSITOR_IS_GROUP:
        tree = bpy.data.node_groups.new("Test compositor", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        output = tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        output = tree.nodes.new("CompositorNodeComposite")
    node = tree.nodes.new("CompositorNodeImage")
    node.image = image
    tree.links.new(node.outputs["Image"], output.inputs[0])


def render_png(scene, path) -> np.ndarray:
    """An ordinary F12 render written as an 8-bit PNG (dither as the scene has it); `(H, W, 3)` uint8."""
    image_settings = scene.render.image_settings
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "IMAGE"
    image_settings.file_format = "PNG"
    image_settings.color_mode = "RGB"
    image_settings.color_depth = "8"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return png.read_png(path)[..., :3]


@pytest.fixture
def scene(empty_file):
    known_scene(empty_file)
    empty_file.render.engine = "CYCLES"
    empty_file.cycles.samples = 1
    return empty_file


@pytest.mark.parametrize("case", list(VIEWS))
def test_f12_render_matches_the_stylised_image(scene, tmp_path, case):
    set_colour_management(scene, *VIEWS[case])
    source = stylised_image()

    before = scene_snapshot(scene)
    datablocks = (set(bpy.data.scenes), set(bpy.data.images))
    started = time.perf_counter()
    pixels, colour_space, warnings = _compositor_pixels(scene, source)
    seconds = time.perf_counter() - started
    # The artist's settings are untouched and the probe leaves nothing behind.
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert (set(bpy.data.scenes), set(bpy.data.images)) == datablocks
    assert pixels.shape == source.shape and pixels.dtype == np.float32
    assert colour_space == display_colour.scene_linear_colour_space()

    show_in_compositor(scene, image_datablock("Stylised", pixels, colour_space))
    rendered = render_png(scene, tmp_path / "f12.png").astype(int)
    expected = np.round(source * 255).astype(int)
    error = np.abs(rendered - expected).max(axis=2)

    # Colours the view can show (the inverse lands within half a level of them).
    inverse = display_colour.inverse_view(scene)
    reachable = inverse.distance_at(source) <= 0.5 / 255
    print(
        f"\n{bpy.app.version_string} {case}: reachable {reachable.mean():.1%}, "
        f"max {error[reachable].max()} mean {error[reachable].mean():.3f} "
        f"p99 {np.percentile(error[reachable], 99):.1f} levels; all pixels max {error.max()} "
        f"mean {error.mean():.3f}; compositor_pixels {seconds:.2f} s; warnings {warnings}"
    )
    assert reachable.mean() > 0.9
    assert error[reachable].mean() < 0.5
    assert error[reachable].max() <= 2


def test_inverse_is_cached_on_disk(scene, monkeypatch):
    set_colour_management(scene, *VIEWS["agx"])
    first = display_colour.inverse_view(scene)
    key = display_colour.inverse_key(display_colour.colour_settings(scene))
    assert (display_colour.cache_folder() / f"{key}.npy").is_file()

    # A new session: nothing in memory, and building is not an option.
    monkeypatch.setattr(addon_module("addon.runtime").RUNTIME, "inverse_views", {})

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the disk cache holds this inverse")

    monkeypatch.setattr(view_inverse, "build", no_build)
    started = time.perf_counter()
    again = display_colour.inverse_view(scene)
    assert time.perf_counter() - started < 0.5
    np.testing.assert_array_equal(again.nodes, first.nodes)


def test_cache_key_follows_every_colour_setting(scene):
    keys = set()
    changes = [
        lambda s: None,
        lambda s: setattr(s.view_settings, "exposure", 0.25),
        lambda s: setattr(s.view_settings, "gamma", 1.1),
        lambda s: setattr(s.view_settings, "look", "AgX - Punchy"),
        lambda s: setattr(s.view_settings, "use_curve_mapping", True),
    ]
    if hasattr(scene.view_settings, "use_white_balance"):  # white balance came with Blender 4.3
        changes.append(lambda s: setattr(s.view_settings, "use_white_balance", True))
    for change in changes:
        set_colour_management(scene, "AgX", "None", 0.0, 1.0, False)
        change(scene)
        keys.add(display_colour.inverse_key(display_colour.colour_settings(scene)))
    assert len(keys) == len(changes)


def test_false_color_warns_instead_of_inverting(scene):
    set_colour_management(scene, "False Color", "None", 0.0, 1.0, False)
    source = stylised_image()
    pixels, colour_space, warnings = _compositor_pixels(scene, source)
    assert warnings and "False Color" in warnings[0]
    assert colour_space == "sRGB"
    # Unconverted: the levels of the stylised PNG, as a half-float EXR holds them.
    np.testing.assert_allclose(pixels, png.to_uint8(source) / 255, atol=5e-4)


def test_saturated_colours_the_view_cannot_show_are_reported(scene):
    set_colour_management(scene, *VIEWS["agx"])
    primaries = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
    primaries[:, : WIDTH // 3, 0] = 1.0
    primaries[:, WIDTH // 3 : 2 * WIDTH // 3, 1] = 1.0
    primaries[:, 2 * WIDTH // 3 :, 2] = 1.0
    _, _, warnings = _compositor_pixels(scene, primaries)
    assert any("cannot show" in warning for warning in warnings)


def test_bad_pixels_are_refused(scene):
    with pytest.raises(ValueError, match="H, W, 3"):
        _compositor_pixels(scene, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        _compositor_pixels(scene, np.full((4, 4, 3), np.nan, np.float32))


def test_a_view_beyond_the_half_float_range_keeps_full_floats(scene):
    # Exposure -16 needs scene-linear values up to 2**16 for display white: past float16's 65504.
    set_colour_management(scene, "Standard", "None", -16.0, 1.0, False)
    target = display_colour.compositor_target(scene)
    assert target.byte_inverse is None
    source = stylised_image()
    pixels, _ = target.convert(source)
    assert pixels.dtype == np.float32 and np.isfinite(pixels).all() and pixels.max() > 65504
    expected = target.inverse.apply(png.to_uint8(source).astype(np.float32) / 255)
    np.testing.assert_array_equal(pixels, expected)


def _compositor_pixels(scene, display_rgb):
    """(scene-linear float32 pixels, colour space, warnings) for `display_rgb` under the scene's view."""
    target = display_colour.compositor_target(scene)
    pixels, warnings = target.convert(display_rgb)
    return pixels.astype(np.float32), target.colour_space, warnings
