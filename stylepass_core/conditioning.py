# SPDX-License-Identifier: GPL-3.0-or-later
"""Control images for ControlNets, computed exactly from Cycles' data passes (Depth, Normal, IndexOB, Vector).

Everything here is plain numpy and vectorised, so it runs in a worker process and under pytest without bpy.
Conventions shared by every function:

* Arrays are `(H, W)` or `(H, W, C)` with the TOP row first (Blender's own buffers are bottom-up: the
  Blender side flips them before calling in here).
* Control images come back as float32 in [0, 1], ready for an 8-bit PNG or a diffusers `image=` argument.
* Camera space is Blender's: +X right, +Y up, +Z towards the viewer; the camera looks down -Z.
* "Background" means pixels with no geometry: an explicit mask, or a depth that is non-finite or at least
  `BACKGROUND_DEPTH` (Cycles writes 1e10 there).
"""

import colorsys
import hashlib
from collections.abc import Collection, Mapping

import numpy as np

from .checks import check_mask, check_number, describe

# Cycles writes 1e10 into the Depth pass where a ray hits nothing; anything this far is "no geometry".
BACKGROUND_DEPTH = 1e9

# --- Normal maps --------------------------------------------------------------------------------------------
# ControlNet 1.1 normal (control_v11p_sd15_normalbae) convention. Sources:
# * lllyasviel/ControlNet-v1-1-nightly README, "ControlNet 1.1 Normal": the model "can interpret real normal
#   maps from rendering engines as long as the colors are correct (blue is front, red is left, green is top)",
#   i.e. ScanNet's protocol as visualised by Bae et al.'s estimator.
# * The annotator that made its training data, annotator/normalbae/__init__.py in the same repository, writes
#   `((normal + 1) * 0.5).clip(0, 1)` per channel: each channel is one unit-vector component mapped affinely
#   from [-1, 1] to [0, 1] (baegwangbin/surface_normal_uncertainty test.py visualises the same way).
# So in Blender camera space (+X right, +Y up, +Z towards viewer): R = (1 - x) / 2, G = (1 + y) / 2,
# B = (1 + z) / 2, and a surface facing the camera is (0.5, 0.5, 1.0).
NORMAL_FACING_RGB: tuple[float, float, float] = (0.5, 0.5, 1.0)
# The estimator predicts a normal for every pixel, so its maps have no background colour at all. ControlNet
# 1.0's normal annotator (lllyasviel/ControlNet annotator/midas/__init__.py) set its background to the
# normal (0, 0, 1), i.e. this same facing colour; black is only ScanNet's "no ground truth" marker, which the
# model never saw as input. Far-away emptiness therefore reads best as a distant wall facing the camera.
NORMAL_BACKGROUND_RGB: tuple[float, float, float] = NORMAL_FACING_RGB

