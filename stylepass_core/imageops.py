# SPDX-License-Identifier: GPL-3.0-or-later
"""Small image operations in plain numpy (Blender ships no PIL): resizing, luminance, YUV, object masks.

Images are `(H, W, C)` or `(H, W)` arrays; colour images are display-referred float32 in [0, 1].
"""

import numpy as np

from .checks import describe

# Rec. 709 luma weights: Blender's display transform targets sRGB, which shares the Rec. 709 primaries.
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
# Full-range Y'CbCr (Rec. 709): U and V in [-0.5, 0.5], so mixing Y of one image with UV of another stays
# inside the same gamut the display expects.
_RGB_TO_YUV = np.array(
    [
        [0.2126, 0.7152, 0.0722],
        [-0.2126 / 1.8556, -0.7152 / 1.8556, 0.5],
        [0.5, -0.7152 / 1.5748, -0.0722 / 1.5748],
    ],
    dtype=np.float64,
)
_YUV_TO_RGB = np.linalg.inv(_RGB_TO_YUV)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise ValueError(f"size must be (height, width) with two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each `(n_out, K)`, that resample one axis from n_in to n_out samples.

    Shrinking averages the exact area each output pixel covers (no aliasing, unlike point sampling);
    enlarging interpolates linearly between pixel centres, like Blender's bilinear scale.
    """
    scale = n_in / n_out
    if n_out >= n_in:
        centre = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
        centre = np.clip(centre, 0.0, n_in - 1)
        left = np.floor(centre).astype(np.int64)
        right = np.minimum(left + 1, n_in - 1)
        frac = centre - left
        return np.stack([left, right], axis=1), np.stack([1.0 - frac, frac], axis=1).astype(np.float32)

    start = np.arange(n_out, dtype=np.float64) * scale
    end = start + scale
    taps = int(np.ceil(scale)) + 1
    index = np.floor(start).astype(np.int64)[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(end[:, None], index + 1.0) - np.maximum(start[:, None], index.astype(np.float64))
    weight = np.clip(overlap, 0.0, None) / scale
    # Taps past the last pixel get zero weight; clamp their index so the gather stays in bounds.
    weight[index >= n_in] = 0.0
    index = np.minimum(index, n_in - 1)
    return index, weight.astype(np.float32)


def _resample_axis(image: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    n_in = image.shape[axis]
    if n_in == n_out:
        return image
    index, weight = _axis_taps(n_in, n_out)
    shape = [1] * image.ndim
    shape[axis] = n_out
    out = np.zeros((*image.shape[:axis], n_out, *image.shape[axis + 1 :]), dtype=np.float32)
    # One gather per tap keeps memory at one extra image instead of K copies.
    for k in range(index.shape[1]):
        out += np.take(image, index[:, k], axis=axis) * weight[:, k].reshape(shape)
    return out


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image with area averaging when shrinking and bilinear interpolation when enlarging.

    Args:
        image: `(H, W)` or `(H, W, C)` float array (any range; values are only averaged, never clipped).
        size: `(height, width)` of the result, both >= 1.

    Returns:
        `(height, width)` or `(height, width, C)` float32. A copy even when the size is unchanged.
    """
    height, width = _check_size(size)
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be a (H, W) or (H, W, C) array, got {describe(image)}")
    work = np.asarray(image, dtype=np.float32)
    work = _resample_axis(work, height, axis=0)
    work = _resample_axis(work, width, axis=1)
    return np.array(work, dtype=np.float32, copy=True) if work is image else work


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label image (object indices, segmentation ids) by nearest neighbour, so no new labels appear.

    Args:
        labels: `(H, W)` or `(H, W, C)` array of any dtype.
        size: `(height, width)` of the result, both >= 1.

    Returns:
        `(height, width[, C])` array with the dtype of `labels`.
    """
    height, width = _check_size(size)
    if not isinstance(labels, np.ndarray) or labels.ndim not in (2, 3) or min(labels.shape[:2]) < 1:
        raise ValueError(f"labels must be a (H, W) or (H, W, C) array, got {describe(labels)}")
    # Sample at output pixel centres, like Blender's nearest filter.
    rows = ((np.arange(height) + 0.5) * (labels.shape[0] / height)).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * (labels.shape[1] / width)).astype(np.int64)
    rows = np.minimum(rows, labels.shape[0] - 1)
    cols = np.minimum(cols, labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]].copy()


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to sRGB-encoded values (the IEC 61966-2-1 curve), clipped to [0, 1]."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light: the inverse of `srgb_encode`."""
    encoded = np.clip(encoded, 0.0, 1.0)
    return np.where(encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of display-referred RGB.

    Args:
        rgb: `(H, W, 3)` float array, display-referred, usually in [0, 1].

    Returns:
        `(H, W)` float32, in [0, 1] when the input is.
    """
    _check_rgb(rgb, "rgb")
    return np.asarray(rgb, dtype=np.float32) @ LUMA_WEIGHTS


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """Full-range Rec. 709 Y'CbCr of display-referred RGB.

    Args:
        rgb: `(H, W, 3)` float array in [0, 1].

    Returns:
        `(H, W, 3)` float32: Y in [0, 1], U and V in [-0.5, 0.5].
    """
    _check_rgb(rgb, "rgb")
    return (np.asarray(rgb, dtype=np.float32) @ _RGB_TO_YUV.T.astype(np.float32)).astype(np.float32)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_yuv`.

    Args:
        yuv: `(H, W, 3)` float array: Y in [0, 1], U and V in [-0.5, 0.5].

    Returns:
        `(H, W, 3)` float32 RGB, not clipped: a Y from one image with UV from another can leave [0, 1].
    """
    _check_rgb(yuv, "yuv")
    return (np.asarray(yuv, dtype=np.float32) @ _YUV_TO_RGB.T.astype(np.float32)).astype(np.float32)


def soften_inward(mask: np.ndarray) -> np.ndarray:
    """Give a 0/1 mask a one-pixel soft edge that lies inside the masked area.

    Pixels outside the mask stay exactly 0, so whatever the mask leaves out stays untouched; the pixels on
    the inner border take the 3x3 average instead of 1, which hides the stair-step of a hard cut.

    Args:
        mask: `(H, W)` bool or float array in [0, 1].

    Returns:
        `(H, W)` float32 in [0, 1].
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ValueError(f"mask must be a (H, W) array, got {describe(mask)}")
    hard = mask.astype(np.float32)
    # Edge padding: the image border is not an object border, so it must not soften.
    padded = np.pad(hard, 1, mode="edge")
    height, width = hard.shape
    box = np.zeros_like(hard)
    for dy in range(3):
        for dx in range(3):
            box += padded[dy : dy + height, dx : dx + width]
    return np.minimum(hard, box / 9.0)


def selection_alpha(
    object_index: np.ndarray | None,
    include: tuple[int, ...] = (),
    exclude: tuple[int, ...] = (),
) -> np.ndarray | None:
    """Where an engine may change the image, from an object-index pass and include/exclude lists.

    Args:
        object_index: `(H, W)` int array of object pass indices, or None.
        include: indices to stylise; empty means every object.
        exclude: indices to keep as they are, taken out of whatever `include` selects.

    Returns:
        `(H, W)` float32 in [0, 1] (1 = stylise, 0 = keep, with a one-pixel soft inner edge), or None when
        the lists select everything.
    """
    if not include and not exclude:
        return None
    if object_index is None:
        raise ValueError(f"include {include!r} / exclude {exclude!r} need an object_index pass, got None")
    if not isinstance(object_index, np.ndarray) or object_index.ndim != 2:
        raise ValueError(f"object_index must be a (H, W) int array, got {describe(object_index)}")
    selected = np.isin(object_index, np.asarray(include)) if include else np.ones(object_index.shape, bool)
    if exclude:
        selected &= ~np.isin(object_index, np.asarray(exclude))
    return soften_inward(selected)


def _check_rgb(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be a (H, W, 3) array, got {describe(image)}")


def finish_with_beauty(
    stylised: np.ndarray,
    beauty: np.ndarray,
    *,
    keep_colours: bool,
    strength: float,
    alpha: np.ndarray | None,
) -> np.ndarray:
    """The artist's controls shared by every engine, applied to a result at the output size.

    Args:
        stylised: `(H, W, 3)` float in [0, 1], the engine's picture.
        beauty: `(H, W, 3)` float in [0, 1], the beauty pass at the same size.
        keep_colours: keep the beauty's chroma (YUV) and take only the stylised luminance.
        strength: in [0, 1]; 0 gives the beauty, 1 the stylised picture.
        alpha: `(H, W)` float selection (1 = stylise, 0 = keep the beauty), or None for everywhere.

    Returns:
        `(H, W, 3)` float32 in [0, 1], contiguous. Where `strength * alpha` is 0 it equals the beauty exactly.
    """
    if keep_colours:
        yuv = rgb_to_yuv(stylised)
        yuv[..., 1:] = rgb_to_yuv(beauty)[..., 1:]
        stylised = np.clip(yuv_to_rgb(yuv), 0.0, 1.0)
    if alpha is None and strength == 1.0:
        image = stylised
    else:
        amount = np.float32(strength) if alpha is None else alpha * np.float32(strength)
        if np.ndim(amount):
            amount = amount[..., None]
        # beauty + amount * (stylised - beauty) leaves a pixel with amount 0 exactly equal to the beauty.
        image = beauty + amount * (stylised - beauty)
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
