# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups: the object as the unit of art direction ("the buildings in ink, the sky in watercolour").

A group is a named set of objects with its own engine settings (and its own Strength and Keep Scene Colours).
Objects in no group, and the background, take the scene's settings. Each style is run once on the frame; the
layers are then composited by the exact object-index pass, with a soft edge of a few pixels that never crosses a
depth discontinuity (a group's style does not bleed onto what is in front of or behind it).

    assignment, warnings = assign(objects, groups)      object pass index -> group number (first group wins)
    layer = layer_map(object_index, assignment)         (H, W) layer of each pixel: 0 the scene, k + 1 group k
    weights = layer_weights(layer, count, depth)        (count + 1, H, W), summing to 1 at every pixel
    picture = composite(pictures, weights)

bpy-free: the Blender side resolves a group's members (objects, collections, semantic classes) to names.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .checks import check_number, describe
from .conditioning import BACKGROUND_DEPTH
from .imageops import resize_nearest
from .settings import EngineSettings, FrameSettings
from .stylise_job import Finish

__all__ = ["GroupedFinish", "StyleGroup", "assign", "composite", "layer_map", "layer_weights"]

# The soft edge between two groups that touch at the same depth, in pixels on each side.
EDGE_RADIUS = 3
# Two neighbouring pixels are on one continuous surface when their inverse depths differ by less than this share.
DEPTH_TOLERANCE = 0.05


@dataclass(frozen=True)
class StyleGroup:
    """A named set of objects and the style they get.

    Attributes:
        name: What the artist called it; unique within a scene.
        objects: The names of its objects (members by object, collection or class, resolved by the caller).
        settings: The group's full engine settings (the scene's engine, with this group's choices).
        strength: The group's mix with the render, in [0, 1] (as the scene's Strength).
        keep_colours: Keep the render's colours under the group's style (as Keep Scene Colours).
    """

    name: str
    objects: frozenset[str]
    settings: EngineSettings
    strength: float = 1.0
    keep_colours: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a style group needs a name, got {self.name!r}")
        if not isinstance(self.objects, frozenset) or not all(isinstance(n, str) for n in self.objects):
            raise ValueError(
                f"group {self.name!r}: objects must be a frozenset of names, got {describe(self.objects)}"
            )
        if not isinstance(self.settings, EngineSettings):
            raise ValueError(
                f"group {self.name!r}: settings must be an engine's settings, got {describe(self.settings)}"
            )
        check_number(f"group {self.name!r}: strength", self.strength, 0.0, 1.0)


def assign(
    objects: Sequence[tuple[int, str]], groups: Sequence[StyleGroup]
) -> tuple[dict[int, int], list[str]]:
    """Which group each rendered object belongs to.

    An object in more than one group belongs to the FIRST of them in the list (the order of the panel); a
    warning names it. A group none of whose objects is rendered is reported too: its style would never show.

    Args:
        objects: `(pass index, object name)` of every rendered object (the pass render's entries).
        groups: the scene's style groups, in order.

    Returns:
        `(assignment, warnings)`: object pass index -> group number (0-based), for objects in a group.

    Raises:
        ValueError: two groups with one name, or an empty group (no objects at all).
    """
    names = [group.name for group in groups]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"style group names must be unique, found {', '.join(map(repr, twice))} more than once"
        )
    for group in groups:
        if not group.objects:
            raise ValueError(
                f"style group {group.name!r} has no objects: add objects, a collection or a class"
            )
    assignment: dict[int, int] = {}
    warnings: list[str] = []
    for index, name in objects:
        holders = [number for number, group in enumerate(groups) if name in group.objects]
        if holders:
            assignment[index] = holders[0]
        if len(holders) > 1:
            others = ", ".join(repr(groups[n].name) for n in holders[1:])
            warnings.append(
                f"'{name}' is in style groups {groups[holders[0]].name!r} and {others}: the first wins"
            )
    rendered = {name for _index, name in objects}
    for group in groups:
        if not group.objects & rendered:
            warnings.append(
                f"no object of style group {group.name!r} is in the frame, so its style is not used"
            )
    return assignment, warnings


