# SPDX-License-Identifier: GPL-3.0-or-later
"""The frame format: exact and compact round trips, requests and results, and refusal before allocation."""

import io
import json
import struct

import numpy as np
import pytest
from worker_helpers import make_request

from stylepass_core.engine_api import Regions, StyleResult
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.worker import protocol
from stylepass_core.worker.protocol import FrameError, FrameTooLarge, FrameTruncated, Limits


def _roundtrip(arrays, precision="auto", meta=None, limits=None):
    frame = protocol.encode_frame(meta or {"x": 1}, arrays, precision)
    data = frame.to_bytes()
    assert len(data) == len(frame)
    return frame, protocol.decode_frame(data, limits)


def test_exact_is_bit_exact_for_every_dtype():
    rng = np.random.default_rng(1)
    arrays = {
        "f32": rng.normal(size=(5, 7, 3)).astype(np.float32) * 1e6,
        "f64": rng.normal(size=(4,)),
        "f16": rng.random((3, 3)).astype(np.float16),
        "i32": rng.integers(-(2**31), 2**31 - 1, (6, 2), dtype=np.int32),
        "u8": rng.integers(0, 255, (2, 2, 4), dtype=np.uint8),
        "bool": rng.random((3, 4)) > 0.5,
        "empty": np.zeros((0, 3), np.float32),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
    }
    frame, (meta, back) = _roundtrip(arrays, "exact", {"hello": ["world", 1]})
    assert meta == {"hello": ["world", 1]}
    assert {spec["encoding"] for spec in frame.spec["arrays"]} == {"raw"}
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype.newbyteorder("<"), name
        assert back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    assert back["f32"].flags.writeable and back["f32"].flags.c_contiguous


def test_payload_is_64_byte_aligned():
    frame, _ = _roundtrip({"a": np.ones(3, np.uint8), "b": np.ones(5, np.float32)}, "exact")
    header_len = struct.unpack("<I", frame.to_bytes()[4:8])[0]
    assert (8 + header_len) % 64 == 0
    assert all(spec["offset"] % 64 == 0 for spec in frame.spec["arrays"])


def test_auto_picks_lossless_or_near_lossless_encodings():
    rng = np.random.default_rng(2)
    continuous = rng.random((40, 50, 3), dtype=np.float32)
    eight_bit = rng.integers(0, 256, (40, 50, 3)).astype(np.float32) / np.float32(
        255
    )  # as png.read_png_float
    hdr = continuous * 4.0
    with_nan = continuous.copy()
    with_nan[0, 0, 0] = np.nan
    index = rng.integers(0, 300, (40, 50)).astype(np.int32)
    arrays = {"continuous": continuous, "eight_bit": eight_bit, "hdr": hdr, "nan": with_nan, "index": index}
    frame, (_, back) = _roundtrip(arrays)
    encodings = {spec["name"]: (spec["encoding"], spec["wire_dtype"]) for spec in frame.spec["arrays"]}
    assert encodings == {
        "continuous": ("unorm16", "<u2"),
        "eight_bit": ("unorm8", "|u1"),
        "hdr": ("raw", "<f4"),
        "nan": ("raw", "<f4"),
        "index": ("raw", "<u2"),
    }
    assert np.abs(back["continuous"] - continuous).max() <= 1 / 131070 + 1e-9
    np.testing.assert_array_equal(back["eight_bit"], eight_bit)  # bit-exact
    np.testing.assert_array_equal(back["hdr"], hdr)
    np.testing.assert_array_equal(back["nan"], with_nan)
    np.testing.assert_array_equal(back["index"], index)
    assert back["index"].dtype == np.int32 and back["continuous"].dtype == np.float32
    sizes = {spec["name"]: spec["nbytes"] for spec in frame.spec["arrays"]}
    assert sizes["continuous"] == continuous.nbytes // 2 and sizes["eight_bit"] == eight_bit.nbytes // 4


