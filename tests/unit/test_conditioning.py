# SPDX-License-Identifier: GPL-3.0-or-later
"""Known-answer tests for the conditioning maps, on synthetic scenes built analytically through a pinhole."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stylepass_core import conditioning as cond

ROOT = Path(__file__).resolve().parents[2]  # holds stylepass_core: a child process gets it as PYTHONPATH


# ------------------------------------------------------------------------------------------------------------
# Scene helpers: a pinhole camera in Blender's camera space (+X right, +Y up, looking down -Z), rows top first
# ------------------------------------------------------------------------------------------------------------
def image_plane(height: int, width: int, focal: float) -> tuple[np.ndarray, np.ndarray]:
    """x, y of each pixel centre's ray (x, y, -1); the centre of the image is the principal point."""
    columns = (np.arange(width) + 0.5 - width / 2) / focal
    rows = -(np.arange(height) + 0.5 - height / 2) / focal  # top row has the largest +y
    x, y = np.meshgrid(columns, rows)
    return x, y


def plane_depth(x: np.ndarray, y: np.ndarray, normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Planar depth (distance along -Z) where each ray (x, y, -1) meets the plane through `point`."""
    offset = normal @ point
    return offset / (normal[0] * x + normal[1] * y - normal[2])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def sphere_scene(size: int = 41, focal: float = 50.0, distance: float = 6.0, radius: float = 2.0):
    """A sphere straight ahead of a rotated camera: (depth, world normals, camera normals, mask, R_cw)."""
    x, y = image_plane(size, size, focal)
    rays_camera = np.stack([x, y, -np.ones_like(x)], axis=-1)
    unit_rays = rays_camera / np.linalg.norm(rays_camera, axis=-1, keepdims=True)

    camera_to_world = rotation(0.7, -0.4, 0.25)
    camera_position = np.array([3.0, -2.0, 1.5])
    centre_world = camera_position + camera_to_world @ np.array([0.0, 0.0, -distance])

    rays_world = unit_rays @ camera_to_world.T
    towards = camera_position - centre_world
    b = rays_world @ towards
    disc = b**2 - (towards @ towards - radius**2)
    hit = disc >= 0
    t = np.where(hit, -b - np.sqrt(np.where(hit, disc, 0.0)), 0.0)
    points = camera_position + t[..., None] * rays_world
    world_normals = np.where(hit[..., None], (points - centre_world) / radius, 0.0)

    # The same sphere solved directly in camera space, as the expected answer.
    points_camera = t[..., None] * unit_rays
    camera_normals = np.where(hit[..., None], (points_camera - np.array([0, 0, -distance])) / radius, 0.0)
    depth = np.where(hit, -points_camera[..., 2], 1e10)
    return depth, world_normals, camera_normals, hit, camera_to_world


def facing(height: int, width: int) -> np.ndarray:
    normals = np.zeros((height, width, 3), dtype=np.float32)
    normals[..., 2] = 1.0
    return normals


# ------------------------------------------------------------------------------------------------------------
# The core stays bpy-free
# ------------------------------------------------------------------------------------------------------------
def test_imports_only_numpy_and_stdlib():
    code = (
        "import sys; import stylepass_core.conditioning; "
        "print(sorted(m for m in ('bpy', 'PIL', 'scipy', 'cv2', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------------
# inverse_depth
# ------------------------------------------------------------------------------------------------------------
def test_tilted_plane_inverse_depth_is_a_linear_ramp():
    x, y = image_plane(48, 64, focal=80.0)
    normal = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    depth = plane_depth(x, y, normal, np.array([0.0, 0.0, -10.0]))
    assert depth.min() > 0 and depth.max() / depth.min() > 1.3  # really tilted

    ramp = cond.inverse_depth(depth, low_percentile=0.0, high_percentile=100.0)

    assert ramp.dtype == np.float32 and ramp.shape == (48, 64)
    # 1/z is affine in pixel coordinates, so the normalised map has zero second differences.
    np.testing.assert_allclose(np.diff(ramp, n=2, axis=1), 0.0, atol=2e-5)
    np.testing.assert_allclose(np.diff(ramp, n=2, axis=0), 0.0, atol=2e-5)
    np.testing.assert_allclose(ramp[1:, 1:] - ramp[1:, :-1] - ramp[:-1, 1:] + ramp[:-1, :-1], 0.0, atol=2e-5)
    # The plane leans away to the right and upwards: nearest at the bottom left, farthest at the top right.
    assert np.all(np.diff(ramp, axis=1) < 0) and np.all(np.diff(ramp, axis=0) > 0)
    assert ramp[-1, 0] == pytest.approx(1.0) and ramp[0, -1] == pytest.approx(0.0)


def test_default_percentiles_clip_the_ends_but_keep_the_ramp():
    x, y = image_plane(48, 64, focal=80.0)
    depth = plane_depth(x, y, np.array([0.3, 0.2, 1.0]), np.array([0.0, 0.0, -10.0]))

    ramp = cond.inverse_depth(depth)

    assert ramp.min() == 0.0 and ramp.max() == 1.0
    assert 0.015 < np.mean(ramp == 1.0) < 0.03  # about 2 % of pixels beyond the 98th percentile
    assert np.all(np.diff(ramp, axis=1) <= 0) and np.all(np.diff(ramp, axis=0) >= 0)
    unclipped = (ramp > 0) & (ramp < 1)
    inside = unclipped[:, :-2] & unclipped[:, 1:-1] & unclipped[:, 2:]
    assert inside.mean() > 0.8
    np.testing.assert_allclose(np.diff(ramp, n=2, axis=1)[inside], 0.0, atol=2e-5)


def test_inverse_depth_known_values_and_background_is_exactly_zero():
    depth = np.array(
        [
            [2.0, 4.0, 8.0, 1e10],
            [np.inf, np.nan, 2e9, 4.0],
        ],
        dtype=np.float32,
    )
    masked = np.zeros(depth.shape, dtype=bool)
    masked[1, 3] = True  # a real depth the caller says is background

    out = cond.inverse_depth(
        depth, background=masked, low_percentile=0.0, high_percentile=100.0, far_at_background=False
    )

    # 1/z in {0.5, 0.25, 0.125}: near -> 1, middle -> (0.25 - 0.125) / (0.5 - 0.125) = 1/3, far -> 0.
    np.testing.assert_allclose(out[0, :3], [1.0, 1.0 / 3.0, 0.0], atol=1e-6)
    assert np.all(out[0, 3] == 0.0) and np.all(out[1] == 0.0)

    # By default a frame with background puts the far end at infinity: 1/z / 0.5 -> 1, 0.5, 0.25.
    anchored = cond.inverse_depth(depth, background=masked, low_percentile=0.0, high_percentile=100.0)
    np.testing.assert_allclose(anchored[0, :3], [1.0, 0.5, 0.25], atol=1e-6)
    assert np.all(anchored[0, 3] == 0.0) and np.all(anchored[1] == 0.0)


def test_inverse_depth_ignores_a_few_outliers():
    x, y = image_plane(100, 100, focal=100.0)
    depth = plane_depth(x, y, np.array([0.0, 0.4, 1.0]), np.array([0.0, 0.0, -5.0]))
    clean = cond.inverse_depth(depth)
    spiked = depth.copy()
    spiked[50, 50] = 1e-4  # a stray sample almost on the lens
    spiked[10, 10] = 1e6

    out = cond.inverse_depth(spiked)

    assert out[50, 50] == 1.0 and out[10, 10] == 0.0
    others = np.ones(depth.shape, dtype=bool)
    others[50, 50] = others[10, 10] = False
    # Two pixels move the percentiles by at most a row of this ramp (about 0.01).
    np.testing.assert_allclose(out[others], clean[others], atol=0.02)
    # Without percentiles the near spike would squash the whole scene into black.
    assert cond.inverse_depth(spiked, low_percentile=0.0, high_percentile=100.0)[others].max() < 0.01


def test_inverse_depth_constant_and_empty_foreground():
    depth = np.full((4, 5), 3.0, dtype=np.float32)
    depth[0, 0] = 1e10
    out = cond.inverse_depth(depth)
    assert out[0, 0] == 0.0 and np.all(np.delete(out.ravel(), 0) == 1.0)

    empty = cond.inverse_depth(np.full((4, 5), 1e10, dtype=np.float32))
    assert empty.dtype == np.float32 and np.all(empty == 0.0)


# ------------------------------------------------------------------------------------------------------------
# radial_to_planar_depth
# ------------------------------------------------------------------------------------------------------------
def test_radial_distance_of_a_facing_wall_becomes_constant_planar_depth():
    height, width, fx, fy, cx, cy = 30, 40, 35.0, 50.0, 21.5, 12.5
    u = np.arange(width) + 0.5
    v = np.arange(height) + 0.5
    tan_x, tan_y = np.meshgrid((u - cx) / fx, (v - cy) / fy)
    distance = 5.0 * np.sqrt(1.0 + tan_x**2 + tan_y**2)  # a wall 5 units ahead
    distance[0, 0] = 1e10

    planar = cond.radial_to_planar_depth(distance, fx, fy, cx, cy)

    assert planar.dtype == np.float32
    assert planar[0, 0] == np.float32(1e10)
    np.testing.assert_allclose(planar.ravel()[1:], 5.0, rtol=1e-6)
    # The pixel whose centre sits on the principal point, (21 + 0.5, 12 + 0.5), is 5 away either way.
    assert distance[12, 21] == pytest.approx(5.0)
    # An off-axis pixel by hand: column 39, row 29.
    expected = distance[29, 39] / np.sqrt(1 + ((39.5 - cx) / fx) ** 2 + ((29.5 - cy) / fy) ** 2)
    assert planar[29, 39] == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------------------------
# camera_space_normals and normal_map_rgb
# ------------------------------------------------------------------------------------------------------------
def test_sphere_normals_face_the_camera_at_its_centre():
    _, world_normals, expected, hit, camera_to_world = sphere_scene()
    centre = (20, 20)  # odd image: the middle pixel's ray is the optical axis

    normals = cond.camera_space_normals(world_normals, camera_to_world.T, background=~hit)

    assert normals.dtype == np.float32 and normals.shape == (41, 41, 3)
    np.testing.assert_allclose(normals[centre], [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(normals, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normals[hit], axis=-1), 1.0, atol=1e-6)
    assert np.all(normals[~hit] == 0.0)
    # Right of centre the surface turns right (+X); above it, up (+Y): rows are top first.
    assert normals[20, 30, 0] > 0.3 and normals[10, 20, 1] > 0.3

    rgb = cond.normal_map_rgb(normals, background=~hit)

    np.testing.assert_allclose(rgb[centre], cond.NORMAL_FACING_RGB, atol=1e-6)
    assert rgb[20, 30, 0] < 0.35  # facing right is NOT red: red means left
    assert rgb[20, 10, 0] > 0.65  # facing left is red
    assert rgb[10, 20, 1] > 0.65  # facing up is green
    assert rgb[30, 20, 1] < 0.35
    np.testing.assert_allclose(rgb[~hit], np.broadcast_to(cond.NORMAL_BACKGROUND_RGB, rgb[~hit].shape))


def test_camera_space_normals_renormalise_and_zero_the_unknown():
    normals = np.zeros((2, 3, 3), dtype=np.float32)
    normals[0, 0] = (0.0, 0.0, 0.5)  # averaged edge pixel: short but valid
    normals[0, 1] = (0.0, 3.0, 0.0)
    normals[0, 2] = (np.nan, 0.0, 1.0)
    normals[1, 0] = (1.0, 0.0, 0.0)
    background = np.zeros((2, 3), dtype=bool)
    background[1, 0] = True
    world_to_camera = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about Z

    out = cond.camera_space_normals(normals, world_to_camera, background)

    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(out[0, 1], [-1.0, 0.0, 0.0])  # world +Y is camera -X for this rotation
    assert np.all(out[0, 2] == 0.0) and np.all(out[1] == 0.0)


@pytest.mark.parametrize(
    ("normal", "rgb"),
    [
        ((0.0, 0.0, 1.0), (0.5, 0.5, 1.0)),
        ((1.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
        ((-1.0, 0.0, 0.0), (1.0, 0.5, 0.5)),
        ((0.0, 1.0, 0.0), (0.5, 1.0, 0.5)),
        ((0.0, -1.0, 0.0), (0.5, 0.0, 0.5)),
        ((0.0, 0.0, -2.0), (0.5, 0.5, 0.0)),
    ],
)
def test_normal_map_colour_convention(normal, rgb):
    normals = np.broadcast_to(np.asarray(normal, dtype=np.float32), (2, 2, 3)).copy()
    np.testing.assert_allclose(cond.normal_map_rgb(normals), np.broadcast_to(rgb, (2, 2, 3)), atol=1e-7)


def test_normal_map_background_colour():
    normals = facing(2, 2)
    normals[0, 0] = 0.0
    assert cond.NORMAL_FACING_RGB == (0.5, 0.5, 1.0)
    np.testing.assert_allclose(cond.normal_map_rgb(normals)[0, 0], cond.NORMAL_BACKGROUND_RGB)
    black = cond.normal_map_rgb(normals, background_rgb=(0, 0, 0))
    np.testing.assert_array_equal(black[0, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(black[1, 1], [0.5, 0.5, 1.0])


# ------------------------------------------------------------------------------------------------------------
# line_art
# ------------------------------------------------------------------------------------------------------------
def step_scene(near_on_left: bool = True):
    depth = np.full((16, 32), 5.0, dtype=np.float32)
    if near_on_left:
        depth[:, :16] = 2.0
    else:
        depth[:, 16:] = 2.0
    return depth, facing(16, 32), np.ones((16, 32), dtype=np.int32)


@pytest.mark.parametrize(("near_on_left", "column"), [(True, 15), (False, 16)])
def test_depth_step_draws_one_line_on_the_near_side(near_on_left, column):
    depth, normals, index = step_scene(near_on_left)

    lines = cond.line_art(depth, normals, index)

    expected = np.zeros((16, 32), dtype=np.float32)
    expected[:, column] = 1.0
    np.testing.assert_array_equal(lines, expected)


def test_small_depth_step_below_threshold_draws_nothing():
    depth, normals, index = step_scene()
    depth[:, 16:] = 2.08  # 4 % further: below the default 5 %
    assert not cond.line_art(depth, normals, index).any()
    assert cond.line_art(depth, normals, index, depth_threshold=0.03)[:, 15].all()


def test_steeply_tilted_plane_draws_no_lines():
    # A wall receding to the right, turned 80 degrees away from the camera.
    x, y = image_plane(24, 64, focal=250.0)
    angle = np.radians(80.0)
    normal = np.array([np.sin(angle), 0.0, np.cos(angle)])
    depth = plane_depth(x, y, normal, np.array([0.0, 0.0, -10.0])).astype(np.float32)
    normals = np.broadcast_to(normal.astype(np.float32), (24, 64, 3)).copy()
    # Neighbouring depths differ by more than the 5 % threshold at the far end: only the plane test stops it.
    assert np.max(depth[:, 1:] / depth[:, :-1]) > 1.07

    lines = cond.line_art(depth, normals, np.ones((24, 64), dtype=np.int64))

    assert lines.max() == 0.0


def ridge_scene(height: int = 20, width: int = 40, focal: float = 30.0):
    """Two faces of a box meeting at a vertical ridge on the optical axis, 90 degrees apart."""
    x, _ = image_plane(height, width, focal)
    left = x < 0
    depth = np.where(left, 5.0 / (1.0 + x), 5.0 / (1.0 - x)).astype(np.float32)
    normals = np.zeros((height, width, 3), dtype=np.float32)
    normals[left] = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0)
    normals[~left] = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)
    return depth, normals, np.ones((height, width), dtype=np.int32)


def test_box_edge_crease_is_one_line():
    depth, normals, index = ridge_scene()
    # Each face is itself steep enough that neighbouring depths differ by > 5 % near the image sides.
    assert np.max(depth[:, :-1] / depth[:, 1:]) > 1.05

    lines = cond.line_art(depth, normals, index)

    expected = np.zeros(depth.shape, dtype=np.float32)
    expected[:, 19] = 1.0  # depths tie at the ridge, so the first pixel of the pair takes the line
    np.testing.assert_array_equal(lines, expected)
    assert not cond.line_art(depth, normals, index, crease_angle=100.0).any()  # 90 deg < 100 deg


def test_silhouette_hugs_the_object():
    size = 33
    rows, cols = np.mgrid[0:size, 0:size]
    disk = (rows - 16) ** 2 + (cols - 16) ** 2 <= 10**2
    depth = np.where(disk, 5.0, 1e10).astype(np.float32)
    index = disk.astype(np.int32)

    lines = cond.line_art(depth, facing(size, size), index)

    padded = np.pad(disk, 1)
    touches_background = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    np.testing.assert_array_equal(lines, (disk & touches_background).astype(np.float32))

    # The same with the background given only by the mask (and index 0 inside it is irrelevant).
    masked = cond.line_art(
        np.full((size, size), 5.0, np.float32), facing(size, size), index, background=~disk
    )
    np.testing.assert_array_equal(masked, lines)


def test_sphere_draws_only_its_silhouette():
    depth, _, camera_normals, hit, _ = sphere_scene(size=81, focal=100.0)
    assert not (hit[0].any() or hit[-1].any() or hit[:, 0].any() or hit[:, -1].any())  # all in frame
    lines = cond.line_art(depth.astype(np.float32), camera_normals.astype(np.float32), hit.astype(np.int32))
    padded = np.pad(hit, 1)
    rim = hit & (~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:])
    np.testing.assert_array_equal(lines > 0, rim)


def test_object_boundary_goes_on_the_nearer_object():
    depth = np.full((8, 10), 3.0, dtype=np.float32)
    depth[:, 5:] = 3.05  # too small a step for a depth edge, but a different object
    index = np.ones((8, 10), dtype=np.int32)
    index[:, 5:] = 7

    lines = cond.line_art(depth, facing(8, 10), index)

    expected = np.zeros((8, 10), dtype=np.float32)
    expected[:, 4] = 1.0
    np.testing.assert_array_equal(lines, expected)


def test_thickness_widens_lines_with_anti_aliased_edges():
    depth, normals, index = step_scene()
    thin = cond.line_art(depth, normals, index, thickness=1.0)
    two = cond.line_art(depth, normals, index, thickness=2.0)
    three = cond.line_art(depth, normals, index, thickness=3.0)
    faint = cond.line_art(depth, normals, index, thickness=0.5)

    np.testing.assert_array_equal(thin[5, 12:20], [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(two[5, 12:20], [0, 0, 0.5, 1, 0.5, 0, 0, 0])
    np.testing.assert_array_equal(three[5, 12:20], [0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(faint[5, 12:20], [0, 0, 0, 0.75, 0, 0, 0, 0])

    # On a curved silhouette thickness 3 covers more, with soft (fractional) diagonal coverage.
    rows, cols = np.mgrid[0:40, 0:40]
    disk = (rows - 20) ** 2 + (cols - 20) ** 2 <= 12**2
    depth = np.where(disk, 4.0, np.inf).astype(np.float32)
    one_px = cond.line_art(depth, facing(40, 40), disk.astype(np.int32), thickness=1.0)
    three_px = cond.line_art(depth, facing(40, 40), disk.astype(np.int32), thickness=3.0)
    assert set(np.unique(one_px)) == {0.0, 1.0}
    assert np.count_nonzero(three_px) > 2 * np.count_nonzero(one_px)
    assert three_px.sum() > 2.5 * one_px.sum()
    soft = three_px[(three_px > 0) & (three_px < 1)]
    assert soft.size > 0
    np.testing.assert_allclose(np.unique(soft), [2.0 - np.sqrt(2.0)], rtol=1e-6)
    assert np.all(three_px[one_px == 1.0] == 1.0)


# ------------------------------------------------------------------------------------------------------------
# Segmentation
# ------------------------------------------------------------------------------------------------------------
def test_ade20k_palette_matches_the_reference_values():
    palette = cond.ADE20K_PALETTE
    assert len(palette) == 150
    assert palette["wall"] == (120, 120, 120)
    assert palette["building"] == (180, 120, 120)
    assert palette["sky"] == (6, 230, 230)
    assert palette["tree"] == (4, 200, 3)
    assert palette["road"] == (140, 140, 140)
    assert palette["grass"] == (4, 250, 7)
    assert palette["person"] == (150, 5, 61)
    assert palette["car"] == (0, 102, 200)
    assert palette["water"] == (61, 230, 250)
    assert palette["animal"] == (255, 0, 122)
    assert palette["flag"] == (92, 0, 255)
    assert cond.SEMANTIC_CLASSES[:9] == (
        "NONE",
        "building",
        "tree",
        "person",
        "car",
        "road",
        "sky",
        "water",
        "grass",
    )
    assert all(name in palette for name in cond.SEMANTIC_CLASSES[1:])


def test_object_colour_is_stable_across_processes_and_never_dark():
    assert cond.object_colour("Cube") == (85, 20, 253)
    code = "from stylepass_core import conditioning; print(conditioning.object_colour('Suzanne'))"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert out.stdout.strip() == str(cond.object_colour("Suzanne"))

    colours = [cond.object_colour(f"Cube.{i:03d}") for i in range(64)]
    assert len(set(colours)) == 64
    assert min(max(c) for c in colours) >= 178  # value >= 0.7: never close to the black background
    hues = np.sort([np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b) for r, g, b in colours])
    assert np.max(np.diff(np.concatenate([hues, hues[:1] + 2 * np.pi]))) < np.pi / 2  # spread around


def test_segmentation_map_colours_each_object_exactly():
    index = np.array([[0, 1, 2], [5, 3, 1]], dtype=np.int32)
    colours = {1: cond.ADE20K_PALETTE["tree"], 2: cond.object_colour("Cube"), 5: (255, 0, 0)}

    seg = cond.segmentation_map(index, colours)

    assert seg.dtype == np.float32 and seg.shape == (2, 3, 3)
    expected = np.array(
        [
            [(0, 0, 0), (4, 200, 3), (85, 20, 253)],
            [(255, 0, 0), (0, 0, 0), (4, 200, 3)],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(seg, expected / np.float32(255.0))

    tinted = cond.segmentation_map(index.astype(np.float32), colours, background_colour=(10, 20, 30))
    np.testing.assert_array_equal(tinted[0, 0] * 255, np.float32([10, 20, 30]))
    np.testing.assert_array_equal(tinted[1, 1] * 255, np.float32([10, 20, 30]))  # index 3 has no colour


# ------------------------------------------------------------------------------------------------------------
# motion_vector_rgb
# ------------------------------------------------------------------------------------------------------------
def blender_vectors(dx: float, dy_up: float, shape=(3, 4)) -> np.ndarray:
    """A Vector pass for steady motion of (dx, dy_up) px per frame: Cycles stores (pre - now, now - post)."""
    vectors = np.empty((*shape, 4), dtype=np.float32)
    vectors[..., 0], vectors[..., 1] = -dx, -dy_up
    vectors[..., 2], vectors[..., 3] = -dx, -dy_up
    return vectors


@pytest.mark.parametrize(
    ("dx", "dy_up", "rgb"),
    [
        (3.0, 0.0, (1.0, 0.0, 0.0)),  # right: red
        (0.0, -3.0, (1.0, 233.75 / 255, 0.0)),  # down: yellow-orange
        (-3.0, 0.0, (0.0, 197.5 / 255, 1.0)),  # left: azure
        (0.0, 3.0, (102.75 / 255, 0.0, 1.0)),  # up: violet
    ],
)
def test_motion_wheel_directions(dx, dy_up, rgb):
    out = cond.motion_vector_rgb(blender_vectors(dx, dy_up), max_magnitude=3.0)
    np.testing.assert_allclose(out, np.broadcast_to(rgb, out.shape), atol=1e-6)


def test_motion_saturation_scales_with_speed_and_still_is_white():
    vectors = blender_vectors(3.0, 0.0, shape=(1, 3))
    vectors[0, 1] = 0.0
    vectors[0, 2, 2] = -1.5  # half speed to the right

    out = cond.motion_vector_rgb(vectors, max_magnitude=3.0)

    np.testing.assert_allclose(out[0], [(1, 0, 0), (1, 1, 1), (1, 0.5, 0.5)], atol=1e-6)
    assert out.dtype == np.float32


def test_motion_uses_the_next_frame_pair_and_two_channel_input():
    vectors = blender_vectors(3.0, 0.0)
    vectors[..., :2] = 123.0  # the previous-frame pair does not change the picture
    np.testing.assert_allclose(cond.motion_vector_rgb(vectors)[0, 0], (1, 0, 0), atol=1e-6)

    forward = np.zeros((2, 2, 2), dtype=np.float32)
    forward[..., 1] = 2.0  # (dx, dy up)
    np.testing.assert_allclose(cond.motion_vector_rgb(forward)[1, 1], (102.75 / 255, 0, 1), atol=1e-6)
    assert np.all(cond.motion_vector_rgb(np.zeros((2, 2, 4), np.float32)) == 1.0)


# ------------------------------------------------------------------------------------------------------------
# Input validation: every check raises ValueError quoting the bad value
# ------------------------------------------------------------------------------------------------------------
GOOD_DEPTH = np.full((4, 4), 2.0, dtype=np.float32)
GOOD_NORMALS = facing(4, 4)
GOOD_INDEX = np.ones((4, 4), dtype=np.int32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cond.inverse_depth([[1.0]]), "numpy array, got list"),
        (lambda: cond.inverse_depth(np.ones((2, 2, 1))), r"\(H, W\), got array of shape \(2, 2, 1\)"),
        (lambda: cond.inverse_depth(np.ones((2, 2), bool)), "real numbers, got .*bool"),
        (lambda: cond.inverse_depth(GOOD_DEPTH, low_percentile=50, high_percentile=40), "50 >= 40"),
        (lambda: cond.inverse_depth(GOOD_DEPTH, high_percentile=101), "got 101"),
        (lambda: cond.inverse_depth(GOOD_DEPTH, background=np.zeros((4, 4))), "bool array of shape"),
        (lambda: cond.inverse_depth(np.array([[1.0, -2.0]])), r"> 0 .* found -2\.0"),
        (lambda: cond.radial_to_planar_depth(GOOD_DEPTH, 0.0, 1.0, 2.0, 2.0), "focal_px_x .* got 0.0"),
        (lambda: cond.radial_to_planar_depth(GOOD_DEPTH, 1.0, 1.0, np.nan, 2.0), "centre_x .* got nan"),
        (lambda: cond.camera_space_normals(GOOD_NORMALS, np.eye(3) * 2), "rotation matrix, got \\[\\[2.0"),
        (lambda: cond.camera_space_normals(GOOD_NORMALS, np.diag([1.0, 1.0, -1.0])), "rotation matrix"),
        (lambda: cond.camera_space_normals(GOOD_NORMALS, np.eye(4)), r"\(3, 3\) array, got .*\(4, 4\)"),
        (lambda: cond.camera_space_normals(np.ones((4, 4, 2)), np.eye(3)), r"\(H, W, 3\), got .*\(4, 4, 2\)"),
        (lambda: cond.normal_map_rgb(GOOD_NORMALS, background_rgb=(0, 0, 2)), r"got \(0, 0, 2\)"),
        (
            lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX, thickness=0.25),
            "thickness .* got 0.25",
        ),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX, thickness=40), "got 40"),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX, depth_threshold=0), "got 0"),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX, crease_angle=180), "got 180"),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS[:2], GOOD_INDEX), r"\(4, 4, 3\), got .*\(2, 4, 3\)"),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX[:3]), r"\(4, 4\), got .*\(3, 4\)"),
        (lambda: cond.line_art(GOOD_DEPTH, GOOD_NORMALS, GOOD_INDEX * 0.5), "whole numbers, found 0.5"),
        (lambda: cond.segmentation_map(GOOD_INDEX - 2, {}), "negative, found -1"),
        (lambda: cond.segmentation_map(GOOD_INDEX, {0: (1, 2, 3)}), "index 0"),
        (lambda: cond.segmentation_map(GOOD_INDEX, {1: (1, 2, 300)}), r"colours\[1\] .* got \(1, 2, 300\)"),
        (lambda: cond.segmentation_map(GOOD_INDEX, {"tree": (1, 2, 3)}), "got 'tree'"),
        (lambda: cond.segmentation_map(GOOD_INDEX, {1: (1, 2, 3)}, (0, 0)), r"got \(0, 0\)"),
        (lambda: cond.object_colour(7), "got 7"),
        (lambda: cond.motion_vector_rgb(np.zeros((2, 2, 3))), r"\(H, W, 2 or 4\), got .*\(2, 2, 3\)"),
        (lambda: cond.motion_vector_rgb(np.full((2, 2, 2), np.inf)), "finite"),
        (lambda: cond.motion_vector_rgb(np.zeros((2, 2, 2)), max_magnitude=-1.0), "got -1.0"),
    ],
)
def test_bad_input_raises_value_error_quoting_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_control_maps_makes_only_the_maps_asked_for():
    depth = np.full((8, 10), 5.0, np.float32)
    depth[2:6, 3:7] = 2.0
    background = np.zeros((8, 10), bool)
    background[:, :1] = True
    normals = np.zeros((8, 10, 3), np.float32)
    normals[..., 2] = 1.0
    index = np.where(depth < 3.0, 2, 1).astype(np.int32)
    index[background] = 0
    colours = {1: (10, 20, 30), 2: (200, 100, 50)}
    every = cond.control_maps(depth, normals, index, background, colours)
    assert list(every) == list(cond.CONTROL_MAPS)
    depth_only = cond.control_maps(depth, normals, index, background, colours, names=("depth",))
    assert list(depth_only) == ["depth"] and np.array_equal(depth_only["depth"], every["depth"])
    assert cond.control_maps(depth, normals, index, background, colours, names=()) == {}
    with pytest.raises(ValueError, match="names must be of"):
        cond.control_maps(depth, normals, index, background, colours, names=("beauty",))
