# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker's wire format: JSON for control, one framed binary container for pixels. No pickle, no base64.

A frame (content type `application/vnd.stylepass.frame`) is:

    bytes 0-3     b"SPF1"                      magic and frame format version
    bytes 4-7     uint32 little-endian H       length of the JSON header, padding included
    next H bytes  UTF-8 JSON, space-padded     {"meta": {...}, "arrays": [spec, ...], "payload_bytes": N}
    next N bytes  payload                      each array's bytes at a 64-byte aligned offset

The header is padded with spaces (valid JSON whitespace) so the payload starts 64-byte aligned. An array
spec is `{"name", "shape", "dtype", "encoding", "wire_dtype", "offset", "nbytes"}`: `dtype` is what the
receiver gets back (numpy `dtype.str`, little-endian), `wire_dtype` what travels, `offset` counts from the
payload start. Encodings:

- `raw`: the values as they are; an integer array may travel in a smaller type that holds every value.
- `unorm8` / `unorm16`: a float array with every value in [0, 1] travels as `round(v * 255)` uint8 or
  `round(v * 65535)` uint16 and comes back as `u / 255` or `u / 65535` in its float dtype. `unorm8` is only
  chosen when that round trip is bit-exact (maps read from 8-bit PNGs, flat colours); `unorm16` changes a
  value by at most 1/131070 (7.6e-6), 32 times finer than float16 near 1 and four times faster to convert.

`precision="exact"` sends every array raw (bit-exact); `"auto"` picks the encodings above and keeps
float32 for anything outside [0, 1] or non-finite (scene-linear colour, depth in metres). The client uses
exact on loopback (copying costs what converting saves) and auto over a network (about 40 % of the bytes).

