# SPDX-License-Identifier: GPL-3.0-or-later
"""Invert a view transform numerically: display-referred pixels -> the scene-linear pixels that show them.

A view transform (sRGB Standard, Filmic, AgX, plus look, exposure, gamma, curves...) maps scene-linear light to
display values. The inverses in an OCIO config are approximate (AgX) or missing (looks, exposure, curves), so
this module builds one from the forward transform alone, used as a black box `forward(linear (N, 3)) -> (N, 3)`:

1. A per-channel *shaper* is fitted to the view's response to greys, so that shaper units `u` in [0, 1] run
   roughly like display values. The search and the table below work in these units.
2. The forward transform is sampled densely over the shaper cube (one batch); every node of a grid over the
   display cube starts from a sample near it.
3. Levenberg-Marquardt against the forward transform itself (finite-difference Jacobians, one batch per
   iteration) solves each node within the box u in [0, 1]^3. A node whose colour the view cannot produce ends
   at the closest colour it can; its distance is kept and reported.
4. Where the view is flat (a clipped channel) many units give a node's colour; such nodes take the solution
   that continues their neighbours, so that the table stays smooth across them.
5. A few refinement steps adjust the nodes so that the interpolated table is right inside the cells too.
6. `apply` interpolates the nodes tetrahedrally (exact along the grey axis) and decodes them to scene linear.

The result, an `InverseView`, saves to and loads from a cache folder as `.npy` + `.json` files (no pickle).
This module never imports bpy: Blender supplies the forward transform (see `addon/display_colour.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic_file import replace_file

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
    "ByteInverse",
    "InverseView",
    "Shaper",
    "build",
    "cache_key",
]

Forward = Callable[[np.ndarray], np.ndarray]
"""`forward(linear (N, 3) float32) -> display (N, 3) float32`: the view transform to invert."""

# Bump when the table layout or the algorithm changes, so that caches built by older code are not used.
FORMAT_VERSION = 1

# The neutral probe: greys from 2**PROBE_LOW_STOP to 2**PROBE_HIGH_STOP (linear), 16 samples a stop, plus 0.
_PROBE_LOW_STOP = -16.0
_PROBE_HIGH_STOP = 24.0
_PROBE_PER_STOP = 16
# A channel counts as saturated once it is this close to its top value (in display units).
_SATURATED = 1e-4
# Rows per block in `apply`: small enough for the cache, large enough to amortise numpy's call overhead.
_BLOCK = 1 << 15
# Samples along the shaper cube's diagonal, for the anchors.
_DIAGONAL_SAMPLES = 1025

# Solving (see `build`).
# Weight of the pull towards each node's anchor. Where the view is flat (above white, below its black level)
# many units give the same colour; the pull picks the one nearest the anchor, a smooth function of the node,
# which keeps the table smooth there. It is far too weak to move a solution where the view is not flat.
_PULL = 1e-4
# A node whose cost is below this is done (a residual of ~0.01 of an 8-bit level).
_CONVERGED = (0.01 / 255) ** 2
# Finite-difference step for Jacobians, in shaper units (~1/4 of an 8-bit level along grey).
_PROBE = 1e-3
# A node whose Jacobian's smallest singular value (display per unit; ~1 in general) is below this has no unique
# solution.
_DEGENERATE = 0.05
# For nodes without a unique solution: display distance that one unit of distance from the neighbours is worth,
# and how much farther from its target a node may end up for the sake of smoothness.
_AWAY_WEIGHT = 0.2
_WORSE_BY = 1.0 / 255
# The largest move of a node per refinement step, in units.
_REFINE_STEP = 0.01
# How far off its own target refinement may move a node (else the node keeps its solution).
_REFINE_OFF_TARGET = 1.0 / 255
# Levenberg-Marquardt damping of the refinement's corrections (they come from interpolated Jacobians).
_REFINE_DAMPING = 0.05
# How far a node without a unique solution extends the trend of its two neighbours in a row (0: copy the
# nearer one, 1: linear extrapolation); halfway is the most robust on clipped faces.
_EXTRAPOLATE = 0.5
# How much farther (display) a degenerate node may move from its target while retreating to its neighbours.
_RETREAT_SLACK = 0.02 / 255
# How much a seed's distance (in units) from its node's anchor counts against it, next to its display distance.
_ANCHOR_WEIGHT = 0.25


@dataclass
class BuildReport:
    """What `build` did and how well it went.

    Attributes:
        nodes: display-cube nodes solved (size ** 3).
        unreachable: nodes farther than `tolerance` from every colour the view can produce.
        tolerance: display distance (max over channels) under which a node counts as reached.
        max_distance: the largest display distance of any node from its target (0 when all are reached).
        forward_pixels: colours sent through `forward` in total.
        forward_calls: batches sent to `forward`.
        seconds: wall time of the build.
    """

    nodes: int
    unreachable: int
    tolerance: float
    max_distance: float
    forward_pixels: int
    forward_calls: int
    seconds: float


class Shaper:
    """A per-channel monotone map between shaper units `u` in [0, 1] and working-space linear values.

    `table[c, k]` is the working value of channel c at u = k / (K - 1); each row starts at 0 and increases
    strictly, so decoding is a uniform-grid lookup (no search) and encoding is `np.interp`.
    """

    def __init__(self, table: np.ndarray):
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or table.shape[0] != 3 or table.shape[1] < 2:
            raise ValueError(f"shaper table must have shape (3, K) with K >= 2, got {table.shape}")
        if not np.all(np.diff(table.astype(np.float64), axis=1) > 0):
            raise ValueError("shaper table rows must increase strictly")
        self.table = table
        self._flat = np.ascontiguousarray(table.ravel())
        self._offsets = np.arange(3, dtype=np.int32) * table.shape[1]

    def decode(self, u: np.ndarray) -> np.ndarray:
        """Shaper units `(..., 3)` -> working-space linear `(..., 3)` float32; u is clipped to [0, 1]."""
        steps = self.table.shape[1] - 1
        x = np.clip(np.asarray(u, dtype=np.float32), 0.0, 1.0)
        x *= np.float32(steps)
        index = np.minimum(x.astype(np.int32), steps - 1)
        x -= index
        index += self._offsets
        low = np.take(self._flat, index)
        high = np.take(self._flat, index + 1)
        high -= low
        high *= x
        high += low
        return high

    def encode(self, working: np.ndarray) -> np.ndarray:
        """Working-space linear `(..., 3)` -> shaper units `(..., 3)` float32, clipped to [0, 1]."""
        working = np.asarray(working, dtype=np.float32)
        grid = np.linspace(0.0, 1.0, self.table.shape[1], dtype=np.float32)
        out = np.empty(working.shape, dtype=np.float32)
        for c in range(3):
            out[..., c] = np.interp(working[..., c], self.table[c], grid)
        return out

    @classmethod
    def fit(
        cls, stops_linear: np.ndarray, display: np.ndarray, *, headroom_stops: float, resolution: int
    ) -> Shaper:
        """Fit the shaper to the forward transform's response to greys.

        Args:
            stops_linear: `(M,)` increasing grey levels (working-space linear), starting at 0.
            display: `(M, 3)` what the view shows for each grey.
            headroom_stops: stops kept above the level where every channel saturates, for colours that need
                one channel brighter than white.
            resolution: K, entries per channel of the table.

        Returns:
            The shaper; u = 1 decodes to `headroom_stops` above the level where the greys saturate.
        """
        levels = np.asarray(stops_linear, dtype=np.float64)
        display = np.asarray(display, dtype=np.float64)
        # 1. Where the view stops changing: the top of the useful range, plus headroom.
        final = display[-1]
        moving = np.any(np.abs(display - final) > _SATURATED, axis=1)
        last_moving = int(np.nonzero(moving)[0][-1]) if moving.any() else 0
        saturation = levels[min(last_moving + 1, len(levels) - 1)]
        top = min(saturation * 2.0**headroom_stops, levels[-1])
        keep = levels <= top
        levels, display = levels[keep], display[keep]
        if levels[-1] < top:
            levels = np.append(levels, top)
            display = np.vstack([display, display[-1]])
        # 2. u follows the normalised neutral response (so u runs like display values), plus a log term
        #    above saturation and a tiny linear term, which keep u strictly increasing through plateaus.
        log_term = np.log2(np.maximum(levels, saturation) / saturation)
        log_term /= max(log_term[-1], 1e-12)
        linear_term = levels / levels[-1]
        grid = np.linspace(0.0, 1.0, resolution)
        table = np.empty((3, resolution), dtype=np.float64)
        for c in range(3):
            response = np.maximum.accumulate(display[:, c])
            span = response[-1] - response[0]
            response = (response - response[0]) / span if span > 1e-6 else log_term
            u = 0.9 * response + 0.1 * log_term + 1e-4 * linear_term
            u /= u[-1]
            table[c] = np.interp(grid, u, levels)
        # Interpolating a strictly increasing curve can still repeat a value in float32; nudge such steps.
        table = table.astype(np.float32)
        for c in range(3):
            for k in range(1, resolution):
                if table[c, k] <= table[c, k - 1]:
                    table[c, k] = np.nextafter(table[c, k - 1], np.float32(np.inf))
        return cls(table)


class InverseView:
    """The inverse of one view transform, as a 3D table over the display cube.

    Attributes:
        nodes: `(S, S, S, 3)` float32 shaper units whose forward image is the node's display colour
            (or the closest colour the view can produce), indexed [r, g, b].
        distance: `(S, S, S)` float32 display distance (max over channels) of each node from its target.
        shaper: decodes shaper units to working-space linear.
        to_linear: `(3, 3)` float32, working space -> scene linear (identity unless the view works in a wider
            gamut, such as AgX's).
        report: how the build went (None when loaded from a cache written without it).
    """

    def __init__(
        self,
        nodes: np.ndarray,
        distance: np.ndarray,
        shaper: Shaper,
        to_linear: np.ndarray | None = None,
        report: BuildReport | None = None,
    ):
        nodes = np.asarray(nodes, dtype=np.float32)
        size = nodes.shape[0]
        if nodes.shape != (size, size, size, 3) or size < 2:
            raise ValueError(f"nodes must have shape (S, S, S, 3) with S >= 2, got {nodes.shape}")
        distance = np.asarray(distance, dtype=np.float32)
        if distance.shape != (size, size, size):
            raise ValueError(f"distance must have shape {(size, size, size)}, got {distance.shape}")
        self.nodes = nodes
        self.distance = distance
        self.shaper = shaper
        self.to_linear = (
            np.eye(3, dtype=np.float32) if to_linear is None else np.asarray(to_linear, np.float32)
        )
        if self.to_linear.shape != (3, 3):
            raise ValueError(f"to_linear must be 3x3, got {self.to_linear.shape}")
        self.report = report
        self._identity = bool(np.array_equal(self.to_linear, np.eye(3, dtype=np.float32)))
        # Node rows for `_interpolate_nodes`: the shaper units, and the distance alone.
        self._node_rows = np.ascontiguousarray(nodes.reshape(-1, 3))
        self._distance_rows = np.ascontiguousarray(distance.reshape(-1, 1))

    @property
    def size(self) -> int:
        return self.nodes.shape[0]

    # Applying -----------------------------------------------------------------------------------------

    def apply(self, display: np.ndarray, *, workers: int | None = None) -> np.ndarray:
        """Display-referred pixels -> scene-linear pixels that the view transform turns back into them.

        Args:
            display: `(..., 3)` float in [0, 1] (values outside are clipped to the cube), e.g. `(H, W, 3)`.
            workers: threads to use (numpy releases the GIL); default: one per CPU, at most 8.

        Returns:
            `(..., 3)` float32 scene-linear values.
        """
        display = _check_pixels(display)
        flat = display.reshape(-1, 3)
        out = np.empty(flat.shape, dtype=np.float32)
        _in_blocks(lambda s: self._apply_block(flat[s : s + _BLOCK], out[s : s + _BLOCK]), len(flat), workers)
        return out.reshape(display.shape)

    def _apply_block(self, display: np.ndarray, out: np.ndarray) -> None:
        out[:] = self._linear(_interpolate_nodes(self._node_rows, self.size, display))

    def _linear(self, units: np.ndarray) -> np.ndarray:
        """Table values (shaper units) -> scene-linear `(N, 3)` float32."""
        working = self.shaper.decode(units)
        return working if self._identity else working @ self.to_linear.T

    def distance_at(self, display: np.ndarray, *, worst: bool = False) -> np.ndarray:
        """How far (display units, max over channels) the view lands from each pixel: `(...)` float32.

        Args:
            display: `(..., 3)` float in [0, 1].
            worst: False interpolates the nodes' distances (0 where the view reproduces the colour, and for a
                colour it cannot produce, roughly how far the closest one is). True takes the largest distance
                among the nodes the pixel is interpolated from: next to colours the view cannot produce the
                interpolation itself can miss by about that much, so this bounds the error from above.
        """
        display = _check_pixels(display)
        flat = display.reshape(-1, 3)
        out = np.empty(len(flat), dtype=np.float32)
        for s in range(0, len(flat), _BLOCK):
            block = flat[s : s + _BLOCK]
            if worst:
                out[s : s + _BLOCK] = _interpolate_nodes(self._distance_rows, self.size, block, worst_of=0)[1]
            else:
                out[s : s + _BLOCK] = _interpolate_nodes(self._distance_rows, self.size, block)[:, 0]
        return out.reshape(display.shape[:-1])

    # Cache --------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, key: str) -> Path:
        """Write `<key>.npy` (nodes and distances), `<key>.shaper.npy` and `<key>.json` into `folder`.

        Each file is written under a temporary name and renamed, the `.json` last, so a reader never sees a
        half-written table. Returns the `.npy` path.
        """
        _check_key(key)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = np.concatenate([self.nodes, self.distance[..., None]], axis=-1)
        meta = {
            "format_version": FORMAT_VERSION,
            "size": self.size,
            "to_linear": self.to_linear.tolist(),
            "report": None if self.report is None else asdict(self.report),
        }
        npy = folder / f"{key}.npy"
        replace_file(npy, lambda handle: np.save(handle, table, allow_pickle=False))
        replace_file(
            folder / f"{key}.shaper.npy",
            lambda handle: np.save(handle, self.shaper.table, allow_pickle=False),
        )
        replace_file(folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta).encode()))
        return npy

    @staticmethod
    def exists(folder: str | os.PathLike, key: str) -> bool:
        """Whether `load` would find a table of this format under `key` (reads only its small record)."""
        _check_key(key)
        folder = Path(folder)
        try:
            meta = json.loads((folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return False
        found = (folder / f"{key}.npy").is_file() and (folder / f"{key}.shaper.npy").is_file()
        return found and meta.get("format_version") == FORMAT_VERSION

    @classmethod
    def load(cls, folder: str | os.PathLike, key: str) -> InverseView | None:
        """The inverse saved under `key`, or None when there is none, it is from another format version or it
        is unreadable: a cache miss, never an error."""
        _check_key(key)
        folder = Path(folder)
        try:
            meta = json.loads((folder / f"{key}.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                return None
            table = np.load(folder / f"{key}.npy", allow_pickle=False)
            shaper = np.load(folder / f"{key}.shaper.npy", allow_pickle=False)
            if table.ndim != 4 or table.shape[-1] != 4 or table.shape[0] != meta["size"]:
                return None
            report = BuildReport(**meta["report"]) if meta.get("report") else None
            return cls(
                nodes=table[..., :3],
                distance=table[..., 3],
                shaper=Shaper(shaper),
                to_linear=np.asarray(meta["to_linear"], dtype=np.float32),
                report=report,
            )
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            return None


# Building -----------------------------------------------------------------------------------------------


def build(
    forward: Forward,
    *,
    size: int = 33,
    forward_size: int = 65,
    to_working: np.ndarray | None = None,
    headroom_stops: float = 3.0,
    shaper_resolution: int = 4096,
    tolerance: float = 0.25 / 255,
    iterations: int = 8,
    refine_steps: int = 3,
) -> InverseView:
    """Build the inverse of `forward` over the display cube.

    Args:
        forward: the view transform, `forward(linear (N, 3) float32) -> display (N, 3) float32`. It is called
            about 50 times with batches of up to `forward_size ** 3` or `4 * size ** 3` colours.
        size: nodes per axis of the inverse table (33: ~8 display levels apart).
        forward_size: samples per axis of the dense forward sampling that seeds the search.
        to_working: `(3, 3)` matrix from scene linear to the space whose non-negative values the search
            explores (default identity: non-negative scene-linear RGB). A wider gamut lets the search reach
            display colours that need out-of-gamut light, e.g. FilmLight E-Gamut for AgX.
        headroom_stops: stops searched above the level where greys saturate.
        shaper_resolution: entries per channel of the shaper table.
        tolerance: display distance (max over channels) under which a node counts as reached.
        iterations: Levenberg-Marquardt iterations (each one batch) per solving pass.
        refine_steps: refinement steps (each one batch of about `2 * size ** 3` colours); 0 keeps the nodes
            exact at their own colours.

    Returns:
        The inverse; `report` says how many nodes the view could not reach.

    Raises:
        ValueError: bad arguments, or `forward` returned the wrong shape or non-finite values.
    """
    # 1. Check inputs.
    if not 2 <= size <= 129:
        raise ValueError(f"size must be in [2, 129], got {size}")
    if not 2 <= forward_size <= 129:
        raise ValueError(f"forward_size must be in [2, 129], got {forward_size}")
    if headroom_stops < 0:
        raise ValueError(f"headroom_stops must be >= 0, got {headroom_stops}")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
    if to_working is None:
        to_working = np.eye(3)
    to_working = np.asarray(to_working, dtype=np.float64)
    if to_working.shape != (3, 3) or abs(np.linalg.det(to_working)) < 1e-9:
        raise ValueError(f"to_working must be an invertible 3x3 matrix, got {to_working.tolist()}")
    to_linear = np.linalg.inv(to_working).astype(np.float32)
    started = time.perf_counter()
    oracle = _CountingForward(forward, to_linear)

    # 2. Fit the shaper to the neutral axis (greys are the same in any white-preserving working space).
    stops = np.arange(_PROBE_LOW_STOP, _PROBE_HIGH_STOP + 1e-9, 1.0 / _PROBE_PER_STOP)
    levels = np.concatenate([[0.0], np.exp2(stops)])
    greys = np.repeat(levels[:, None], 3, axis=1).astype(np.float32)
    shaper = Shaper.fit(
        levels, oracle.working(greys), headroom_stops=headroom_stops, resolution=shaper_resolution
    )

    # 3. Sample the forward transform densely over the shaper cube (one batch) and seed every display node
    #    with a sample near it. The cube's diagonal, sampled finely, gives each node an anchor: the per-channel
    #    inverse of the diagonal, a smooth function of the node that the search is pulled towards where the
    #    view is flat.
    samples = _grid(forward_size)
    along = np.linspace(0.0, 1.0, _DIAGONAL_SAMPLES, dtype=np.float32)
    sampled = oracle.units(np.concatenate([samples, np.repeat(along[:, None], 3, axis=1)]), shaper)
    sampled, diagonal = sampled[: len(samples)], sampled[len(samples) :]
    targets = _grid(size).astype(np.float64)
    anchors = np.stack([_first_crossing(diagonal[:, c], along, targets[:, c]) for c in range(3)], axis=1)
    # The anchors are candidate seeds too: on the grey axis they are the solutions, at the first units that
    # reach the node (past white the view is flat, and its edges are ridges a search would not cross).
    candidates = np.concatenate([samples, anchors.astype(np.float32)])
    sampled = np.concatenate([sampled, oracle.units(anchors.astype(np.float32), shaper)])
    seeds, seed_values = _seed_nodes(candidates, sampled, anchors, size)

    # 4. Levenberg-Marquardt against the forward transform itself.
    units, reached, jacobian = _solve(oracle, shaper, targets, seeds, anchors, iterations, seed_values)
    distance = np.max(np.abs(reached - targets), axis=1)

    # 5. Where the solution is not unique (a channel clipped on a face of the cube) or does not exist, the
    #    search may have stopped anywhere in a region of equally good units, and interpolating towards such a
    #    node misses. For those nodes, solve again from the settled neighbours, move both solutions back
    #    towards the neighbours as far as they stay as close to the target, and keep the best.
    settled = (distance <= tolerance) & (_smallest_singular_value(jacobian) >= _DEGENERATE)
    if settled.any() and not settled.all():
        redo = np.nonzero(~settled)[0]
        units[redo], reached[redo], distance[redo] = _smooth_unsettled(
            oracle,
            shaper,
            targets[redo],
            units[redo],
            reached[redo],
            _spread(units, settled, size)[redo],
            tolerance,
            iterations,
        )

    # 6. Exact nodes can still interpolate poorly where the view bends sharply between them. Adjust the
    #    reached nodes so that the table, as interpolated, is right at points inside the cells too.
    #    A node may move off its own target by a little for that; `distance` keeps describing how far the
    #    view is from each node's colour.
    if refine_steps:
        refined, refined_reached = _refine(
            oracle, shaper, units, reached, distance <= tolerance, size, refine_steps
        )
        moved_off = np.max(np.abs(refined_reached - targets), axis=1)
        keep = moved_off <= np.maximum(distance, tolerance) + _REFINE_OFF_TARGET
        units[keep], reached[keep] = refined[keep], refined_reached[keep]

    report = BuildReport(
        nodes=len(targets),
        unreachable=int(np.count_nonzero(distance > tolerance)),
        tolerance=float(tolerance),
        max_distance=float(distance.max()),
        forward_pixels=oracle.pixels,
        forward_calls=oracle.calls,
        seconds=time.perf_counter() - started,
    )
    shape = (size, size, size)
    return InverseView(
        nodes=units.astype(np.float32).reshape((*shape, 3)),
        distance=distance.astype(np.float32).reshape(shape),
        shaper=shaper,
        to_linear=to_linear,
        report=report,
    )


def cache_key(settings: Mapping[str, object]) -> str:
    """A file-name-safe key for a table built under `settings` (colour management, Blender version, sizes).

    Values must be JSON-serialisable (numbers, strings, lists, dicts); the key also covers FORMAT_VERSION.
    """
    text = json.dumps({"format_version": FORMAT_VERSION, **settings}, sort_keys=True, allow_nan=False)
    return "view-inverse-" + hashlib.sha256(text.encode()).hexdigest()[:24]


class _CountingForward:
    """Calls the forward transform, checks what it returns and counts the colours sent."""

    def __init__(self, forward: Forward, to_linear: np.ndarray):
        self.forward = forward
        self.to_linear = to_linear
        self.calls = 0
        self.pixels = 0

    def working(self, working: np.ndarray) -> np.ndarray:
        linear = np.ascontiguousarray(working @ self.to_linear.T, dtype=np.float32)
        display = np.asarray(self.forward(linear))
        if display.shape != linear.shape:
            raise ValueError(f"forward returned shape {display.shape} for input {linear.shape}")
        if not np.all(np.isfinite(display)):
            raise ValueError("forward returned non-finite values")
        self.calls += 1
        self.pixels += len(linear)
        return display.astype(np.float32, copy=False)

    def units(self, units: np.ndarray, shaper: Shaper) -> np.ndarray:
        return self.working(shaper.decode(units))


def _grid(size: int) -> np.ndarray:
    """`(size ** 3, 3)` float32 points of the unit cube, r slowest and b fastest."""
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def _cost(value, targets, units, start) -> np.ndarray:
    return np.sum((value - targets) ** 2, axis=1) + _PULL * np.sum((units - start) ** 2, axis=1)


def _lm_step(jacobian, residual, units, start, damping) -> np.ndarray:
    """Levenberg-Marquardt step `(N, 3)` for |F(u) - target|^2 + _PULL |u - start|^2."""
    jtj = np.einsum("nki,nkj->nij", jacobian, jacobian)
    gradient = np.einsum("nki,nk->ni", jacobian, residual) + _PULL * (units - start)
    # Marquardt's scaling by diag(J^T J), floored so that damping also shortens steps where the view is flat.
    diag = np.maximum(np.einsum("nii->ni", jtj), 1e-2)
    lhs = jtj + np.eye(3) * (_PULL + damping[:, None] * diag)[:, None, :]
    return -np.linalg.solve(lhs, gradient[..., None])[..., 0]


def _first_crossing(response: np.ndarray, units: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The lowest u where a sampled, roughly increasing response reaches each target (ends clamp)."""
    response = np.maximum.accumulate(response.astype(np.float64))
    rising = np.concatenate([[True], np.diff(response) > 0])
    return np.interp(targets, response[rising], units[rising])


