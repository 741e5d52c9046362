# SPDX-License-Identifier: GPL-3.0-or-later
"""Invert a view transform numerically: display-referred pixels -> the scene-linear pixels that show them.

A view transform (sRGB Standard, Filmic, AgX, plus look, exposure, gamma...) maps scene-linear light to display
values. Its inverse in an OCIO config is often approximate or missing, so this module builds one from the
forward transform alone, treated as a black box `forward(linear (N, 3)) -> display (N, 3)`:

1. A per-channel *shaper* is fitted to the forward transform's neutral axis, so that shaper units `u` in
   [0, 1] run roughly like display values. Every search and every table below works in these units.
2. The forward transform is sampled on a grid over the shaper cube (one batch) and inverted by
   Levenberg-Marquardt on that table for every node of a display-cube grid, within the box u in [0, 1]^3.
3. A few more batches polish each node against the real forward transform (finite-difference Jacobians), so
   the table's own interpolation error drops out. A node whose colour the view cannot produce converges to
   the closest colour it can; its distance is kept and reported.
4. `apply` interpolates the node solutions trilinearly and decodes them back to linear.

The result is an `InverseView`, which saves to and loads from a cache folder as `.npy` + `.json` (no pickle).
This module never imports bpy: Blender supplies the forward transform (see `addon/display_colour.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
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
    ) -> tuple[Shaper, float]:
        """Fit the shaper to the forward transform's response to greys.

        Args:
            stops_linear: `(M,)` increasing grey levels (working-space linear), starting at 0.
            display: `(M, 3)` what the view shows for each grey.
            headroom_stops: stops kept above the level where every channel saturates, for colours that need
                one channel brighter than white.
            resolution: K, entries per channel of the table.

        Returns:
            (shaper, top): `top` is the linear level that u = 1 decodes to.
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
        return cls(table), float(top)


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
        self.to_linear = np.eye(3, dtype=np.float32) if to_linear is None else np.asarray(to_linear, np.float32)
        if self.to_linear.shape != (3, 3):
            raise ValueError(f"to_linear must be 3x3, got {self.to_linear.shape}")
        self.report = report
        self._identity = bool(np.array_equal(self.to_linear, np.eye(3, dtype=np.float32)))
        self._cells = _cell_table(nodes)

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
        starts = range(0, len(flat), _BLOCK)
        workers = workers or min(os.cpu_count() or 1, 8)
        if workers > 1 and len(starts) > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda s: self._apply_block(flat[s : s + _BLOCK], out[s : s + _BLOCK]), starts))
        else:
            for s in starts:
                self._apply_block(flat[s : s + _BLOCK], out[s : s + _BLOCK])
        return out.reshape(display.shape)

    def _apply_block(self, display: np.ndarray, out: np.ndarray) -> None:
        units = _interpolate_cells(self._cells, self.size, display)
        working = self.shaper.decode(units)
        out[:] = working if self._identity else working @ self.to_linear.T

    def distance_at(self, display: np.ndarray) -> np.ndarray:
        """How far (display units, max over channels) the view lands from each pixel: `(...)` float32.

        Interpolated from the nodes' distances: 0 where the view reproduces the colour, and for a colour the
        view cannot produce, roughly how far the closest one is.
        """
        display = _check_pixels(display)
        flat = display.reshape(-1, 3)
        cells = _cell_table(self.distance[..., None])
        out = np.empty(len(flat), dtype=np.float32)
        for s in range(0, len(flat), _BLOCK):
            out[s : s + _BLOCK] = _interpolate_cells(cells, self.size, flat[s : s + _BLOCK])[:, 0]
        return out.reshape(display.shape[:-1])

    # Cache --------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, key: str) -> Path:
        """Write `<folder>/<key>.npy` (nodes and distances) and `<folder>/<key>.json` (the rest).

        Each file is written to a temporary name and renamed, and the `.json` last, so a reader never sees a
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
            "shaper": self.shaper.table.tolist(),
            "report": None if self.report is None else asdict(self.report),
        }
        npy = folder / f"{key}.npy"
        _replace_atomically(npy, lambda handle: np.save(handle, table, allow_pickle=False))
        _replace_atomically(folder / f"{key}.json", lambda handle: handle.write(json.dumps(meta).encode()))
        return npy

    @classmethod
    def load(cls, folder: str | os.PathLike, key: str) -> InverseView | None:
        """The table saved under `key`, or None if there is none, it is from another format version or it is
        unreadable (a cache miss, never an error)."""
        _check_key(key)
        folder = Path(folder)
        try:
            meta = json.loads((folder / f"{key}.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                return None
            table = np.load(folder / f"{key}.npy", allow_pickle=False)
            report = BuildReport(**meta["report"]) if meta.get("report") else None
            return cls(
                nodes=table[..., :3],
                distance=table[..., 3],
                shaper=Shaper(np.asarray(meta["shaper"], dtype=np.float32)),
                to_linear=np.asarray(meta["to_linear"], dtype=np.float32),
                report=report,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


# Building -----------------------------------------------------------------------------------------------


def build(
    forward: Forward,
    *,
    size: int = 33,
    forward_size: int = 33,
    to_working: np.ndarray | None = None,
    headroom_stops: float = 3.0,
    shaper_resolution: int = 4096,
    tolerance: float = 0.25 / 255,
    polish_steps: int = 3,
) -> InverseView:
    """Build the inverse of `forward` over the display cube.

    Args:
        forward: the view transform, `forward(linear (N, 3) float32) -> display (N, 3) float32`. It is called
            a handful of times with large batches (about `forward_size ** 3` and `4 * size ** 3` colours).
        size: nodes per axis of the inverse table (33: ~8 display levels apart).
        forward_size: nodes per axis of the forward table the first search runs on.
        to_working: `(3, 3)` matrix from scene linear to the space whose non-negative values the search
            explores (default identity: non-negative scene-linear RGB). A wider gamut lets the search reach
            display colours that need out-of-gamut light, e.g. FilmLight E-Gamut for AgX.
        headroom_stops: stops searched above the level where greys saturate.
        shaper_resolution: entries per channel of the shaper table.
        tolerance: display distance (max over channels) under which a node counts as reached.
        polish_steps: Gauss-Newton steps against `forward` itself after the table search.

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
    if polish_steps < 0:
        raise ValueError(f"polish_steps must be >= 0, got {polish_steps}")
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
    shaper, _top = Shaper.fit(
        levels, oracle.working(greys), headroom_stops=headroom_stops, resolution=shaper_resolution
    )

    # 3. Sample the forward transform over the shaper cube and along its diagonal (one batch).
    diagonal_units = np.linspace(0.0, 1.0, 1025, dtype=np.float32)
    diagonal = np.repeat(diagonal_units[:, None], 3, axis=1)
    sampled = oracle.units(np.concatenate([_grid(forward_size), diagonal]), shaper).astype(np.float64)
    forward_table = sampled[: forward_size**3].reshape((forward_size,) * 3 + (3,))
    neutral = sampled[forward_size**3 :]

    # 4. Start from the per-channel inverse of the diagonal, then search the forward table.
    targets = _grid(size).astype(np.float64)
    units = np.empty_like(targets)
    for c in range(3):
        units[:, c] = _first_crossing(neutral[:, c], diagonal_units, targets[:, c])
    units = _search_table(forward_table, targets, units)

    # 5. Polish against the forward transform itself.
    units, reached = _polish(oracle, shaper, targets, units, polish_steps)
    distance = np.max(np.abs(reached - targets), axis=1)

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
        nodes=units.astype(np.float32).reshape(shape + (3,)),
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


