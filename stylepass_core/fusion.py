# SPDX-License-Identifier: GPL-3.0-or-later
"""Keyframe fusion: every frame of a shot sampled ONCE from its keyframes along Blender's exact motion.

Chaining a warp frame to frame resamples the picture every frame (it softens) and restarting at a keyframe
pops. Here the keyframes are stylised, and each frame between two keyframes `k0 < t < k1` is

    carry0 = picture(k0) sampled at where t's pixels are in k0   (backward vectors, composed t -> k0)
    carry1 = picture(k1) sampled at where t's pixels are in k1   (forward vectors, composed t -> k1)
    out    = fresh stylisation of t, replaced by the blend of carry0 and carry1 where they are valid,
             weighted by temporal distance and by each carry's validity

so a keyframe is where the blend arrives, not a jump, and a surface hidden in k0 but seen in k1 comes from k1.
Only the COORDINATES are composed from frame to frame (`FlowMap.then`); the picture is sampled once, with a
Catmull-Rom kernel that does not soften like bilinear. The chain of frames includes the ones a frame step
skips, so animation on twos and threes follows the true motion.

Conventions are `temporal`'s: arrays top row first, pixel `(row, col)` centred at `x = col`, `y = row`; the
Vector pass in +y-up pixels, channels 0, 1 previous-minus-current, 2, 3 current-minus-next.
"""

from dataclasses import dataclass

import numpy as np

from .checks import check_number, describe
from .temporal import _check_array, _check_vectors, feathered_mask, occlusion_mask

__all__ = [
    "FlowMap",
    "Keyframe",
    "backward_step",
    "carry_maps",
    "chunk_bounds",
    "forward_step",
    "fuse",
    "fuse_frame",
    "keyframe_schedule",
]

# Where the four bilinear taps of a composed coordinate lie further apart than this (in pixels of the far
# frame), the taps straddle a motion boundary: their mix would be a point on neither surface.
TAP_SPREAD = 2.5