def layer_map(object_index: np.ndarray, assignment: dict[int, int]) -> np.ndarray:
    """`(H, W)` int16 layer of each pixel: 0 for the scene's own settings (objects in no group, background),
    `k + 1` for group k, from the object-index pass (0 is no object)."""
    if (
        not isinstance(object_index, np.ndarray)
        or object_index.ndim != 2
        or object_index.dtype.kind not in "iu"
    ):
        raise ValueError(f"object_index must be a (H, W) int array, got {describe(object_index)}")
    top = max([int(object_index.max(initial=0)), *assignment]) if assignment else 0
    lookup = np.zeros(top + 1, dtype=np.int16)
    for index, group in assignment.items():
        lookup[index] = group + 1
    return lookup[np.clip(object_index, 0, top)]


def _inverse_depth(depth: np.ndarray) -> np.ndarray:
    inverse = np.zeros(depth.shape, dtype=np.float32)
    geometry = depth < BACKGROUND_DEPTH  # NaN and inf compare False: background
    np.divide(np.float32(1.0), depth, out=inverse, where=geometry & (depth > 0))
    return inverse


def layer_weights(
    layer: np.ndarray,
    count: int,
    depth: np.ndarray,
    radius: int = EDGE_RADIUS,
    depth_tolerance: float = DEPTH_TOLERANCE,
) -> np.ndarray:
    """How much of each layer every pixel shows: a soft edge where two layers touch on one surface, a hard one
    at a depth discontinuity.

    A pixel's weight of layer k is the share of the pixels in the `(2 radius + 1)^2` window around it that are
    in layer k AND on its own surface (inverse depth within `depth_tolerance` of its own, background counting
    as one surface). So a layer reaches at most `radius` pixels past its mask, and never across an occluding
    edge: a sphere in front of a wall keeps a hard outline whatever groups they are in.

    Args:
        layer: `(H, W)` int layer map (`layer_map`).
        count: the number of groups; layers are 0 .. count.
        depth: `(H, W)` Depth pass (background: non-finite or >= BACKGROUND_DEPTH).
        radius: soft edge in pixels, int in [0, 32].
        depth_tolerance: relative inverse-depth step that still counts as one surface, in [0, 1].

    Returns:
        `(count + 1, H, W)` float32, summing to 1 at every pixel.
    """
    if not isinstance(layer, np.ndarray) or layer.ndim != 2 or layer.dtype.kind not in "iu":
        raise ValueError(f"layer must be a (H, W) int array, got {describe(layer)}")
    if not isinstance(depth, np.ndarray) or depth.shape != layer.shape:
        raise ValueError(f"depth must be a {layer.shape} array, got {describe(depth)}")
    if not isinstance(radius, int) or not 0 <= radius <= 32:
        raise ValueError(f"radius must be an int in [0, 32], got {radius!r}")
    if (
        not isinstance(count, int)
        or count < 0
        or int(layer.max(initial=0)) > count
        or int(layer.min(initial=0)) < 0
    ):
        raise ValueError(f"layer values must be within 0 .. count ({count!r})")
    tolerance = check_number("depth_tolerance", depth_tolerance, 0.0, 1.0)
    height, width = layer.shape
    weights = np.zeros((count + 1, height, width), dtype=np.float32)
    for k in range(count + 1):
        weights[k] = layer == k
    if radius == 0 or count == 0:
        return weights
    # Only pixels whose window holds another layer get a soft edge: the rest are one layer (most of a frame).
    band = _window_extreme(layer, radius, np.minimum) != _window_extreme(layer, radius, np.maximum)
    if not band.any():
        return weights
    rows, cols = np.nonzero(band)
    inverse = _inverse_depth(np.asarray(depth, dtype=np.float32))
    pad = ((radius, radius), (radius, radius))
    padded_layer = np.pad(layer, pad, mode="edge")
    padded_inverse = np.pad(inverse, pad, mode="edge")
    own = inverse[rows, cols]
    own_limit = own * np.float32(tolerance)
    shares = np.zeros((count + 1, rows.size), dtype=np.float32)
    total = np.zeros(rows.size, dtype=np.float32)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            near = padded_inverse[rows + dy, cols + dx]
            # One surface: close in inverse depth (background, 0, is only close to background).
            same = np.abs(near - own) <= np.maximum(own_limit, near * np.float32(tolerance))
            same &= (near > 0) == (own > 0)
            total += same
            which = padded_layer[rows + dy, cols + dx]
            for k in range(count + 1):
                shares[k] += same & (which == k)
    weights[:, rows, cols] = shares / total  # the centre pixel is always on its own surface: total >= 1
    return weights


