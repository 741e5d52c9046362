# SPDX-License-Identifier: GPL-3.0-or-later
"""A labelled grid of images (passes, results) that a person can look at in one picture (the demo's).

Labels use a built-in 5x7 pixel font so the demo needs no imaging library.
"""

import numpy as np

from stylepass_core.imageops import resize

# 5x7 glyphs, one string of five 0/1 characters per row.
_FONT = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
}
_GLYPHS = {
    char: np.array([[bit == "1" for bit in row] for row in rows.split()], dtype=bool)
    for char, rows in _FONT.items()
}


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """`(7 * scale, 6 * scale * len(text))` bool mask of `text` (upper-cased; unknown characters as blanks)."""
    blank = _GLYPHS[" "]
    columns = []
    for char in text.upper():
        columns.append(_GLYPHS.get(char, blank))
        columns.append(np.zeros((7, 1), dtype=bool))
    mask = np.concatenate(columns, axis=1) if columns else np.zeros((7, 0), dtype=bool)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    image = np.clip(image.astype(np.float32), 0.0, 1.0)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[..., :3]


def contact_sheet(tiles: list[tuple[str, np.ndarray]], columns: int = 4, tile_width: int = 256) -> np.ndarray:
    """Lay `(label, image)` pairs out in a grid with a caption above each.

    Args:
        tiles: images as (H, W), (H, W, 1|3|4) float in [0, 1] or uint8/uint16.
        columns: tiles per row.
        tile_width: width of each tile in pixels; heights follow the first image's aspect ratio.

    Returns:
        `(rows * (tile_h + caption), columns * tile_width, 3)` float32 in [0, 1].
    """
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile, got none")
    if columns < 1 or tile_width < 16:
        raise ValueError(f"columns must be >= 1 and tile_width >= 16, got {columns!r} and {tile_width!r}")
    first = _as_rgb(tiles[0][1])
    tile_height = max(1, round(tile_width * first.shape[0] / first.shape[1]))
    caption = 7 * 2 + 8
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (tile_height + caption), columns * tile_width, 3), 0.12, dtype=np.float32)
    for i, (label, image) in enumerate(tiles):
        top = (i // columns) * (tile_height + caption)
        left = (i % columns) * tile_width
        sheet[top + caption : top + caption + tile_height, left : left + tile_width] = resize(
            _as_rgb(image), (tile_height, tile_width)
        )
        mask = text_mask(label)[:, : tile_width - 8]
        sheet[top + 4 : top + 4 + mask.shape[0], left + 4 : left + 4 + mask.shape[1]][mask] = 1.0
    return sheet