# ------------------------------------------------------------------------------------------------------------
# Coordinate maps
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FlowMap:
    """For every pixel of frame A: where its surface point is in frame B, and whether it is seen there.

    Attributes:
        x: `(H, W)` float32 column in B (pixel centres are integers).
        y: `(H, W)` float32 row in B, rows growing downwards.
        valid: `(H, W)` bool; False where the point is out of B's frame or hidden in B (or in any frame the
            map was composed through).
    """

    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> "FlowMap":
        rows, cols = np.indices(shape, dtype=np.float32)
        return cls(cols, rows, np.ones(shape, dtype=bool))

    def then(self, step: "FlowMap") -> "FlowMap":
        """This map (A -> B) followed by `step` (B -> C): A -> C.

        `step`'s coordinates are sampled bilinearly at this map's points; a point is valid only where it was
        valid here, all four taps are valid in `step`, and the taps do not straddle a motion boundary.
        """
        if not isinstance(step, FlowMap) or step.shape != self.shape:
            raise ValueError(f"step must be a FlowMap of shape {self.shape}, got {describe(step)}")
        taps = _Taps(self.x, self.y)
        x_taps, y_taps = taps.gather(step.x), taps.gather(step.y)
        # Only taps that carry weight decide: a point on a pixel centre must not lose validity to a neighbour
        # it does not read (that would erode every valid area by a pixel per composed frame).
        used = taps.weights() > 1e-3
        valid = self.valid & taps.inside & (taps.gather(step.valid) | ~used).all(axis=0)
        spread_x = np.where(used, x_taps, -np.inf).max(axis=0) - np.where(used, x_taps, np.inf).min(axis=0)
        spread_y = np.where(used, y_taps, -np.inf).max(axis=0) - np.where(used, y_taps, np.inf).min(axis=0)
        valid &= np.maximum(spread_x, spread_y) <= TAP_SPREAD
        return FlowMap(taps.blend(x_taps), taps.blend(y_taps), valid)

    def sample(self, image: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Frame B's `(H, W, C)` image at this map's points, with a Catmull-Rom kernel (clipped to the four
        nearest values, so it never rings past its neighbours). Values where not `valid` are edge values.

        `where`: an `(H, W)` bool mask of the points wanted (default: `valid`); the others are 0. Sampling is
        most of fusion's cost, and the pixels a carry cannot give are never read."""
        image = np.asarray(_check_array("image", image, (3,), self.shape), dtype=np.float32)
        where = self.valid if where is None else where
        out = np.zeros(image.shape, dtype=np.float32)
        if where.all():
            out[...] = sample_cubic(image, self.x, self.y)
        elif where.any():
            out[where] = sample_cubic(image, self.x[where][None], self.y[where][None])[0]
        return out


def _displacement_map(vectors: np.ndarray, valid: np.ndarray) -> FlowMap:
    """A `FlowMap` from `temporal`-style displacements: x = col + v[0], y = row - v[1]."""
    height, width = vectors.shape[:2]
    x = np.add(vectors[..., 0], np.arange(width, dtype=np.float32), dtype=np.float32)
    y = np.subtract(np.arange(height, dtype=np.float32)[:, None], vectors[..., 1], dtype=np.float32)
    return FlowMap(x, y, valid)


def _reversed(vectors: np.ndarray) -> np.ndarray:
    """The Vector pass as seen when time runs backwards: next-motion becomes previous-motion, so `temporal`'s
    backward warp and occlusion test serve the forward direction unchanged."""
    return -np.asarray(vectors, dtype=np.float32)[..., [2, 3, 0, 1]]


def backward_step(
    vectors: np.ndarray, vectors_before: np.ndarray, depth: np.ndarray, depth_before: np.ndarray
) -> FlowMap:
    """Frame u -> frame u - 1, from the two frames' Vector and Depth passes (`temporal.occlusion_mask`)."""
    vectors = _check_vectors("vectors", vectors)
    valid = occlusion_mask(vectors, vectors_before, depth, depth_before)
    return _displacement_map(vectors, valid)


def forward_step(
    vectors: np.ndarray, vectors_after: np.ndarray, depth: np.ndarray, depth_after: np.ndarray
) -> FlowMap:
    """Frame u -> frame u + 1: the same tests with time reversed (channels 2, 3 of u, 0, 1 of u + 1)."""
    vectors = _reversed(_check_vectors("vectors", vectors))
    after = _reversed(_check_vectors("vectors_after", vectors_after, vectors.shape[:2]))
    valid = occlusion_mask(vectors, after, depth, depth_after)
    return _displacement_map(vectors, valid)


def carry_maps(
    vectors: list[np.ndarray], depths: list[np.ndarray], backward: bool = True, forward: bool = True
) -> tuple[list[FlowMap | None], list[FlowMap | None]]:
    """The composed maps of every frame of a span to its first and its last frame.

    Args:
        vectors, depths: the Vector and Depth passes of EVERY frame from the first keyframe to the last, in
            order (frames a step skips included), all the same size.
        backward: compose each frame's map to the first frame. forward: ... to the last frame.

    Returns:
        `(to_first, to_last)`: lists as long as `vectors`; `to_first[i]` maps frame i to frame 0 and
        `to_last[i]` frame i to the last frame (identity at the ends); None for a direction not asked for.
    """
    count = len(vectors)
    if count < 1 or len(depths) != count:
        raise ValueError(
            f"vectors and depths must be equally long and not empty, got {count} and {len(depths)}"
        )
    shape = _check_vectors("vectors[0]", vectors[0]).shape[:2]
    to_first: list[FlowMap | None] = [None] * count
    to_last: list[FlowMap | None] = [None] * count
    if backward:
        to_first[0] = FlowMap.identity(shape)
        for i in range(1, count):
            step = backward_step(vectors[i], vectors[i - 1], depths[i], depths[i - 1])
            # frame i -> i - 1 -> ... -> 0: the step first, then the map already built for frame i - 1.
            to_first[i] = step.then(to_first[i - 1])
    if forward:
        to_last[-1] = FlowMap.identity(shape)
        for i in range(count - 2, -1, -1):
            step = forward_step(vectors[i], vectors[i + 1], depths[i], depths[i + 1])
            to_last[i] = step.then(to_last[i + 1])
    return to_first, to_last


# ------------------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------------------
class _Taps:
    """The four bilinear taps around each point, for gathering several planes at the same points.

    Like `temporal.BackwardWarp`, planes get one replicated column and row at the end, so the right and lower
    taps of every point exist and one index serves all four (shifted views of the same flat array)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        height, width = x.shape
        self.shape = x.shape
        self.inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
        x = np.clip(x, 0.0, width - 1)
        y = np.clip(y, 0.0, height - 1)
        col0 = np.floor(x)
        row0 = np.floor(y)
        self.fx = x - col0
        self.fy = y - row0
        self.stride = width + 1
        index = row0.astype(np.intp)
        index *= self.stride
        index += col0.astype(np.intp)
        self.index = index

    def gather(self, plane: np.ndarray) -> np.ndarray:
        """`(4, H, W)`: the plane's values at the four taps (top left, top right, bottom left, bottom right)."""
        flat = np.pad(plane, ((0, 1), (0, 1)), mode="edge").ravel()
        shifts = (0, 1, self.stride, self.stride + 1)
        return np.stack([flat[shift:].take(self.index) for shift in shifts])

    def weights(self) -> np.ndarray:
        """`(4, H, W)`: each tap's bilinear weight."""
        fx, fy = self.fx, self.fy
        return np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])

    def blend(self, taps: np.ndarray) -> np.ndarray:
        top = taps[0] + self.fx * (taps[1] - taps[0])
        bottom = taps[2] + self.fx * (taps[3] - taps[2])
        return (top + self.fy * (bottom - top)).astype(np.float32)


