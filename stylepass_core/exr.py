# SPDX-License-Identifier: GPL-3.0-or-later
"""OpenEXR reader and writer in plain numpy, for the scanline files Stylepass asks Blender for and writes.

Blender has no Python API that hands render passes over as arrays in background mode, so Stylepass saves the
render result as a multilayer EXR with codec NONE and reads it back here. Uncompressed scanline data is a
fixed-size record per line, so whole parts decode with a handful of numpy views instead of an OpenEXR build.

What Blender writes (`save_render`, OPEN_EXR_MULTILAYER, codec NONE, 32 bit), checked on 4.5 and 5.2:

- 4.5: one part. Channels `ViewLayer.Combined.{R,G,B,A}`, `ViewLayer.Depth.Z`, `ViewLayer.Normal.{X,Y,Z}`,
  `ViewLayer.Vector.{X,Y,Z,W}`, `ViewLayer.IndexOB.X`.
- 5.x: one part per pass; part 0 is named `ViewLayer.Combined` and holds only Combined; the others are
  named `ViewLayer.Depth`, `ViewLayer.Normal`, `ViewLayer.Vector`, `ViewLayer.Object Index`. Channel names
  are still the full ones (`ViewLayer.Object Index.X`, `ViewLayer.Depth.Z`, ...). With
  `use_exr_interleave = True` 5.x writes one part like 4.5 (but keeps the `Object Index` name).

`read_exr` returns every channel under its full name, so callers see the same keys for both layouts.

Stylepass's own files are uncompressed too, except what it keeps many of (the compositor's layers files):
those use ZIPS (one scanline per zlib stream), which Blender and every OpenEXR reader read, and which this
reader decodes as well.
"""

import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .atomic_file import write_blocks

__all__ = ["ExrError", "group_passes", "read_exr", "write_exr"]


class ExrError(ValueError):
    """The data is not an EXR this reader handles (compressed, tiled, deep, truncated or corrupt)."""


_MAGIC = b"\x76\x2f\x31\x01"
# Version field: low byte is the format version (2), the rest are flags.
_FLAG_TILED = 0x200
_FLAG_LONG_NAMES = 0x400
_FLAG_DEEP = 0x800
_FLAG_MULTIPART = 0x1000
_NO_COMPRESSION, _ZIPS_COMPRESSION = 0, 2

_COMPRESSION_NAMES = (
    "NO_COMPRESSION",
    "RLE_COMPRESSION",
    "ZIPS_COMPRESSION",
    "ZIP_COMPRESSION",
    "PIZ_COMPRESSION",
    "PXR24_COMPRESSION",
    "B44_COMPRESSION",
    "B44A_COMPRESSION",
    "DWAA_COMPRESSION",
    "DWAB_COMPRESSION",
    "HTJ2K256_COMPRESSION",
    "HTJ2K32_COMPRESSION",
    "LJ2K_COMPRESSION",
    "ZSTD_COMPRESSION",
)

# Pixel type code -> little-endian storage dtype (UINT = 0, HALF = 1, FLOAT = 2).
_PIXEL_DTYPES = (np.dtype("<u4"), np.dtype("<f2"), np.dtype("<f4"))
_UINT, _HALF, _FLOAT = 0, 1, 2

# Upper bound for names in a header; anything longer means we are reading garbage, not a name.
_MAX_NAME_BYTES = 255

# Channel suffixes in the order a pass's components are conventionally stacked: colour, vector, UV, alpha.
# EXR stores channels sorted by name (A before B before G before R), so the order must be restored by hand.
_CHANNEL_ORDER = {name: rank for rank, name in enumerate(("R", "G", "B", "X", "Y", "Z", "U", "V", "W", "A"))}


@dataclass
class _Part:
    """One part's header fields that decoding needs."""

    index: int
    name: str | None = None
    type: str | None = None
    channels: list[tuple[str, int, int, int]] | None = None  # (name, pixel type, x sampling, y sampling)
    compression: int | None = None
    data_window: tuple[int, int, int, int] | None = None  # x_min, y_min, x_max, y_max, inclusive
    chunk_count: int | None = None
    has_tiles: bool = False


