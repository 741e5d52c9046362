# SPDX-License-Identifier: GPL-3.0-or-later
"""Animated GIFs of a stylised sequence with numpy and a plain-Python LZW encoder (demo; not shipped)."""

import math
import os
import struct
from collections.abc import Sequence

import numpy as np

from stylepass_core.atomic_file import write_blocks
from stylepass_core.checks import check_number, describe

# LZW codes are at most 12 bits; 8-bit pixels start at 9-bit codes.
_GIF_MAX_CODE = 4096
_GIF_MIN_CODE_SIZE = 8
# 6 x 7 x 6 = 252 colours: the eye separates greens best, so green gets the seventh level.
_GIF_LEVELS = (6, 7, 6)


def _check_rgb(name: str, image: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A non-empty real `(H, W, 3)` array, of `shape` when given."""
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype.kind not in "iuf"
        or 0 in image.shape
    ):
        raise ValueError(f"{name} must be a non-empty real (H, W, 3) RGB array, got {describe(image)}")
    if shape is not None and image.shape[:2] != shape:
        raise ValueError(f"{name} must be {shape[0]} x {shape[1]} pixels, got {describe(image)}")
    return image


def _bayer(size: int) -> np.ndarray:
    """Ordered-dither thresholds in (0, 1), `(size, size)`, size a power of two (Bayer's recursive matrix)."""
    matrix = np.zeros((1, 1), dtype=np.int64)
    while matrix.shape[0] < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return (matrix + 0.5) / matrix.size


def _gif_palette() -> bytes:
    """The 6 x 7 x 6 uniform palette, padded with black to 256 entries; index = r * 42 + g * 6 + b."""
    red, green, blue = (np.round(np.arange(n) * (255.0 / (n - 1))).astype(np.uint8) for n in _GIF_LEVELS)
    r, g, b = np.meshgrid(red, green, blue, indexing="ij")
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: r.size] = np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)
    return table.tobytes()


