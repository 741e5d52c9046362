# SPDX-License-Identifier: GPL-3.0-or-later
"""Input checks shared by the core's public functions: one wording for every "must be ..., got ..." error."""

import math

import numpy as np


def describe(value: object) -> str:
    """A bad value as an error message quotes it: arrays by shape and dtype, long reprs by type name."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) < 80 else type(value).__name__


def check_number(name: str, value: object, low: float, high: float, *, open_low: bool = False) -> float:
    """`value` as a float in [low, high] (or (low, high] with `open_low`); bools and NaN are refused."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = math.isfinite(number) and (number > low if open_low else number >= low) and number <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{low}, {high}], got {value!r}")
    return number


def check_mask(
    name: str, mask: object, shape: tuple[int, int], *, optional: bool = False
) -> np.ndarray | None:
    """`mask` as a bool array of `shape`; None passes through when `optional`."""
    if mask is None and optional:
        return None
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != shape:
        raise ValueError(f"{name} must be a bool array of shape {shape}, got {describe(mask)}")
    return mask