class _Cursor:
    """Bounds-checked reads from the header area, so corrupt input fails with ExrError, not IndexError."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ExrError(f"EXR data is truncated or corrupt: ran out of bytes reading {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def cstring(self, what: str) -> str:
        window = bytes(self.data[self.pos : self.pos + _MAX_NAME_BYTES + 1])
        end = window.find(b"\0")
        if end < 0:
            raise ExrError(f"EXR data is truncated or corrupt: unterminated {what}")
        self.pos += end + 1
        return window[:end].decode("utf-8", errors="replace")

    def peek_byte(self) -> int:
        if self.pos >= len(self.data):
            raise ExrError("EXR data is truncated or corrupt: header ends early")
        return self.data[self.pos]


def _parse_chlist(value: memoryview) -> list[tuple[str, int, int, int]]:
    cursor = _Cursor(value)
    channels = []
    while cursor.peek_byte() != 0:
        name = cursor.cstring("channel name")
        pixel_type, _linear, x_sampling, y_sampling = struct.unpack(
            "<iB3xii", cursor.take(16, "channel list")
        )
        if pixel_type not in (_UINT, _HALF, _FLOAT):
            raise ExrError(f"EXR channel {name!r} has unknown pixel type {pixel_type}")
        channels.append((name, pixel_type, x_sampling, y_sampling))
    return channels


def _parse_header(cursor: _Cursor, part: _Part) -> None:
    while cursor.peek_byte() != 0:
        name = cursor.cstring("attribute name")
        type_name = cursor.cstring("attribute type")
        (size,) = struct.unpack("<i", cursor.take(4, f"size of attribute {name!r}"))
        value = cursor.take(size, f"attribute {name!r}")
        if name == "channels" and type_name == "chlist":
            part.channels = _parse_chlist(value)
        elif name == "compression" and size >= 1:
            part.compression = value[0]
        elif name == "dataWindow" and type_name == "box2i" and size == 16:
            part.data_window = struct.unpack("<4i", value)
        elif name == "name" and type_name == "string":
            part.name = bytes(value).decode("utf-8", errors="replace")
        elif name == "type" and type_name == "string":
            part.type = bytes(value).decode("utf-8", errors="replace")
        elif name == "chunkCount" and type_name == "int" and size == 4:
            (part.chunk_count,) = struct.unpack("<i", value)
        elif name == "tiles":
            part.has_tiles = True
    cursor.take(1, "end of header")


def _check_part(part: _Part, multipart: bool, flags: int) -> tuple[int, int, int, int]:
    """Refuse what this reader does not decode, naming the reason. Returns the data window."""
    label = f"EXR part {part.index} ({part.name!r})" if multipart else "EXR file"
    only = "Stylepass reads only the scanline EXR it writes itself (codec NONE or ZIPS)"
    if flags & _FLAG_DEEP or (part.type or "").startswith("deep"):
        raise ExrError(f"{label} holds deep data; {only}")
    if (flags & _FLAG_TILED and not multipart) or part.has_tiles or part.type == "tiledimage":
        raise ExrError(f"{label} is tiled; {only}")
    if part.channels is None or part.compression is None or part.data_window is None:
        raise ExrError(f"{label} lacks a required attribute (channels, compression or dataWindow)")
    if part.compression not in (_NO_COMPRESSION, _ZIPS_COMPRESSION):
        code = part.compression
        name = _COMPRESSION_NAMES[code] if code < len(_COMPRESSION_NAMES) else f"unknown compression {code}"
        raise ExrError(f"{label} uses {name}; {only}")
    x_min, y_min, x_max, y_max = part.data_window
    if x_max < x_min or y_max < y_min:
        raise ExrError(f"{label} has an empty or inverted dataWindow {part.data_window}")
    for name, _pixel_type, x_sampling, y_sampling in part.channels:
        if (x_sampling, y_sampling) != (1, 1):
            raise ExrError(
                f"EXR channel {name!r} is subsampled ({x_sampling}x{y_sampling}); only full-resolution "
                "channels are supported"
            )
    return part.data_window


def _decode_part(
    buf: np.ndarray, part: _Part, offsets: np.ndarray, multipart: bool, width: int, height: int
) -> list[tuple[str, np.ndarray]]:
    """Decode one uncompressed scanline part into `(H, W)` float32 arrays, top row first."""
    channels = part.channels or []
    sizes = [_PIXEL_DTYPES[pixel_type].itemsize for _name, pixel_type, _xs, _ys in channels]
    line_bytes = width * sum(sizes)
    # 1. Chunk headers: [part number,] y, byte count. Gather them all at once. Each record names its own
    # line, so INCREASING_Y, DECREASING_Y and RANDOM_Y files need no look at the lineOrder attribute.
    prefix = 12 if multipart else 8
    if offsets.size != height:
        raise ExrError(f"EXR part {part.index} has {offsets.size} chunks for {height} lines")
    zips = part.compression == _ZIPS_COMPRESSION
    smallest = prefix if zips else prefix + line_bytes
    if offsets.size and (offsets.min() < 0 or offsets.max() > buf.size - smallest):
        raise ExrError(f"EXR part {part.index} is truncated: a line's data lies beyond the end of the file")
    heads = buf[offsets[:, None] + np.arange(prefix)].view("<i4")
    if multipart and np.any(heads[:, 0] != part.index):
        raise ExrError(f"EXR part {part.index} is corrupt: its offset table points at another part's data")
    rows = heads[:, -2].astype(np.int64) - part.data_window[1]
    if (
        (np.any(heads[:, -1] > line_bytes) or np.any(heads[:, -1] < 0))
        if zips
        else np.any(heads[:, -1] != line_bytes)
    ):
        raise ExrError(f"EXR part {part.index} is corrupt: a line holds other than {line_bytes} bytes")
    if not np.array_equal(np.sort(rows), np.arange(height)):
        raise ExrError(
            f"EXR part {part.index} is corrupt: its lines do not cover the dataWindow exactly once"
        )
    if zips:
        lines = _unzip_lines(
            buf, offsets + prefix, heads[:, -1].astype(np.int64), rows, line_bytes, part.index
        )
        return _channels_of(lines, channels, sizes, width)

    # 2. All lines as one (H, line_bytes) byte matrix. Writers store the records back to back, so this is
    # normally a strided view of the file; otherwise copy line by line.
    order = np.argsort(offsets, kind="stable")
    step = prefix + line_bytes
    start = int(offsets[order[0]])
    if np.array_equal(offsets[order] - start, np.arange(height, dtype=np.int64) * step):
        lines = buf[start : start + height * step].reshape(height, step)[:, prefix:]
        phys_rows = rows[order]
        if np.array_equal(phys_rows, np.arange(height)):
            pass
        elif np.array_equal(phys_rows, np.arange(height)[::-1]):
            lines = lines[::-1]  # DECREASING_Y: the same records, bottom line first
        else:
            lines = lines[np.argsort(phys_rows)]
    else:
        lines = np.empty((height, line_bytes), dtype=np.uint8)
        for row, offset in zip(rows.tolist(), offsets.tolist(), strict=True):
            lines[row] = buf[offset + prefix : offset + prefix + line_bytes]

    return _channels_of(lines, channels, sizes, width)


def _channels_of(lines: np.ndarray, channels, sizes, width: int) -> list[tuple[str, np.ndarray]]:
    """Within a line each channel is a run of `width` samples, in channel-list order."""
    out = []
    column = 0
    for (name, pixel_type, _xs, _ys), size in zip(channels, sizes, strict=True):
        block = lines[:, column : column + width * size]
        column += width * size
        # A view with a wider dtype needs only the last axis contiguous, which column slices are.
        out.append((name, block.view(_PIXEL_DTYPES[pixel_type]).astype(np.float32)))
    return out


def _unzip_lines(
    buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, rows: np.ndarray, line_bytes: int, index: int
) -> np.ndarray:
    """ZIPS lines (`_zip_lines` undone) as one `(H, line_bytes)` byte matrix, top row first."""
    lines = np.empty((rows.size, line_bytes), dtype=np.uint8)
    packed = np.empty_like(lines)
    raw = np.zeros(rows.size, dtype=bool)
    for row, start, size in zip(rows.tolist(), starts.tolist(), sizes.tolist(), strict=True):
        data = buf[start : start + size]
        if size == line_bytes:  # a line zlib could not shrink is stored as it is
            lines[row], raw[row] = data, True
            continue
        try:
            packed[row] = np.frombuffer(zlib.decompress(data.tobytes(), bufsize=line_bytes), dtype=np.uint8)
        except (zlib.error, ValueError) as error:
            raise ExrError(f"EXR part {index} is corrupt: line {row} does not inflate ({error})") from error
    # Undo the predictor (each byte was stored as its difference to the one before, plus 128), then the split
    # into even and odd bytes.
    packed[:, 1:] -= np.uint8(128)
    np.cumsum(packed, axis=1, dtype=np.uint8, out=packed)
    half = (line_bytes + 1) // 2
    unpacked = np.empty_like(packed)
    unpacked[:, 0::2], unpacked[:, 1::2] = packed[:, :half], packed[:, half:]
    lines[~raw] = unpacked[~raw]
    return lines


def _zip_lines(lines: np.ndarray, level: int) -> list[bytes]:
    """Each line as OpenEXR's ZIPS stores it: even bytes then odd bytes, each byte as the difference to the one
    before plus 128, deflated; a line that would not shrink is stored as it is."""
    half = (lines.shape[1] + 1) // 2
    packed = np.empty_like(lines)
    packed[:, :half], packed[:, half:] = lines[:, 0::2], lines[:, 1::2]
    predicted = packed.copy()
    predicted[:, 1:] = packed[:, 1:] - packed[:, :-1] + np.uint8(128)
    out = []
    for line, row in zip(predicted, lines, strict=True):
        data = zlib.compress(line.tobytes(), level)
        out.append(data if len(data) < row.size else row.tobytes())
    return out


def _buffer_of(source: str | os.PathLike | bytes) -> np.ndarray:
    if isinstance(source, bytes | bytearray | memoryview):
        return np.frombuffer(source, dtype=np.uint8)
    with open(source, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ExrError(f"{os.fspath(source)!r} is empty, not an EXR file")
        # Reading straight into an array skips the extra copy that bytes() plus frombuffer would cost (about
        # 50 ms for a 1080p render). A memory map would be faster still but keeps the file locked on Windows
        # for as long as a traceback holds a view of it, and faults (SIGBUS) if the file shrinks meanwhile.
        buffer = np.empty(size, dtype=np.uint8)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            count = handle.readinto(view[filled:])
            if not count:
                break
            filled += count
    return buffer[:filled]


def channel_names(path: str | os.PathLike) -> list[str]:
    """The channel names of a single-part EXR file, read from its header alone (a layers file's header is a
    few hundred bytes; its pixels may be tens of megabytes).

    Raises:
        ExrError: not an EXR, or a header this reader does not parse; OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    cursor = _Cursor(memoryview(head))
    if bytes(cursor.take(4, "magic number")) != _MAGIC:
        raise ExrError("not an OpenEXR file (bad magic number)")
    cursor.take(4, "version")
    part = _Part(0)
    _parse_header(cursor, part)
    if part.channels is None:
        raise ExrError("EXR header lacks its channel list")
    return [name for name, *_ in part.channels]


