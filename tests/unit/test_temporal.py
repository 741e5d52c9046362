# SPDX-License-Identifier: GPL-3.0-or-later
"""Temporal coherence: warping with Blender's Vector-pass convention, occlusion masks on a moving square,
blending, keyframes, the two metrics and the GIF writer (decoded by a spec-following decoder and by PIL)."""

import math
import os
import struct

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
    warped, in_frame = temporal.warp_previous(previous, vector_pass(shape, right, up, next_motion=(7, -9)))

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

    warped, in_frame = temporal.warp_previous(previous, vector_pass(shape, 8, 4, where=after))

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
    warped, in_frame = temporal.warp_previous(previous, vector_pass(shape, right, up))

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
    warped, _ = temporal.warp_previous(previous, vectors)
    top, bottom = 1.0 + 0.25 * (2.0 - 1.0), 3.0 + 0.25 * (4.0 - 3.0)
    assert warped[1, 1] == pytest.approx(top + 0.75 * (bottom - top))  # 3.5


def test_out_of_frame_starts_half_a_pixel_past_the_edge_centres() -> None:
    vectors = np.zeros((3, 5, 4), dtype=np.float32)
    vectors[0, 0, 0] = -0.5  # exactly on the image's left edge: still inside
    vectors[1, 0, 0] = -0.51
    vectors[2, 4, 0] = 0.51  # right edge
    vectors[0, 2, 1] = -2.51  # +y up is towards row 0, so -2.51 looks 2.51 rows down from row 0
    vectors[0, 3, 1] = 0.4
    _, in_frame = temporal.warp_previous(np.zeros((3, 5)), vectors)
    expected = np.ones((3, 5), dtype=bool)
    expected[1, 0] = expected[2, 4] = expected[0, 2] = False
    np.testing.assert_array_equal(in_frame, expected)


def test_backward_warp_is_reusable_and_checks_shapes() -> None:
    vectors = vector_pass((6, 7), 1, 0)
    warp = temporal.BackwardWarp(vectors)
    grey = RNG.random((6, 7))
    np.testing.assert_array_equal(warp.apply(grey), temporal.warp_previous(grey, vectors)[0])
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
# 3. Blending
# ------------------------------------------------------------------------------------------------------------
def test_blend_uses_the_warp_only_where_valid_with_an_inner_feather() -> None:
    current = np.full((20, 30, 3), 0.2, dtype=np.float32)
    warped = np.ones((20, 30, 3), dtype=np.float32)
    valid = np.zeros((20, 30), dtype=bool)
    valid[:, 10:] = True

    hard = temporal.blend_temporal(current, warped, valid, weight=0.7, feather=0)
    np.testing.assert_allclose(hard[:, 10:], 0.2 + 0.7 * 0.8, rtol=1e-5)
    np.testing.assert_array_equal(hard[:, :10], current[:, :10])

    soft = temporal.blend_temporal(current, warped, valid, weight=0.7, feather=2)
    np.testing.assert_array_equal(soft[:, :10], current[:, :10])  # disocclusions stay exactly fresh
    # The ramp (1 + 2 d) / 5 at d = 0, 1, 2 pixels into the valid area.
    np.testing.assert_allclose(
        soft[:, 10:13, 0], [[0.2 + 0.7 * 0.8 * a for a in (0.2, 0.6, 1.0)]] * 20, rtol=1e-5
    )
    np.testing.assert_allclose(soft[:, 13:], 0.76, rtol=1e-5)

    np.testing.assert_array_equal(temporal.blend_temporal(current, warped, valid, weight=0.0), current)


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


def test_blend_checks_shapes() -> None:
    with pytest.raises(ValueError, match="valid_mask must be a bool array of shape"):
        temporal.blend_temporal(np.zeros((4, 5, 3)), np.zeros((4, 5, 3)), np.ones((5, 4), dtype=bool))
    with pytest.raises(ValueError, match="weight must be a finite number in"):
        temporal.blend_temporal(
            np.zeros((4, 5, 3)), np.zeros((4, 5, 3)), np.ones((4, 5), dtype=bool), weight=1.5
        )