# --- Segmentation -------------------------------------------------------------------------------------------
# ADE20K's 150 classes and colours, in class order. Taken from open-mmlab/mmsegmentation
# mmseg/datasets/ade.py (ADE20KDataset.METAINFO classes/palette). ControlNet's seg annotator (UniFormer on
# mmseg, `get_palette('ade')`) and the control_v11p_sd15_seg / sd-controlnet-seg model cards' `ada_palette`
# (which only prepends (0, 0, 0) for "unlabelled") use the same values; cross-checked on several entries.
# Note that road and skyscraper share (140, 140, 140) in the original palette.
_ADE20K_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("wall", (120, 120, 120)), ("building", (180, 120, 120)), ("sky", (6, 230, 230)),
    ("floor", (80, 50, 50)), ("tree", (4, 200, 3)), ("ceiling", (120, 120, 80)), ("road", (140, 140, 140)),
    ("bed", (204, 5, 255)), ("windowpane", (230, 230, 230)), ("grass", (4, 250, 7)),
    ("cabinet", (224, 5, 255)), ("sidewalk", (235, 255, 7)), ("person", (150, 5, 61)),
    ("earth", (120, 120, 70)), ("door", (8, 255, 51)), ("table", (255, 6, 82)),
    ("mountain", (143, 255, 140)), ("plant", (204, 255, 4)), ("curtain", (255, 51, 7)),
    ("chair", (204, 70, 3)), ("car", (0, 102, 200)), ("water", (61, 230, 250)), ("painting", (255, 6, 51)),
    ("sofa", (11, 102, 255)), ("shelf", (255, 7, 71)), ("house", (255, 9, 224)), ("sea", (9, 7, 230)),
    ("mirror", (220, 220, 220)), ("rug", (255, 9, 92)), ("field", (112, 9, 255)),
    ("armchair", (8, 255, 214)), ("seat", (7, 255, 224)), ("fence", (255, 184, 6)), ("desk", (10, 255, 71)),
    ("rock", (255, 41, 10)), ("wardrobe", (7, 255, 255)), ("lamp", (224, 255, 8)),
    ("bathtub", (102, 8, 255)), ("railing", (255, 61, 6)), ("cushion", (255, 194, 7)),
    ("base", (255, 122, 8)), ("box", (0, 255, 20)), ("column", (255, 8, 41)), ("signboard", (255, 5, 153)),
    ("chest of drawers", (6, 51, 255)), ("counter", (235, 12, 255)), ("sand", (160, 150, 20)),
    ("sink", (0, 163, 255)), ("skyscraper", (140, 140, 140)), ("fireplace", (250, 10, 15)),
    ("refrigerator", (20, 255, 0)), ("grandstand", (31, 255, 0)), ("path", (255, 31, 0)),
    ("stairs", (255, 224, 0)), ("runway", (153, 255, 0)), ("case", (0, 0, 255)),
    ("pool table", (255, 71, 0)), ("pillow", (0, 235, 255)), ("screen door", (0, 173, 255)),
    ("stairway", (31, 0, 255)), ("river", (11, 200, 200)), ("bridge", (255, 82, 0)),
    ("bookcase", (0, 255, 245)), ("blind", (0, 61, 255)), ("coffee table", (0, 255, 112)),
    ("toilet", (0, 255, 133)), ("flower", (255, 0, 0)), ("book", (255, 163, 0)), ("hill", (255, 102, 0)),
    ("bench", (194, 255, 0)), ("countertop", (0, 143, 255)), ("stove", (51, 255, 0)),
    ("palm", (0, 82, 255)), ("kitchen island", (0, 255, 41)), ("computer", (0, 255, 173)),
    ("swivel chair", (10, 0, 255)), ("boat", (173, 255, 0)), ("bar", (0, 255, 153)),
    ("arcade machine", (255, 92, 0)), ("hovel", (255, 0, 255)), ("bus", (255, 0, 245)),
    ("towel", (255, 0, 102)), ("light", (255, 173, 0)), ("truck", (255, 0, 20)), ("tower", (255, 184, 184)),
    ("chandelier", (0, 31, 255)), ("awning", (0, 255, 61)), ("streetlight", (0, 71, 255)),
    ("booth", (255, 0, 204)), ("television receiver", (0, 255, 194)), ("airplane", (0, 255, 82)),
    ("dirt track", (0, 10, 255)), ("apparel", (0, 112, 255)), ("pole", (51, 0, 255)),
    ("land", (0, 194, 255)), ("bannister", (0, 122, 255)), ("escalator", (0, 255, 163)),
    ("ottoman", (255, 153, 0)), ("bottle", (0, 255, 10)), ("buffet", (255, 112, 0)),
    ("poster", (143, 255, 0)), ("stage", (82, 0, 255)), ("van", (163, 255, 0)), ("ship", (255, 235, 0)),
    ("fountain", (8, 184, 170)), ("conveyer belt", (133, 0, 255)), ("canopy", (0, 255, 92)),
    ("washer", (184, 0, 255)), ("plaything", (255, 0, 31)), ("swimming pool", (0, 184, 255)),
    ("stool", (0, 214, 255)), ("barrel", (255, 0, 112)), ("basket", (92, 255, 0)),
    ("waterfall", (0, 224, 255)), ("tent", (112, 224, 255)), ("bag", (70, 184, 160)),
    ("minibike", (163, 0, 255)), ("cradle", (153, 0, 255)), ("oven", (71, 255, 0)), ("ball", (255, 0, 163)),
    ("food", (255, 204, 0)), ("step", (255, 0, 143)), ("tank", (0, 255, 235)), ("trade name", (133, 255, 0)),
    ("microwave", (255, 0, 235)), ("pot", (245, 0, 255)), ("animal", (255, 0, 122)),
    ("bicycle", (255, 245, 0)), ("lake", (10, 190, 212)), ("dishwasher", (214, 255, 0)),
    ("screen", (0, 204, 255)), ("blanket", (20, 0, 255)), ("sculpture", (255, 255, 0)),
    ("hood", (0, 153, 255)), ("sconce", (0, 41, 255)), ("vase", (0, 255, 204)),
    ("traffic light", (41, 0, 255)), ("tray", (41, 255, 0)), ("ashcan", (173, 0, 255)),
    ("fan", (0, 245, 255)), ("pier", (71, 0, 255)), ("crt screen", (122, 0, 255)), ("plate", (0, 255, 184)),
    ("monitor", (0, 92, 255)), ("bulletin board", (184, 255, 0)), ("shower", (0, 133, 255)),
    ("radiator", (255, 214, 0)), ("glass", (25, 194, 194)), ("clock", (102, 255, 0)), ("flag", (92, 0, 255)),
)  # fmt: skip
ADE20K_PALETTE: dict[str, tuple[int, int, int]] = dict(_ADE20K_CLASSES)

# The short list the UI offers per object, most useful for whole scenes first; "NONE" keeps the object's own
# flat colour (object_colour). Every other entry is a key of ADE20K_PALETTE.
SEMANTIC_CLASSES: tuple[str, ...] = (
    "NONE", "building", "tree", "person", "car", "road", "sky", "water", "grass",
    "wall", "floor", "mountain", "plant", "rock", "sidewalk", "earth", "house", "sea", "sand", "fence",
    "animal",
)  # fmt: skip

# --- Motion vectors -----------------------------------------------------------------------------------------
# Colour wheel of Baker et al., "A Database and Evaluation Methodology for Optical Flow" (Middlebury), the
# standard flow visualisation: segment lengths chosen for perceptual spacing, red -> yellow -> green -> cyan
# -> blue -> magenta -> red.
_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)
# A percentile rather than the maximum sets full saturation, so one fast pixel does not wash out the rest.
_MOTION_PERCENTILE = 99.0

# --- Line art -----------------------------------------------------------------------------------------------
# A depth step must be this many times larger (in inverse depth) than the neighbouring steps on both sides.
# On any plane inverse depth is affine in pixel coordinates, so a plane's steps are all equal (ratio 1)
# however steeply it is tilted; only a real occlusion makes one step stand out.
_DEPTH_STEP_RATIO = 3.0
_MAX_THICKNESS = 32.0


# ------------------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------------------
def _check_real_array(
    name: str, value: object, ndim: int, channels: tuple[int, ...] | None = None
) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(value).__name__}: {describe(value)}")
    if value.ndim != ndim or (channels is not None and value.shape[-1] not in channels):
        want = "(H, W)" if ndim == 2 else f"(H, W, {' or '.join(map(str, channels or ()))})"
        raise ValueError(f"{name} must have shape {want}, got {describe(value)}")
    if value.dtype == np.bool_ or not (
        np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
    ):
        raise ValueError(f"{name} must hold real numbers, got {describe(value)}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got {describe(value)}")
    return value


