# SPDX-License-Identifier: GPL-3.0-or-later
"""Flicker and structure figures of a stylised sequence (demo, benchmark, tests; not shipped).

* `warping_error`: the warping error of Lai et al. (ECCV 2018) with Blender's exact Vector pass as the flow
  and occlusions masked by `temporal.occlusion_mask` (forward/backward check, depth test): lower is steadier.
* `structure_fidelity`: correlation of a stylised frame's edges with the frame's line-art pass: a frozen
  image that no longer follows the geometry scores low.
* `sequence_figures`: both, averaged over a stylised sequence on disk.

Conventions (arrays top row first, the Vector pass in +y-up pixels) are `stylepass_core.temporal`'s.
"""

import math
from collections.abc import Sequence

import numpy as np

from stylepass_core import exr, png, temporal
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
        squared = np.square(current[mask] - warped[mask])
        errors.append(float(squared.sum(dtype=np.float64)) / (3 * count))
    if not errors:
        raise ValueError("every mask is empty, so no pixel can be compared")
    return float(np.mean(errors))


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
    grey = np.pad(luminance(np.asarray(stylised, dtype=np.float32)), 1, mode="edge")
    smooth_rows = grey[:-2] + 2 * grey[1:-1] + grey[2:]  # (H, W + 2), smoothed down the columns
    smooth_cols = grey[:, :-2] + 2 * grey[:, 1:-1] + grey[:, 2:]  # (H + 2, W)
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    gy = smooth_cols[2:] - smooth_cols[:-2]
    edges = np.sqrt(gx * gx + gy * gy)
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
        raw = _pass_exr(layout, "vector", frame)
        vec = np.stack([raw[c] for c in "XYZW"], axis=-1)
        depth = _pass_exr(layout, "depth", frame)["Z"]
        if vec.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"frame {frame}: passes are {vec.shape[1]}x{vec.shape[0]} but the stylised image is "
                f"{image.shape[1]}x{image.shape[0]}; measure at a resolution scale of 100%"
            )
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
