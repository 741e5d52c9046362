# SPDX-License-Identifier: GPL-3.0-or-later
"""Keyframe fusion with known motion: composed maps follow synthetic shifts exactly, one cubic sample keeps
detail that a chain of bilinear warps loses, a moving square's uncovered background is taken from the keyframe
that sees it, frame steps 2 and 3 follow the true (uneven) motion, and the error curve has no keyframe spike."""

import itertools

import numpy as np
import pytest

from stylepass_core import fusion, temporal

RNG = np.random.default_rng(14)


def vector_pass(shape, motions, where=None):
    """Blender's Vector pass for `motions = (previous, next)`, each (right, up) px per frame (+y up)."""
    (right, up), (next_right, next_up) = motions
    vectors = np.zeros((*shape, 4), dtype=np.float32)
    select = np.ones(shape, dtype=bool) if where is None else where
    vectors[select] = (-right, -up, -next_right, -next_up)
    return vectors


def texture(shape, channels=3):
    return RNG.random((*shape, channels)).astype(np.float32)


def brush_texture(shape):
    """Noise without its highest frequencies (a [1, 2, 1] blur each way), like painted strokes rather than
    pixel noise: pixel noise at half-pixel offsets is beyond any interpolation."""
    noise = texture((shape[0] + 2, shape[1] + 2))
    noise = noise[:-2] + 2 * noise[1:-1] + noise[2:]
    return (noise[:, :-2] + 2 * noise[:, 1:-1] + noise[:, 2:]) / 16


def edge_energy(image):
    grey = image.mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def warping_errors(frames, maps_back):
    """Per frame t >= 1: mean squared difference to frame t - 1 carried along the true motion."""
    errors = []
    for t in range(1, len(frames)):
        step = maps_back[t]
        carried = step.sample(frames[t - 1])
        errors.append(float(np.square(frames[t] - carried)[step.valid].mean()))
    return errors


# ------------------------------------------------------------------------------------------------------------
# 1. Composed maps
# ------------------------------------------------------------------------------------------------------------
def test_a_steady_integer_shift_composes_exactly_and_carries_pixels_unchanged() -> None:
    shape, count = (40, 60), 6
    right, up = 2, 1
    vectors = [vector_pass(shape, ((right, up), (right, up))) for _ in range(count)]
    depths = [np.full(shape, 5.0, np.float32)] * count
    to_first, to_last = fusion.carry_maps(vectors, depths)
    rows, cols = np.indices(shape)
    for t in range(count):
        # Content moves right and up, so frame t's pixel was t * right to the left and t * up lower in frame 0.
        inside = (cols - t * right >= 0) & (rows + t * up <= shape[0] - 1)
        assert np.array_equal(to_first[t].valid, inside)
        assert np.allclose(to_first[t].x[inside], (cols - t * right)[inside])
        assert np.allclose(to_first[t].y[inside], (rows + t * up)[inside])
        ahead = count - 1 - t
        inside = (cols + ahead * right <= shape[1] - 1) & (rows - ahead * up >= 0)
        assert np.array_equal(to_last[t].valid, inside)
        assert np.allclose(to_last[t].x[inside], (cols + ahead * right)[inside])
    first = texture(shape)
    carried = to_first[3].sample(first)
    source = first[np.clip(rows + 3 * up, 0, shape[0] - 1), np.clip(cols - 3 * right, 0, shape[1] - 1)]
    assert np.array_equal(carried[to_first[3].valid], source[to_first[3].valid])


def test_one_cubic_sample_keeps_detail_that_chained_bilinear_warps_lose() -> None:
    shape, count = (64, 64), 12
    motion = (0.5, 0.25)  # half-pixel steps: the worst case for interpolation
    vectors = [vector_pass(shape, (motion, motion)) for _ in range(count)]
    depths = [np.full(shape, 5.0, np.float32)] * count
    to_first, _ = fusion.carry_maps(vectors, depths, forward=False)
    picture = brush_texture(shape)
    fused = to_first[-1].sample(picture)
    chained = picture
    for t in range(1, count):
        chained = temporal.BackwardWarp(vectors[t]).apply(chained)
    inner = (slice(10, -10), slice(10, -10))
    original = edge_energy(picture[inner])
    # Measured: 0.89 of the detail left after one sample at the worst (half-pixel) offset; 0.23 after eleven
    # chained bilinear warps.
    assert edge_energy(fused[inner]) >= 0.85 * original
    assert edge_energy(chained[inner]) < 0.5 * original  # what frame-to-frame warping did before


