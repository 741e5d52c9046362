# SPDX-License-Identifier: GPL-3.0-or-later
"""Control maps from the pass conditioning -> the images each ControlNet was trained on (plain numpy).

`stylepass_core.conditioning` already writes every map in the convention of the ControlNet 1.1 models, so the
mapping here only checks, resizes and shapes them into RGB:

| map            | request array           | ControlNet image (RGB in [0, 1])      | trained on (examples)                     |
|----------------|-------------------------|---------------------------------------|-------------------------------------------|
| `depth`        | (H, W) inverse depth    | grey, near = white, far/sky = black   | control_v11f1p_sd15_depth, controlnet-    |
|                | normalised, near bright | (MiDaS disparity look)                | depth-sdxl-1.0 (MiDaS/DPT/Zoe estimates)  |
| `normal`       | (H, W, 3) normalbae RGB | as is: R = left, G = up, B = facing   | control_v11p_sd15_normalbae (ScanNet      |
|                |                         | (facing surface = (0.5, 0.5, 1.0))    | protocol; NOT the 1.0 sd-controlnet-normal)|
| `lineart`      | (H, W) white lines on   | grey, white lines on black            | control_v11p_sd15_lineart, canny, softedge,|
|                | black                   |                                       | scribble and SDXL line/canny models       |
| `segmentation` | (H, W, 3) ADE20K colours| as is, resized by nearest neighbour   | control_v11p_sd15_seg (ADE20K palette)    |
|                |                         | so no in-between colours appear       |                                           |

All request arrays are top row first, float32 in [0, 1], and share the beauty's size. Values outside [0, 1]
or non-finite values are refused, never clipped: they mean a map was built wrongly upstream.
"""

import numpy as np

from ... import imageops

# map -> (expected channel counts, how to resize, short convention note for result.info)
CONVENTIONS: dict[str, tuple[tuple[int, ...], str, str]] = {
    "depth": ((1,), "area", "inverse depth, near white, far black (MiDaS)"),
    "normal": ((3,), "area", "normalbae RGB: R left, G up, B towards camera"),
    "lineart": ((1,), "area", "white lines on black"),
    "segmentation": ((3,), "nearest", "ADE20K palette colours"),
}


def control_image(name: str, control: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The RGB image a ControlNet for map `name` expects, at the generation size.

    Args:
        name: One of `CONVENTIONS` ("depth", "normal", "lineart", "segmentation").
        control: The request's map: `(H, W)` (or `(H, W, 1)`) for depth and lineart, `(H, W, 3)` for normal
            and segmentation; float in [0, 1], top row first.
        size: `(height, width)` to generate at.

    Returns:
        `(height, width, 3)` float32 in [0, 1], contiguous.

    Raises:
        ValueError: unknown map name, wrong shape, or values that are non-finite or outside [0, 1].
    """
    # 1. Check inputs
    if name not in CONVENTIONS:
        raise ValueError(f"unknown control map {name!r}; known: {list(CONVENTIONS)}")
    channels, resampling, _ = CONVENTIONS[name]
    if not isinstance(control, np.ndarray) or control.ndim not in (2, 3):
        raise ValueError(f"controls[{name!r}] must be an (H, W) or (H, W, C) array, got {_describe(control)}")
    found = 1 if control.ndim == 2 else control.shape[2]
    if found not in channels:
        want = "(H, W)" if channels == (1,) else "(H, W, 3)"
        raise ValueError(f"controls[{name!r}] must have shape {want}, got {_describe(control)}")
    if control.dtype.kind not in "iuf":  # a bool mask is no control map
        raise ValueError(f"controls[{name!r}] must be numeric, got dtype {control.dtype}")
    values = np.asarray(control, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN
        raise ValueError(f"controls[{name!r}] must be in [0, 1], got values in [{low}, {high}]")

    # 2. Resize to the generation size in the way the map allows
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.shape[:2] != tuple(size):
        values = (
            imageops.resize_nearest(values, size)
            if resampling == "nearest"
            else imageops.resize(values, size)
        )

    # 3. Grey maps become three equal channels, as the annotators wrote them
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    return np.ascontiguousarray(np.clip(values, 0.0, 1.0), dtype=np.float32)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__
