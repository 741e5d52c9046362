# SPDX-License-Identifier: GPL-3.0-or-later
"""The numpy PNG codec: round trips, every filter type from a hand-made reference encoder, other encoders'
files (PIL, Blender) and hostile input."""

import importlib.util
import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from stylepass_core import png

RNG = np.random.default_rng(11)


# 1. A reference encoder written straight from the PNG specification, one byte at a time.


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind] if kind <= 4 else 0
        out.append((x - predictor) % 256)
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode(
    rows: list[bytes], width: int, depth: int, color_type: int, kinds: list[int], extra: bytes = b"", **ihdr
) -> bytes:
    """PNG bytes of already packed sample rows, filtering row i with kinds[i]."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = max(1, channels * depth // 8)
    prev = bytes(len(rows[0]))
    raw = bytearray()
    for kind, row in zip(kinds, rows, strict=True):
        raw += bytes([kind]) + _filter_row(kind, row, prev, bpp)
        prev = row
    header = struct.pack(">IIBBBBB", width, len(rows), depth, color_type, 0, 0, ihdr.get("interlace", 0))
    stream = zlib.compress(bytes(raw), 9)
    # Split the stream over several IDAT chunks, as many encoders do.
    idats = b"".join(_chunk(b"IDAT", stream[i : i + 50]) for i in range(0, len(stream), 50))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + idats + _chunk(b"IEND", b"")


def _pack(samples: np.ndarray, depth: int) -> list[bytes]:
    """(H, W, C) integer samples -> packed big-endian byte rows."""
    height = samples.shape[0]
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in samples.reshape(height, -1)]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in samples.reshape(height, -1)]
    rows = []
    for row in samples.reshape(height, -1):
        bits = "".join(format(int(v), f"0{depth}b") for v in row)
        bits += "0" * (-len(bits) % 8)
        rows.append(bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)))
    return rows


ALL_KINDS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("color_type", "depth"), [(0, 8), (0, 16), (2, 8), (2, 16), (4, 8), (4, 16), (6, 8), (6, 16)]
)
@pytest.mark.parametrize("kinds", ["each", "mixed"])
def test_every_filter_type(color_type, depth, kinds):
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    height, width = 11, 13
    # Smooth plus noise, so that predictors and wrap-around both matter.
    y, x = np.mgrid[0:height, 0:width]
    top = 2**depth - 1
    base = (x * 37 + y * 91)[:, :, None] + np.arange(channels) * 50
    samples = (base * (top // 255) + RNG.integers(0, top // 8, size=(height, width, channels))) % (top + 1)
    if kinds == "each":
        # Every filter type on every row in turn, and each row type after each other row type.
        row_kinds = [ALL_KINDS[i % 5] for i in range(height)]
        row_kinds[5:] = [4, 4, 3, 3, 1, 2]
    else:
        row_kinds = RNG.integers(0, 5, size=height).tolist()
    data = _encode(_pack(samples, depth), width, depth, color_type, row_kinds)
    decoded = png.read_png(data)
    assert decoded.dtype == (np.uint16 if depth == 16 else np.uint8)
    assert decoded.shape == (height, width, channels)
    assert np.array_equal(decoded, samples)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_single_filter_type_whole_image(kind):
    samples = RNG.integers(0, 256, size=(9, 20, 3))
    data = _encode(_pack(samples, 8), 20, 8, 2, [kind] * 9)
    assert np.array_equal(png.read_png(data), samples)


def test_paeth_in_bands(monkeypatch):
    # Large images decode Average/Paeth in bands of rows; force several small bands.
    monkeypatch.setattr(png, "_WAVEFRONT_BUDGET_CELLS", 1)
    samples = RNG.integers(0, 256, size=(150, 17, 4))
    kinds = RNG.integers(0, 5, size=150).tolist()
    data = _encode(_pack(samples, 8), 17, 8, 6, kinds)
    assert np.array_equal(png.read_png(data), samples)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_grey_scaled_like_libpng(depth):
    levels = RNG.integers(0, 2**depth, size=(5, 11, 1))
    data = _encode(_pack(levels, depth), 11, depth, 0, [0, 1, 2, 3, 4])
    decoded = png.read_png(data)
    assert decoded.dtype == np.uint8 and decoded.shape == (5, 11, 1)
    assert np.array_equal(decoded, levels * (255 // (2**depth - 1)))


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_palette(depth, with_alpha):
    entries = 2**depth if depth < 8 else 200
    palette = RNG.integers(0, 256, size=(entries, 3), dtype=np.uint8)
    indices = RNG.integers(0, entries, size=(7, 10, 1))
    extra = _chunk(b"PLTE", palette.tobytes())
    alpha = RNG.integers(0, 256, size=entries // 2, dtype=np.uint8)  # tRNS may be shorter than PLTE
    if with_alpha:
        extra += _chunk(b"tRNS", alpha.tobytes())
    data = _encode(_pack(indices, depth), 10, depth, 3, [0, 1, 2, 3, 4, 4, 2], extra=extra)
    decoded = png.read_png(data)
    expected = palette[indices[..., 0]]
    if with_alpha:
        full_alpha = np.concatenate([alpha, np.full(entries - alpha.size, 255, dtype=np.uint8)])
        expected = np.concatenate([expected, full_alpha[indices]], axis=-1)
    assert np.array_equal(decoded, expected)


def test_palette_index_out_of_range():
    extra = _chunk(b"PLTE", bytes(range(6)))  # two entries
    data = _encode(_pack(np.full((2, 2, 1), 5), 8), 2, 8, 3, [0, 0], extra=extra)
    with pytest.raises(png.PngError, match="palette entry 5"):
        png.read_png(data)


# 2. Our writer.


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("depth", [8, 16])
def test_round_trip_integers(tmp_path, channels, depth):
    dtype = np.uint8 if depth == 8 else np.uint16
    image = RNG.integers(0, np.iinfo(dtype).max + 1, size=(17, 23, channels), dtype=dtype)
    path = tmp_path / "x.png"
    png.write_png(path, image, bit_depth=depth)
    decoded = png.read_png(path)
    assert decoded.dtype == dtype and np.array_equal(decoded, image)
    assert np.array_equal(png.read_png(path.read_bytes()), image)


def test_round_trip_2d_and_non_contiguous(tmp_path):
    image = RNG.integers(0, 256, size=(10, 30, 3), dtype=np.uint8)
    png.write_png(tmp_path / "a.png", image[:, ::-2, 1])
    assert np.array_equal(png.read_png(tmp_path / "a.png"), image[:, ::-2, 1:2])


@pytest.mark.parametrize("depth", [8, 16])
def test_float_quantised_and_clipped(tmp_path, depth):
    top = 2**depth - 1
    image = np.array([[[-0.5, 0.0, 0.25], [0.5, 1.0, 7.0], [np.inf, -np.inf, 1 / top]]], dtype=np.float32)
    png.write_png(tmp_path / "f.png", image, bit_depth=depth)
    decoded = png.read_png(tmp_path / "f.png")
    expected = np.round(np.clip(image.astype(np.float64), 0, 1) * top)
    assert np.array_equal(decoded, expected)
    as_float = png.read_png_float(tmp_path / "f.png")
    assert as_float.dtype == np.float32 and as_float.max() == 1.0 and as_float.min() == 0.0
    assert np.allclose(as_float, expected / top, atol=1e-7)


def test_read_png_float_uint8(tmp_path):
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    png.write_png(tmp_path / "g.png", image)
    values = png.read_png_float(tmp_path / "g.png")
    assert values.shape == (16, 16, 1) and values[0, 0, 0] == 0.0 and values[-1, -1, 0] == 1.0


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((4, 4), dtype=np.uint16), {}, "bit_depth=16"),
        (np.zeros((4, 4), dtype=np.uint8), {"bit_depth": 16}, "bit_depth=8"),
        (np.zeros((4, 4), dtype=np.int64), {}, "dtype int64"),
        (np.zeros((4, 4)), {"bit_depth": 12}, "bit_depth must be"),
        (np.zeros((4, 4)), {"compress_level": 10}, "compress_level"),
        (np.zeros((4, 4, 5)), {}, "C in 1-4"),
        (np.zeros((0, 4)), {}, "H, W > 0"),
        (np.zeros(4), {}, r"\(H, W\)"),
        (np.full((2, 2), np.nan), {}, "NaN"),
    ],
)
def test_write_rejects_bad_input(tmp_path, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        png.write_png(tmp_path / "bad.png", image, **kwargs)
    assert not list(tmp_path.iterdir())


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    png.write_png(path, np.zeros((2, 2), dtype=np.uint8))
    old = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        png.write_png(path, np.ones((2, 2), dtype=np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# 3. Hostile input.


def _valid() -> bytes:
    buffer = io.BytesIO()
    image = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    rows = _pack(image, 8)
    buffer.write(_encode(rows, 8, 8, 2, [0, 1, 2, 3, 4, 0, 1, 2]))
    return buffer.getvalue()


def test_bad_signature():
    with pytest.raises(png.PngError, match="signature"):
        png.read_png(b"GIF89a" + bytes(50))


def test_truncated_everywhere():
    data = _valid()
    for cut in range(len(data)):
        with pytest.raises(png.PngError, match=r"truncated|signature|corrupt"):
            png.read_png(data[:cut])


def test_bad_crc_anywhere():
    data = _valid()
    for at in range(8, len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        with pytest.raises(png.PngError):
            png.read_png(bytes(damaged))


def test_corrupt_stream_with_valid_crc():
    header = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"not zlib at all")
    with pytest.raises(png.PngError, match="corrupt"):
        png.read_png(data + _chunk(b"IEND", b""))
    short = zlib.compress(b"\0\1\2")  # fewer bytes than 2 rows of 1 + 2 samples
    with pytest.raises(png.PngError, match="truncated"):
        png.read_png(
            b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", short) + _chunk(b"IEND", b"")
        )


def test_unknown_filter_and_interlace_and_critical_chunk():
    rows = _pack(np.zeros((2, 2, 1)), 8)
    data = _encode(rows, 2, 8, 0, [0, 5])
    with pytest.raises(png.PngError, match="filter type 5"):
        png.read_png(data)
    with pytest.raises(png.PngError, match="interlaced"):
        png.read_png(_encode(rows, 2, 8, 0, [0, 0], interlace=1))
    with pytest.raises(png.PngError, match="critical chunk"):
        png.read_png(_encode(rows, 2, 8, 0, [0, 0], extra=_chunk(b"ABCD", b"")))
    ancillary = _encode(
        rows, 2, 8, 0, [0, 0], extra=_chunk(b"tEXt", b"Comment\0hello") + _chunk(b"gAMA", bytes(4))
    )
    assert png.read_png(ancillary).shape == (2, 2, 1)
    with pytest.raises(png.PngError, match="colour type 3 with bit depth 16"):
        png.read_png(_encode(_pack(np.zeros((2, 2, 1)), 16), 2, 16, 3, [0, 0]))


# 4. Other encoders.


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"])
def test_pil_written(mode, tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    y, x = np.mgrid[0:70, 0:90]
    rgba = np.stack([x * 2, y * 3, (x + y) % 256, 255 - x], axis=-1).astype(np.uint8)
    rgba = (rgba + RNG.integers(0, 6, size=rgba.shape)).astype(np.uint8)
    if mode == "I;16":
        source = image_module.fromarray(rgba[..., 0].astype(np.uint16) * 257 + 3)
    else:
        source = image_module.fromarray(rgba, "RGBA").convert(mode)
    path = tmp_path / "pil.png"
    source.save(path)  # PIL picks filter types per row adaptively
    decoded = png.read_png(path)
    if mode == "P":
        reread = image_module.open(path)  # PIL's own palette may carry alpha that it saves as tRNS
        expected = np.asarray(reread.convert("RGBA" if "transparency" in reread.info else "RGB"))
    elif mode == "1":
        expected = np.asarray(source.convert("L"))
    else:
        expected = np.asarray(source)
    expected = expected.reshape(decoded.shape)
    assert np.array_equal(decoded, expected)
    # And PIL reads what we write.
    png.write_png(tmp_path / "ours.png", decoded, bit_depth=16 if decoded.dtype == np.uint16 else 8)
    assert np.array_equal(
        np.asarray(image_module.open(tmp_path / "ours.png")).reshape(decoded.shape), decoded
    )


_BLENDER_SAVE = """
import sys
import bpy
import numpy as np