def accelerating_motion(shape, count):
    """A plane moving right by 0, 1, 2, 3 ... px per frame (uneven: one frame's vectors times the step is
    wrong), as Blender's per-frame Vector passes."""
    speeds = list(range(count + 1))
    return [vector_pass(shape, ((speeds[t], 0), (speeds[t + 1], 0))) for t in range(count)]


@pytest.mark.parametrize("step", [2, 3])
def test_frame_steps_compose_the_skipped_frames_true_motion(step: int) -> None:
    shape, count = (24, 80), 7
    vectors = accelerating_motion(shape, count)
    depths = [np.full(shape, 5.0, np.float32)] * count
    position = np.cumsum([0, *range(1, count)])  # where the plane's origin is at each frame
    for start in range(0, count - step):
        span = slice(start, start + step + 1)
        to_first, to_last = fusion.carry_maps(vectors[span], depths[span])
        cols = np.indices(shape)[1]
        moved = position[start + step] - position[start]
        assert np.allclose(to_first[-1].x[to_first[-1].valid], (cols - moved)[to_first[-1].valid])
        assert np.allclose(to_last[0].x[to_last[0].valid], (cols + moved)[to_last[0].valid])
        assert to_first[-1].valid.mean() > 0.5 * (1 - moved / shape[1])
        # Scaling the rendered frame's own one-frame vectors by the step misses the acceleration.
        assert moved != step * (start + step)


# ------------------------------------------------------------------------------------------------------------
# 2. Occlusion: a square moving over a static background
# ------------------------------------------------------------------------------------------------------------
def square_shot(shape=(48, 64), count=5, speed=4, size=12, top=18, left=8):
    """A square moving `speed` px right per frame over a static background, its Vector and Depth passes, and
    the truth of what is visible: frame t's square covers columns left + t * speed ... + size."""
    vectors, depths, masks = [], [], []
    for t in range(count):
        where = np.zeros(shape, dtype=bool)
        where[top : top + size, left + t * speed : left + t * speed + size] = True
        previous = (speed if t > 0 else 0, 0)
        following = (speed if t < count - 1 else 0, 0)
        vectors.append(vector_pass(shape, (previous, following), where))
        depth = np.full(shape, 10.0, np.float32)
        depth[where] = 4.0
        depths.append(depth)
        masks.append(where)
    return vectors, depths, masks


def test_uncovered_background_is_invalid_towards_the_keyframe_that_did_not_see_it() -> None:
    vectors, depths, masks = square_shot()
    to_first, to_last = fusion.carry_maps(vectors, depths)
    middle = 2
    background_now = ~masks[middle]
    hidden_at_first = background_now & masks[0]  # behind the square in frame 0, visible now
    hidden_at_last = background_now & masks[-1]
    assert hidden_at_first.any() and hidden_at_last.any()
    assert not to_first[middle].valid[hidden_at_first].any()
    assert not to_last[middle].valid[hidden_at_last].any()
    # Everything else is seen by its keyframe (a pixel of slack along the square's edges).
    seen_first = background_now & ~masks[0]
    seen_last = background_now & ~masks[-1]
    assert to_first[middle].valid[seen_first].mean() > 0.97
    assert to_last[middle].valid[seen_last].mean() > 0.97
    assert to_first[middle].valid[masks[middle]].mean() > 0.9


def test_fusion_fills_each_disocclusion_from_the_keyframe_that_sees_it_and_fresh_where_none_does() -> None:
    vectors, depths, masks = square_shot()
    shape = masks[0].shape
    to_first, to_last = fusion.carry_maps(vectors, depths)
    key0, key1, fresh = (np.full((*shape, 3), value, np.float32) for value in (0.2, 0.8, 0.5))
    middle = 2
    carries = [
        (to_first[middle].sample(key0), to_first[middle].valid, 1 - middle / 4),
        (to_last[middle].sample(key1), to_last[middle].valid, middle / 4),
    ]
    out, covered = fusion.fuse(fresh, carries, feather=0)
    only_last = to_last[middle].valid & ~to_first[middle].valid
    only_first = to_first[middle].valid & ~to_last[middle].valid
    both = to_first[middle].valid & to_last[middle].valid
    neither = ~to_first[middle].valid & ~to_last[middle].valid
    assert only_last.any() and only_first.any() and both.any()
    assert np.allclose(out[only_last], 0.8) and np.allclose(out[only_first], 0.2)
    assert np.allclose(out[both], 0.5 * 0.2 + 0.5 * 0.8)
    assert np.allclose(out[neither], 0.5) and np.all(covered[neither] == 0)
    no_carry, _ = fusion.fuse(fresh, carries, weight=0.0)
    assert np.array_equal(no_carry, fresh)


