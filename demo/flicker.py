# SPDX-License-Identifier: GPL-3.0-or-later
"""Flicker and structure figures of a stylised sequence (demo, benchmark, tests; not shipped).

* `warping_error`: the warping error of Lai et al. (ECCV 2018) with Blender's exact Vector pass as the flow
  and occlusions masked by `temporal.occlusion_mask` (forward/backward check, depth test): lower is steadier.
* `structure_fidelity`: correlation of a stylised frame's edges with the frame's line-art pass: a frozen
  image that no longer follows the geometry scores low.
* `edge_energy`: the mean Sobel gradient magnitude of a frame's luminance: how much detail it keeps.
* `step_maps` and `carried_warping_errors`: the warping error of every rendered frame against the one
  before, measured along the TRUE motion composed through every scene frame between them
  (`fusion.carry_maps`), so a shot rendered on twos is measured like one on ones.
* `sequence_figures`: warping error and structure fidelity, averaged over a stylised sequence on disk.
* `shot_figures`: the benchmark's figures of a sequence on disk (any frame step): the per-frame warping-error
  curve, its mean and worst frame, detail and structure fidelity.

Conventions (arrays top row first, the Vector pass in +y-up pixels) are `stylepass_core.temporal`'s.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylepass_core import exr, fusion, png, temporal
from stylepass_core.checks import check_mask, describe
from stylepass_core.imageops import luminance
from stylepass_core.output_layout import SceneLayout

# structure_fidelity clips an edge map's strongest percent, so a few extreme steps cannot decide the
# correlation alone.
_EDGE_PERCENTILE = 99.0


def _check_image(
    name: str, value: object, channels: int | None, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A non-empty real `(H, W)` array (`channels` None) or `(H, W, channels)`, of `shape` when given."""
    want = "(H, W)" if channels is None else f"(H, W, {channels})"
    ndim = 2 if channels is None else 3
    if (
        not isinstance(value, np.ndarray)
        or value.ndim != ndim
        or (channels is not None and value.shape[2] != channels)
        or value.dtype.kind not in "iuf"
        or 0 in value.shape
    ):
        raise ValueError(f"{name} must be a non-empty real {want} array, got {describe(value)}")
    if shape is not None and value.shape[:2] != shape:
        raise ValueError(f"{name} must be {shape[0]} x {shape[1]} pixels, got {describe(value)}")
    return value


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------
def warping_error(
    frames: Sequence[np.ndarray],
    vectors: Sequence[np.ndarray | None],
    masks: Sequence[np.ndarray | None],
) -> float:
    """Warping error of Lai et al. (ECCV 2018), with Blender's exact motion instead of estimated flow.

    `E_warp = mean over t >= 1 of sum_p(M_t(p) * mean_c (O_t(p, c) - W_t(O_{t-1})(p, c))^2) / sum_p M_t(p)`,
    where `W_t` is `temporal.BackwardWarp(vectors[t])`, `M_t` is `masks[t]` AND the warp's in-frame test,
    and the squared error is AVERAGED over the three channels (as in Lai et al.'s released evaluation, whose
    mask has three channels). Identical frames score 0; independent uniform noise scores 1/6. Frames whose
    mask is empty (e.g. cuts) are left out of the mean.

    Args:
        frames: T >= 2 frames, each `(H, W, 3)` float in [0, 1].
        vectors: T entries; `vectors[t]` is frame t's `(H, W, 4)` Vector pass. `vectors[0]` is unused (may
            be None).
        masks: T entries; `masks[t]` is frame t's `(H, W)` bool validity (`temporal.occlusion_mask`).
            `masks[0]` is unused (may be None).

    Returns:
        E_warp as a float >= 0.

    Raises:
        ValueError: on mismatched lengths or shapes, or when every mask is empty.
    """
    # 1. Check inputs
    if not isinstance(frames, Sequence) or len(frames) < 2:
        raise ValueError(f"frames must be a list of at least 2 images, got {describe(frames)}")
    if not isinstance(vectors, Sequence) or not isinstance(masks, Sequence):
        raise ValueError(f"vectors and masks must be lists, got {describe(vectors)} and {describe(masks)}")
    if len(vectors) != len(frames) or len(masks) != len(frames):
        raise ValueError(
            f"frames, vectors and masks must have one entry per frame, got {len(frames)}, {len(vectors)} "
            f"and {len(masks)}"
        )
    shape = _check_image("frames[0]", frames[0], 3).shape[:2]

    # 2. Per-frame masked error
    errors = []
    for t in range(1, len(frames)):
        current = np.asarray(_check_image(f"frames[{t}]", frames[t], 3, shape), dtype=np.float32)
        warp = temporal.BackwardWarp(_check_image(f"vectors[{t}]", vectors[t], 4, shape))
        mask = check_mask(f"masks[{t}]", masks[t], shape) & warp.in_frame
        count = int(np.count_nonzero(mask))
        if count == 0:
            continue
        warped = warp.apply(_check_image(f"frames[{t - 1}]", frames[t - 1], 3, shape))
        errors.append(_masked_error(current, warped, mask, count))
    if not errors:
        raise ValueError("every mask is empty, so no pixel can be compared")
    return float(np.mean(errors))