height, width = 37, 53
y, x = np.mgrid[0:height, 0:width]
# Opaque: without alpha, RGB and BW output would be premultiplied.
pixels = np.stack([x / width, y / height, (x * y) % 7 / 7, np.ones(x.shape)], -1).astype(np.float32)
image = bpy.data.images.new("probe", width, height, alpha=True)
image.pixels.foreach_set(pixels[::-1].ravel())  # Blender rows run bottom-up
scene = bpy.context.scene
# Standard: the default view transform (AgX/Filmic) would change the stored levels.
scene.view_settings.view_transform = "Standard"
scene.view_settings.look = "None"
settings = scene.render.image_settings
for mode, depth in (("RGBA", "8"), ("RGB", "16"), ("BW", "8")):
    if bpy.app.version >= (5, 0, 0):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode, settings.color_depth, settings.compression = mode, depth, 90
    image.save_render(f"{sys.argv[1]}/{mode}{depth}.png", scene=scene)
np.save(f"{sys.argv[1]}/source.npy", pixels)
"""


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs Blender as a Python module (bpy)")
def test_blender_written(tmp_path):
    # In a subprocess, so bpy never enters this test process.
    script = tmp_path / "save.py"
    script.write_text(textwrap.dedent(_BLENDER_SAVE))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    source = np.load(tmp_path / "source.npy")
    expected8 = np.round(source * 255)  # a byte image: Blender stored these levels
    rgba = png.read_png(tmp_path / "RGBA8.png")
    assert rgba.dtype == np.uint8 and np.array_equal(rgba, expected8)
    rgb16 = png.read_png(tmp_path / "RGB16.png")
    assert rgb16.dtype == np.uint16 and np.array_equal(rgb16, expected8[..., :3] * 257)
    grey = png.read_png(tmp_path / "BW8.png")
    luma = expected8[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert grey.shape == (37, 53, 1) and np.abs(grey[..., 0] - luma).max() <= 0.5


def test_to_uint8_rounds_as_write_png_stores():
    values = np.array([[[0.0, 0.5 / 255 - 1e-6, 0.5 / 255], [1.0, 1.5, -0.2]]], dtype=np.float32)
    np.testing.assert_array_equal(png.to_uint8(values), [[[0, 0, 1], [255, 255, 0]]])
    same = np.zeros((2, 2, 3), np.uint8)
    assert png.to_uint8(same) is same
    with pytest.raises(ValueError, match="NaN"):
        png.to_uint8(np.full((1, 1, 3), np.nan, np.float32))