def read_exr(source: str | os.PathLike | bytes) -> dict[str, np.ndarray]:
    """Read every channel of an uncompressed scanline OpenEXR file, single- or multi-part.

    Args:
        source: Path of the file, or its bytes.

    Returns:
        Full channel name -> `(H, W)` float32 array, top row first, covering the part's dataWindow (which may
        not start at 0; the display window is not applied). Names are as stored, e.g.
        `"ViewLayer.Depth.Z"` or `"R"`; in a multi-part file a channel whose name does not already start
        with its part's name gets `"<part name>."` in front, as Blender's own reader does (Houdini writes
        such files). HALF and UINT samples are converted to float32 (UINT exactly up to 2**24).

    Raises:
        ExrError: The data is not an EXR, is truncated or corrupt, or uses what this reader does not decode
            (compression, tiles, deep data, subsampled channels). Two parts giving the same full channel
            name also raise, rather than one silently hiding the other.
        OSError: The file cannot be opened.
    """
    buf = _buffer_of(source)
    head = _Cursor(memoryview(buf))
    if bytes(head.take(4, "magic number")) != _MAGIC:
        raise ExrError("not an OpenEXR file (bad magic number)")
    (version,) = struct.unpack("<I", head.take(4, "version"))
    if version & 0xFF != 2:
        raise ExrError(f"unsupported OpenEXR format version {version & 0xFF}")
    flags = version & ~0xFF
    multipart = bool(flags & _FLAG_MULTIPART)

    # 1. Headers: one, or for multi-part a list ended by an empty header.
    parts = []
    while True:
        part = _Part(len(parts))
        _parse_header(head, part)
        parts.append(part)
        if not multipart or head.peek_byte() == 0:
            break
    if multipart:
        head.take(1, "end of header list")
    windows = [_check_part(part, multipart, flags) for part in parts]

    # 2. Offset tables, one per part, one entry per line (uncompressed scanline chunks hold one line).
    tables = []
    for part, (_x0, y_min, _x1, y_max) in zip(parts, windows, strict=True):
        count = part.chunk_count if multipart else y_max - y_min + 1
        if count is None or count < 0:
            raise ExrError(f"EXR part {part.index} lacks a valid chunkCount")
        raw = head.take(8 * count, f"offset table of part {part.index}")
        tables.append(np.frombuffer(raw, dtype="<u8").astype(np.int64))

    # 3. Pixels.
    channels: dict[str, np.ndarray] = {}
    for part, (x_min, y_min, x_max, y_max), offsets in zip(parts, windows, tables, strict=True):
        width, height = x_max - x_min + 1, y_max - y_min + 1
        for name, pixels in _decode_part(buf, part, offsets, multipart, width, height):
            if multipart and part.name and not name.startswith(part.name + "."):
                name = f"{part.name}.{name}"
            if name in channels:
                raise ExrError(f"EXR channel name {name!r} occurs in more than one part")
            channels[name] = pixels
    return channels