def _first_crossing(response: np.ndarray, units: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The lowest u where a sampled monotone-ish response reaches each target (ends clamp)."""
    response = np.maximum.accumulate(response)
    rising = np.concatenate([[True], np.diff(response) > 0])
    return np.interp(targets, response[rising], units[rising])


def _table_value_and_jacobian(table: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear value `(N, 3)` and Jacobian `(N, out 3, in 3)` of a `(n, n, n, 3)` table at `units`."""
    n = table.shape[0]
    x = np.clip(units, 0.0, 1.0) * (n - 1)
    i = np.minimum(x.astype(np.int64), n - 2)
    f = x - i
    corner = {}
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                corner[dr, dg, db] = table[i[:, 0] + dr, i[:, 1] + dg, i[:, 2] + db].astype(np.float64)
    fr, fg, fb = (f[:, k, None] for k in range(3))

    def lerp(a, b, t):
        return a + (b - a) * t

    # Collapse b, then g, keeping the differences needed for the derivatives.
    along_b = {(dr, dg): lerp(corner[dr, dg, 0], corner[dr, dg, 1], fb) for dr in (0, 1) for dg in (0, 1)}
    along_g = {dr: lerp(along_b[dr, 0], along_b[dr, 1], fg) for dr in (0, 1)}
    value = lerp(along_g[0], along_g[1], fr)
    d_r = along_g[1] - along_g[0]
    d_g = lerp(along_b[0, 1] - along_b[0, 0], along_b[1, 1] - along_b[1, 0], fr)
    slope_b = {(dr, dg): corner[dr, dg, 1] - corner[dr, dg, 0] for dr in (0, 1) for dg in (0, 1)}
    d_b = lerp(lerp(slope_b[0, 0], slope_b[0, 1], fg), lerp(slope_b[1, 0], slope_b[1, 1], fg), fr)
    jacobian = np.stack([d_r, d_g, d_b], axis=2) * (n - 1)
    return value, jacobian


def _lm_step(jacobian: np.ndarray, residual: np.ndarray, damping: np.ndarray) -> np.ndarray:
    """Levenberg-Marquardt step `(N, 3)`: solve (J^T J + damping * diag(J^T J) + tiny) step = -J^T r."""
    jtj = np.einsum("nki,nkj->nij", jacobian, jacobian)
    jtr = np.einsum("nki,nk->ni", jacobian, residual)
    diag = np.einsum("nii->ni", jtj)
    lhs = jtj + np.eye(3) * (damping[:, None] * (diag + 1e-6))[:, None, :]
    return -np.linalg.solve(lhs, jtr[..., None])[..., 0]


def _search_table(table: np.ndarray, targets: np.ndarray, units: np.ndarray, iterations: int = 40):
    """Minimise |table(u) - target|^2 over u in [0, 1]^3 for every target (projected Levenberg-Marquardt)."""
    units = units.copy()
    damping = np.full(len(units), 1e-3)
    value, jacobian = _table_value_and_jacobian(table, units)
    cost = np.sum((value - targets) ** 2, axis=1)
    for _ in range(iterations):
        step = _lm_step(jacobian, value - targets, damping)
        trial = np.clip(units + step, 0.0, 1.0)
        trial_value, trial_jacobian = _table_value_and_jacobian(table, trial)
        trial_cost = np.sum((trial_value - targets) ** 2, axis=1)
        better = trial_cost < cost
        units[better], value[better], jacobian[better] = trial[better], trial_value[better], trial_jacobian[better]
        cost[better] = trial_cost[better]
        damping = np.where(better, np.maximum(damping / 3.0, 1e-7), np.minimum(damping * 4.0, 1e7))
    return units


def _polish(oracle: _CountingForward, shaper: Shaper, targets, units, steps: int, probe: float = 1e-3):
    """Gauss-Newton steps on the real forward transform with finite-difference Jacobians.

    Each step sends the current solutions and three probes per node in one batch; a step that makes a node
    worse is undone and retried with more damping. Returns (units, display reached by them).
    """
    n = len(units)
    damping = np.full(n, 1e-4)
    best, best_value, best_cost = units.copy(), None, np.full(n, np.inf)
    current = units.copy()
    for step in range(steps + 1):
        last = step == steps
        # Probe downwards near the top of the box so that every probe stays inside it.
        h = np.where(current + probe <= 1.0, probe, -probe)
        batch = [current] if last else [current] + [current + h * np.eye(3)[k] for k in range(3)]
        values = oracle.units(np.concatenate(batch).astype(np.float32), shaper).astype(np.float64)
        value = values[:n]
        cost = np.sum((value - targets) ** 2, axis=1)
        better = cost < best_cost
        best[better], best_cost[better] = current[better], cost[better]
        best_value = value if best_value is None else np.where(better[:, None], value, best_value)
        damping = np.where(better, np.maximum(damping / 3.0, 1e-7), np.minimum(damping * 10.0, 1e7))
        if last:
            break
        jacobian = np.stack([(values[(k + 1) * n : (k + 2) * n] - value) / h[:, k, None] for k in range(3)], 2)
        # A worse node restarts from its best point, using the Jacobian measured at the worse one.
        residual = np.where(better[:, None], value, best_value) - targets
        current = np.clip(best + _lm_step(jacobian, residual, damping), 0.0, 1.0)
    return best, best_value


# Interpolation --------------------------------------------------------------------------------------------


def _cell_table(nodes: np.ndarray) -> np.ndarray:
    """Every cell's 8 corners side by side, `((S-1)**3, 8 * C)`, so that one gather fetches a whole cell.

    Corner order is (dr, dg, db) = 000, 001, 010, 011, 100, ... which `_interpolate_cells` collapses b-last.
    """
    cells = nodes.shape[0] - 1
    corners = [
        nodes[dr : dr + cells, dg : dg + cells, db : db + cells]
        for dr in (0, 1)
        for dg in (0, 1)
        for db in (0, 1)
    ]
    # Corner order r, g, b with b fastest; _interpolate_cells collapses r first (the slowest half-split).
    return np.ascontiguousarray(np.stack(corners, axis=3).reshape(cells**3, -1), dtype=np.float32)


def _interpolate_cells(cells: np.ndarray, size: int, display: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a cell table at `(N, 3)` points of the unit cube: `(N, C)` float32."""
    steps = size - 1
    x = np.clip(display, 0.0, 1.0)
    x *= np.float32(steps)
    index = np.minimum(x.astype(np.int32), steps - 1)
    x -= index  # now the fractions
    flat = index[:, 0] * (steps * steps)
    flat += index[:, 1] * steps
    flat += index[:, 2]
    block = np.take(cells, flat, axis=0)
    width = block.shape[1] // 2
    for axis in range(3):
        low, high = block[:, :width], block[:, width:]
        high = high - low
        high *= x[:, axis, None]
        high += low
        block = high
        width //= 2
    return block


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


def _replace_atomically(path: Path, write: Callable) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