def _seed_nodes(
    samples: np.ndarray, sampled: np.ndarray, anchors: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A starting point for every display node: a nearby forward sample, else a neighbour's seed.

    Each sample votes for the node nearest its display colour. A node keeps the voter that is closest in
    display plus `_ANCHOR_WEIGHT` times its distance in units from the node's anchor: where several units
    give (nearly) the same colour, as where a view clips or desaturates highlights, that picks the branch
    which joins smoothly onto the neighbouring nodes. Nodes nobody voted for (colours the view cannot
    produce, or sparsely sampled ones) take the seed of a neighbouring node, spreading outwards.

    Returns:
        (seeds, values): `(size ** 3, 3)` units and the display colours the samples at them produced.
    """
    steps = size - 1
    nearest = np.rint(np.clip(sampled, 0.0, 1.0) * steps).astype(np.int64)
    node = (nearest[:, 0] * size + nearest[:, 1]) * size + nearest[:, 2]
    score = np.max(np.abs(sampled - nearest / steps), axis=1)
    score += _ANCHOR_WEIGHT * np.max(np.abs(samples - anchors[node]), axis=1)
    order = np.lexsort((score, node))
    first = np.ones(len(order), dtype=bool)
    first[1:] = node[order][1:] != node[order][:-1]
    winners = order[first]
    seeds = np.zeros((size**3, 3))
    values = np.zeros((size**3, 3))
    seeds[node[winners]] = samples[winners]
    values[node[winners]] = sampled[winners]
    known = np.zeros(size**3, dtype=bool)
    known[node[winners]] = True

    cube_seeds, cube_values, cube_known = (
        a.reshape((size,) * 3 + a.shape[1:]) for a in (seeds, values, known)
    )
    while not cube_known.all():
        grown = cube_known.copy()
        for axis in range(3):
            for shift in (1, -1):
                # Each node looks at its neighbour `shift` steps along `axis`.
                here = [slice(None)] * 3
                there = [slice(None)] * 3
                here[axis], there[axis] = (
                    (slice(1, None), slice(None, -1)) if shift == 1 else (slice(None, -1), slice(1, None))
                )
                take = ~grown[tuple(here)] & cube_known[tuple(there)]
                cube_seeds[tuple(here)][take] = cube_seeds[tuple(there)][take]
                cube_values[tuple(here)][take] = cube_values[tuple(there)][take]
                grown[tuple(here)] |= take
        if np.array_equal(grown, cube_known):
            break  # no sample at all (cannot happen with a non-empty grid)
        cube_known = grown
    return seeds, values


def _solve(oracle, shaper: Shaper, targets, seeds, anchors, iterations: int, seed_values=None):
    """Projected Levenberg-Marquardt on the real forward transform, with finite-difference Jacobians.

    Every iteration sends, for the nodes still moving, one trial point and three probes around it in a single
    batch; a trial that lowers the node's cost is taken along with the Jacobian its probes give.

    Returns:
        (units, display reached by them, Jacobian there): `(N, 3)`, `(N, 3)`, `(N, 3, 3)` float64.
    """
    units = seeds.copy()
    value, jacobian = _value_and_jacobian(oracle, shaper, units, seed_values)
    cost = _cost(value, targets, units, anchors)
    damping = np.full(len(units), 1e-4)
    moved = np.full(len(units), np.inf)
    active = np.arange(len(units))
    for _ in range(iterations):
        # A node is done once it sits on its target and stopped moving, or when no step helps any more.
        residual = np.sum((value[active] - targets[active]) ** 2, axis=1)
        active = active[((residual > _CONVERGED) | (moved[active] > 1e-5)) & (damping[active] < 1e6)]
        if len(active) == 0:
            break
        step = _lm_step(
            jacobian[active], value[active] - targets[active], units[active], anchors[active], damping[active]
        )
        trial = np.clip(units[active] + step, 0.0, 1.0)
        trial_value, trial_jacobian = _value_and_jacobian(oracle, shaper, trial)
        trial_cost = _cost(trial_value, targets[active], trial, anchors[active])
        better = trial_cost < cost[active]
        take = active[better]
        # A step that gains less than 1% of the cost counts as standing still (e.g. at the closest colour).
        gained = (cost[take] - trial_cost[better]) / np.maximum(cost[take], 1e-30)
        moved[take] = np.where(gained > 0.01, np.max(np.abs(trial[better] - units[take]), axis=1), 0.0)
        units[take], value[take], cost[take] = trial[better], trial_value[better], trial_cost[better]
        jacobian[take] = trial_jacobian[better]
        damping[active] = np.where(better, np.maximum(damping[active] / 4.0, 1e-7), damping[active] * 8.0)
    return units, value, jacobian


def _value_and_jacobian(oracle, shaper: Shaper, units, value=None):
    """The forward transform at `units` (unless given) and its finite-difference Jacobian, in one batch."""
    # Probe downwards near the top of the box so that every probe stays inside it.
    h = np.where(units + _PROBE <= 1.0, _PROBE, -_PROBE)
    batch = ([] if value is not None else [units]) + [units + h * np.eye(3)[k] for k in range(3)]
    values = oracle.units(np.concatenate(batch).astype(np.float32), shaper).astype(np.float64)
    n = len(units)
    if value is None:
        value, values = values[:n], values[n:]
    jacobian = np.stack([(values[k * n : (k + 1) * n] - value) / h[:, k, None] for k in range(3)], axis=2)
    return np.asarray(value, dtype=np.float64), jacobian


def _smallest_singular_value(jacobian: np.ndarray) -> np.ndarray:
    return np.linalg.svd(jacobian, compute_uv=False)[:, -1]


def _smooth_unsettled(oracle, shaper, targets, units, reached, neighbours, tolerance, iterations):
    """Better solutions for nodes without a unique one: `(units, reached, distance)`.

    Candidates are the node's current solution, the same moved back towards its neighbours, and a fresh
    solution from the neighbours moved back likewise. Each scores its distance from the target (floored at
    `tolerance`, below which colours count as equal) plus `_AWAY_WEIGHT` times its distance from the
    neighbours, and may be at most `_WORSE_BY` farther from the target than the current solution.
    """
    distance = np.max(np.abs(reached - targets), axis=1)
    # Starting farther from a solution, the fresh search gets twice the iterations.
    fresh, fresh_reached, _ = _solve(oracle, shaper, targets, neighbours, neighbours, 2 * iterations)
    candidates = [(units, reached)]
    for start, start_reached in ((units, reached), (fresh, fresh_reached)):
        limit = np.max(np.abs(start_reached - targets), axis=1) + _RETREAT_SLACK
        candidates.append(_retreat(oracle, shaper, targets, start, start_reached, neighbours, limit))
    best_units, best_reached = units.copy(), reached.copy()
    best_score = np.full(len(units), np.inf)
    for candidate, candidate_reached in candidates:
        candidate_distance = np.max(np.abs(candidate_reached - targets), axis=1)
        away = np.max(np.abs(candidate - neighbours), axis=1)
        score = np.maximum(candidate_distance, tolerance) + _AWAY_WEIGHT * away
        take = (score < best_score) & (candidate_distance <= distance + _WORSE_BY)
        best_score[take] = score[take]
        best_units[take], best_reached[take] = candidate[take], candidate_reached[take]
    # Polish the winners that are not on their target yet, pulled towards where they are to keep their branch.
    best_distance = np.max(np.abs(best_reached - targets), axis=1)
    loose = np.nonzero(best_distance > tolerance)[0]
    if len(loose):
        polished, polished_reached, _ = _solve(
            oracle,
            shaper,
            targets[loose],
            best_units[loose],
            best_units[loose],
            iterations,
            best_reached[loose],
        )
        best_units[loose], best_reached[loose] = polished, polished_reached
        best_distance[loose] = np.max(np.abs(polished_reached - targets[loose]), axis=1)
    return best_units, best_reached, best_distance


def _refine(oracle, shaper, units, reached, good, size, steps):
    """Adjust the `good` nodes so that the interpolated table lands on its targets inside the cells too.

    Each step evaluates the interpolated table at the nodes and at one point inside every cell (a centroid
    of one of its six tetrahedra, taking turns), turns each point's display error into a unit correction with
    the local Jacobian, and moves every good node by the weighted mean of the corrections of the points it
    takes part in. Returns (units, display reached at the nodes).
    """
    steps_per_axis = size - 1
    # 1. The sample points: the nodes, then one tetrahedron centroid per cell.
    corner = np.stack(np.meshgrid(*[np.arange(steps_per_axis)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    orders = np.array(
        [
            [0.75, 0.5, 0.25],
            [0.75, 0.25, 0.5],
            [0.5, 0.75, 0.25],
            [0.25, 0.75, 0.5],
            [0.5, 0.25, 0.75],
            [0.25, 0.5, 0.75],
        ]
    )
    inside = (corner + orders[np.arange(len(corner)) % 6]) / steps_per_axis
    points = np.concatenate([_grid(size).astype(np.float64), inside])
    corners, weights = _tetrahedra(points, size)
    usable = np.all(good[corners] | (weights == 0), axis=1)
    # 2. Jacobians at the nodes, interpolated to the points.
    _, node_jacobian = _value_and_jacobian(oracle, shaper, units, reached)
    current = units.copy()
    for _ in range(steps):
        at_points = np.einsum("pk,pkc->pc", weights, current[corners])
        value = oracle.units(at_points.astype(np.float32), shaper).astype(np.float64)
        jacobian = np.einsum("pk,pkij->pij", weights, node_jacobian[corners])
        correction = _lm_step(
            jacobian, value - points, at_points, at_points, np.full(len(points), _REFINE_DAMPING)
        )
        correction[~usable] = 0.0
        total = np.zeros_like(current)
        weight = np.zeros(len(current))
        for k in range(4):
            np.add.at(total, corners[:, k], weights[:, k, None] * correction)
            np.add.at(weight, corners[:, k], weights[:, k])
        step = np.where(
            good[:, None] & (weight[:, None] > 0), total / np.maximum(weight, 1e-12)[:, None], 0.0
        )
        current = np.clip(current + np.clip(step, -_REFINE_STEP, _REFINE_STEP), 0.0, 1.0)
    return current, oracle.units(current.astype(np.float32), shaper).astype(np.float64)


def _tetrahedra(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4 node indices and tetrahedral weights `(P, 4)` that interpolate each point of the unit cube.

    Each cell splits into six tetrahedra along its grey diagonal, so a grey point uses only the two grey
    corners: the neutral axis interpolates exactly as solved, whatever the saturated corners hold. Nodes are
    numbered r-major (`r * size**2 + g * size + b`); points outside the cube are clipped to it. The
    tetrahedron is found with comparisons rather than a sort.
    """
    steps = size - 1
    plane = size * size
    x = np.clip(points, 0.0, 1.0)
    x *= steps
    index = np.minimum(x.astype(np.int32), steps - 1)
    x -= index  # now the fractions
    base = index[:, 0] * plane
    base += index[:, 1] * size
    base += index[:, 2]
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    mid = np.maximum(np.minimum(r, g), np.minimum(np.maximum(r, g), b))
    # The axis with the largest fraction is stepped first, the smallest last (ties: any order, their weight
    # is 0). Steps along r, g, b are plane, size and 1.
    r_top = (r >= g) & (r >= b)
    g_top = ~r_top & (g >= b)
    first = np.where(r_top, plane, np.where(g_top, size, 1))
    last = np.where(
        r_top,
        np.where(b <= g, 1, size),
        np.where(g_top, np.where(b <= r, 1, plane), np.where(g <= r, size, plane)),
    )
    far = plane + size + 1
    corners = np.stack([base, base + first, base + (far - last), base + far], axis=1)
    weights = np.stack([1 - high, high - mid, mid - low, low], axis=1)
    return corners, weights


def _spread(units: np.ndarray, known: np.ndarray, size: int) -> np.ndarray:
    """Fill the nodes not `known` from their known neighbours, layer by layer outwards.

    A node next to two known nodes in a row along an axis extends their trend (by `_EXTRAPOLATE` of a step), a
    node next to one takes its value; the estimates from all six directions are averaged and clipped to the
    box. On a face of the cube this points at the solution that continues the interior ones.
    """
    cube = units.reshape(size, size, size, 3).copy()
    known = known.reshape(size, size, size).copy()
    while not known.all():
        total = np.zeros_like(cube)
        count = np.zeros(known.shape)
        for axis in range(3):
            for direction in (1, -1):
                one, one_known = _shifted(cube, axis, direction), _shifted(known, axis, direction)
                two, two_known = _shifted(cube, axis, 2 * direction), _shifted(known, axis, 2 * direction)
                line = (one_known & two_known)[..., None]
                estimate = np.where(line, one + _EXTRAPOLATE * (one - two), one)
                total += np.where(one_known[..., None], estimate, 0.0)
                count += one_known
        new = ~known & (count > 0)
        if not new.any():
            break
        cube[new] = np.clip(total[new] / count[new][:, None], 0.0, 1.0)
        known |= new
    return cube.reshape(-1, 3)


def _retreat(oracle, shaper: Shaper, targets, units, value, towards, limit, steps: int = 6):
    """Move each solution back along the segment towards `towards` while it stays within `limit` of its target.

    On a face of the cube the solutions form a region (a clipped channel accepts anything past the clip); the
    search may overshoot deep into it, but the smooth continuation of the neighbouring nodes is the region's
    boundary nearest to them. Bisection finds it, one batch per step. Returns (units, value).
    """
    near, far = np.zeros(len(units)), np.ones(len(units))
    best_value = value.copy()
    for _ in range(steps):
        middle = (near + far) / 2
        trial = towards + middle[:, None] * (units - towards)
        trial_value = oracle.units(trial.astype(np.float32), shaper).astype(np.float64)
        inside = np.max(np.abs(trial_value - targets), axis=1) <= limit
        far = np.where(inside, middle, far)
        near = np.where(inside, near, middle)
        best_value[inside] = trial_value[inside]
    return towards + far[:, None] * (units - towards), best_value


def _shifted(array: np.ndarray, axis: int, offset: int) -> np.ndarray:
    """`out[i] = array[i - offset]` along `axis`, zero (False) where that falls outside."""
    out = np.zeros_like(array)
    src = [slice(None)] * array.ndim
    dst = [slice(None)] * array.ndim
    if offset > 0:
        src[axis], dst[axis] = slice(None, -offset), slice(offset, None)
    else:
        src[axis], dst[axis] = slice(-offset, None), slice(None, offset)
    out[tuple(dst)] = array[tuple(src)]
    return out


# Interpolation --------------------------------------------------------------------------------------------


def _interpolate_nodes(rows: np.ndarray, size: int, display: np.ndarray, worst_of: int | None = None):
    """Tetrahedral interpolation (`_tetrahedra`) of a node grid at `(N, 3)` points: `(N, C)` float32.

    Args:
        rows: the `(size, size, size, C)` nodes as `(size**3, C)` rows, r-major.
        display: the points (clipped to the cube).
        worst_of: a channel whose largest value among the corners a point is interpolated from (those with
            weight > 1e-6) is returned as well: `(values, worst)`, as `InverseView.distance_at(worst=True)`.

    Each corner is one gather of C floats.
    """
    corners, weights = _tetrahedra(display, size)
    out = None
    worst = None if worst_of is None else np.zeros(len(corners), dtype=np.float32)
    for k in range(4):
        values = np.take(rows, corners[:, k], axis=0)
        weight = weights[:, k]
        if worst is not None:
            np.maximum(worst, np.where(weight > 1e-6, values[:, worst_of], 0.0), out=worst)
        values *= weight[:, None]
        if out is None:
            out = values
        else:
            out += values
    return out if worst is None else (out, worst)


def _in_blocks(
    work: Callable[[int], None], count: int, workers: int | None = None, step: int = _BLOCK
) -> None:
    """`work(start)` for each block of `step` rows out of `count`, on threads (numpy releases the GIL)."""
    starts = range(0, count, step)
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            list(pool.map(work, starts))
    else:
        for s in starts:
            work(s)


def _check_pixels(display: np.ndarray) -> np.ndarray:
    display = np.asarray(display)
    if display.ndim < 1 or display.shape[-1] != 3:
        raise ValueError(f"display pixels must have shape (..., 3), got {display.shape}")
    if display.dtype.kind != "f":
        raise ValueError(f"display pixels must be float in [0, 1], got dtype {display.dtype}")
    if not np.all(np.isfinite(display)):
        raise ValueError("display pixels contain NaN or infinity")
    return display.astype(np.float32, copy=False)


def _check_key(key: str) -> None:
    if not key or not all(ch.isalnum() or ch in "-_." for ch in key) or key.startswith("."):
        raise ValueError(f"cache key must be a plain file name (letters, digits, '-', '_', '.'), got {key!r}")


# 8-bit display images -------------------------------------------------------------------------------------

# Largest magnitude a float16 holds: a view whose inverse needs more (an extreme exposure) keeps float32.
_HALF_MAX = 65504.0


class ByteInverse:
    """An `InverseView` at the 256**3 colours of 8-bit images, each evaluated once, the first time it is met.

    A frame's colours are mostly colours earlier frames already had (re-running a still, an animation), so a
    frame costs one table lookup per pixel instead of a tetrahedral interpolation; new colours are
    interpolated once, as `InverseView.apply` does, and stored. Each entry packs the scene-linear RGB and the
    distance to what the view can show (`InverseView.distance_at(worst=True)`, in 8-bit levels) as four
    float16 in one uint64, with the distance's sign bit always set, so a zero word means "not met yet". The
    table is allocated as zeros, which the OS maps lazily: memory grows with the colours met (2 KB per
    red-green pair, 128 MB at most) and is returned when the object is dropped.

    Thread-safe: lookups run on engine threads while the main thread may use the same inverse.
    """

    def __init__(self, inverse: InverseView):
        if not ByteInverse.fits(inverse):
            raise ValueError("this inverse reaches beyond the float16 range; use InverseView.apply")
        self.inverse = inverse
        self._table = np.zeros(1 << 24, dtype=np.uint64)
        self._lock = threading.Lock()
        # Node rows with the distance as a 4th channel, so one gather per corner serves both results.
        rows = np.concatenate([inverse.nodes, inverse.distance[..., None]], axis=-1)
        self._rows = np.ascontiguousarray(rows.reshape(-1, 4))
        self.colours_met = 0

    @staticmethod
    def fits(inverse: InverseView) -> bool:
        """Whether every value the inverse can return fits a float16 (interpolation stays within its nodes)."""
        linear = inverse._linear(inverse.nodes.reshape(-1, 3))
        return bool(np.all(np.abs(linear) < _HALF_MAX / 2))

    def lookup(self, rgb8: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """8-bit display pixels -> (scene-linear `(H, W, 3)` float16, levels off at every `stride`-th pixel).

        Args:
            rgb8: `(H, W, 3)` uint8 display-referred pixels.
            stride: the second result samples `rgb8[::stride, ::stride]`.

        Returns:
            The pixels the view turns back into `rgb8` (a view into a `(H, W, 4)` array), and for the sampled
            pixels how many 8-bit levels the view can miss them by (0 where it reproduces the colour), float32.
        """
        rgb8 = np.asarray(rgb8)
        if rgb8.ndim != 3 or rgb8.shape[2] != 3 or rgb8.dtype != np.uint8:
            raise ValueError(f"rgb8 must be (H, W, 3) uint8, got {rgb8.shape} {rgb8.dtype}")
        keys = rgb8[..., 0].astype(np.uint32)
        keys <<= 8
        keys |= rgb8[..., 1]
        keys <<= 8
        keys |= rgb8[..., 2]
        keys = keys.ravel()
        words = np.take(self._table, keys)
        if words.min() == 0:  # one pass without a temporary; most frames meet no new colour
            missing = np.flatnonzero(words == 0)
            self._fill(np.unique(keys[missing]))
            words[missing] = np.take(self._table, keys[missing])
        packed = words.view(np.float16).reshape(*rgb8.shape[:2], 4)
        # Stored negated (see the class docstring).
        levels = np.negative(packed[::stride, ::stride, 3], dtype=np.float32)
        return packed[..., :3], levels

    def _fill(self, keys: np.ndarray) -> None:
        display = np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=1).astype(np.float32)
        display /= np.float32(255)
        entries = np.empty((len(keys), 4), dtype=np.float16)
        inverse = self.inverse

        def block(s: int) -> None:
            units, worst = _interpolate_nodes(self._rows, inverse.size, display[s : s + _BLOCK], worst_of=3)
            entries[s : s + _BLOCK, :3] = inverse._linear(units[:, :3])
            # Negated, so the sign bit is set on every distance, 0 included (-0.0): a stored word is never 0.
            entries[s : s + _BLOCK, 3] = np.negative((worst * np.float32(255)).astype(np.float16))

        _in_blocks(block, len(keys))
        with self._lock:
            self._table[keys] = entries.view(np.uint64).ravel()
            self.colours_met += len(keys)
