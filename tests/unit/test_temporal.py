# SPDX-License-Identifier: GPL-3.0-or-later
"""Temporal coherence: warping with Blender's Vector-pass convention, occlusion masks on a moving square,
feathered validity and cuts (keyframe fusion is in test_fusion.py). The flicker metrics and the GIF writer (demo/) are in test_demo_measures.py."""

import math

import numpy as np
import pytest

from stylepass_core import temporal

RNG = np.random.default_rng(6)


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------
def vector_pass(
    shape: tuple[int, int],
    right: float,
    up: float,
    where: np.ndarray | None = None,
    next_motion: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blender's Vector pass for motion of `right` px right and `up` px up since the previous frame.

    Channels 0, 1 = previous position minus current, channels 2, 3 = current minus next, +y up; so a cube
    moving 8 right and 4 up reads (-8, -4, -8, -4), as checked in Blender 4.5 and 5.2. `next_motion` is the
    (right, up) motion on to the next frame; steady motion when None.
    """
    next_right, next_up = (right, up) if next_motion is None else next_motion
    vectors = np.zeros((*shape, 4), dtype=np.float32)
    select = np.ones(shape, dtype=bool) if where is None else where
    vectors[select] = (-right, -up, -next_right, -next_up)
    return vectors


def moved(image: np.ndarray, right: int, up: int) -> np.ndarray:
    """`image` with its content moved `right` px right and `up` px up (rows are top first), zeros revealed."""
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    for row in range(height):
        for col in range(width):
            source_row, source_col = row + up, col - right
            if 0 <= source_row < height and 0 <= source_col < width:
                out[row, col] = image[source_row, source_col]
    return out


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ------------------------------------------------------------------------------------------------------------
# 1. Warping
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("right", "up"), [(3, 2), (-4, -1), (0, 5), (6, 0)])
def test_warp_reproduces_a_known_shift_with_blenders_sign_convention(right: int, up: int) -> None:
    shape = (24, 31)
    previous = RNG.random((*shape, 3), dtype=np.float32)
    current = moved(previous, right, up)

    # The motion on to the next frame (channels 2, 3) must play no part in the backward warp.
    warp = temporal.BackwardWarp(vector_pass(shape, right, up, next_motion=(7, -9)))
    warped, in_frame = warp.apply(previous), warp.in_frame

    # A pixel's source is `up` rows further DOWN and `right` columns to the left in the previous frame.
    rows, cols = np.indices(shape)
    expected_in_frame = (
        (rows + up >= 0) & (rows + up < shape[0]) & (cols - right >= 0) & (cols - right < shape[1])
    )
    np.testing.assert_array_equal(in_frame, expected_in_frame)
    assert in_frame.sum() == (shape[0] - abs(up)) * (shape[1] - abs(right))
    np.testing.assert_array_equal(warped[in_frame], current[in_frame])


def test_warp_of_the_cube_blender_rendered() -> None:
    # Blender: a cube moving 8 px right and 4 px up per frame reads (-8, -4, -8, -4) on its pixels.
    shape = (40, 50)
    before = square(shape, top=20, left=10, size=8)
    after = square(shape, top=16, left=18, size=8)
    previous = np.where(before[..., None], np.float32(0.9), np.float32(0.1)) * np.ones(3, np.float32)

    warp = temporal.BackwardWarp(vector_pass(shape, 8, 4, where=after))
    warped, in_frame = warp.apply(previous), warp.in_frame

    assert in_frame.all()
    np.testing.assert_array_equal(warped[after], np.full((64, 3), 0.9, np.float32))
    # Background pixels are still, so they take the previous frame's pixel in place (cube there or not).
    np.testing.assert_array_equal(warped[~after], previous[~after])


@pytest.mark.parametrize(("right", "up"), [(1.25, -0.5), (-0.75, 2.5)])
def test_warp_is_exact_bilinear_for_sub_pixel_motion(right: float, up: float) -> None:
    # Bilinear interpolation reproduces an affine image exactly, so any sub-pixel shift must too.
    shape = (20, 26)
    rows, cols = np.indices(shape).astype(np.float64)

    def ramp(row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return np.stack([0.1 + 0.02 * row + 0.01 * col, 0.9 - 0.03 * col, 0.5 + 0.01 * row], axis=-1)

    previous = ramp(rows, cols).astype(np.float32)
    warp = temporal.BackwardWarp(vector_pass(shape, right, up))
    warped, in_frame = warp.apply(previous), warp.in_frame

    source_row, source_col = rows + up, cols - right  # moving up: the source is further down
    inside = (
        (source_row >= 0) & (source_row <= shape[0] - 1) & (source_col >= 0) & (source_col <= shape[1] - 1)
    )
    np.testing.assert_allclose(warped[inside], ramp(source_row, source_col)[inside], atol=2e-6)
    assert in_frame[inside].all()
    assert inside.sum() == (shape[0] - math.ceil(abs(up))) * (shape[1] - math.ceil(abs(right)))


def test_warp_bilinear_weights_on_a_single_pixel() -> None:
    previous = np.zeros((4, 4), dtype=np.float32)
    previous[1:3, 1:3] = [[1.0, 2.0], [3.0, 4.0]]
    vectors = np.zeros((4, 4, 4), dtype=np.float32)
    vectors[1, 1, :2] = (0.25, -0.75)  # pixel (1, 1) samples x = 1.25, row = 1.75
    warped = temporal.BackwardWarp(vectors).apply(previous)
    top, bottom = 1.0 + 0.25 * (2.0 - 1.0), 3.0 + 0.25 * (4.0 - 3.0)
    assert warped[1, 1] == pytest.approx(top + 0.75 * (bottom - top))  # 3.5


def test_out_of_frame_starts_half_a_pixel_past_the_edge_centres() -> None:
    vectors = np.zeros((3, 5, 4), dtype=np.float32)
    vectors[0, 0, 0] = -0.5  # exactly on the image's left edge: still inside
    vectors[1, 0, 0] = -0.51
    vectors[2, 4, 0] = 0.51  # right edge
    vectors[0, 2, 1] = -2.51  # +y up is towards row 0, so -2.51 looks 2.51 rows down from row 0
    vectors[0, 3, 1] = 0.4
    in_frame = temporal.BackwardWarp(vectors).in_frame
    expected = np.ones((3, 5), dtype=bool)
    expected[1, 0] = expected[2, 4] = expected[0, 2] = False
    np.testing.assert_array_equal(in_frame, expected)


def test_backward_warp_is_reusable_and_checks_shapes() -> None:
    vectors = vector_pass((6, 7), 1, 0)
    warp = temporal.BackwardWarp(vectors)
    grey = RNG.random((6, 7))
    # One set of sample points serves every image of the previous frame, planes and multi-channel alike.
    both = warp.apply(np.stack([grey, 1 - grey], axis=-1))
    np.testing.assert_array_equal(both[..., 0], warp.apply(grey))
    np.testing.assert_allclose(both[..., 1], 1 - warp.apply(grey), atol=1e-6)
    with pytest.raises(ValueError, match=r"must be 6 x 7 pixels"):
        warp.apply(np.zeros((7, 6)))
    with pytest.raises(ValueError, match=r"\(H, W, 4\) Vector pass"):
        temporal.BackwardWarp(np.zeros((6, 7, 2)))
    bad = vectors.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        temporal.BackwardWarp(bad)


# ------------------------------------------------------------------------------------------------------------
# 2. Occlusion masks: a square moving over a static background
# ------------------------------------------------------------------------------------------------------------
SHAPE = (40, 44)
BEFORE = square(SHAPE, top=12, left=8, size=10)
AFTER = square(SHAPE, top=10, left=12, size=10)  # moved 4 px right and 2 px up
UNCOVERED = BEFORE & ~AFTER


def square_scene(background_depth: float) -> dict[str, np.ndarray]:
    return {
        "vectors_current": vector_pass(SHAPE, 4, 2, where=AFTER),
        "vectors_previous": vector_pass(SHAPE, 4, 2, where=BEFORE),
        "depth_current": np.where(AFTER, np.float32(4.0), np.float32(background_depth)),
        "depth_previous": np.where(BEFORE, np.float32(4.0), np.float32(background_depth)),
    }


@pytest.mark.parametrize("background_depth", [10.0, np.inf, 1e10])
@pytest.mark.parametrize("tests", ["both", "consistency", "depth"])
def test_occlusion_mask_rejects_exactly_the_uncovered_pixels(background_depth: float, tests: str) -> None:
    scene = square_scene(background_depth)
    if tests == "consistency":
        scene["depth_current"] = scene["depth_previous"] = None
    elif tests == "depth":
        scene["vectors_previous"] = None

    valid = temporal.occlusion_mask(**scene)

    assert UNCOVERED.sum() == 100 - 8 * 6 == 52
    np.testing.assert_array_equal(valid, ~UNCOVERED)


def test_occlusion_mask_with_motion_boundaries_also_rejects_both_sides_of_the_outline() -> None:
    scene = square_scene(10.0)
    valid = temporal.occlusion_mask(**scene, boundary_jump=1.0)

    boundary = np.zeros(SHAPE, dtype=bool)
    for row in range(SHAPE[0]):
        for col in range(SHAPE[1]):
            for d_row, d_col in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                r, c = row + d_row, col + d_col
                if 0 <= r < SHAPE[0] and 0 <= c < SHAPE[1] and AFTER[r, c] != AFTER[row, col]:
                    boundary[row, col] = True
    assert boundary.sum() == 36 + 40  # inner ring of the 10 x 10 square, outer ring without corners
    np.testing.assert_array_equal(valid, ~(UNCOVERED | boundary))


def test_out_of_frame_pixels_are_invalid() -> None:
    vectors = vector_pass((10, 12), 3, -1)  # a pan: content moves 3 right and 1 down
    valid = temporal.occlusion_mask(vectors, vectors)
    expected = np.ones((10, 12), dtype=bool)
    expected[:, :3] = False  # came from left of the frame
    expected[0, :] = False  # came from above it
    np.testing.assert_array_equal(valid, expected)


def test_depth_test_tolerates_the_camera_moving_but_not_an_occluder() -> None:
    vectors = np.zeros((4, 4, 4), dtype=np.float32)
    now = np.full((4, 4), 5.0, dtype=np.float32)
    then = np.array([[5.4, 4.65, 5.55, 4.52]] * 4, dtype=np.float32)  # 7.4%, 7%, 9.9% and 9.6% apart
    then[3] = [6.0, 4.0, np.inf, 5.0]  # 16.7%, 20%, background against geometry, equal
    valid = temporal.occlusion_mask(vectors, None, now, then)
    np.testing.assert_array_equal(valid[0], [True, True, True, True])
    np.testing.assert_array_equal(valid[3], [False, False, False, True])
    strict = temporal.occlusion_mask(vectors, None, now, then, depth_tolerance=0.08)
    np.testing.assert_array_equal(strict[0], [True, True, False, False])


def test_forward_backward_check_rejects_a_mixed_silhouette_vector() -> None:
    # Cycles filters vectors: a silhouette pixel half on the moving cube reads half its motion.
    shape = (12, 20)
    before = square(shape, top=2, left=2, size=6)
    after = square(shape, top=2, left=10, size=6)
    current = vector_pass(shape, 8, 0, where=after)
    current[4, 9] = (-4.0, 0.0, -4.0, 0.0)
    valid = temporal.occlusion_mask(current, vector_pass(shape, 8, 0, where=before))
    assert not valid[4, 9]
    assert valid[after].all()


def test_consistency_check_uses_the_previous_frames_forward_motion() -> None:
    # An accelerating square: 2 px right from frame t-2 to t-1, then 4 px. The previous frame's channels 2, 3
    # (its motion on to this frame) must cancel this frame's channels 0, 1; its own channels 0, 1 would not.
    shape = (16, 30)
    before = square(shape, top=3, left=6, size=8)
    after = square(shape, top=3, left=10, size=8)
    previous = vector_pass(shape, 2, 0, where=before, next_motion=(4, 0))
    current = vector_pass(shape, 4, 0, where=after, next_motion=(6, 0))
    valid = temporal.occlusion_mask(current, previous)
    np.testing.assert_array_equal(valid, ~(before & ~after))
    assert (before & ~after).sum() == 8 * 4


def test_occlusion_mask_checks_inputs() -> None:
    scene = square_scene(10.0)
    with pytest.raises(ValueError, match="give both depth_current and depth_previous"):
        temporal.occlusion_mask(scene["vectors_current"], depth_current=scene["depth_current"])
    negative = scene["depth_current"].copy()
    negative[15, 15] = -1.0
    with pytest.raises(ValueError, match=r"must be > 0 where there is geometry, found -1.0"):
        temporal.occlusion_mask(scene["vectors_current"], None, negative, scene["depth_previous"])
    with pytest.raises(ValueError, match="the BackwardWarp built from vectors_current"):
        temporal.occlusion_mask(
            scene["vectors_current"], warp=temporal.BackwardWarp(scene["vectors_current"].copy())
        )
    with pytest.raises(ValueError, match="boundary_jump must be > 0"):
        temporal.occlusion_mask(scene["vectors_current"], boundary_jump=0)


def test_occlusion_mask_reuses_a_given_warp() -> None:
    scene = square_scene(np.inf)
    warp = temporal.BackwardWarp(scene["vectors_current"])
    np.testing.assert_array_equal(temporal.occlusion_mask(**scene, warp=warp), ~UNCOVERED)


# ------------------------------------------------------------------------------------------------------------
# 3. Feathered validity
# ------------------------------------------------------------------------------------------------------------
def test_feathered_mask_fades_specks_and_dents_holes() -> None:
    valid = np.ones((15, 15), dtype=bool)
    valid[7, 7] = False
    valid[0, 0] = valid[0, 1] = False
    soft = temporal.feathered_mask(valid, 2)
    assert soft[7, 7] == 0.0
    assert soft[7, 8] == pytest.approx(2 * 24 / 25 - 1)
    assert soft[12, 12] == 1.0
    speck = np.zeros((15, 15), dtype=bool)
    speck[7, 7] = True
    assert temporal.feathered_mask(speck, 2).max() == 0.0


# ------------------------------------------------------------------------------------------------------------
# 4. Cuts
# ------------------------------------------------------------------------------------------------------------
def test_change_score_undoes_motion_and_sees_cuts() -> None:
    shape = (30, 40)
    previous = RNG.random((*shape, 3), dtype=np.float32)
    current = moved(previous, 2, 1)
    vectors = vector_pass(shape, 2, 1)
    valid = temporal.occlusion_mask(vectors, vectors)

    policy = temporal.CutPolicy()  # cuts above 50% invalid or a colour change of 0.15
    still = temporal.change_score(previous, current, valid, vectors=vectors)
    assert still.invalid_share == pytest.approx(1 - (29 * 38) / (30 * 40))
    assert still.colour_change == 0.0
    assert not policy.is_cut(still)
    # Without undoing the motion, two random images differ by 1/3 on average: a cut.
    assert temporal.change_score(previous, current, valid).colour_change == pytest.approx(1 / 3, abs=0.02)

    brighter = np.clip(current + 0.3, 0, 1)
    assert policy.is_cut(temporal.change_score(previous, brighter, valid, vectors=vectors))
    mostly_new = np.zeros(shape, dtype=bool)
    mostly_new[:29, 2:18] = True  # 61% invalid
    score = temporal.change_score(previous, current, mostly_new, vectors=vectors)
    assert score.invalid_share == pytest.approx(1 - 29 * 16 / 1200)
    assert score.colour_change == 0.0
    assert policy.is_cut(score)
    assert temporal.change_score(previous, current, np.zeros(shape, bool)).colour_change == 1.0


def test_cut_policy_thresholds_are_exclusive() -> None:
    policy = temporal.CutPolicy(max_invalid_share=0.5, max_colour_change=0.15)
    assert not policy.is_cut(temporal.ChangeScore(invalid_share=0.1, colour_change=0.02))
    assert policy.is_cut(temporal.ChangeScore(0.51, 0.0))
    assert not policy.is_cut(temporal.ChangeScore(0.5, 0.15))
    assert policy.is_cut(temporal.ChangeScore(0.0, 0.16))
    with pytest.raises(ValueError, match="max_invalid_share must be"):
        temporal.CutPolicy(max_invalid_share=1.5)
    with pytest.raises(ValueError, match="score must be a ChangeScore"):
        policy.is_cut(0.3)