def _catmull_rom(t: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four Catmull-Rom weights for a fractional position `t` in [0, 1] between taps 1 and 2."""
    t2 = t * t
    t3 = t2 * t
    return (
        0.5 * (-t3 + 2 * t2 - t),
        0.5 * (3 * t3 - 5 * t2 + 2),
        0.5 * (-3 * t3 + 4 * t2 + t),
        0.5 * (t3 - t2),
    )


def sample_cubic(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`(H, W, C)` float32 `image` sampled at points `(x, y)` (any `(h, w)`), Catmull-Rom, edges replicated.

    The result is clamped between the minimum and maximum of the four nearest pixels: the kernel keeps
    detail that bilinear blurs, and the clamp keeps it from ringing (halos) around hard edges.
    """
    height, width, channels = image.shape
    x = np.clip(x, 0.0, width - 1).astype(np.float32)
    y = np.clip(y, 0.0, height - 1).astype(np.float32)
    col = np.floor(x)
    row = np.floor(y)
    weights_x = [w.ravel() for w in _catmull_rom(x - col)]
    weights_y = [w.ravel() for w in _catmull_rom(y - row)]
    # Two replicated pixels before and after each row and column: every tap of every point exists, and one
    # index (the top-left tap) serves all sixteen as shifted views of one flat plane. One plane at a time:
    # gathers from a contiguous plane are faster than of (r, g, b) rows.
    stride = width + 3
    index = row.astype(np.intp).ravel()
    index *= stride
    index += col.astype(np.intp).ravel()
    out = np.empty((channels, index.size), dtype=np.float32)
    values, line, total = (np.empty(index.size, dtype=np.float32) for _ in range(3))
    for channel in range(channels):
        flat = np.pad(image[..., channel], ((1, 2), (1, 2)), mode="edge").ravel()
        total.fill(0.0)
        low = high = None
        for j in range(4):
            line.fill(0.0)
            for i in range(4):
                flat[j * stride + i :].take(index, out=values)
                if j in (1, 2) and i in (1, 2):  # the four nearest pixels bound the result
                    low = values.copy() if low is None else np.minimum(low, values, out=low)
                    high = values.copy() if high is None else np.maximum(high, values, out=high)
                values *= weights_x[i]
                line += values
            line *= weights_y[j]
            total += line
        np.clip(total, low, high, out=out[channel])
    return np.moveaxis(out.reshape(channels, *x.shape), 0, -1)


# ------------------------------------------------------------------------------------------------------------
# Fusion
# ------------------------------------------------------------------------------------------------------------
def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the `(2 radius + 1)^2` square around each pixel of an `(H, W, C)` image, edges replicated."""
    size = 2 * radius + 1
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    sums = np.cumsum(padded, axis=0, dtype=np.float32)  # sums of at most a few thousand values in [0, 1]
    sums = np.concatenate([np.zeros_like(sums[:1]), sums])
    rows = sums[size:] - sums[:-size]
    sums = np.cumsum(rows, axis=1)
    sums = np.concatenate([np.zeros_like(sums[:, :1]), sums], axis=1)
    return ((sums[:, size:] - sums[:, :-size]) / size**2).astype(np.float32)


def _smooth_where(picture: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """The box-blurred picture from its valid pixels only (a normalised blur), so what a carry could not give
    does not bleed into its smooth layer and read as detail."""
    stacked = np.concatenate([picture * valid[..., None], valid[..., None].astype(np.float32)], axis=2)
    blurred = _box_blur(stacked, radius)
    return blurred[..., :3] / np.maximum(blurred[..., 3:], np.float32(1e-6))


def _detail_correlation(details: list[np.ndarray], where: np.ndarray) -> float:
    """How alike two pictures' detail layers are where both are seen, in [0, 1] (0 when nothing is shared)."""
    # Every other row and column: a statistic of the whole picture, at a quarter of the reads.
    where = where[::2, ::2]
    first, second = (np.asarray(d[::2, ::2][where], dtype=np.float64) for d in details)
    norm = np.sqrt(float((first * first).sum()) * float((second * second).sum()))
    return 0.0 if norm == 0.0 else float(np.clip((first * second).sum() / norm, 0.0, 1.0))


def fuse(
    fresh: np.ndarray,
    carries: list[tuple[np.ndarray, np.ndarray, float]],
    weight: float = 1.0,
    feather: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """A frame from the pictures carried to it, the fresh stylisation where none is valid.

    Each carry `(picture, valid, closeness)` counts `closeness * feathered_mask(valid)`; where the carries'
    total validity is `c` (the largest of their feathered masks), the result is
    `fresh + weight * c * (blend of the carries - fresh)`.

    Two carries are blended so that their texture keeps its contrast: averaging two stylisations whose strokes
    differ would fade the strokes towards the middle of a span. So only their smooth layers (a box blur) mix
    by the shares; their detail layers mix and are then scaled back to one picture's strength, by
    `1 / sqrt(a^2 + b^2 + 2 a b rho)` for shares `a + b = 1` and the details' correlation `rho` (1 for equal
    pictures: no change).

    Args:
        fresh: `(H, W, C)` float, this frame's own stylisation.
        carries: the keyframes' pictures sampled into this frame (`FlowMap.sample`), their validity and their
            temporal closeness in [0, 1] (1 at the keyframe itself); at most two.
        weight: share of the carried pictures where valid, in [0, 1]; 1 keeps detail exactly from the keyframes.
        feather: soft edge of each validity, inside the valid area (`temporal.feathered_mask`).

    Returns:
        `(out, covered)`: `(H, W, C)` float32 and the `(H, W)` float32 share taken from the carries.
    """
    fresh = np.asarray(_check_array("fresh", fresh, (3,), None), dtype=np.float32)
    shape = fresh.shape[:2]
    weight = check_number("weight", weight, 0.0, 1.0)
    if len(carries) > 2:
        raise ValueError(f"carries must hold at most two pictures, got {len(carries)}")
    pictures, shares, softs = [], [], []
    for picture, valid, closeness in carries:
        pictures.append(np.asarray(_check_array("carried picture", picture, (3,), shape), dtype=np.float32))
        closeness = check_number("closeness", closeness, 0.0, 1.0)
        softs.append(feathered_mask(valid, feather))
        shares.append(softs[-1] * np.float32(closeness))
    covered = np.maximum.reduce(softs) if softs else np.zeros(shape, dtype=np.float32)
    total = sum(shares) if shares else np.zeros(shape, dtype=np.float32)
    seen = total > 0
    parts = [
        np.divide(share, total, out=np.zeros(shape, np.float32), where=seen)[..., None] for share in shares
    ]
    if len(pictures) == 2:
        radius = max(2, round(min(shape) / 64))
        smooth = [
            _smooth_where(picture, soft > 0, radius) for picture, soft in zip(pictures, softs, strict=True)
        ]
        details = [picture - low for picture, low in zip(pictures, smooth, strict=True)]
        rho = _detail_correlation(details, (softs[0] >= 1.0) & (softs[1] >= 1.0))
        a, b = parts
        gain = 1.0 / np.sqrt(np.maximum(a * a + b * b + 2.0 * rho * a * b, 0.25))
        blend = a * smooth[0] + b * smooth[1] + gain * (a * details[0] + b * details[1])
    else:
        blend = sum((part * picture for part, picture in zip(parts, pictures, strict=True)), fresh * 0)
    blend = np.where(seen[..., None], blend, fresh)
    covered *= np.float32(weight)
    out = blend - fresh
    out *= covered[..., None]
    out += fresh
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32), covered


def fuse_frame(
    fresh: np.ndarray,
    keyframes: list[tuple[FlowMap, np.ndarray, float]],
    before: tuple[FlowMap, np.ndarray] | None = None,
    weight: float = 1.0,
    feather: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame between keyframes: the keyframes carried to it (`fuse`), over what the frame before showed
    carried one step, over this frame's own stylisation.

    A surface neither keyframe sees (hidden at both ends of the span) then keeps the look it had when it came
    into view instead of being stylised afresh, and so flickering, every frame; only a surface that has just
    come into view shows this frame's own stylisation.

    Args:
        fresh: `(H, W, C)` float, this frame's own stylisation.
        keyframes: per keyframe, the map from this frame to it (`carry_maps`), its picture and its temporal
            closeness in [0, 1].
        before: the map from this frame to the frame before (`carry_maps` over the frames between) and what
            that frame shows, or None.
        weight, feather: as `fuse`.

    Returns:
        `(out, covered)` as `fuse`, `covered` being the keyframes' share.
    """
    carries = [(flow.sample(picture), flow.valid, closeness) for flow, picture, closeness in keyframes]
    base = fresh
    if before is not None:
        flow, picture = before
        # Only where the keyframes do not cover the frame entirely is the frame before read at all.
        covered = np.zeros(flow.shape, dtype=np.float32)
        for _picture, valid, _closeness in carries:
            np.maximum(covered, feathered_mask(valid, feather), out=covered)
        wanted = flow.valid & (covered < 1.0)
        base, _ = fuse(fresh, [(flow.sample(picture, where=wanted), flow.valid, 1.0)], weight, feather)
    return fuse(base, carries, weight, feather)


# ------------------------------------------------------------------------------------------------------------
# Keyframes
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keyframe:
    """A frame of the shot stylised on its own: its index in the rendered frames and why."""

    index: int
    reason: str  # "first", "interval", "cut" or "last"


def keyframe_schedule(
    count: int, interval: int, cuts: frozenset[int] | set[int] = frozenset(), offset: int = 0
) -> list[Keyframe]:
    """Which of `count` rendered frames are keyframes: the first, each cut (a new shot starts there), every
    `interval`-th frame of the shot (0: none), and the last frame, so every frame between two keyframes has
    one on each side. Stateless, so a resumed render places them exactly as an uninterrupted one.

    The interval keyframes sit on a grid counted from the shot's first rendered frame, `offset` frames before
    index 0, whatever cuts come before them: so a chunk of a shot (a render farm's task) starting on the grid
    places every keyframe where the whole shot's run does, and chunks rendered apart give the same frames.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    if not isinstance(interval, int) or interval < 0:
        raise ValueError(f"interval must be an int >= 0, got {interval!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    keys = [Keyframe(0, "first" if offset == 0 else "interval")]
    for index in range(1, count):
        if index in cuts:
            keys.append(Keyframe(index, "cut"))
        elif interval and (offset + index) % interval == 0:
            keys.append(Keyframe(index, "interval"))
        elif index == count - 1:
            keys.append(Keyframe(index, "last"))
    return keys


def chunk_bounds(shot: tuple[int, int], chunk: tuple[int, int], interval: int) -> tuple[int, int]:
    """The rendered-frame indices `(first, last)` a chunk of a shot has to stylise so its frames equal the
    whole shot's: from the grid keyframe at or before the chunk's first frame to the one at or after its last
    (the shot's last frame at most). Indices count rendered frames from the shot's first (0).

    A frame between two keyframes depends on both and on the frames before it in their span, so a chunk that
    starts or ends between keyframes also stylises the rest of those spans; chunks that start and end on the
    grid share only their boundary keyframe, which both give the same picture.
    """
    first, last = shot
    start, end = chunk
    if not (0 <= first <= last) or not (first <= start <= end <= last):
        raise ValueError(f"the chunk {start}-{end} must lie within the shot {first}-{last} (frame indices)")
    if interval <= 0:
        return first, last  # no interval keyframes: the shot is one span
    below = first + (start - first) // interval * interval
    above = first + -(-(end - first) // interval) * interval
    return below, min(above, last)