# ------------------------------------------------------------------------------------------------------------
# 3. The error curve: no pop at keyframes
# ------------------------------------------------------------------------------------------------------------
def test_a_fused_sequence_has_no_keyframe_spike_where_restarting_pops() -> None:
    """Keyframes stylised independently (independent textures): restarting at each keyframe jumps by a whole
    independent frame; fusing spreads the change over the span, so no frame stands out."""
    shape, count, interval = (32, 48), 13, 6
    motion = (1.0, 0.0)
    vectors = [vector_pass(shape, (motion, motion)) for _ in range(count)]
    depths = [np.full(shape, 5.0, np.float32)] * count
    keys = fusion.keyframe_schedule(count, interval)
    assert [k.index for k in keys] == [0, 6, 12]
    fresh = [texture(shape) for _ in range(count)]  # what an engine without memory gives each frame
    fused = list(fresh)
    restarted = list(fresh)
    for k0, k1 in itertools.pairwise(keys):
        to_first, to_last = fusion.carry_maps(
            vectors[k0.index : k1.index + 1], depths[k0.index : k1.index + 1]
        )
        span = k1.index - k0.index
        for i in range(1, span):
            where = i / span
            carries = [
                (to_first[i].sample(fresh[k0.index]), to_first[i].valid, 1 - where),
                (to_last[i].sample(fresh[k1.index]), to_last[i].valid, where),
            ]
            fused[k0.index + i] = fusion.fuse(fresh[k0.index + i], carries)[0]
            restarted[k0.index + i] = fusion.fuse(fresh[k0.index + i], carries[:1])[0]
    step_maps = [None] + [
        fusion.backward_step(vectors[t], vectors[t - 1], depths[t], depths[t - 1]) for t in range(1, count)
    ]
    independent = np.mean(warping_errors(fresh, step_maps))
    fused_errors = warping_errors(fused, step_maps)
    restarted_errors = warping_errors(restarted, step_maps)
    assert max(restarted_errors) > 0.8 * independent  # the pop the old chain had at every keyframe
    assert max(fused_errors) <= 0.5 * independent
    assert np.mean(fused_errors) <= 0.2 * independent


# ------------------------------------------------------------------------------------------------------------
# 4. Keyframes and input checks
# ------------------------------------------------------------------------------------------------------------
def test_keyframe_schedule_places_first_interval_cuts_and_last() -> None:
    reasons = {k.index: k.reason for k in fusion.keyframe_schedule(14, 12)}
    assert reasons == {0: "first", 12: "interval", 13: "last"}
    # Interval keyframes stay on the shot's grid after a cut, so chunks of a shot place them alike.
    reasons = {k.index: k.reason for k in fusion.keyframe_schedule(30, 10, {4})}
    assert reasons == {0: "first", 4: "cut", 10: "interval", 20: "interval", 29: "last"}
    # A chunk starting on the grid (index 10 of the shot) places them where the whole shot does.
    chunk = {k.index + 10: k.reason for k in fusion.keyframe_schedule(11, 10, offset=10)}
    assert chunk == {10: "interval", 20: "interval"}
    assert [k.index for k in fusion.keyframe_schedule(5, 0)] == [0, 4]
    assert [k.index for k in fusion.keyframe_schedule(1, 12)] == [0]
    assert [k.index for k in fusion.keyframe_schedule(4, 1)] == [0, 1, 2, 3]