# ------------------------------------------------------------------------------------------------------------
# 4. Cuts and keyframes
# ------------------------------------------------------------------------------------------------------------
def test_change_score_undoes_motion_and_sees_cuts() -> None:
    shape = (30, 40)
    previous = RNG.random((*shape, 3), dtype=np.float32)
    current = moved(previous, 2, 1)
    vectors = vector_pass(shape, 2, 1)
    valid = temporal.occlusion_mask(vectors, vectors)

    still = temporal.change_score(previous, current, valid, vectors=vectors)
    assert still.invalid_share == pytest.approx(1 - (29 * 38) / (30 * 40))
    assert still.colour_change == 0.0
    assert not temporal.is_cut(previous, current, valid, vectors=vectors)
    # Without undoing the motion, two random images differ by 1/3 on average: a cut.
    assert temporal.change_score(previous, current, valid).colour_change == pytest.approx(1 / 3, abs=0.02)

    brighter = np.clip(current + 0.3, 0, 1)
    assert temporal.is_cut(previous, brighter, valid, vectors=vectors)
    mostly_new = np.zeros(shape, dtype=bool)
    mostly_new[:29, 2:18] = True  # 61% invalid
    score = temporal.change_score(previous, current, mostly_new, vectors=vectors)
    assert score.invalid_share == pytest.approx(1 - 29 * 16 / 1200)
    assert score.colour_change == 0.0
    assert temporal.is_cut(previous, current, mostly_new, vectors=vectors)
    assert temporal.change_score(previous, current, np.zeros(shape, bool)).colour_change == 1.0


def test_keyframe_policy() -> None:
    policy = temporal.KeyframePolicy(interval=4, max_invalid_share=0.5, max_colour_change=0.15)
    calm = temporal.ChangeScore(invalid_share=0.1, colour_change=0.02)
    assert policy.keyframe_reason(None) == "first"
    assert [policy.keyframe_reason(n, calm) for n in (1, 2, 3, 4, 5)] == [
        None,
        None,
        None,
        "interval",
        "interval",
    ]
    assert policy.keyframe_reason(1, temporal.ChangeScore(0.51, 0.0)) == "cut"
    assert policy.keyframe_reason(1, temporal.ChangeScore(0.5, 0.15)) is None  # thresholds are exclusive
    assert policy.keyframe_reason(2, temporal.ChangeScore(0.0, 0.16)) == "cut"
    assert policy.is_keyframe(None) and not policy.is_keyframe(3, calm)
    never = temporal.KeyframePolicy(interval=0)
    assert never.keyframe_reason(10_000, calm) is None
    assert temporal.KeyframePolicy(interval=1).keyframe_reason(1) == "interval"
    with pytest.raises(ValueError, match="interval must be an int"):
        temporal.KeyframePolicy(interval=-1)
    with pytest.raises(ValueError, match="frames_since_keyframe must be an int"):
        policy.keyframe_reason(0)


# ------------------------------------------------------------------------------------------------------------
# 5. Metrics
# ------------------------------------------------------------------------------------------------------------
def panning_sequence(count: int, shape: tuple[int, int], right: int, up: int) -> list[np.ndarray]:
    """Frames of a random texture moving steadily: frame t is a window of a larger texture."""
    margin = count * max(abs(right), abs(up))
    texture = RNG.random((shape[0] + 2 * margin, shape[1] + 2 * margin, 3), dtype=np.float32)
    return [
        texture[
            margin + t * up : margin + t * up + shape[0], margin - t * right : margin - t * right + shape[1]
        ]
        for t in range(count)
    ]


def test_warping_error_of_a_consistent_sequence_is_zero_and_of_noise_one_sixth() -> None:
    shape = (32, 36)
    frames = panning_sequence(5, shape, 3, 2)
    vectors = [None] + [vector_pass(shape, 3, 2)] * 4
    masks = [None] + [temporal.occlusion_mask(v, v) for v in vectors[1:]]
    assert temporal.warping_error(frames, vectors, masks) < 1e-12
    # Ignoring the motion makes the same frames look like flicker.
    still = [None] + [vector_pass(shape, 0, 0)] * 4
    assert temporal.warping_error(frames, still, [None] + [np.ones(shape, bool)] * 4) > 0.1

    # Independent uniform noise: E[(a - b)^2] = 1/6 per channel, averaged (not summed) over RGB.
    noise = [RNG.random((64, 64, 3), dtype=np.float32) for _ in range(4)]
    all_valid = [None] + [np.ones((64, 64), dtype=bool)] * 3
    error = temporal.warping_error(noise, [None] + [vector_pass((64, 64), 0, 0)] * 3, all_valid)
    assert error == pytest.approx(1 / 6, abs=0.005)