def test_request_and_result_round_trip():
    rng = np.random.default_rng(3)
    settings = DiffusionSettings(
        model="sd15/tiny.safetensors",
        prompt="a house, «quoted» \u00e9",
        steps=4,
        denoise=0.5,
        controls=(
            ControlUnit(map="depth", model="cn/depth", weight=0.5, end=0.6),
            ControlUnit(enabled=False, map="lineart", model="cn/lineart"),
            ControlUnit(map="normal", model="cn/normal", start=0.2),
        ),
        loras=(Lora(file="loras/a.safetensors", weight=-0.5),),
        ip_adapter_model="ip",
        ip_adapter_image="Reference",
    )
    request = make_request(
        (16, 24),
        settings=settings,
        controls={
            "depth": rng.random((16, 24), dtype=np.float32),
            "normal": rng.random((16, 24, 3), dtype=np.float32),
            "segmentation": rng.integers(0, 4, (16, 24)).astype(np.int32),
        },
        images={"ip_adapter_image": rng.random((8, 6, 3), dtype=np.float32)},
        seed=7,
        width=48,
        height=32,
    )
    frame = protocol.encode_submit("DIFFUSION", request, "exact")
    meta, arrays = protocol.decode_frame(frame.to_bytes())
    engine_id, back, precision = protocol.decode_submit(meta, arrays)
    assert (engine_id, precision) == ("DIFFUSION", "exact")
    assert back.settings == request.settings and type(back.settings) is DiffusionSettings
    assert back.settings.controls[2] == ControlUnit(map="normal", model="cn/normal", start=0.2)
    for name in ("engine", "seed", "width", "height"):
        assert getattr(back, name) == getattr(request, name), name
    np.testing.assert_array_equal(back.beauty, request.beauty)
    assert set(back.controls) == set(request.controls) and set(back.images) == {"ip_adapter_image"}
    np.testing.assert_array_equal(back.controls["normal"], request.controls["normal"])
    np.testing.assert_array_equal(back.controls["segmentation"], request.controls["segmentation"])
    assert back.controls["segmentation"].dtype == np.int32
    np.testing.assert_array_equal(back.images["ip_adapter_image"], request.images["ip_adapter_image"])

    result = StyleResult(image=request.beauty[::-1].copy(), info={"engine": "X", "timings": {"total": 0.1}})
    frame = protocol.encode_result("ab" * 16, result, {"run": 0.5}, "exact")
    back_result, meta = protocol.decode_result(*protocol.decode_frame(frame.to_bytes()))
    np.testing.assert_array_equal(back_result.image, result.image)
    assert back_result.info == result.info and meta["timings"] == {"run": 0.5}


def test_request_with_regions_round_trip():
    # Style groups as regions: the layer map (uint8 or int32) and each group's settings travel exactly.
    layer = np.zeros((16, 24), np.uint8)
    layer[:8, :12] = 1
    layer[8:, 12:] = 2
    groups = (
        DiffusionSettings(prompt="a glass vase", style_preset="ink"),
        DiffusionSettings(prompt="a stone wall", negative_prompt="", loras=(Lora(file="l.safetensors"),)),
    )
    for dtype in (np.uint8, np.int32):
        request = make_request(
            (16, 24),
            settings=DiffusionSettings(model="sd15/tiny.safetensors", prompt="a room"),
            regions=Regions(layer=layer.astype(dtype), settings=groups, names=("Vase", "Wall")),
        )
        frame = protocol.encode_submit("DIFFUSION", request)  # "auto" precision, as the client sends
        _, back, _ = protocol.decode_submit(*protocol.decode_frame(frame.to_bytes()))
        assert back.regions.names == ("Vase", "Wall") and back.regions.settings == groups
        assert back.regions.layer.dtype == dtype
        np.testing.assert_array_equal(back.regions.layer, layer)  # bit-exact even at "auto" precision


def test_submit_engine_is_the_settings_engine():
    request = make_request(settings=NeuralStyleSettings(style_preset="style_03"))
    with pytest.raises(
        ValueError, match="'DIFFUSION' differs from the request settings' engine 'NEURAL_STYLE'"
    ):
        protocol.encode_submit("DIFFUSION", request)
    meta, arrays = protocol.decode_frame(protocol.encode_submit("NEURAL_STYLE", request).to_bytes())
    meta["engine"] = "DIFFUSION"
    with pytest.raises(
        FrameError, match="'DIFFUSION' differs from the request settings' engine 'NEURAL_STYLE'"
    ):
        protocol.decode_submit(meta, arrays)


def test_submit_meta_is_checked():
    frame = protocol.encode_frame({"kind": "submit", "engine": "X"}, {})
    with pytest.raises(FrameError, match="submit meta"):
        protocol.decode_submit(*protocol.decode_frame(frame.to_bytes()))
    with pytest.raises(ValueError, match="precision"):
        protocol.encode_frame({}, {}, "lossy")


