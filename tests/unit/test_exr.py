# SPDX-License-Identifier: GPL-3.0-or-later
"""The numpy OpenEXR codec: round trips, hostile input, and agreement with the reference `OpenEXR` package."""

import importlib.util
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stylepass_core import exr

RNG = np.random.default_rng(7)
H, W = 6, 9


def _channels() -> dict[str, np.ndarray]:
    return {
        "ViewLayer.Combined.R": RNG.normal(size=(H, W)).astype(np.float32),
        "ViewLayer.Combined.A": RNG.random((H, W), dtype=np.float32),
        "ViewLayer.Depth.Z": np.full((H, W), 1e10, dtype=np.float32),
        "Z": np.arange(H * W, dtype=np.float32).reshape(H, W),
    }


def _written(tmp_path, channels=None, **kwargs) -> bytes:
    path = tmp_path / "image.exr"
    exr.write_exr(path, channels if channels is not None else _channels(), **kwargs)
    return path.read_bytes()


def _replace_attribute(data: bytes, name: str, type_name: str, value: bytes) -> bytes:
    """Patch the value of a same-sized attribute in the first header."""
    key = name.encode() + b"\0" + type_name.encode() + b"\0" + struct.pack("<i", len(value))
    at = data.index(key) + len(key)
    return data[:at] + value + data[at + len(value) :]


def _layout(data: bytes, height: int) -> tuple[int, list[int], int]:
    """(offset table position, offsets, record size) of a single-part file written by write_exr."""
    # The header ends with screenWindowWidth (size and float value), then its terminating NUL.
    key = b"screenWindowWidth\0float\0"
    table = data.index(key) + len(key) + 4 + 4 + 1
    offsets = list(struct.unpack_from(f"<{height}Q", data, table))
    record = offsets[1] - offsets[0] if height > 1 else len(data) - offsets[0]
    return table, offsets, record


# 1. Pure round trips.


def test_round_trip_float_exact(tmp_path):
    channels = _channels()
    back = exr.read_exr(_written(tmp_path, channels))
    assert sorted(back) == sorted(channels)
    for name, array in channels.items():
        assert back[name].dtype == np.float32 and back[name].shape == (H, W)
        assert np.array_equal(back[name], array), name


def test_round_trip_half_uint_and_path_input(tmp_path):
    channels = {
        "A": RNG.normal(size=(H, W)),  # float64 in, half stored
        "I": RNG.integers(0, 2**24, size=(H, W), dtype=np.uint32),  # stored as UINT
        "N": np.array([[np.nan, np.inf, -np.inf, 65504.0, 1e6, -0.0, 1.0, 2.0, 3.0]] * H),
    }
    path = tmp_path / "half.exr"
    exr.write_exr(path, channels, half=True)
    back = exr.read_exr(path)
    assert np.array_equal(back["A"], channels["A"].astype(np.float16).astype(np.float32))
    assert np.array_equal(back["I"], channels["I"].astype(np.float32))
    with np.errstate(over="ignore"):
        expected_n = channels["N"].astype(np.float16).astype(np.float32)
    assert np.array_equal(back["N"], expected_n, equal_nan=True)
    assert np.isinf(back["N"][0, 4])  # beyond the half range


def test_long_names_and_sorted_channel_list(tmp_path):
    long_name = "A Very Long View Layer Name.Some Pass With Spaces.R"
    data = _written(tmp_path, {"b": np.ones((2, 3)), long_name: np.zeros((2, 3)), "B": np.full((2, 3), 2.0)})
    (version,) = struct.unpack_from("<I", data, 4)
    assert version & 0x400  # names over 31 bytes need the long-names flag
    chlist = data[data.index(b"chlist\0") + 11 :]
    positions = [chlist.index(name.encode() + b"\0") for name in (long_name, "B", "b")]
    assert positions == sorted(positions)  # byte order: "A..." < "B" < "b"
    back = exr.read_exr(data)
    assert back["B"][0, 0] == 2.0 and back["b"][0, 0] == 1.0