def _attribute(name: str, type_name: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + type_name.encode() + b"\0" + struct.pack("<i", len(value)) + value


def write_exr(
    path: str | os.PathLike, channels: Mapping[str, np.ndarray], half: bool = False, compress: bool = False
) -> None:
    """Write a single-part scanline OpenEXR file atomically, uncompressed or (`compress`) ZIPS.

    Args:
        path: Destination; written through a temporary file in the same folder, then renamed over it.
        channels: Full channel name (e.g. `"ViewLayer.Depth.Z"`) -> `(H, W)` array, top row first, all the
            same shape. uint32 arrays are stored as UINT; any other real dtype as FLOAT (or HALF).
        half: Store non-uint32 channels as 16-bit HALF instead of 32-bit FLOAT (values beyond +-65504
            become infinite).
        compress: Deflate each scanline (ZIPS, lossless): slower to write, often a fraction of the size.

    Raises:
        ValueError: No channels, a bad channel name, or arrays that are not one common `(H, W)` shape.
    """
    # 1. Check inputs.
    if not channels:
        raise ValueError("write_exr needs at least one channel, got none")
    shape = None
    encoded = []
    for name, array in channels.items():
        raw_name = name.encode("utf-8") if isinstance(name, str) else b""
        if not raw_name or b"\0" in raw_name or len(raw_name) > _MAX_NAME_BYTES:
            raise ValueError(f"EXR channel names must be 1-{_MAX_NAME_BYTES} bytes without NUL, got {name!r}")
        array = np.asarray(array)
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"channel {name!r} must be a non-empty (H, W) array, got shape {array.shape}")
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise ValueError(f"channel {name!r} has shape {array.shape}, others have {shape}")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"channel {name!r} has non-numeric dtype {array.dtype}")
        pixel_type = _UINT if array.dtype == np.uint32 else _HALF if half else _FLOAT
        encoded.append((raw_name, pixel_type, array))
    height, width = shape
    # OpenEXR keeps the channel list sorted by the names' bytes (strcmp order).
    encoded.sort(key=lambda item: item[0])

    # 2. Header: the required attributes, sorted by name like OpenEXR's own writer.
    chlist = b"".join(raw + b"\0" + struct.pack("<iB3xii", ptype, 0, 1, 1) for raw, ptype, _a in encoded)
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = b"".join(
        (
            _attribute("channels", "chlist", chlist + b"\0"),
            _attribute(
                "compression", "compression", bytes([_ZIPS_COMPRESSION if compress else _NO_COMPRESSION])
            ),
            _attribute("dataWindow", "box2i", window),
            _attribute("displayWindow", "box2i", window),
            _attribute("lineOrder", "lineOrder", b"\0"),
            _attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
            _attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
            _attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
            b"\0",
        )
    )
    long_names = any(len(raw) > 31 for raw, _p, _a in encoded)
    version = 2 | (_FLAG_LONG_NAMES if long_names else 0)
    preamble = _MAGIC + struct.pack("<I", version) + header

    # 3. One record per line: y, byte count, then each channel's samples. Built as one byte matrix.
    line_bytes = width * sum(_PIXEL_DTYPES[ptype].itemsize for _r, ptype, _a in encoded)
    records = np.empty((height, 8 + line_bytes), dtype=np.uint8)
    records[:, 0:4] = np.arange(height, dtype="<i4").view(np.uint8).reshape(height, 4)
    records[:, 4:8] = np.frombuffer(struct.pack("<i", line_bytes), dtype=np.uint8)
    column = 8
    for _raw, ptype, array in encoded:
        dtype = _PIXEL_DTYPES[ptype]
        # Straight into the line records (one copy, converting on the way).
        target = records[:, column : column + width * dtype.itemsize].view(dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # documented: beyond the half range becomes inf
            target[...] = array
        column += width * dtype.itemsize
    first = len(preamble) + 8 * height
    if not compress:
        offsets = first + np.arange(height, dtype="<u8") * np.uint64(8 + line_bytes)
        write_blocks(path, [preamble, offsets.astype("<u8").tobytes(), records])
        return
    chunks = []
    for row, data in enumerate(_zip_lines(records[:, 8:], level=1)):
        chunks.append(struct.pack("<ii", row, len(data)) + data)
    sizes = np.array([len(chunk) for chunk in chunks], dtype=np.uint64)
    offsets = first + np.concatenate(([0], np.cumsum(sizes)[:-1])).astype("<u8")
    write_blocks(path, [preamble, offsets.astype("<u8").tobytes(), *chunks])


def _layer_pass_channel(name: str, view_layer: str | None) -> tuple[str, str, str] | None:
    if view_layer is not None:
        if not name.startswith(view_layer + "."):
            return None
        pass_name, dot, channel = name[len(view_layer) + 1 :].rpartition(".")
        return (view_layer, pass_name, channel) if dot and pass_name else None
    # Blender's reader splits the same way: the channel after the last dot, the pass before it, and the
    # layer is the rest, because layer names like "ViewLayer.001" may contain dots.
    pieces = name.rsplit(".", 2)
    return (pieces[0], pieces[1], pieces[2]) if len(pieces) == 3 and all(pieces) else None


def group_passes(channels: Mapping[str, np.ndarray], view_layer: str | None = None) -> dict[str, np.ndarray]:
    """Group a multilayer EXR's `"<layer>.<pass>.<channel>"` channels into one array per pass.

    Blender names passes differently across versions; names are returned as Blender wrote them:

    ======== ========================= =========================
    Pass     Blender 4.5               Blender 5.x
    ======== ========================= =========================
    Colour   `Combined` (R, G, B, A)   `Combined` (R, G, B, A)
    Depth    `Depth` (Z)               `Depth` (Z)
    Normal   `Normal` (X, Y, Z)        `Normal` (X, Y, Z)
    Motion   `Vector` (X, Y, Z, W)     `Vector` (X, Y, Z, W)
    Index    `IndexOB` (X)             `Object Index` (X)
    ======== ========================= =========================

    Depth is planar: distance along the camera's view axis, not along the ray (a plane facing the camera
    reads the same everywhere); Cycles writes 1e10 where no surface was hit. With compositing enabled, 4.5
    also writes the composited image as a `Composite` layer (`Composite.Combined.{R,G,B,A}`), so then pass
    `view_layer` explicitly.

    Args:
        channels: Full channel name -> `(H, W)` array, as returned by `read_exr`.
        view_layer: Layer to take, e.g. `"ViewLayer"`. If None, the channels must name exactly one layer.

    Returns:
        Pass name -> `(H, W, C)` float32 array, channels in natural order (R, G, B before A; X, Y, Z before
        W; U before V; unknown channel names last, alphabetically).

    Raises:
        ValueError: view_layer is None and the channels name no layer or several, the named layer has no
            channels, or one pass's channels differ in shape.
    """
    parsed = {name: _layer_pass_channel(name, view_layer) for name in channels}
    layers = sorted({item[0] for item in parsed.values() if item is not None})
    if view_layer is None:
        if len(layers) != 1:
            found = ", ".join(repr(layer) for layer in layers) or "none"
            raise ValueError(
                f"view_layer=None needs channels of exactly one layer, found layers: {found} "
                f"(channels: {sorted(channels)[:8]})"
            )
        view_layer = layers[0]
    elif not layers:
        raise ValueError(
            f"no channel belongs to view layer {view_layer!r} (channels: {sorted(channels)[:8]})"
        )

    by_pass: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, item in parsed.items():
        if item is not None and item[0] == view_layer:
            by_pass.setdefault(item[1], []).append((item[2], channels[name]))
    passes = {}
    for pass_name, members in by_pass.items():
        members.sort(key=lambda member: (_CHANNEL_ORDER.get(member[0], len(_CHANNEL_ORDER)), member[0]))
        shapes = {np.shape(array) for _channel, array in members}
        if len(shapes) != 1:
            raise ValueError(f"pass {pass_name!r} mixes channel shapes {sorted(shapes)}")
        passes[pass_name] = np.stack([np.asarray(array, dtype=np.float32) for _c, array in members], axis=-1)
    return passes