def test_warping_error_ignores_masked_and_out_of_frame_pixels() -> None:
    shape = (20, 24)
    frames = [frame.copy() for frame in panning_sequence(3, shape, 2, 0)]
    vectors = [None] + [vector_pass(shape, 2, 0)] * 2
    masks = [None, np.ones(shape, bool), np.ones(shape, bool)]  # in-frame is added by the metric
    frames[2][:, 10:14] = 5.0  # garbage where the mask says "occluded"
    masks[2][:, 10:14] = False
    assert temporal.warping_error(frames, vectors, masks) < 1e-12
    empty = [None, np.zeros(shape, bool), np.zeros(shape, bool)]
    with pytest.raises(ValueError, match="every mask is empty"):
        temporal.warping_error(frames, vectors, empty)
    with pytest.raises(ValueError, match="one entry per frame, got 3, 2 and 3"):
        temporal.warping_error(frames, vectors[:2], masks)


def square_frame(left: int, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stylised-looking frame (flat square over a flat background plus brush texture) and its line art."""
    inside = square(texture.shape[:2], top=20, left=left, size=24)
    frame = np.where(inside[..., None], np.float32(0.8), np.float32(0.25)) + texture
    ring = inside & ~square(texture.shape[:2], top=21, left=left + 1, size=22)  # line art on the nearer side
    return np.clip(frame, 0, 1), ring.astype(np.float32)


def test_structure_fidelity_is_high_when_edges_follow_the_line_art_and_low_for_a_frozen_frame() -> None:
    texture = (np.random.default_rng(3).random((64, 64, 3), dtype=np.float32) - 0.5) * 0.08
    earlier, _ = square_frame(14, texture)
    now, lines_now = square_frame(22, texture)  # the square moved 8 px

    fresh = temporal.structure_fidelity(now, lines_now)
    frozen = temporal.structure_fidelity(earlier, lines_now)
    assert fresh > 0.7
    assert frozen < 0.35
    assert fresh - frozen > 0.4
    # Line art moved by one pixel is within the default tolerance; with radius 0 it hurts more.
    shifted = np.roll(lines_now, 1, axis=1)
    assert temporal.structure_fidelity(now, shifted) > 0.6
    assert temporal.structure_fidelity(now, shifted, radius=0) < temporal.structure_fidelity(
        now, lines_now, radius=0
    )
    assert temporal.structure_fidelity(np.full((64, 64, 3), 0.5, np.float32), lines_now) == 0.0


# ------------------------------------------------------------------------------------------------------------
# 6. GIF
# ------------------------------------------------------------------------------------------------------------
def lzw_decode(stream: bytes, min_code_size: int) -> bytes:
    """The GIF89a specification's LZW decoder, written independently of the encoder under test."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    table = [bytes([i]) for i in range(clear)] + [b"", b""]
    width, previous = min_code_size + 1, None
    out = bytearray()
    accumulator = bits = position = 0
    while True:
        while bits < width:
            accumulator |= stream[position] << bits
            position += 1
            bits += 8
        code = accumulator & ((1 << width) - 1)
        accumulator >>= width
        bits -= width
        if code == clear:
            table, width, previous = table[: clear + 2], min_code_size + 1, None
            continue
        if code == end:
            return bytes(out)
        if previous is None:
            entry = table[code]
        else:
            entry = table[code] if code < len(table) else previous + previous[:1]
            if len(table) < 4096:
                table.append(previous + entry[:1])
            if len(table) == 1 << width and width < 12:
                width += 1
        out += entry
        previous = entry


def decode_gif(data: bytes) -> tuple[list[np.ndarray], list[int], int | None]:
    """Frames `(H, W, 3)` uint8, delays in 1/100 s and the NETSCAPE loop count of a GIF89a file."""
    assert data[:6] == b"GIF89a"
    _, _, packed, _, _ = struct.unpack("<HHBBB", data[6:13])
    assert packed & 0x80, "global colour table expected"
    size = 2 << (packed & 7)
    palette = np.frombuffer(data[13 : 13 + 3 * size], np.uint8).reshape(size, 3)
    position = 13 + 3 * size
    frames, delays, loop = [], [], None

    def sub_blocks() -> list[bytes]:
        nonlocal position
        blocks = []
        while data[position]:
            blocks.append(data[position + 1 : position + 1 + data[position]])
            position += 1 + data[position]
        position += 1
        return blocks

    while True:
        kind = data[position]
        position += 1
        if kind == 0x3B:
            return frames, delays, loop
        if kind == 0x21:
            label = data[position]
            position += 1
            blocks = sub_blocks()
            if label == 0xF9:
                delays.append(struct.unpack("<H", blocks[0][1:3])[0])
            elif label == 0xFF and blocks[0] == b"NETSCAPE2.0":
                loop = struct.unpack("<H", blocks[1][1:3])[0]
        elif kind == 0x2C:
            _, _, width, height, flags = struct.unpack("<HHHHB", data[position : position + 9])
            assert flags == 0, "no local colour table or interlacing expected"
            min_code_size = data[position + 9]
            position += 10
            indices = np.frombuffer(lzw_decode(b"".join(sub_blocks()), min_code_size), np.uint8)
            assert indices.size == width * height
            frames.append(palette[indices].reshape(height, width, 3))
        else:
            raise AssertionError(f"unexpected block {kind:#x} at {position - 1}")


def nearest_palette_colours(frame: np.ndarray) -> np.ndarray:
    """The 6 x 7 x 6 palette colour each pixel should get without dithering."""
    out = np.empty(frame.shape, dtype=np.uint8)
    for channel, levels in enumerate((6, 7, 6)):
        level = np.floor(np.clip(frame[..., channel], 0, 1) * (levels - 1) + 0.5)
        out[..., channel] = np.round(level * 255 / (levels - 1))
    return out


def test_gif_round_trip_through_an_independent_decoder(tmp_path) -> None:
    # 130 x 97 of noise is ~12,600 pixels per frame: the 4096-entry table fills and is cleared many times.
    frames = [RNG.random((97, 130, 3), dtype=np.float32) for _ in range(2)]
    frames.append(np.clip(frames[1] * 1.3 - 0.1, 0, 1))  # some values outside [0, 1] before clipping
    path = tmp_path / "clip.gif"
    temporal.write_gif(path, frames, fps=24, dither=False)

    decoded, delays, loop = decode_gif(path.read_bytes())
    assert len(decoded) == 3
    for frame, got in zip(frames, decoded, strict=True):
        np.testing.assert_array_equal(got, nearest_palette_colours(frame))
    assert delays == [4, 4, 5]  # 100 / 24 s, rounded cumulatively
    assert loop == 0
    assert os.listdir(tmp_path) == ["clip.gif"]  # the temporary file was renamed, not left behind


def test_gif_ordered_dither_keeps_the_mean(tmp_path) -> None:
    path = tmp_path / "grey.gif"
    temporal.write_gif(path, [np.full((16, 16, 3), 0.5, np.float32)], fps=10)
    (frame,), delays, _ = decode_gif(path.read_bytes())
    assert delays == [10]
    # Red has 6 levels: 0.5 falls half way between 102 and 153, so half the pixels take each.
    assert sorted(np.unique(frame[..., 0])) == [102, 153]
    assert frame[..., 0].mean() == pytest.approx(127.5)
    # Green has 7 levels, and 0.5 is exactly level 3 (128): no dithering needed.
    assert np.all(frame[..., 1] == 128)


def test_gif_opens_in_pillow(tmp_path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    frames = [np.clip(RNG.random((20, 33, 3), dtype=np.float32), 0, 1) for _ in range(4)]
    path = tmp_path / "pil.gif"
    temporal.write_gif(path, frames, fps=12.5, dither=False)
    with image_module.open(path) as image:
        assert image.n_frames == 4
        assert image.info["loop"] == 0
        for index, frame in enumerate(frames):
            image.seek(index)
            assert image.info["duration"] == 80
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), nearest_palette_colours(frame))


def test_gif_overwrites_atomically_and_checks_inputs(tmp_path) -> None:
    path = tmp_path / "out.gif"
    path.write_bytes(b"old")
    temporal.write_gif(path, [np.zeros((4, 4, 3), np.float32)], fps=24)
    assert path.read_bytes()[:6] == b"GIF89a"
    with pytest.raises(ValueError, match="non-empty list"):
        temporal.write_gif(path, [], fps=24)
    with pytest.raises(ValueError, match=r"frames\[1\] must be 4 x 4 pixels"):
        temporal.write_gif(path, [np.zeros((4, 4, 3), np.float32), np.zeros((5, 4, 3), np.float32)], fps=24)
    with pytest.raises(ValueError, match="fps must be > 0"):
        temporal.write_gif(path, [np.zeros((4, 4, 3), np.float32)], fps=0)
    with pytest.raises(ValueError, match="must be float in"):
        temporal.write_gif(path, [np.zeros((4, 4, 3), np.uint8)], fps=24)
    nan = np.zeros((4, 4, 3), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        temporal.write_gif(path, [nan], fps=24)
    assert path.read_bytes()[:6] == b"GIF89a"