`read_frame` checks every size against `Limits` before it allocates anything, and reads straight from a
stream into one preallocated buffer; raw arrays are views of that buffer.
"""

import ipaddress
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..engine_api import StyleRequest, StyleResult

PROTOCOL_VERSION = 1
"""The API generation; its routes live under `API_PREFIX`."""
API_PREFIX = "/v1"
WORKER_VERSION = "0.1.0"

FRAME_CONTENT_TYPE = "application/vnd.stylepass.frame"
JSON_CONTENT_TYPE = "application/json"
TOKEN_ENV = "STYLEPASS_WORKER_TOKEN"
"""Environment variable a parent uses to hand the worker its token (argv would show it in `ps`)."""

PRECISIONS = ("auto", "exact")

_MAGIC = b"SPF1"
_PREAMBLE = struct.Struct("<4sI")
_ALIGN = 64
_MAX_NDIM = 4
_MAX_NAME = 200
_SAMPLE = 4096  # elements tried before the full (costlier) bit-exact unorm8 check

# Little-endian numeric types only: anything else (objects, strings, big-endian) is refused on read.
_DTYPES = {
    np.dtype(t).str: np.dtype(t)
    for t in ("|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8")
}
_UNORM = {"unorm8": (np.dtype("|u1"), 255), "unorm16": (np.dtype("<u2"), 65535)}


class FrameError(ValueError):
    """A frame is malformed or does not fit the protocol; the message says what is wrong."""


class FrameTooLarge(FrameError):
    """A frame, its header or its decoded arrays exceed the configured `Limits` (HTTP 413)."""


class FrameTruncated(FrameError):
    """The stream ended before the frame did (the other side went away mid-transfer)."""


@dataclass(frozen=True)
class Limits:
    """Sizes a reader refuses before allocating.

    Attributes:
        max_upload_bytes: Largest frame accepted (header and payload). The default admits a 4K frame with
            every control pass as float32 (~370 MB) and 8K in the `auto` precision.
        max_header_bytes: Largest JSON header of a frame.
        max_json_body_bytes: Largest JSON request body of a control endpoint.
        max_arrays: Most arrays in one frame.
        max_decoded_bytes: Largest total size of the arrays after decoding (`unorm8` grows 4x).
    """

    max_upload_bytes: int = 1 << 30
    max_header_bytes: int = 1 << 20
    max_json_body_bytes: int = 1 << 16
    max_arrays: int = 64
    max_decoded_bytes: int = 4 << 30

    @classmethod
    def for_upload(cls, max_upload_bytes: int) -> "Limits":
        """Limits scaled to an upload cap: decoded arrays may be at most four times the upload."""
        if not isinstance(max_upload_bytes, int) or max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes must be an int >= 1024, got {max_upload_bytes!r}")
        return cls(max_upload_bytes=max_upload_bytes, max_decoded_bytes=4 * max_upload_bytes)

    def to_json(self) -> dict[str, int]:
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_header_bytes": self.max_header_bytes,
            "max_json_body_bytes": self.max_json_body_bytes,
            "max_arrays": self.max_arrays,
            "max_decoded_bytes": self.max_decoded_bytes,
        }


# --------------------------------------------------------------------------------------------------------
# Writing


class Frame:
    """An encoded frame as a list of byte chunks: no concatenation, raw arrays are sent from their memory.

    Usable directly as a `requests` body (it has a length and iterates over its chunks) or written chunk by
    chunk to a socket file.
    """

    def __init__(self, chunks: list[memoryview | bytes], spec: dict[str, Any]) -> None:
        self.chunks = chunks
        self.spec = spec
        self.nbytes = sum(memoryview(c).nbytes for c in chunks)

    def __len__(self) -> int:
        return self.nbytes

    def __iter__(self) -> Iterator[memoryview | bytes]:
        return iter(self.chunks)

    def to_bytes(self) -> bytes:
        return b"".join(bytes(c) for c in self.chunks)


def encode_frame(meta: dict[str, Any], arrays: dict[str, np.ndarray], precision: str = "auto") -> Frame:
    """Pack a JSON-able `meta` and named arrays into a `Frame`.

    Args:
        meta: JSON-able control data (e.g. a `StyleRequest` header).
        arrays: Named numeric arrays, any shape up to 4 dimensions.
        precision: `"auto"` (compact where lossless or within 1/131070) or `"exact"` (bit-exact).

    Raises:
        ValueError: unknown precision, a non-numeric array, or `meta` not JSON-able.
    """
    # 1. Check inputs
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    for name, array in arrays.items():
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
            raise ValueError(f"array names must be strings of 1-{_MAX_NAME} characters, got {name!r}")
        if not isinstance(array, np.ndarray) or array.ndim > _MAX_NDIM:
            raise ValueError(f"array {name!r} must be a numpy array with <= {_MAX_NDIM} dimensions")
        if array.dtype.newbyteorder("<").str not in _DTYPES:
            raise ValueError(f"array {name!r} has dtype {array.dtype}, which the protocol does not carry")

    # 2. Encode each array and lay the payload out
    specs, blobs, offset = [], [], 0
    for name, array in arrays.items():
        encoding, wire = _encode_array(array, precision)
        offset += -offset % _ALIGN
        specs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "dtype": array.dtype.newbyteorder("<").str,
                "encoding": encoding,
                "wire_dtype": wire.dtype.str,
                "offset": offset,
                "nbytes": wire.nbytes,
            }
        )
        blobs.append((offset, wire))
        offset += wire.nbytes
    spec = {"meta": meta, "arrays": specs, "payload_bytes": offset}

    # 3. Header padded so the payload starts aligned
    try:
        header = json.dumps(spec, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"frame meta must be JSON-able: {exc}") from None
    header += b" " * (-(len(header) + _PREAMBLE.size) % _ALIGN)
    chunks: list[memoryview | bytes] = [_PREAMBLE.pack(_MAGIC, len(header)) + header]
    position = 0
    for start, wire in blobs:
        if start > position:
            chunks.append(bytes(start - position))
        if wire.nbytes:
            chunks.append(memoryview(wire.reshape(-1).view(np.uint8)))
        position = start + wire.nbytes
    return Frame(chunks, spec)


def _encode_array(array: np.ndarray, precision: str) -> tuple[str, np.ndarray]:
    """(encoding, C-contiguous little-endian array to send)."""
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    little = np.ascontiguousarray(little)
    if precision == "exact" or little.size == 0:
        return "raw", little
    kind = little.dtype.kind
    if kind == "f":
        flat = little.reshape(-1)
        packed = _unorm8_exact(flat) if _looks_8bit(flat[:_SAMPLE]) else None
        if packed is not None:
            return "unorm8", packed.reshape(little.shape)
        packed = _unorm16(flat)
        if packed is not None:
            return "unorm16", packed.reshape(little.shape)
        return "raw", little
    if kind in "iu":
        low, high = int(little.min()), int(little.max())
        for narrow in ("|u1", "<u2"):
            info = np.iinfo(narrow)
            if low >= 0 and high <= info.max and little.dtype.itemsize > info.bits // 8:
                return "raw", little.astype(narrow)
    return "raw", little


# The float encoders work through the array in cache-sized chunks: each value is read from memory once
# and its temporaries stay in cache, which makes them 2-3 times faster than whole-array numpy expressions.
_CHUNK = 1 << 18


def _looks_8bit(sample: np.ndarray) -> bool:
    scale = sample.dtype.type(255)
    return bool(np.array_equal(np.rint(sample * scale) / scale, sample))


def _unorm8_exact(flat: np.ndarray) -> np.ndarray | None:
    """`round(v * 255)` as uint8 when `u / 255` gives back exactly every value (all in [0, 1]), else None."""
    scale = flat.dtype.type(255)
    out = np.empty(flat.size, "|u1")
    steps = np.empty(min(flat.size, _CHUNK), flat.dtype)
    back = np.empty_like(steps)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        step, check = steps[: part.size], back[: part.size]
        np.multiply(part, scale, out=step)
        np.rint(step, out=step)
        np.divide(step, scale, out=check)
        # Equality also rejects NaN; the range check keeps negative or >1 values from wrapping in uint8.
        if not (np.array_equal(check, part) and step.min() >= 0 and step.max() <= 255):
            return None
        out[start : start + part.size] = step
    return out


def _unorm16(flat: np.ndarray) -> np.ndarray | None:
    """`round(v * 65535)` as uint16 when every value is in [0, 1] (NaN is not), else None."""
    scale, half = flat.dtype.type(65535), flat.dtype.type(0.5)
    out = np.empty(flat.size, "<u2")
    steps = np.empty(min(flat.size, _CHUNK), flat.dtype)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        # NaN fails both comparisons, so non-finite data stays raw.
        if not (part.min() >= 0.0 and part.max() <= 1.0):
            return None
        step = steps[: part.size]
        np.multiply(part, scale, out=step)
        step += half  # in [0.5, 65535.5]: the truncating cast below rounds half up
        out[start : start + part.size] = step
    return out


# --------------------------------------------------------------------------------------------------------
# Reading


def read_frame(
    stream: BinaryIO, content_length: int | None, limits: Limits
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read one frame from `stream` and decode it; sizes are checked before anything large is allocated.

    Args:
        stream: A binary stream with `read` (and ideally `readinto`), e.g. a request's `rfile`.
        content_length: The number of bytes the frame occupies, when the transport says so; None to trust
            the frame's own header (still bounded by `limits`).
        limits: The caps to enforce.

    Returns:
        `(meta, arrays)`; raw arrays are writable views of one buffer, others are fresh arrays.

    Raises:
        FrameTooLarge: the frame, its header or its decoded arrays exceed `limits`.
        FrameTruncated: the stream ended early.
        FrameError: anything else malformed (bad magic, header JSON, dtype, shape, offsets).
    """
    # 1. Preamble and header
    if content_length is not None and content_length > limits.max_upload_bytes:
        raise FrameTooLarge(f"frame of {content_length} bytes exceeds the limit of {limits.max_upload_bytes}")
    magic, header_len = _PREAMBLE.unpack(_read_exactly(stream, _PREAMBLE.size))
    if magic != _MAGIC:
        raise FrameError(f"not a Stylepass frame (magic {magic!r}, expected {_MAGIC!r})")
    if header_len > limits.max_header_bytes:
        raise FrameTooLarge(
            f"frame header of {header_len} bytes exceeds the limit of {limits.max_header_bytes}"
        )
    if content_length is not None and _PREAMBLE.size + header_len > content_length:
        raise FrameError(f"frame header of {header_len} bytes does not fit in {content_length} bytes")
    try:
        spec = json.loads(_read_exactly(stream, header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"frame header is not JSON: {exc}") from None
    meta, entries, payload_bytes = _check_spec(spec, limits)

    # 2. Sizes, before allocating
    total = _PREAMBLE.size + header_len + payload_bytes
    if total > limits.max_upload_bytes:
        raise FrameTooLarge(f"frame of {total} bytes exceeds the limit of {limits.max_upload_bytes}")
    if content_length is not None and total != content_length:
        raise FrameError(f"frame declares {total} bytes but the body has {content_length}")

    # 3. One buffer for the payload (np.empty: not zero-filled first, which halves the cost), then the arrays
    payload = np.empty(payload_bytes, np.uint8)
    _read_into(stream, memoryview(payload))
    arrays = {}
    for entry in entries:
        wire = np.frombuffer(payload, dtype=entry["wire"], count=entry["count"], offset=entry["offset"])
        wire = wire.reshape(entry["shape"])
        arrays[entry["name"]] = _decode_array(wire, entry["dtype"], entry["encoding"])
    return meta, arrays


def decode_frame(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> tuple[dict, dict]:
    """`read_frame` over bytes in memory (tests, small frames)."""
    import io

    view = memoryview(data)
    return read_frame(io.BytesIO(view), view.nbytes, limits or Limits())


def _decode_array(wire: np.ndarray, dtype: np.dtype, encoding: str) -> np.ndarray:
    if encoding == "raw":
        return wire if wire.dtype == dtype else wire.astype(dtype)
    out = wire.astype(dtype)
    out /= dtype.type(_UNORM[encoding][1])  # division, as png.read_png_float does: k/255 comes back bit-exact
    return out


def _check_spec(spec: Any, limits: Limits) -> tuple[dict, list[dict], int]:
    """Validate a frame header; returns (meta, array entries, payload size)."""
    if not isinstance(spec, dict) or set(spec) != {"meta", "arrays", "payload_bytes"}:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise FrameError(f"frame header must have exactly meta, arrays and payload_bytes, got {keys}")
    meta, arrays, payload_bytes = spec["meta"], spec["arrays"], spec["payload_bytes"]
    if not isinstance(meta, dict):
        raise FrameError(f"frame meta must be an object, got {type(meta).__name__}")
    if not _is_count(payload_bytes):
        raise FrameError(f"payload_bytes must be an int >= 0, got {payload_bytes!r}")
    if payload_bytes > limits.max_upload_bytes:
        raise FrameTooLarge(
            f"payload of {payload_bytes} bytes exceeds the limit of {limits.max_upload_bytes}"
        )
    if not isinstance(arrays, list):
        raise FrameError(f"frame arrays must be a list, got {type(arrays).__name__}")
    if len(arrays) > limits.max_arrays:
        raise FrameTooLarge(f"frame has {len(arrays)} arrays, more than the limit of {limits.max_arrays}")
    entries, names, decoded = [], set(), 0
    for item in arrays:
        entry = _check_array_spec(item, payload_bytes)
        if entry["name"] in names:
            raise FrameError(f"array {entry['name']!r} appears twice in the frame")
        names.add(entry["name"])
        decoded += entry["count"] * entry["dtype"].itemsize
        if decoded > limits.max_decoded_bytes:
            raise FrameTooLarge(
                f"the frame's arrays decode to more than the limit of {limits.max_decoded_bytes} bytes"
            )
        entries.append(entry)
    return meta, entries, payload_bytes


def _check_array_spec(item: Any, payload_bytes: int) -> dict[str, Any]:
    keys = {"name", "shape", "dtype", "encoding", "wire_dtype", "offset", "nbytes"}
    if not isinstance(item, dict) or set(item) != keys:
        raise FrameError(f"array spec must have exactly {sorted(keys)}, got {item!r:.200}")
    name, shape = item["name"], item["shape"]
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise FrameError(f"array names must be strings of 1-{_MAX_NAME} characters, got {name!r:.80}")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_count(n) for n in shape):
        raise FrameError(
            f"array {name!r}: shape must be a list of <= {_MAX_NDIM} ints >= 0, got {shape!r:.80}"
        )
    dtype, wire = _DTYPES.get(item["dtype"]), _DTYPES.get(item["wire_dtype"])
    if dtype is None or wire is None:
        raise FrameError(
            f"array {name!r}: dtypes {item['dtype']!r}/{item['wire_dtype']!r} are not little-endian numeric "
            f"types the protocol carries ({sorted(_DTYPES)})"
        )
    encoding = item["encoding"]
    if encoding == "raw":
        lossless = wire == dtype or (
            dtype.kind in "iu" and wire.kind in "iu" and wire.itemsize < dtype.itemsize
        )
        if not lossless:
            raise FrameError(f"array {name!r}: raw {wire} cannot carry {dtype}")
    elif encoding in _UNORM:
        if wire != _UNORM[encoding][0] or dtype.kind != "f":
            raise FrameError(
                f"array {name!r}: {encoding} needs wire dtype {_UNORM[encoding][0]} and a float dtype"
            )
    else:
        raise FrameError(f"array {name!r}: unknown encoding {encoding!r}; known: raw, unorm8, unorm16")
    count = math.prod(shape)
    offset, nbytes = item["offset"], item["nbytes"]
    if not _is_count(offset) or not _is_count(nbytes) or nbytes != count * wire.itemsize:
        raise FrameError(f"array {name!r}: nbytes {nbytes!r} does not match shape {shape} of {wire}")
    if offset + nbytes > payload_bytes:
        raise FrameError(
            f"array {name!r}: bytes {offset}-{offset + nbytes} lie outside the {payload_bytes}-byte payload"
        )
    return {
        "name": name,
        "shape": shape,
        "dtype": dtype,
        "wire": wire,
        "encoding": encoding,
        "offset": offset,
        "count": count,
    }


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    buffer = bytearray(size)
    _read_into(stream, memoryview(buffer))
    return bytes(buffer)


def _read_into(stream: BinaryIO, view: memoryview) -> None:
    """Fill `view` from `stream`; a bounded number of reads (each makes progress or the stream has ended)."""
    readinto = getattr(stream, "readinto", None)
    filled, size = 0, view.nbytes
    while filled < size:
        # Slices bound what a stream that copies internally (urllib3) holds twice.
        part = view[filled : min(size, filled + (32 << 20))]
        if readinto is not None:
            count = readinto(part)
        else:
            data = stream.read(part.nbytes)
            count = len(data)
            part[:count] = data
        if not count:
            raise FrameTruncated(f"the stream ended after {filled} of {size} bytes")
        filled += count


# --------------------------------------------------------------------------------------------------------
# Requests and results


def encode_submit(engine_id: str, request: StyleRequest, precision: str = "auto") -> Frame:
    """The body of `POST /v1/jobs`: the engine id, the request header and its arrays.

    Raises:
        ValueError: the engine id is not a non-empty string or the request does not validate.
    """
    if not isinstance(engine_id, str) or not engine_id:
        raise ValueError(f"engine_id must be a non-empty string, got {engine_id!r}")
    if engine_id != request.engine:
        raise ValueError(
            f"engine_id {engine_id!r} differs from the request settings' engine {request.engine!r}"
        )
    header, arrays = request.to_parts()
    meta = {"kind": "submit", "engine": engine_id, "precision": precision, "request": header}
    return encode_frame(meta, arrays, precision)


def decode_submit(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[str, StyleRequest, str]:
    """`(engine_id, request, precision)` from a submit frame.

    Raises:
        FrameError: the meta is not a submit meta.
        ValueError: the request does not rebuild or validate (the message names the field).
    """
    expected = {"kind", "engine", "precision", "request"}
    if set(meta) != expected or meta.get("kind") != "submit":
        raise FrameError(
            f"submit meta must have exactly {sorted(expected)} and kind 'submit', got {sorted(meta)}"
        )
    engine_id, precision = meta["engine"], meta["precision"]
    if not isinstance(engine_id, str) or not engine_id:
        raise FrameError(f"engine must be a non-empty string, got {engine_id!r}")
    if precision not in PRECISIONS:
        raise FrameError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    request = StyleRequest.from_parts(meta["request"], arrays)
    if request.engine != engine_id:
        raise FrameError(f"engine {engine_id!r} differs from the request settings' engine {request.engine!r}")
    return engine_id, request, precision


def encode_result(
    job_id: str, result: StyleResult, timings: dict[str, float], precision: str = "auto"
) -> Frame:
    """The body of `GET /v1/jobs/<id>/result`."""
    header, arrays = result.to_parts()
    meta = {"kind": "result", "job": job_id, "timings": timings, "result": header}
    return encode_frame(meta, arrays, precision)


def decode_result(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[StyleResult, dict[str, Any]]:
    """`(result, meta)` from a result frame; raises FrameError or ValueError like `decode_submit`."""
    if meta.get("kind") != "result" or not isinstance(meta.get("result"), dict):
        raise FrameError(f"result meta must have kind 'result' and a result header, got {sorted(meta)}")
    return StyleResult.from_parts(meta["result"], arrays), meta


def is_loopback(host: str) -> bool:
    """Whether `host` (a URL's host name) is this machine: `localhost` or a loopback address (127.0.0.0/8,
    ::1). Clients skip proxies and compression for it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