class _CountingStream(io.BytesIO):
    """Records how much was asked for, to prove nothing large was read (or allocated) before refusing."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requested = 0

    def readinto(self, buffer) -> int:
        self.requested += memoryview(buffer).nbytes
        return super().readinto(buffer)


def _frame_with_header(spec: dict) -> bytes:
    header = json.dumps(spec).encode()
    return b"SPF1" + struct.pack("<I", len(header)) + header


def test_huge_declared_payload_is_refused_before_allocating():
    spec = {
        "meta": {},
        "arrays": [
            {
                "name": "x",
                "shape": [100000, 100000, 3],
                "dtype": "<f4",
                "encoding": "raw",
                "wire_dtype": "<f4",
                "offset": 0,
                "nbytes": 100000 * 100000 * 3 * 4,
            }
        ],
        "payload_bytes": 100000 * 100000 * 3 * 4,
    }
    stream = _CountingStream(_frame_with_header(spec))
    with pytest.raises(FrameTooLarge, match="exceeds the limit"):
        protocol.read_frame(stream, None, Limits())
    assert stream.requested < 4096  # only preamble and header were read


def test_limits_refuse_header_upload_arrays_and_decoded_size():
    small = Limits(max_upload_bytes=4096, max_header_bytes=512, max_arrays=2, max_decoded_bytes=1000)
    with pytest.raises(FrameTooLarge):
        protocol.read_frame(io.BytesIO(b""), 5000, small)  # Content-Length alone
    big_header = b"SPF1" + struct.pack("<I", 10_000) + b" " * 10_000
    with pytest.raises(FrameTooLarge, match="header"):
        protocol.read_frame(io.BytesIO(big_header), None, small)
    many = protocol.encode_frame({}, {f"a{i}": np.zeros(1, np.uint8) for i in range(3)}, "exact").to_bytes()
    with pytest.raises(FrameTooLarge, match="arrays"):
        protocol.decode_frame(many, small)
    # 300 bytes of unorm8 decode to 1200 bytes of float32: over max_decoded_bytes.
    grows = protocol.encode_frame({}, {"a": np.full(300, 1.0, np.float32)}).to_bytes()
    with pytest.raises(FrameTooLarge, match="decode"):
        protocol.decode_frame(grows, small)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["arrays"][0].update(dtype="|O", wire_dtype="|O"), "little-endian numeric"),
        (lambda s: s["arrays"][0].update(dtype=">f4", wire_dtype=">f4"), "little-endian numeric"),
        (lambda s: s["arrays"][0].update(nbytes=7), "does not match shape"),
        (lambda s: s["arrays"][0].update(offset=10**6), "outside"),
        (lambda s: s["arrays"][0].update(shape=[1, 1, 1, 1, 4]), "shape"),
        (lambda s: s["arrays"][0].update(encoding="pickle"), "unknown encoding"),
        (lambda s: s["arrays"][0].update(wire_dtype="<f2"), "cannot carry"),
        (lambda s: s["arrays"].append(dict(s["arrays"][0])), "twice"),
        (lambda s: s.update(extra=1), "exactly meta"),
    ],
)
def test_malformed_headers_are_refused(mutate, message):
    frame = protocol.encode_frame({}, {"a": np.arange(4, dtype=np.float32)}, "exact")
    spec = json.loads(json.dumps(frame.spec))
    mutate(spec)
    data = _frame_with_header(spec) + bytes(64)
    with pytest.raises(FrameError, match=message):
        protocol.read_frame(io.BytesIO(data), None, Limits())


def test_bad_magic_json_and_truncation():
    with pytest.raises(FrameError, match="magic"):
        protocol.decode_frame(b"GIF89a" + bytes(100))
    with pytest.raises(FrameError, match="not JSON"):
        protocol.read_frame(io.BytesIO(b"SPF1" + struct.pack("<I", 5) + b"{nope"), None, Limits())
    data = protocol.encode_frame({}, {"a": np.arange(1000, dtype=np.float64)}, "exact").to_bytes()
    with pytest.raises(FrameTruncated):
        protocol.read_frame(io.BytesIO(data[:-10]), None, Limits())
    with pytest.raises(FrameError, match="declares"):
        protocol.read_frame(io.BytesIO(data), len(data) + 5, Limits())


def test_frame_works_as_a_requests_body():
    import requests

    frame = protocol.encode_frame({}, {"a": np.ones((4, 4), np.float32)}, "exact")
    prepared = requests.Request("POST", "http://127.0.0.1:1/v1/jobs", data=frame).prepare()
    assert prepared.headers["Content-Length"] == str(len(frame))
    assert "Transfer-Encoding" not in prepared.headers