def _window_extreme(values: np.ndarray, radius: int, pick) -> np.ndarray:
    """The minimum or maximum (`pick`) over the `(2 radius + 1)^2` square around each pixel, edges replicated."""
    height, width = values.shape
    padded = np.pad(values, radius, mode="edge")
    rows = padded[:height, :].copy()
    for offset in range(1, 2 * radius + 1):
        pick(rows, padded[offset : offset + height, :], out=rows)
    out = rows[:, :width].copy()
    for offset in range(1, 2 * radius + 1):
        pick(out, rows[:, offset : offset + width], out=out)
    return out


def composite(pictures: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The layers' pictures mixed by `layer_weights`: `(H, W, 3)` float32."""
    if not isinstance(weights, np.ndarray) or weights.ndim != 3 or len(pictures) != weights.shape[0]:
        raise ValueError(
            f"weights must be ({len(pictures)}, H, W) for {len(pictures)} pictures, got {describe(weights)}"
        )
    out = np.zeros((*weights.shape[1:], 3), dtype=np.float32)
    part = np.empty_like(out)
    for picture, weight in zip(pictures, weights, strict=True):
        if not isinstance(picture, np.ndarray) or picture.shape != out.shape:
            raise ValueError(f"each picture must be {out.shape}, got {describe(picture)}")
        np.multiply(picture, weight[..., None], out=part)
        out += part
    return out


@dataclass(frozen=True, eq=False)
class GroupedFinish:
    """The frame writer's mix (`stylise_job.Finish`) for a frame with style groups: each layer mixed with the
    render by its own Finish, then composited by `layer_weights` at the picture's size.

    Attributes:
        base: The scene's Finish (objects in no group and the background; its `frame` is the record's).
        layers: Each group's engine picture and its Finish, in group order; a picture is None when the frame's
            own run made it (an engine that takes groups as regions of one run).
        layer: `(H, W)` layer map at the pass size (`layer_map`).
        depth: `(H, W)` Depth pass at the pass size.
        names: The groups' names, in group order (the compositor's layer outputs).
    """

    base: Finish
    layers: tuple[tuple[np.ndarray | None, Finish], ...]
    layer: np.ndarray
    depth: np.ndarray
    names: tuple[str, ...] = ()
    # The last picture's layers: the compositor's layers file reuses what the composite computed.
    _last: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def frame(self) -> FrameSettings:
        return self.base.frame

    @property
    def selection(self) -> tuple[int, ...]:
        return self.base.selection

    def weights(self, size: tuple[int, int]) -> np.ndarray:
        """`(layers + 1, H, W)` weights at `size` (the passes' own size needs no resampling)."""
        layer, depth = self.layer, self.depth
        if layer.shape != size:
            layer, depth = resize_nearest(layer, size), resize_nearest(depth, size)
        return layer_weights(layer, len(self.layers), depth)

    def finished(self, image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The scene's picture (`image`) and each group's, each after its own mix, and the weights at that size."""
        if self._last.get("image") is not image:
            pictures = [self.base.apply(image)]
            for picture, finish in self.layers:
                pictures.append(finish.apply(image if picture is None else picture))
            self._last.update(image=image, pictures=pictures, weights=self.weights(image.shape[:2]))
        return self._last["pictures"], self._last["weights"]

    def last(self) -> tuple[list[np.ndarray], np.ndarray]:
        """`finished` for the picture `apply` mixed last (the frame writer's: the compositor's layers file
        takes its layers from there).

        Raises:
            ValueError: nothing was mixed yet.
        """
        if "image" not in self._last:
            raise ValueError("GroupedFinish.last() before any apply()")
        return self._last["pictures"], self._last["weights"]

    def apply(self, image: np.ndarray) -> np.ndarray:
        return composite(*self.finished(image))