def _quantise(frame: np.ndarray, dither: bool) -> np.ndarray:
    """Palette indices `(H, W)` uint8 of an RGB frame in [0, 1]."""
    height, width = frame.shape[:2]
    if dither:
        tile = _bayer(8).astype(np.float32)
        threshold = np.tile(tile, (height // 8 + 1, width // 8 + 1))[:height, :width]
    else:
        threshold = np.float32(0.5)
    index = np.zeros((height, width), dtype=np.int32)
    for channel, levels in enumerate(_GIF_LEVELS):
        level = np.clip(frame[..., channel], 0.0, 1.0) * np.float32(levels - 1) + threshold
        level = np.minimum(level.astype(np.int32), levels - 1)
        index = index * levels + level
    return index.astype(np.uint8)


def _lzw_codes(data: bytes) -> list[int]:
    """GIF LZW codes of 8-bit symbols: a clear code first, a clear whenever the 4096-entry table is full."""
    clear = 1 << _GIF_MIN_CODE_SIZE
    first_free = clear + 2
    codes = [clear]
    table: dict[int, int] = {}
    next_code = first_free
    prefix = data[0]
    # The hot loop: one dict lookup per symbol with an int key (prefix code << 8 | symbol).
    for symbol in data[1:]:
        key = (prefix << 8) | symbol
        code = table.get(key)
        if code is not None:
            prefix = code
            continue
        codes.append(prefix)
        if next_code < _GIF_MAX_CODE:
            table[key] = next_code
            next_code += 1
        else:
            codes.append(clear)
            table.clear()
            next_code = first_free
        prefix = symbol
    codes.append(prefix)
    codes.append(clear + 1)  # end of information
    return codes


def _pack_codes(codes: list[int]) -> bytes:
    """Pack LZW codes LSB-first at GIF's growing widths (9 to 12 bits, restarting after each clear).

    The k-th code after a clear is read while the decoder's next free entry is `first_free - 1 + k` (it
    adds one entry per code after the first), so its width is the bit length of that number, 9 to 12.
    """
    clear = 1 << _GIF_MIN_CODE_SIZE
    values = np.asarray(codes, dtype=np.int64)
    position = np.arange(values.size)
    clears = np.where(values == clear, position, -1)
    last_clear = np.maximum.accumulate(clears)
    since = position - np.concatenate([[-1], last_clear[:-1]]) - 1  # codes since the previous clear
    since[0] = 0
    widths = np.frexp((clear + 1 + since).astype(np.float64))[1]  # exponent = bit length for integers
    widths = np.clip(widths, _GIF_MIN_CODE_SIZE + 1, 12)
    ends = np.cumsum(widths)
    owner = np.repeat(position, widths)
    bit = np.arange(int(ends[-1])) - (ends - widths)[owner]
    bits = ((values[owner] >> bit) & 1).astype(np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def _sub_blocks(data: bytes) -> bytes:
    pieces = [data[i : i + 255] for i in range(0, len(data), 255)]
    return b"".join(bytes([len(piece)]) + piece for piece in pieces) + b"\x00"


def write_gif(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: float,
    *,
    dither: bool = True,
    loop: int = 0,
) -> None:
    """Write frames as an animated GIF, atomically, with numpy and a plain-Python LZW encoder.

    Colours map onto a fixed 6 x 7 x 6 uniform palette (252 colours), with an 8 x 8 Bayer ordered dither
    when `dither` is on: a fixed pattern, so it does not crawl from frame to frame the way error diffusion
    would. GIF delays are whole hundredths of a second; they are rounded cumulatively, so 24 fps mixes 4
    and 5 and 24 frames last exactly one second.

    Args:
        path: Destination; written through a temporary file in the same folder, then renamed over it.
        frames: At least one `(H, W, 3)` float frame in [0, 1] (clipped), all the same size, H and W <= 65535.
        fps: Frames per second, in (0, 100].
        dither: Ordered dithering instead of rounding to the nearest level.
        loop: Repeat count for the NETSCAPE2.0 extension, 0 = forever, int in [0, 65535].

    Raises:
        ValueError: on an empty list, mismatched or wrong shapes, NaN, or settings out of range.
    """
    # 1. Check inputs
    if not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty list of (H, W, 3) images, got {describe(frames)}")
    first = _check_rgb("frames[0]", frames[0])
    height, width = first.shape[:2]
    if height > 65535 or width > 65535:
        raise ValueError(f"GIF frames are at most 65535 x 65535 pixels, got {describe(first)}")
    fps = check_number("fps", fps, 0.0, 100.0)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not isinstance(loop, int | np.integer) or isinstance(loop, bool) or not 0 <= loop <= 65535:
        raise ValueError(f"loop must be an int in [0, 65535], got {loop!r}")
    if not isinstance(dither, bool):
        raise ValueError(f"dither must be a bool, got {dither!r}")
    for t, frame in enumerate(frames):
        frame = _check_rgb(f"frames[{t}]", frame, (height, width))
        if frame.dtype.kind != "f":
            raise ValueError(f"frames[{t}] must be float in [0, 1], got {describe(frame)}")
        if np.isnan(frame).any():
            raise ValueError(f"frames[{t}] contains NaN; replace it before writing a GIF")

    # 2. Header, global palette and the looping extension
    blocks = [
        b"GIF89a",
        struct.pack("<HHBBB", width, height, 0xF7, 0, 0),  # global table of 2^(7+1) colours, 8-bit
        _gif_palette(),
        b"\x21\xff\x0bNETSCAPE2.0" + struct.pack("<BBHB", 3, 1, int(loop), 0),
    ]

    # 3. One graphic control extension, image descriptor and LZW stream per frame
    for t, frame in enumerate(frames):
        # Half-up rounding of the cumulative time (round() would round halves to even).
        delay = math.floor(100 * (t + 1) / fps + 0.5) - math.floor(100 * t / fps + 0.5)
        blocks.append(b"\x21\xf9\x04" + struct.pack("<BHBB", 0x04, delay, 0, 0))  # disposal: leave in place
        blocks.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0))
        indices = _quantise(np.asarray(frame, dtype=np.float32), dither).tobytes()
        blocks.append(bytes([_GIF_MIN_CODE_SIZE]) + _sub_blocks(_pack_codes(_lzw_codes(indices))))
    blocks.append(b"\x3b")
    write_blocks(path, blocks)