def test_top_row_first(tmp_path):
    ramp = np.repeat(np.arange(H, dtype=np.float32)[:, None], W, axis=1)
    back = exr.read_exr(_written(tmp_path, {"Y": ramp}))["Y"]
    assert back[0, 0] == 0 and back[-1, 0] == H - 1


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.exr"
    exr.write_exr(path, {"R": np.zeros((2, 2))})
    old = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        exr.write_exr(path, {"R": np.ones((2, 2))})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.exr"]  # no temp file left behind
    exr.write_exr(path, {"R": np.ones((2, 2))})
    assert exr.read_exr(path)["R"][0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.exr"]


@pytest.mark.parametrize(
    ("channels", "match"),
    [
        ({}, "at least one channel"),
        ({"R": np.zeros((2, 2)), "G": np.zeros((2, 3))}, "shape"),
        ({"R": np.zeros((2, 2, 1))}, r"\(H, W\)"),
        ({"R": np.zeros((0, 2))}, "non-empty"),
        ({"": np.zeros((2, 2))}, "names"),
        ({"a\0b": np.zeros((2, 2))}, "names"),
        ({"R": np.array([["x"]])}, "dtype"),
    ],
)
def test_write_rejects_bad_input(tmp_path, channels, match):
    with pytest.raises(ValueError, match=match):
        exr.write_exr(tmp_path / "bad.exr", channels)
    assert not list(tmp_path.iterdir())


# 2. Layouts the writer does not produce, built by rearranging its records.


def _rearranged(data: bytes, height: int, order: list[int], gap: int = 0) -> bytes:
    """Rewrite a write_exr file with its line records stored in `order`, `gap` junk bytes apart."""
    table, offsets, record = _layout(data, height)
    records = [data[offset : offset + record] for offset in offsets]
    body = bytearray()
    new_offsets = [0] * height
    start = table + 8 * height
    for row in order:
        body += b"\xee" * gap
        new_offsets[row] = start + len(body)
        body += records[row]
    return data[:table] + struct.pack(f"<{height}Q", *new_offsets) + bytes(body)


@pytest.mark.parametrize(
    ("order", "gap"),
    [
        (list(range(H))[::-1], 0),  # DECREASING_Y storage: reversed contiguous records
        ([3, 0, 5, 1, 4, 2], 0),  # RANDOM_Y
        (list(range(H)), 5),  # records not back to back
        ([2, 4, 0, 1, 5, 3], 3),
    ],
)
def test_record_order_and_gaps(tmp_path, order, gap):
    channels = _channels()
    data = _rearranged(_written(tmp_path, channels), H, order, gap)
    back = exr.read_exr(data)
    assert all(np.array_equal(back[name], channels[name]) for name in channels)


# 3. Hostile input: always ExrError with a message, never an IndexError from deep inside.


def test_not_an_exr():
    with pytest.raises(exr.ExrError, match="magic"):
        exr.read_exr(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(exr.ExrError, match="truncated"):
        exr.read_exr(b"")


def test_empty_file(tmp_path):
    (tmp_path / "empty.exr").write_bytes(b"")
    with pytest.raises(exr.ExrError, match="empty"):
        exr.read_exr(tmp_path / "empty.exr")


def test_truncated_everywhere(tmp_path):
    data = _written(tmp_path)
    for cut in [*range(0, 400, 7), *range(len(data) - 300, len(data), 5)]:
        with pytest.raises(exr.ExrError, match=r"truncated|corrupt|unterminated"):
            exr.read_exr(data[:cut])


def test_corrupt_bytes_raise_exr_error_only(tmp_path):
    data = _written(tmp_path)
    rng = np.random.default_rng(3)
    table = _layout(data, H)[0]
    for _ in range(400):
        damaged = bytearray(data)
        for at in rng.integers(8, table + 8 * H + 24, size=rng.integers(1, 4)):
            damaged[at] = rng.integers(0, 256)
        try:
            exr.read_exr(bytes(damaged))
        except exr.ExrError:
            pass


def test_corrupt_record_header(tmp_path):
    data = bytearray(_written(tmp_path))
    _table, offsets, _record = _layout(bytes(data), H)
    data[offsets[2] + 4 : offsets[2] + 8] = struct.pack("<i", 3)  # wrong byte count
    with pytest.raises(exr.ExrError, match="corrupt"):
        exr.read_exr(bytes(data))
    data = bytearray(_written(tmp_path))
    data[offsets[2] : offsets[2] + 4] = struct.pack("<i", 0)  # line 0 twice, line 2 missing
    with pytest.raises(exr.ExrError, match="exactly once"):
        exr.read_exr(bytes(data))


@pytest.mark.parametrize(
    ("code", "name"), [(1, "RLE_COMPRESSION"), (3, "ZIP_COMPRESSION"), (9, "DWAB"), (42, "42")]
)
def test_compressed_refused(tmp_path, code, name):
    data = _replace_attribute(_written(tmp_path), "compression", "compression", bytes([code]))
    with pytest.raises(exr.ExrError, match=name) as info:
        exr.read_exr(data)
    assert "codec NONE or ZIPS" in str(info.value)


def test_tiled_and_deep_refused(tmp_path):
    data = bytearray(_written(tmp_path))
    data[5] |= 0x02  # version flag 0x200: single-part tiled
    with pytest.raises(exr.ExrError, match="tiled"):
        exr.read_exr(bytes(data))
    data = bytearray(_written(tmp_path))
    data[5] |= 0x08  # 0x800: deep data
    with pytest.raises(exr.ExrError, match="deep"):
        exr.read_exr(bytes(data))


def test_subsampled_refused(tmp_path):
    data = _written(tmp_path, {"R": np.zeros((2, 2))})
    entry = b"R\0" + struct.pack("<iB3xii", 2, 0, 1, 1)
    data = data.replace(entry, b"R\0" + struct.pack("<iB3xii", 2, 0, 2, 2))
    with pytest.raises(exr.ExrError, match="subsampled"):
        exr.read_exr(data)


# 4. group_passes.


def _blender_like(layer: str, index_name: str) -> dict[str, np.ndarray]:
    names = [f"Combined.{c}" for c in "RGBA"] + ["Depth.Z", f"{index_name}.X"]
    names += [f"Normal.{c}" for c in "XYZ"] + [f"Vector.{c}" for c in "XYZW"]
    return {f"{layer}.{name}": np.full((2, 3), float(i), dtype=np.float32) for i, name in enumerate(names)}


@pytest.mark.parametrize("index_name", ["IndexOB", "Object Index"])
def test_group_passes_blender_names(index_name):
    channels = _blender_like("ViewLayer", index_name)
    passes = exr.group_passes(channels)
    assert sorted(passes) == sorted(["Combined", "Depth", index_name, "Normal", "Vector"])
    assert passes["Combined"].shape == (2, 3, 4) and passes["Combined"].dtype == np.float32
    assert passes["Combined"][0, 0].tolist() == [0, 1, 2, 3]  # R, G, B, A: not EXR's sorted A, B, G, R
    assert passes["Vector"][0, 0].tolist() == [9, 10, 11, 12]  # X, Y, Z, W
    assert passes["Depth"].shape == (2, 3, 1) and passes[index_name][0, 0, 0] == 5


def test_group_passes_layers():
    channels = {**_blender_like("ViewLayer.001", "IndexOB"), **_blender_like("Other", "IndexOB")}
    channels["Composite.Combined.R"] = np.zeros((2, 3))
    channels["R"] = np.zeros((2, 3))  # a plain channel belongs to no layer
    with pytest.raises(ValueError, match=r"exactly one layer.*'Composite', 'Other', 'ViewLayer.001'"):
        exr.group_passes(channels)
    passes = exr.group_passes(channels, "ViewLayer.001")  # a layer name with a dot in it
    assert sorted(passes) == ["Combined", "Depth", "IndexOB", "Normal", "Vector"]
    with pytest.raises(ValueError, match="no channel belongs"):
        exr.group_passes(channels, "Missing")
    uv = {"L.UV.V": np.ones((1, 1)), "L.UV.A": np.full((1, 1), 2.0), "L.UV.U": np.zeros((1, 1))}
    uv["L.Custom.beta"] = uv["L.Custom.alpha"] = np.zeros((1, 1))
    assert exr.group_passes(uv)["UV"][0, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"no layer|none"):
        exr.group_passes({"R": np.zeros((1, 1))})
    with pytest.raises(ValueError, match="mixes channel shapes"):
        exr.group_passes({"L.P.R": np.zeros((1, 1)), "L.P.G": np.zeros((1, 2))})


# 5. Agreement with the reference implementation (skipped where the `OpenEXR` package is missing).


def _reference_read(path) -> dict[str, np.ndarray]:
    openexr = pytest.importorskip("OpenEXR")
    with openexr.File(str(path), separate_channels=True) as handle:
        return {
            name: channel.pixels.copy() for part in handle.parts for name, channel in part.channels.items()
        }


def _window(x0: int, y0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([x0, y0], dtype=np.int32), np.array([x0 + width - 1, y0 + height - 1], dtype=np.int32)


@pytest.mark.parametrize("line_order", ["INCREASING_Y", "DECREASING_Y"])
@pytest.mark.parametrize("origin", [(0, 0), (10, -3)])
def test_reference_single_part(tmp_path, line_order, origin):
    openexr = pytest.importorskip("OpenEXR")
    pixels = {
        "R": RNG.normal(size=(5, 7)).astype(np.float32),
        "G": RNG.normal(size=(5, 7)).astype(np.float16),
        "id": RNG.integers(0, 2**32, size=(5, 7), dtype=np.uint32),
    }
    header = {
        "compression": openexr.NO_COMPRESSION,
        "type": openexr.scanlineimage,
        "lineOrder": getattr(openexr, line_order),
        "dataWindow": _window(*origin, 7, 5),
        "displayWindow": _window(0, 0, 64, 48),
    }
    path = tmp_path / "ref.exr"
    with openexr.File(header, dict(pixels)) as handle:  # the binding turns the dict's values into Channels
        handle.write(str(path))
    ours = exr.read_exr(path)
    reference = _reference_read(path)
    assert sorted(ours) == sorted(reference) == ["G", "R", "id"]
    for name, array in reference.items():
        assert ours[name].shape == (5, 7)
        assert np.array_equal(ours[name], array.astype(np.float32)), name
    assert np.array_equal(ours["R"], pixels["R"])  # top row first, as given


def test_reference_multi_part(tmp_path):
    openexr = pytest.importorskip("OpenEXR")

    def base(**extra):  # a fresh dict each time: the binding writes the part name into the header it gets
        # All parts of a file must share one displayWindow.
        header = {"compression": openexr.NO_COMPRESSION, "type": openexr.scanlineimage}
        return {**header, "displayWindow": _window(0, 0, 6, 4), **extra}

    combined = {f"ViewLayer.Combined.{c}": RNG.random((4, 6), dtype=np.float32) for c in "RGBA"}
    depth = {"ViewLayer.Depth.Z": RNG.random((4, 6), dtype=np.float32)}
    # Houdini-style part: bare channel names, the part name is the layer.
    diffuse = {"R": RNG.random((3, 5)).astype(np.float16), "diffuse.G": RNG.random((3, 5)).astype(np.float16)}
    index = {"X": RNG.integers(0, 9, size=(4, 6), dtype=np.uint32)}
    parts = [
        openexr.Part(base(), dict(combined), "ViewLayer.Combined"),
        openexr.Part(base(lineOrder=openexr.DECREASING_Y), dict(depth), "ViewLayer.Depth"),
        openexr.Part(base(dataWindow=_window(2, 1, 5, 3)), dict(diffuse), "diffuse"),
        openexr.Part(base(), dict(index), "ViewLayer.Object Index"),
    ]
    path = tmp_path / "parts.exr"
    with openexr.File(parts) as handle:
        handle.write(str(path))
    ours = exr.read_exr(path)
    expected = {**combined, **depth, "diffuse.R": diffuse["R"], "diffuse.G": diffuse["diffuse.G"]}
    expected["ViewLayer.Object Index.X"] = index["X"]
    assert sorted(ours) == sorted(expected)
    for name, array in expected.items():
        assert np.array_equal(ours[name], array.astype(np.float32)), name
    passes = exr.group_passes(ours, "ViewLayer")
    assert sorted(passes) == ["Combined", "Depth", "Object Index"]


def test_reference_reads_our_files(tmp_path):
    pytest.importorskip("OpenEXR")
    channels = {**_channels(), "I": RNG.integers(0, 2**32, size=(H, W), dtype=np.uint32)}
    for half in (False, True):
        path = tmp_path / f"ours{half}.exr"
        exr.write_exr(path, channels, half=half)
        reference = _reference_read(path)
        assert sorted(reference) == sorted(channels)
        assert reference["I"].dtype == np.uint32 and np.array_equal(reference["I"], channels["I"])
        assert reference["Z"].dtype == (np.float16 if half else np.float32)
        for name in channels:
            assert np.array_equal(reference[name].astype(np.float32), exr.read_exr(path)[name]), name


def test_zips_round_trip_and_agreement_with_the_reference(tmp_path):
    # The compositor's layers files are ZIPS: ours read back exactly, by us and by OpenEXR itself, and a file
    # OpenEXR wrote with ZIPS reads the same here. Flat and random lines both occur (one stored deflated, one
    # stored as it is because deflating would not shrink it).
    channels = {**_channels(), "I": RNG.integers(0, 2**32, size=(H, W), dtype=np.uint32)}
    channels["F"] = np.zeros((H, W), np.float32)
    for half in (False, True):
        path = tmp_path / f"zips{half}.exr"
        exr.write_exr(path, channels, half=half, compress=True)
        plain = tmp_path / f"plain{half}.exr"
        exr.write_exr(plain, channels, half=half)
        ours, expected = exr.read_exr(path), exr.read_exr(plain)
        assert sorted(ours) == sorted(expected)
        for name in expected:
            assert np.array_equal(ours[name], expected[name]), name
        assert path.stat().st_size < plain.stat().st_size
        reference = _reference_read(path)
        for name in channels:
            assert np.array_equal(reference[name].astype(np.float32), ours[name]), name
    openexr = pytest.importorskip("OpenEXR")
    header = {"compression": openexr.ZIPS_COMPRESSION, "type": openexr.scanlineimage}
    smooth = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    path = tmp_path / "theirs.exr"
    with openexr.File(header, {"R": smooth}) as handle:
        handle.write(str(path))
    assert np.array_equal(exr.read_exr(path)["R"], smooth)


@pytest.mark.parametrize("compression", ["ZIP_COMPRESSION", "PIZ_COMPRESSION", "RLE_COMPRESSION"])
def test_reference_compressed_refused(tmp_path, compression):
    openexr = pytest.importorskip("OpenEXR")
    header = {"compression": getattr(openexr, compression), "type": openexr.scanlineimage}
    path = tmp_path / "zip.exr"
    with openexr.File(header, {"R": np.ones((4, 4), dtype=np.float32)}) as handle:
        handle.write(str(path))
    with pytest.raises(exr.ExrError, match=compression):
        exr.read_exr(path)


def test_reference_tiled_refused(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    tiles = openexr.TileDescription()
    tiles.xSize = tiles.ySize = 4
    header = {"compression": openexr.NO_COMPRESSION, "type": openexr.tiledimage, "tiles": tiles}
    path = tmp_path / "tiled.exr"
    with openexr.File(dict(header), {"R": np.ones((8, 8), dtype=np.float32)}) as handle:
        handle.write(str(path))
    with pytest.raises(exr.ExrError, match="tiled"):
        exr.read_exr(path)
    scanlines = {"compression": openexr.NO_COMPRESSION, "type": openexr.scanlineimage}
    parts = [
        openexr.Part(scanlines, {"R": np.ones((8, 8), dtype=np.float32)}, "lines"),
        openexr.Part(dict(header), {"Z": np.ones((8, 8), dtype=np.float32)}, "tiles"),
    ]
    with openexr.File(parts) as handle:
        handle.write(str(path))
    with pytest.raises(exr.ExrError, match=r"part 1 .*tiled"):
        exr.read_exr(path)


# 6. What Blender itself writes (in a subprocess, so bpy never enters this test process).

_BLENDER_RENDER = """
import sys
import bpy

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
bpy.ops.mesh.primitive_cube_add(size=2)
bpy.context.object.pass_index = 7
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
scene.collection.objects.link(camera)
camera.location = (4.0, -4.0, 3.0)
camera.rotation_euler = (1.1, 0.0, 0.785)
scene.camera = camera
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 1
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 32, 24, 100
layer = scene.view_layers[0]
layer.use_pass_z = layer.use_pass_normal = layer.use_pass_vector = layer.use_pass_object_index = True
bpy.ops.render.render()
settings = scene.render.image_settings
if bpy.app.version >= (5, 0, 0):
    settings.media_type = "MULTI_LAYER_IMAGE"
settings.file_format = "OPEN_EXR_MULTILAYER"
settings.exr_codec = "NONE"
settings.color_depth = "32"
bpy.data.images["Render Result"].save_render(sys.argv[1], scene=scene)
print("BLENDER_VERSION", *bpy.app.version[:2])
"""


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs Blender as a Python module (bpy)")
def test_blender_multilayer_exr(tmp_path):
    script = tmp_path / "render.py"
    script.write_text(textwrap.dedent(_BLENDER_RENDER))
    path = tmp_path / "render.exr"
    result = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    version = tuple(int(v) for v in result.stdout.split("BLENDER_VERSION")[1].split())
    ours = exr.read_exr(path)
    reference = _reference_read(path)
    assert sorted(ours) == sorted(reference)
    for name, array in reference.items():
        assert np.array_equal(ours[name], array.astype(np.float32)), name
    passes = exr.group_passes(ours)
    index_name = "Object Index" if version >= (5, 0) else "IndexOB"
    assert {"Combined", "Depth", "Normal", "Vector", index_name} <= set(passes)
    assert passes["Combined"].shape == (24, 32, 4)
    assert passes["Depth"].shape == (24, 32, 1) and passes["Normal"].shape == (24, 32, 3)
    assert passes["Vector"].shape == (24, 32, 4) and passes[index_name].shape == (24, 32, 1)
    assert passes["Depth"][0, 0, 0] == np.float32(1e10)  # Cycles' depth where no surface was hit
    assert passes[index_name][12, 16, 0] == 7 and passes[index_name][0, 0, 0] == 0