def _masked_error(current: np.ndarray, carried: np.ndarray, mask: np.ndarray, count: int) -> float:
    """Lai et al.'s per-frame term: squared difference summed over the mask, averaged over the 3 channels."""
    squared = np.square(current[mask] - carried[mask])
    return float(squared.sum(dtype=np.float64)) / (3 * count)


def step_maps(
    vectors: Sequence[np.ndarray], depths: Sequence[np.ndarray], step: int = 1
) -> list[fusion.FlowMap | None]:
    """The true motion between the frames a frame step renders, composed through the frames it skips.

    Args:
        vectors: the `(H, W, 4)` Vector pass of EVERY scene frame of the shot, in order.
        depths: the `(H, W)` Depth pass of every scene frame, in order.
        step: frames rendered every `step` scene frames (scene indices 0, step, 2 step, ...), int >= 1;
            `len(vectors) - 1` must be a multiple of it.

    Returns:
        One entry per rendered frame: None for the first, then the `FlowMap` from rendered frame k to
        rendered frame k - 1 (`fusion.carry_maps` over the `step + 1` scene frames from one to the other),
        whose `valid` is False where a point leaves the frame or is hidden in any frame in between. With
        step 1 it is the single backward step.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    if len(vectors) != len(depths) or len(vectors) < 2 or (len(vectors) - 1) % step:
        raise ValueError(
            f"vectors and depths must be equally long, at least 2, and span whole steps of {step}, got "
            f"{len(vectors)} and {len(depths)}"
        )
    maps: list[fusion.FlowMap | None] = [None]
    for end in range(step, len(vectors), step):
        span = slice(end - step, end + 1)
        to_first, _ = fusion.carry_maps(list(vectors[span]), list(depths[span]), forward=False)
        maps.append(to_first[-1])
    return maps


def carried_warping_errors(
    frames: Sequence[np.ndarray], maps: Sequence[fusion.FlowMap | None]
) -> list[float | None]:
    """Per-frame warping error, each frame against the one before carried along `maps` (`step_maps`).

    Entry t is `sum_p(V_t(p) * mean_c (O_t(p, c) - S_t(O_{t-1})(p, c))^2) / sum_p V_t(p)` as in
    `warping_error`, where `S_t` samples frame t - 1 at `maps[t]`'s points (`FlowMap.sample`: Catmull-Rom, so
    the measure itself adds little softening) and `V_t` is `maps[t].valid`.

    Args:
        frames: T >= 2 frames, each `(H, W, 3)` float in [0, 1].
        maps: T entries; `maps[t]` maps frame t into frame t - 1 (`maps[0]` is unused, may be None).

    Returns:
        T entries: None for frame 0 and for a frame with no valid pixel (e.g. after a cut), else the error
        as a float >= 0.
    """
    if not isinstance(frames, Sequence) or len(frames) < 2:
        raise ValueError(f"frames must be a list of at least 2 images, got {describe(frames)}")
    if not isinstance(maps, Sequence) or len(maps) != len(frames):
        raise ValueError(
            f"maps must be a list with one entry per frame ({len(frames)}), got {describe(maps)}"
        )
    shape = _check_image("frames[0]", frames[0], 3).shape[:2]
    errors: list[float | None] = [None]
    for t in range(1, len(frames)):
        current = np.asarray(_check_image(f"frames[{t}]", frames[t], 3, shape), dtype=np.float32)
        step = maps[t]
        if not isinstance(step, fusion.FlowMap) or step.shape != shape:
            raise ValueError(f"maps[{t}] must be a FlowMap of shape {shape}, got {describe(step)}")
        count = int(np.count_nonzero(step.valid))
        if count == 0:
            errors.append(None)
            continue
        carried = step.sample(_check_image(f"frames[{t - 1}]", frames[t - 1], 3, shape))
        errors.append(_masked_error(current, carried, step.valid, count))
    return errors


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """`(H, W)` float32 Sobel gradient magnitude of an `(H, W, 3)` image's Rec. 709 luminance, edges
    replicated (unnormalised kernels: a unit step reads 4)."""
    grey = np.pad(luminance(np.asarray(image, dtype=np.float32)), 1, mode="edge")
    smooth_rows = grey[:-2] + 2 * grey[1:-1] + grey[2:]  # (H, W + 2), smoothed down the columns
    smooth_cols = grey[:, :-2] + 2 * grey[:, 1:-1] + grey[:, 2:]  # (H + 2, W)
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    gy = smooth_cols[2:] - smooth_cols[:-2]
    return np.sqrt(gx * gx + gy * gy)


def edge_energy(image: np.ndarray) -> float:
    """Detail of a frame: the mean Sobel gradient magnitude of its Rec. 709 luminance (see `_sobel_magnitude`).

    A blurred or washed-out frame scores lower; the figure is for ratios within a run, not across scenes.

    Args:
        image: `(H, W, 3)` float in [0, 1], finite.

    Returns:
        The mean magnitude as a float >= 0.
    """
    image = _check_image("image", image, 3)
    if not np.isfinite(image).all():
        raise ValueError("image must be finite, found a non-finite value")
    return float(_sobel_magnitude(image).mean(dtype=np.float64))


def _dilate(values: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the (2r+1)^2 square around each pixel (separable), edges replicated."""
    if radius == 0:
        return values
    height, width = values.shape
    padded = np.pad(values, radius, mode="edge")
    rows = padded[:height, :].copy()
    for offset in range(1, 2 * radius + 1):
        np.maximum(rows, padded[offset : offset + height, :], out=rows)
    out = rows[:, :width].copy()
    for offset in range(1, 2 * radius + 1):
        np.maximum(out, rows[:, offset : offset + width], out=out)
    return out