def test_a_chunk_extends_to_the_keyframes_around_it() -> None:
    # Shot indices 0-49, keyframes every 12: 0, 12, 24, 36, 48 (and 49, the last).
    assert fusion.chunk_bounds((0, 49), (0, 11), 12) == (0, 12)
    assert fusion.chunk_bounds((0, 49), (12, 23), 12) == (12, 24)
    assert fusion.chunk_bounds((0, 49), (12, 24), 12) == (12, 24)
    assert fusion.chunk_bounds((0, 49), (15, 30), 12) == (12, 36)
    assert fusion.chunk_bounds((0, 49), (40, 49), 12) == (36, 49)
    assert fusion.chunk_bounds((0, 49), (5, 9), 0) == (0, 49)
    with pytest.raises(ValueError, match="must lie within the shot"):
        fusion.chunk_bounds((0, 49), (40, 60), 12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fusion.keyframe_schedule(0, 3), "count must be"),
        (lambda: fusion.keyframe_schedule(3, 2, offset=-1), "offset must be"),
        (lambda: fusion.keyframe_schedule(3, -1), "interval must be"),
        (lambda: fusion.carry_maps([], []), "must be equally long"),
        (lambda: fusion.fuse(np.zeros((4, 4, 3)), [], weight=2), "weight must be"),
        (
            lambda: fusion.FlowMap.identity((3, 3)).then(fusion.FlowMap.identity((4, 4))),
            "step must be a FlowMap",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_blending_two_unlike_keyframes_keeps_the_strokes_contrast() -> None:
    """Half way between two keyframes whose strokes differ, a plain average halves the strokes' contrast
    where they disagree; the blend keeps one picture's strength, and two equal pictures come out unchanged."""
    shape = (64, 64)
    smooth = np.linspace(0.3, 0.7, shape[1], dtype=np.float32)[None, :, None] * np.ones(
        (*shape, 3), np.float32
    )
    first, second = (np.clip(smooth + 0.2 * (brush_texture(shape) - 0.5), 0, 1) for _ in range(2))
    valid = np.ones(shape, dtype=bool)
    blended, _ = fusion.fuse(smooth, [(first, valid, 0.5), (second, valid, 0.5)])
    average = 0.5 * (first + second)
    inner = (slice(8, -8), slice(8, -8))
    assert edge_energy(average[inner]) < 0.8 * edge_energy(first[inner])
    assert edge_energy(blended[inner]) > 0.9 * edge_energy(first[inner])
    # The smooth layer still mixes by the shares: the blend's local mean is the average's.
    assert abs(float(blended[inner].mean()) - float(average[inner].mean())) < 0.01
    same, _ = fusion.fuse(smooth, [(first, valid, 0.5), (first, valid, 0.5)])
    np.testing.assert_allclose(same, first, atol=1e-5)


def test_a_surface_neither_keyframe_sees_keeps_the_look_it_came_into_view_with() -> None:
    """The square moves right and comes back: what it hides at both keyframes shows in between. The frame
    where a patch appears uses its own stylisation there; the next frame carries that look on instead of
    stylising the patch afresh."""
    shape, size, top = (40, 64), 12, 14
    lefts = [8, 14, 20, 14, 8]
    vectors, depths, masks = [], [], []
    for t, left in enumerate(lefts):
        where = np.zeros(shape, dtype=bool)
        where[top : top + size, left : left + size] = True
        previous = (left - lefts[t - 1], 0) if t > 0 else (0, 0)
        following = (lefts[t + 1] - left, 0) if t < len(lefts) - 1 else (0, 0)
        vectors.append(vector_pass(shape, (previous, following), where))
        depth = np.full(shape, 10.0, np.float32)
        depth[where] = 4.0
        depths.append(depth)
        masks.append(where)
    to_first, to_last = fusion.carry_maps(vectors, depths)
    keys = {0: texture(shape), 4: texture(shape)}
    fresh = {t: texture(shape) for t in (1, 2)}
    out = {0: keys[0]}
    for t in (1, 2):
        keyframes = [(to_first[t], keys[0], 1 - t / 4), (to_last[t], keys[4], t / 4)]
        step = fusion.backward_step(vectors[t], vectors[t - 1], depths[t], depths[t - 1])
        out[t], _ = fusion.fuse_frame(fresh[t], keyframes, (step, out[t - 1]))
    hidden_at_keys = masks[0] & ~to_first[2].valid & ~to_last[2].valid
    # Seen at frames 1 and 2 (well inside: the blend's feather is 2 px) and at neither keyframe.
    seen_since_1 = hidden_at_keys & ~masks[1] & ~masks[2]
    seen_since_1[:, 12:] = False
    seen_since_1[:, :10] = False
    assert seen_since_1.any()
    step = fusion.backward_step(vectors[2], vectors[1], depths[2], depths[1])
    np.testing.assert_allclose(out[2][seen_since_1], step.sample(out[1])[seen_since_1], atol=1e-6)
    assert not np.allclose(out[2][seen_since_1], fresh[2][seen_since_1])
    # Just come into view at frame 2: its own stylisation.
    new_at_2 = masks[1] & ~masks[2] & hidden_at_keys
    assert new_at_2.any()
    np.testing.assert_allclose(out[2][new_at_2], fresh[2][new_at_2], atol=1e-6)