def _check_index(name: str, value: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Object indices as int64, from integer arrays or float arrays of whole numbers (Blender's IndexOB)."""
    array = _check_real_array(name, value, 2)
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {describe(array)}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(f"{name} must hold whole numbers, found {array[bad].flat[0].item()!r}")
    index = array.astype(np.int64, copy=False)
    if index.min() < 0:
        raise ValueError(f"{name} must not be negative, found {int(index.min())}")
    return index


def _check_rgb8(name: str, colour: object) -> tuple[int, int, int]:
    if (
        not isinstance(colour, tuple | list)
        or len(colour) != 3
        or not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour
        )
    ):
        raise ValueError(f"{name} must be three ints in [0, 255], got {colour!r}")
    return int(colour[0]), int(colour[1]), int(colour[2])


def _check_rgb_unit(name: str, colour: object) -> tuple[float, float, float]:
    if (
        not isinstance(colour, tuple | list)
        or len(colour) != 3
        or not all(
            isinstance(c, int | float | np.integer | np.floating) and not isinstance(c, bool) and 0 <= c <= 1
            for c in colour
        )
    ):
        raise ValueError(f"{name} must be three numbers in [0, 1], got {colour!r}")
    return float(colour[0]), float(colour[1]), float(colour[2])


def _foreground(depth: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """True where the depth pass saw geometry: not masked, finite and nearer than BACKGROUND_DEPTH."""
    fg = np.isfinite(depth) & (depth < BACKGROUND_DEPTH)
    if background is not None:
        fg &= ~background
    return fg


def _check_positive_depth(name: str, depth: np.ndarray, fg: np.ndarray) -> None:
    bad = fg & (depth <= 0)
    if bad.any():
        raise ValueError(f"{name} must be > 0 where there is geometry, found {depth[bad].flat[0].item()!r}")


# ------------------------------------------------------------------------------------------------------------
# Depth
# ------------------------------------------------------------------------------------------------------------
def inverse_depth(
    depth: np.ndarray,
    background: np.ndarray | None = None,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
    far_at_background: bool = True,
) -> np.ndarray:
    """Normalised inverse depth in the MiDaS convention that depth ControlNets were trained on.

    Depth ControlNets learned from MiDaS/LeReS/Zoe outputs, which are relative inverse depth (disparity)
    stretched so the nearest point is white and the farthest black (ControlNet's MiDaS annotator subtracts the
    minimum and divides by the maximum). This maps the foreground the same way: its inverse depth between the
    `low_percentile` and `high_percentile` is stretched linearly onto [0, 1] and clipped, so a few stray
    pixels neither compress the rest nor need to be seen. The farthest foreground is therefore 0, the same as
    the background: a raised floor (say 0.05) would read as "not quite far" to a model that always saw the
    far end of a scene at black, so it is deliberately not used.

    Where the frame shows background (sky, nothing hit), the far end of the scale is that background instead:
    in a MiDaS estimate of a photo the sky is the far end, at zero disparity, and every building in front of
    it stays above black. With `far_at_background` (the default) the inverse depth is then stretched from 0
    (infinitely far) to the `high_percentile`, so the farthest geometry stays distinguishable from the void.

    Args:
        depth (`np.ndarray`): `(H, W)` planar camera-space depth in scene units, > 0 where there is geometry
            (Blender's Depth pass; see `radial_to_planar_depth` for distance-to-camera passes). Non-finite
            values and values >= `BACKGROUND_DEPTH` mean background.
        background (`np.ndarray`, *optional*): `(H, W)` bool, True where there is no geometry.
        low_percentile (`float`, defaults to 2.0): percentile of the foreground's inverse depth mapped to 0.
        high_percentile (`float`, defaults to 98.0): percentile that maps to 1; must exceed `low_percentile`.
        far_at_background (`bool`, defaults to True): when any pixel is background, map infinite depth to 0
            instead of the `low_percentile` of the foreground.

    Returns:
        `np.ndarray`: `(H, W)` float32 in [0, 1]; near is bright, background exactly 0. A foreground at one
        constant depth is 1.0 everywhere; an image with no foreground is all zeros.

    Raises:
        ValueError: on a wrong shape or dtype, a non-positive foreground depth, or bad percentiles.
    """
    # 1. Check inputs
    depth = _check_real_array("depth", depth, 2)
    background = check_mask("background", background, depth.shape, optional=True)
    low = check_number("low_percentile", low_percentile, 0.0, 100.0)
    high = check_number("high_percentile", high_percentile, 0.0, 100.0)
    if not low < high:
        raise ValueError(
            f"low_percentile must be below high_percentile, got {low_percentile!r} >= {high_percentile!r}"
        )
    fg = _foreground(depth, background)
    _check_positive_depth("depth", depth, fg)

    # 2. Inverse depth of the foreground only (the background's 1e10 would otherwise set the far end)
    out = np.zeros(depth.shape, dtype=np.float32)
    if not fg.any():
        return out
    inverse = np.float32(1.0) / depth[fg].astype(np.float32)

    # 3. Robust range and linear stretch
    lo, hi = np.percentile(inverse, [low, high])
    if far_at_background and not fg.all():
        lo = 0.0
    # Relative tolerance: a foreground at one depth has lo == hi up to float rounding; divide by nothing then.
    if hi - lo <= 1e-6 * hi:
        out[fg] = 1.0
        return out
    out[fg] = np.clip((inverse - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    return out


def radial_to_planar_depth(
    distance: np.ndarray,
    focal_px_x: float,
    focal_px_y: float,
    centre_x: float,
    centre_y: float,
) -> np.ndarray:
    """Convert distance-to-camera-centre (radial) depth into planar depth along the view axis.

    For a pinhole camera the ray through pixel centre `(u, v)` is `((u - cx) / fx, (v - cy) / fy, 1)` in units
    of planar depth, so `z = d / sqrt(1 + ((u - cx) / fx)^2 + ((v - cy) / fy)^2)`. Pixel centres are at
    `u = column + 0.5`, `v = row + 0.5`, measured from the top-left corner of the image (rows top first).
    The sign of `v - cy` does not matter here, but `centre_y` must be measured from the top. With Blender's
    lens shift (in units of the larger image side for the Auto sensor fit) the frame moves while the optical
    axis stays, so `cx = W / 2 - shift_x * max(W, H)` and `cy = H / 2 + shift_y * max(W, H)`. Cycles' Depth
    pass is already planar; this is for renderers (or Mist-like passes) that give the Euclidean distance
    instead. Background values (non-finite or >= `BACKGROUND_DEPTH`) are passed through unchanged.

    Args:
        distance (`np.ndarray`): `(H, W)` distance from the camera centre, scene units.
        focal_px_x (`float`): focal length in pixels along x (`lens_mm / sensor_width_mm * W` for a
            horizontal sensor fit), > 0.
        focal_px_y (`float`): focal length in pixels along y, > 0 (equal to `focal_px_x` for square pixels).
        centre_x (`float`): principal point x in pixels from the left edge (`W / 2` without shift).
        centre_y (`float`): principal point y in pixels from the TOP edge (`H / 2` without shift).

    Returns:
        `np.ndarray`: `(H, W)` float32 planar depth, same units as `distance`.

    Raises:
        ValueError: on a wrong shape or dtype, or non-finite or non-positive focal lengths.
    """
    distance = _check_real_array("distance", distance, 2)
    fx = check_number("focal_px_x", focal_px_x, 0.0, np.inf, open_low=True)
    fy = check_number("focal_px_y", focal_px_y, 0.0, np.inf, open_low=True)
    cx = check_number("centre_x", centre_x, -np.inf, np.inf)
    cy = check_number("centre_y", centre_y, -np.inf, np.inf)

    height, width = distance.shape
    # The factor separates into a column term and a row term, so only (H, 1) + (1, W) values are computed.
    tan_x = (np.arange(width, dtype=np.float64) + 0.5 - cx) / fx
    tan_y = (np.arange(height, dtype=np.float64) + 0.5 - cy) / fy
    inv_scale = (1.0 / np.sqrt(1.0 + tan_y[:, None] ** 2 + tan_x[None, :] ** 2)).astype(np.float32)
    planar = distance.astype(np.float32) * inv_scale
    keep = ~(np.isfinite(distance) & (distance < BACKGROUND_DEPTH))
    if keep.any():
        # Dividing 1e10 by the ray factor could pull a wide-angle corner below the background threshold.
        planar[keep] = distance[keep]
    return planar


# ------------------------------------------------------------------------------------------------------------
# Normals
# ------------------------------------------------------------------------------------------------------------
def camera_space_normals(
    world_normals: np.ndarray,
    world_to_camera: np.ndarray,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Rotate world-space normals into Blender camera space and renormalise them.

    Cycles' Normal pass is in world space (checked by rendering: a face looking at a camera placed on -Y
    reads (0, -1, 0), not the camera-space (0, 0, 1)), while normal ControlNets want the camera's view.

    Args:
        world_normals (`np.ndarray`): `(H, W, 3)` world-space normals; any length (the pass averages samples,
            so edge pixels are shorter than 1).
        world_to_camera (`np.ndarray`): `(3, 3)` proper rotation taking world vectors to camera space, e.g.
            `camera.matrix_world.to_3x3().normalized().transposed()`; orthonormal to within 1e-3.
        background (`np.ndarray`, *optional*): `(H, W)` bool, True where there is no geometry.

    Returns:
        `np.ndarray`: `(H, W, 3)` float32 unit vectors in camera space (+X right, +Y up, +Z towards the
        viewer); zeros on the background and where the input is zero-length or non-finite.

    Raises:
        ValueError: on wrong shapes or dtypes, or a matrix that is not a rotation.
    """
    # 1. Check inputs
    world_normals = _check_real_array("world_normals", world_normals, 3, (3,))
    background = check_mask("background", background, world_normals.shape[:2], optional=True)
    if not isinstance(world_to_camera, np.ndarray) or world_to_camera.shape != (3, 3):
        raise ValueError(f"world_to_camera must be a (3, 3) array, got {describe(world_to_camera)}")
    rotation = world_to_camera.astype(np.float64)
    if (
        not np.all(np.isfinite(rotation))
        or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3)
        or np.linalg.det(rotation) <= 0
    ):
        raise ValueError(
            f"world_to_camera must be a proper rotation matrix, got {world_to_camera.tolist()!r}"
        )

    # 2. Rotate: row vectors, so n_cam = n_world @ R^T
    height, width = world_normals.shape[:2]
    flat = world_normals.reshape(-1, 3).astype(np.float32, copy=False)
    camera = (flat @ rotation.T.astype(np.float32)).reshape(height, width, 3)

    # 3. Renormalise; zero-length, non-finite and background pixels become exact zeros
    planes, _ = _unit_planes(camera, background)
    return np.stack(planes, axis=-1)


def _unit_planes(
    vectors: np.ndarray, background: np.ndarray | None
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Unit-length x, y, z planes, each `(H, W)` float32, and the `(H, W)` mask of usable vectors.

    Working on three contiguous planes instead of the interleaved `(H, W, 3)` array keeps every step a
    simple streaming operation, several times faster at 1080p than reductions over the last axis.
    """
    x, y, z = (np.array(vectors[..., k], dtype=np.float32) for k in range(3))
    length = np.sqrt(x * x + y * y + z * z)
    finite = np.isfinite(length)
    valid = finite & (length > 1e-6)
    if background is not None:
        valid &= ~background
    scale = np.zeros_like(length)
    np.divide(1.0, length, out=scale, where=valid)
    for plane in (x, y, z):
        plane *= scale
    if not finite.all():
        # inf or NaN times a zero scale is still NaN: clear those pixels explicitly (rare, so only then).
        for plane in (x, y, z):
            plane[~finite] = 0.0
    return (x, y, z), valid


def normal_map_rgb(
    camera_normals: np.ndarray,
    background: np.ndarray | None = None,
    background_rgb: tuple[float, float, float] = NORMAL_BACKGROUND_RGB,
) -> np.ndarray:
    """Encode camera-space normals as the colours ControlNet 1.1's normal model expects.

    The convention of `lllyasviel/control_v11p_sd15_normalbae`, from its README ("blue is front, red is
    left, green is top", ScanNet protocol) and its NormalBae annotator (each component mapped from [-1, 1]
    to [0, 1]):

    * R = (1 - x) / 2: a normal pointing LEFT is red (Blender camera +X is right, so x is negated).
    * G = (1 + y) / 2: a normal pointing UP is green.
    * B = (1 + z) / 2: a normal pointing at the camera is blue; a facing surface is `NORMAL_FACING_RGB`
      = (0.5, 0.5, 1.0).

    Args:
        camera_normals (`np.ndarray`): `(H, W, 3)` normals in Blender camera space (see
            `camera_space_normals`); renormalised here, so interpolated normals are fine.
        background (`np.ndarray`, *optional*): `(H, W)` bool, True where there is no geometry. Zero-length
            normals are treated as background too.
        background_rgb (`tuple`, defaults to `NORMAL_BACKGROUND_RGB`): colour for the background, three
            floats in [0, 1]. The default is the facing colour (see the note on `NORMAL_BACKGROUND_RGB`);
            pass (0, 0, 0) for ScanNet's "no data" look.

    Returns:
        `np.ndarray`: `(H, W, 3)` float32 RGB in [0, 1].

    Raises:
        ValueError: on a wrong shape or dtype, or a bad `background_rgb`.
    """
    camera_normals = _check_real_array("camera_normals", camera_normals, 3, (3,))
    background = check_mask("background", background, camera_normals.shape[:2], optional=True)
    fill = np.asarray(_check_rgb_unit("background_rgb", background_rgb), dtype=np.float32)

    (x, y, z), valid = _unit_planes(camera_normals, background)
    rgb = np.empty((*valid.shape, 3), dtype=np.float32)
    for channel, (plane, sign) in enumerate(((x, -0.5), (y, 0.5), (z, 0.5))):
        encoded = np.float32(0.5) + np.float32(sign) * plane
        # Unit components can exceed 1 by a rounding step; keep the image strictly in [0, 1].
        np.clip(encoded, 0.0, 1.0, out=encoded)
        rgb[..., channel] = np.where(valid, encoded, fill[channel])
    return rgb


# ------------------------------------------------------------------------------------------------------------
# Line art
# ------------------------------------------------------------------------------------------------------------
def _pair_views(axis: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Index tuples selecting the first and second pixel of every neighbouring pair along `axis`."""
    if axis == 1:
        return (slice(None), slice(None, -1)), (slice(None), slice(1, None))
    return (slice(None, -1), slice(None)), (slice(1, None), slice(None))


def _shifted(values: np.ndarray, axis: int, step: int) -> np.ndarray:
    """values moved by `step` (+1 or -1) along `axis`, zero-filled where nothing moved in."""
    out = np.zeros_like(values)
    if axis == 1:
        if step > 0:
            out[:, 1:] = values[:, :-1]
        else:
            out[:, :-1] = values[:, 1:]
    elif step > 0:
        out[1:] = values[:-1]
    else:
        out[:-1] = values[1:]
    return out


def _edge_pixels(
    depth: np.ndarray,
    normals: tuple[np.ndarray, np.ndarray, np.ndarray],
    has_normal: np.ndarray,
    label: np.ndarray,
    fg: np.ndarray,
    depth_threshold: float,
    cos_crease: float,
) -> np.ndarray:
    """1-px edge map: every neighbouring pair that is an edge marks its nearer pixel."""
    edges = np.zeros(depth.shape, dtype=bool)
    # Background is infinitely far, so the "nearer" pixel of a silhouette pair is always the object's.
    z = np.where(fg, depth, np.inf).astype(np.float32)
    inverse = np.float32(1.0) / z  # exactly 0 on the background

    for axis in (0, 1):
        if depth.shape[axis] < 2:
            continue
        first, second = _pair_views(axis)
        z_a, z_b = z[first], z[second]
        both = fg[first] & fg[second]

        # (a) Depth discontinuity: large relative to depth AND much larger than the steps on either side.
        step = np.abs(inverse[second] - inverse[first])
        step[~both] = 0.0
        # Steps into the background or off the image count as 0: they say nothing about the surface slope.
        neighbour_step = np.maximum(_shifted(step, axis, +1), _shifted(step, axis, -1))
        # Where a pixel is background z is inf and inf - inf is NaN; those pairs are masked by `both`.
        with np.errstate(invalid="ignore"):
            relative = np.abs(z_a - z_b) > depth_threshold * np.minimum(z_a, z_b)
        pair_edge = both & relative & (step > _DEPTH_STEP_RATIO * neighbour_step)

        # (b) Crease: same object, both normals known, angle between them above the crease angle.
        nx, ny, nz = normals
        cosine = nx[first] * nx[second] + ny[first] * ny[second] + nz[first] * nz[second]
        crease = cosine < cos_crease
        crease &= both & has_normal[first] & has_normal[second] & (label[first] == label[second])
        pair_edge |= crease

        # (c) Object boundary: index change, including object against background (silhouette).
        pair_edge |= label[first] != label[second]

        on_first = z_a <= z_b
        edges[first] |= pair_edge & on_first
        edges[second] |= pair_edge & ~on_first
    return edges


def _disk_offsets(radius: float) -> list[tuple[float, list[tuple[int, int]]]]:
    """Offsets of an anti-aliased disk grouped by coverage: `clip(radius + 0.5 - |offset|, 0, 1)`."""
    reach = int(np.ceil(radius + 0.5))
    groups: dict[float, list[tuple[int, int]]] = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            coverage = float(np.clip(radius + 0.5 - np.hypot(dy, dx), 0.0, 1.0))
            if coverage > 0.0:
                groups.setdefault(round(coverage, 6), []).append((dy, dx))
    return sorted(groups.items(), reverse=True)


def _thicken(edges: np.ndarray, thickness: float) -> np.ndarray:
    """Dilate a 1-px bool edge map with an anti-aliased disk of diameter `thickness`."""
    radius = thickness / 2.0
    height, width = edges.shape
    reach = int(np.ceil(radius + 0.5))
    padded = np.pad(edges, reach)
    out = np.zeros((height, width), dtype=np.float32)
    # Offsets sharing one coverage are OR-ed as bools first: one float max per distinct coverage, not per
    # offset, keeps thick lines cheap.
    for coverage, offsets in _disk_offsets(radius):
        hit = np.zeros((height, width), dtype=bool)
        for dy, dx in offsets:
            hit |= padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
        if coverage >= 1.0:
            out[hit] = 1.0
        else:
            np.maximum(out, hit * np.float32(coverage), out=out)
    return out


def line_art(
    depth: np.ndarray,
    camera_normals: np.ndarray,
    object_index: np.ndarray,
    background: np.ndarray | None = None,
    thickness: float = 1.0,
    depth_threshold: float = 0.05,
    crease_angle: float = 40.0,
) -> np.ndarray:
    """Clean geometric line art from exact passes: white lines on black, like ControlNet's lineart annotators.

    Lines come from three kinds of neighbouring-pixel pairs (4-neighbourhood), never from image colour:

    a. Depth discontinuities: the depth step is larger than `depth_threshold` times the nearer depth AND its
       inverse-depth step is at least 3x the steps just before and after it. Inverse depth is affine across
       any plane, so a plane tilted however steeply has equal steps and draws no line.
    b. Creases: both pixels on the same object with normals more than `crease_angle` degrees apart.
    c. Object boundaries: any change of object index, including object against background (silhouettes).

    Each edge is drawn on the NEARER pixel of its pair, so silhouettes hug the object and a step's line sits
    on the occluding surface. The 1-px edge map is then dilated with an anti-aliased disk: every pixel takes
    the maximum over offsets of `edge * clip(thickness / 2 + 0.5 - |offset|, 0, 1)`, so thickness 1 is a
    hard 1-px line, 2 is a 1-px core with half-covered sides, 3 a 3-px line with soft diagonals and ends.

    Args:
        depth (`np.ndarray`): `(H, W)` planar depth, scene units (see `inverse_depth` for background rules).
        camera_normals (`np.ndarray`): `(H, W, 3)` camera-space normals (see `camera_space_normals`);
            zero vectors mean "unknown" and draw no creases.
        object_index (`np.ndarray`): `(H, W)` non-negative integer object index (Cycles IndexOB; float arrays
            of whole numbers are accepted).
        background (`np.ndarray`, *optional*): `(H, W)` bool, True where there is no geometry.
        thickness (`float`, defaults to 1.0): line width in pixels, in [0.5, 32]. Below 1 the line fades
            instead of thinning (a 0.5-px line is one pixel at 0.75).
        depth_threshold (`float`, defaults to 0.05): minimum depth step relative to the nearer depth, > 0.
        crease_angle (`float`, defaults to 40.0): minimum angle in degrees between normals, in (0, 180).

    Returns:
        `np.ndarray`: `(H, W)` float32 in [0, 1], 1 on lines and 0 elsewhere.

    Raises:
        ValueError: on wrong shapes or dtypes, a non-positive foreground depth, or out-of-range settings.
    """
    # 1. Check inputs
    depth = _check_real_array("depth", depth, 2)
    camera_normals = _check_real_array("camera_normals", camera_normals, 3, (3,))
    if camera_normals.shape[:2] != depth.shape:
        raise ValueError(
            f"camera_normals must have shape {(*depth.shape, 3)}, got {describe(camera_normals)}"
        )
    index = _check_index("object_index", object_index, depth.shape)
    background = check_mask("background", background, depth.shape, optional=True)
    thickness = check_number("thickness", thickness, 0.5, _MAX_THICKNESS)
    depth_threshold = check_number("depth_threshold", depth_threshold, 0.0, np.inf, open_low=True)
    crease_angle = check_number("crease_angle", crease_angle, 0.0, 180.0, open_low=True)
    if crease_angle >= 180.0:
        raise ValueError(f"crease_angle must be below 180 degrees, got {crease_angle!r}")
    fg = _foreground(depth, background)
    _check_positive_depth("depth", depth, fg)

    # 2. One label per pixel: the object index on geometry, -1 on background
    label = np.where(fg, index, -1)
    normals, has_normal = _unit_planes(camera_normals, ~fg)

    # 3. 1-px edges, each on the nearer pixel of its pair
    cos_crease = float(np.cos(np.radians(crease_angle)))
    edges = _edge_pixels(depth, normals, has_normal, label, fg, depth_threshold, cos_crease)

    # 4. Anti-aliased thickness
    return _thicken(edges, thickness)


# ------------------------------------------------------------------------------------------------------------
# Segmentation
# ------------------------------------------------------------------------------------------------------------
def object_colour(name: str) -> tuple[int, int, int]:
    """A flat colour for an object, derived only from its name: the same in every run, process and machine.

    Python's `hash()` is salted per process, so the name goes through BLAKE2s instead. Hue takes 16 bits of
    the digest (evenly spread around the wheel); saturation stays in [0.55, 0.95] and value in [0.7, 1.0],
    so colours are vivid, distinct, and never near black (the background).

    Args:
        name (`str`): the object's name.

    Returns:
        `tuple[int, int, int]`: RGB in [0, 255].

    Raises:
        ValueError: if `name` is not a string.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a str, got {name!r}")
    digest = hashlib.blake2s(name.encode("utf-8"), digest_size=8).digest()
    hue = int.from_bytes(digest[0:2], "little") / 65536.0
    saturation = 0.55 + 0.40 * digest[2] / 255.0
    value = 0.70 + 0.30 * digest[3] / 255.0
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def segmentation_map(
    object_index: np.ndarray,
    colours: Mapping[int, tuple[int, int, int]],
    background_colour: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Flat-colour segmentation image from the object index pass, via one lookup table.

    Args:
        object_index (`np.ndarray`): `(H, W)` non-negative integer object index; 0 is the background.
        colours (`Mapping[int, tuple[int, int, int]]`): RGB in [0, 255] per object index >= 1, e.g.
            `ADE20K_PALETTE["tree"]` for an object tagged as a tree or `object_colour(name)` otherwise.
            Indices missing from the mapping get `background_colour`.
        background_colour (`tuple[int, int, int]`, defaults to black): RGB in [0, 255] for index 0.

    Returns:
        `np.ndarray`: `(H, W, 3)` float32 RGB in [0, 1] (each value exactly `colour / 255`).

    Raises:
        ValueError: on a wrong shape or dtype, negative indices, a colour for index 0, or a bad colour.
    """
    # 1. Check inputs
    index = _check_index("object_index", object_index)
    if not isinstance(colours, Mapping):
        raise ValueError(f"colours must be a mapping of index to RGB, got {colours!r}")
    checked: dict[int, tuple[int, int, int]] = {}
    for key, colour in colours.items():
        if not isinstance(key, int | np.integer) or isinstance(key, bool) or key < 0:
            raise ValueError(f"colours keys must be object indices >= 1, got {key!r}")
        if key == 0:
            raise ValueError("colours must not contain index 0: it is the background, use background_colour")
        checked[int(key)] = _check_rgb8(f"colours[{key}]", colour)
    fill = _check_rgb8("background_colour", background_colour)

    # 2. Lookup table covering every index that occurs, then one gather
    size = max(int(index.max()), max(checked, default=0)) + 1
    table = np.empty((size, 3), dtype=np.float32)
    table[:] = np.asarray(fill, dtype=np.float32) / 255.0
    for key, colour in checked.items():
        table[key] = np.asarray(colour, dtype=np.float32) / 255.0
    return np.take(table, index, axis=0)


# ------------------------------------------------------------------------------------------------------------
# One view's maps
# ------------------------------------------------------------------------------------------------------------
# The control maps a view's raw data makes (what ControlNets and engines read).
CONTROL_MAPS: tuple[str, ...] = ("depth", "normal", "lineart", "segmentation")


def control_maps(
    depth: np.ndarray,
    camera_normals: np.ndarray,
    object_index: np.ndarray,
    background: np.ndarray,
    colours: Mapping[int, tuple[int, int, int]],
    line_thickness: float = 1.0,
    line_depth_threshold: float = 0.05,
    line_crease_angle: float = 40.0,
    names: Collection[str] = CONTROL_MAPS,
) -> dict[str, np.ndarray]:
    """The depth, normal, line-art and segmentation maps of one view from its raw data (those in `names`).

    The one place that turns raw data into maps, whoever made the data: Cycles' passes (the pass render) or
    the GPU drawing of the live preview, so both hand an engine the same kind of picture.

    Args:
        depth (`np.ndarray`): `(H, W)` planar camera depth in scene units (see `inverse_depth`).
        camera_normals (`np.ndarray`): `(H, W, 3)` camera-space unit normals (see `camera_space_normals`).
        object_index (`np.ndarray`): `(H, W)` non-negative integer object index, 0 on the background.
        background (`np.ndarray`): `(H, W)` bool, True where there is no geometry.
        colours (`Mapping[int, tuple[int, int, int]]`): segmentation colour per object index (see
            `segmentation_map`).
        line_thickness, line_depth_threshold, line_crease_angle: `line_art`'s `thickness`,
            `depth_threshold` and `crease_angle` (degrees).
        names (`Collection[str]`): the maps to make, of `CONTROL_MAPS` (a live preview makes only
            those its engine reads).

    Returns:
        `dict[str, np.ndarray]`: of "depth" `(H, W)`, "normal" `(H, W, 3)`, "lineart" `(H, W)` and
        "segmentation" `(H, W, 3)` those in `names`, in that order, all float32 in [0, 1].

    Raises:
        ValueError: as the four functions it calls, or a name not in `CONTROL_MAPS`.
    """
    unknown = set(names) - set(CONTROL_MAPS)
    if unknown:
        raise ValueError(f"names must be of {CONTROL_MAPS}, got {sorted(unknown)}")
    makers = {
        "depth": lambda: inverse_depth(depth, background),
        "normal": lambda: normal_map_rgb(camera_normals, background),
        "lineart": lambda: line_art(
            depth,
            camera_normals,
            object_index,
            background,
            thickness=line_thickness,
            depth_threshold=line_depth_threshold,
            crease_angle=line_crease_angle,
        ),
        "segmentation": lambda: segmentation_map(object_index, colours),
    }
    return {name: make() for name, make in makers.items() if name in names}


# ------------------------------------------------------------------------------------------------------------
# Motion
# ------------------------------------------------------------------------------------------------------------
def _colour_wheel() -> np.ndarray:
    """`(55, 3)` float32 Middlebury wheel: each segment ramps one channel while the others hold."""
    red_yellow, yellow_green, green_cyan, cyan_blue, blue_magenta, magenta_red = _WHEEL_SEGMENTS
    ramps = []
    for length, start, ramp_channel, rising in (
        (red_yellow, (1.0, 0.0, 0.0), 1, True),
        (yellow_green, (1.0, 1.0, 0.0), 0, False),
        (green_cyan, (0.0, 1.0, 0.0), 2, True),
        (cyan_blue, (0.0, 1.0, 1.0), 1, False),
        (blue_magenta, (0.0, 0.0, 1.0), 0, True),
        (magenta_red, (1.0, 0.0, 1.0), 2, False),
    ):
        segment = np.tile(np.asarray(start, dtype=np.float64), (length, 1))
        # Integer steps of 1/255 as in the reference wheel, so colours match published figures.
        step = np.floor(255.0 * np.arange(length) / length) / 255.0
        segment[:, ramp_channel] = step if rising else 1.0 - step
        ramps.append(segment)
    return np.concatenate(ramps).astype(np.float32)


_WHEEL = _colour_wheel()
# Per-channel contiguous tables of the wheel and of the difference to the next entry (wrapping), so the
# interpolation is one gather-multiply-add per channel.
_WHEEL_PLANES = tuple(np.ascontiguousarray(_WHEEL[:, channel]) for channel in range(3))
_WHEEL_STEP_PLANES = tuple(
    np.ascontiguousarray(np.roll(_WHEEL[:, channel], -1) - _WHEEL[:, channel]) for channel in range(3)
)


def motion_vector_rgb(vectors: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-wheel visualisation of screen-space motion (the usual optical-flow picture).

    Hue is the direction in the picture, saturation the speed: white is still, the fully saturated wheel
    colour is `max_magnitude` pixels per frame or faster. Directions (Middlebury wheel of Baker et al.):
    moving right is red (1, 0, 0), down yellow-orange, left azure, up violet.

    Cycles' Vector pass is `(H, W, 4)`, in pixels, +y UP. The manual only says the four components are 2D
    motion "towards the next and previous frame"; the source is more precise. Cycles'
    `primitive_motion_vector()` (intern/cycles/kernel/geom/primitive.h) returns
    `(pre - now, now - post)` of the raster positions, so channels 0, 1 point from this frame's position to
    the previous frame's, and channels 2, 3 are MINUS the step to the next frame's. Raster y grows upwards
    (camera.cpp builds screen-to-NDC from the viewplane's bottom edge), and flipping rows to top-first does
    not change the stored values. The forward motion drawn here is therefore `-(channels 2, 3)`, with y
    negated again for the top-first picture; for steady motion channels 0, 1 hold the same values. Checked
    by rendering with Cycles in Blender 4.5 and 5.2: a cube moving 8 px right and 4 px up per frame reads
    (-8, -4, -8, -4). (EEVEE's layout was not checked.)

    Args:
        vectors (`np.ndarray`): `(H, W, 4)` Blender Vector pass, or `(H, W, 2)` forward motion
            `(dx right, dy up)` in pixels per frame. Must be finite.
        max_magnitude (`float`, *optional*): speed in pixels that reaches full saturation. Defaults to the
            99th percentile of the moving pixels' speeds (all white if nothing moves).

    Returns:
        `np.ndarray`: `(H, W, 3)` float32 RGB in [0, 1].

    Raises:
        ValueError: on a wrong shape or dtype, non-finite vectors, or a non-positive `max_magnitude`.
    """
    # 1. Check inputs
    vectors = _check_real_array("vectors", vectors, 3, (2, 4))
    if max_magnitude is not None:
        max_magnitude = check_number("max_magnitude", max_magnitude, 0.0, np.inf, open_low=True)
        if not np.isfinite(max_magnitude):
            raise ValueError(f"max_magnitude must be finite, got {max_magnitude!r}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("vectors must be finite, found a non-finite value")

    # 2. Forward motion in image axes (x right, y DOWN, as rows are top-first)
    if vectors.shape[-1] == 4:
        right = -vectors[..., 2].astype(np.float32)
        down = vectors[..., 3].astype(np.float32)
    else:
        right = vectors[..., 0].astype(np.float32)
        down = -vectors[..., 1].astype(np.float32)
    speed = np.sqrt(right * right + down * down)

    # 3. Saturation from speed
    if max_magnitude is None:
        moving = speed[speed > 0]
        if moving.size == 0:
            return np.ones((*speed.shape, 3), dtype=np.float32)
        # A regular subsample of a quarter million speeds pins the percentile to well under a percent and
        # keeps the default path as fast as an explicit max_magnitude.
        stride = max(1, moving.size // (1 << 18))
        max_magnitude = float(np.percentile(moving[::stride], _MOTION_PERCENTILE))
    saturation = np.minimum(speed * np.float32(1.0 / max_magnitude), np.float32(1.0))

    # 4. Hue from direction, interpolated between wheel entries. The angle is measured so that motion to the
    # right lands exactly on entry 0 (red), whichever sign its zero y has (hence the + 0.0).
    count = len(_WHEEL)
    angle = np.arctan2(-down + np.float32(0.0), -right)  # in [-pi, pi], right at +-pi
    position = (angle + np.float32(np.pi)) * np.float32(count / (2.0 * np.pi))
    lower = position.astype(np.intp)  # position >= 0, so truncation is floor
    frac = position - lower.astype(np.float32)
    lower[lower >= count] = 0  # only exactly "right" reaches the end of the wheel

    # 5. Per channel: wheel colour, then fade towards white as speed drops
    rgb = np.empty((*speed.shape, 3), dtype=np.float32)
    for channel in range(3):
        hue = _WHEEL_PLANES[channel].take(lower)
        hue += frac * _WHEEL_STEP_PLANES[channel].take(lower)
        rgb[..., channel] = np.float32(1.0) - saturation * (np.float32(1.0) - hue)
    return rgb