def structure_fidelity(stylised: np.ndarray, lineart: np.ndarray, *, radius: int = 1) -> float:
    """How well a stylised frame's edges still follow this frame's line art: a Pearson correlation.

    1. Edges: `G` = Sobel gradient magnitude of the stylised frame's Rec. 709 luminance (edges replicated),
       divided by its 99th percentile and clipped to [0, 1], so a handful of extreme steps cannot decide the
       result alone.
    2. Lines: `L` = the line art clipped to [0, 1], dilated by a `(2 radius + 1)^2` maximum filter so an
       edge one pixel off a line (line art sits on the nearer side of a step; Sobel straddles it) still
       counts.
    3. Score: the Pearson correlation of `G` and `L` over all pixels, in [-1, 1]; 0 when either is constant.

    A stylisation whose strokes keep the geometry's outlines scores high; brush texture away from the lines
    lowers it a little; a frozen frame scores low as soon as the lines have moved away from its edges.

    Args:
        stylised: `(H, W, 3)` float in [0, 1].
        lineart: `(H, W)` float, 1 on lines and 0 elsewhere (`conditioning.line_art`).
        radius: Line tolerance in pixels, int in [0, 16].

    Returns:
        The correlation as a float.
    """
    # 1. Check inputs
    stylised = _check_image("stylised", stylised, 3)
    lineart = _check_image("lineart", lineart, None, stylised.shape[:2])
    if not isinstance(radius, int | np.integer) or isinstance(radius, bool) or not 0 <= radius <= 16:
        raise ValueError(f"radius must be an int in [0, 16], got {radius!r}")
    if not np.isfinite(stylised).all() or not np.isfinite(lineart).all():
        raise ValueError("stylised and lineart must be finite, found a non-finite value")

    # 2. Edge map
    edges = _sobel_magnitude(stylised)
    top = float(np.percentile(edges, _EDGE_PERCENTILE))
    if top > 0:
        edges = np.minimum(edges / np.float32(top), np.float32(1.0))

    # 3. Line map and correlation
    lines = _dilate(np.clip(np.asarray(lineart, dtype=np.float32), 0.0, 1.0), int(radius))
    edges = edges.astype(np.float64).ravel()
    lines = lines.astype(np.float64).ravel()
    edges -= edges.mean()
    lines -= lines.mean()
    norm = math.sqrt(float(edges @ edges) * float(lines @ lines))
    if norm == 0.0:
        return 0.0
    return float(edges @ lines) / norm


# ------------------------------------------------------------------------------------------------------------
# A stylised sequence on disk
# ------------------------------------------------------------------------------------------------------------
def _pass_exr(layout: SceneLayout, name: str, frame: int) -> dict[str, np.ndarray]:
    return exr.read_exr(layout.pass_file(name, frame, "exr"))


def motion(layout: SceneLayout, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """A frame's `(H, W, 4)` Vector and `(H, W)` Depth passes."""
    raw = _pass_exr(layout, "vector", frame)
    return np.stack([raw[c] for c in "XYZW"], axis=-1), _pass_exr(layout, "depth", frame)["Z"]


def _check_size(frame: int, passes: np.ndarray, image: np.ndarray) -> None:
    if passes.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"frame {frame}: passes are {passes.shape[1]}x{passes.shape[0]} but the stylised image is "
            f"{image.shape[1]}x{image.shape[0]}; measure at a resolution scale of 100%"
        )


def sequence_figures(layout: SceneLayout, frames: Sequence[int], stylised_dir=None) -> dict[str, float]:
    """`{"warping_error", "structure_fidelity"}` of the stylised frames under `layout` (or `stylised_dir`).

    Frames must be consecutive (each frame's Vector pass points at the one before).
    """
    folder = stylised_dir or layout.stylised_dir
    images, vectors, masks, fidelity = [], [None], [None], []
    previous = None
    for frame in frames:
        image = png.read_png_float(folder / f"{frame:04d}.png")[..., :3]
        images.append(image)
        vec, depth = motion(layout, frame)
        _check_size(frame, vec, image)
        if previous is not None:
            vectors.append(vec)
            masks.append(temporal.occlusion_mask(vec, previous[0], depth, previous[1]))
        previous = (vec, depth)
        lineart = png.read_png_float(layout.pass_file("lineart", frame))[..., 0]
        fidelity.append(structure_fidelity(image, lineart))
    return {
        "warping_error": warping_error(images, vectors, masks),
        "structure_fidelity": float(np.mean(fidelity)),
    }


@dataclass(frozen=True)
class ShotFigures:
    """The benchmark's figures of one stylised sequence (`shot_figures`).

    Attributes:
        frames: the rendered scene frames, in order.
        errors: per rendered frame, its warping error against the rendered frame before along the composed
            true motion (`carried_warping_errors`); None for the first frame and frames with nothing to compare.
        warping_error: the mean of `errors` (the Lai et al. figure).
        worst_frame, worst_error: the scene frame with the largest error, and that error.
        detail: the mean over frames of `edge_energy`.
        structure_fidelity: the mean over frames of `structure_fidelity` against each frame's line art.
    """

    frames: tuple[int, ...]
    errors: tuple[float | None, ...]
    warping_error: float
    worst_frame: int
    worst_error: float
    detail: float
    structure_fidelity: float


def shot_figures(layout: SceneLayout, frames: Sequence[int], stylised_dir: Path | None = None) -> ShotFigures:
    """The figures of the stylised `frames` in `stylised_dir` (default `layout.stylised_dir`), measured with
    the passes under `layout`.

    `frames` may skip scene frames (a frame step), evenly: the motion between two rendered frames is composed
    through every scene frame between them, so `layout` must hold the Vector and Depth passes of EVERY scene
    frame from the first to the last (e.g. a frame step 1 run of the same shot), and the line art of each
    rendered frame.

    Args:
        layout: where the passes are.
        frames: the rendered scene frames, ascending, evenly spaced, at least 2.
        stylised_dir: the folder of the stylised `NNNN.png` frames.

    Returns:
        A `ShotFigures`.
    """
    # 1. Check inputs
    frames = [int(frame) for frame in frames]
    steps = {b - a for a, b in itertools.pairwise(frames)}
    if len(frames) < 2 or len(steps) != 1 or min(steps) < 1:
        raise ValueError(f"frames must be at least 2 ascending, evenly spaced frames, got {frames}")
    step = steps.pop()
    folder = Path(stylised_dir) if stylised_dir is not None else layout.stylised_dir

    # 2. Read the pictures, and the motion of every scene frame between the first and the last
    images = [png.read_png_float(folder / f"{frame:04d}.png")[..., :3] for frame in frames]
    motions = [motion(layout, frame) for frame in range(frames[0], frames[-1] + 1)]
    _check_size(frames[0], motions[0][0], images[0])

    # 3. Figures
    errors = carried_warping_errors(images, step_maps([m[0] for m in motions], [m[1] for m in motions], step))
    measured = [(error, frame) for error, frame in zip(errors, frames, strict=True) if error is not None]
    if not measured:
        raise ValueError(f"frames {frames}: no pixel of any frame is seen in the frame before")
    worst_error, worst_frame = max(measured)
    fidelity = [
        structure_fidelity(image, png.read_png_float(layout.pass_file("lineart", frame))[..., 0])
        for image, frame in zip(images, frames, strict=True)
    ]
    return ShotFigures(
        frames=tuple(frames),
        errors=tuple(errors),
        warping_error=float(np.mean([error for error, _ in measured])),
        worst_frame=worst_frame,
        worst_error=worst_error,
        detail=float(np.mean([edge_energy(image) for image in images])),
        structure_fidelity=float(np.mean(fidelity)),
    )
