# SPDX-License-Identifier: GPL-3.0-or-later
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from stylepass_core import atomic_file, output_layout, png
from stylepass_core.output_layout import OutputError, SceneLayout, ensure_writable, resolve_output_root


def test_relative_to_the_blend_file():
    folder, warning = resolve_output_root("//stylepass/", "/projects/shot/shot.blend")
    assert folder == Path("/projects/shot/stylepass")
    assert warning is None


def test_unsaved_file_falls_back_to_a_temp_folder_of_its_own_with_a_warning():
    folder, warning = resolve_output_root("//stylepass/", "")
    # Per process: two unsaved Blenders at once used to share one folder and overwrite each other.
    assert folder == Path(tempfile.gettempdir()) / f"stylepass-{os.getpid()}" / "stylepass"
    assert "not saved" in warning and str(folder) in warning
    script = "from stylepass_core.output_layout import resolve_output_root as r; print(r('//x/', '')[0])"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert Path(other.stdout.strip()) != resolve_output_root("//x/", "")[0]


def test_absolute_and_home_paths():
    assert resolve_output_root("/data/out", "")[0] == Path("/data/out")
    assert resolve_output_root("~/x", "/a/b.blend")[0] == Path(os.path.expanduser("~/x"))


def test_layout_paths_and_unsafe_scene_names(tmp_path):
    layout = SceneLayout(tmp_path, "Shot: 010/a?")
    assert layout.scene_dir == tmp_path / "Shot_ 010_a_"
    assert layout.pass_file("depth", 7) == layout.scene_dir / "passes" / "depth" / "0007.png"
    assert layout.pass_file("vector", 12, "exr").name == "0012.exr"
    assert layout.pass_json(3) == layout.scene_dir / "passes" / "0003.json"
    assert layout.stylised_file(1) == layout.scene_dir / "stylised" / "0001.png"
    with pytest.raises(ValueError, match="'colour'"):
        layout.pass_file("colour", 1)


def test_unwritable_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot write to the output folder"):
        ensure_writable(blocker / "sub")
    ensure_writable(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir()
    assert list((tmp_path / "new" / "deeper").iterdir()) == []


def test_write_json_is_atomic_and_readable(tmp_path, monkeypatch):
    target = tmp_path / "a" / "0001.json"
    output_layout.write_json(target, {"frame": 1})
    assert json.loads(target.read_text()) == {"frame": 1}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # Fails after the new text is in the temporary file, before it replaces the record.
    monkeypatch.setattr(atomic_file.os, "fsync", fail)
    with pytest.raises(OSError):
        output_layout.write_json(target, {"frame": 2})
    assert json.loads(target.read_text()) == {"frame": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["0001.json"]


def test_a_probed_folder_is_checked_again_cheaply(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    ensure_writable(folder)
    probes = []
    real = output_layout.tempfile.NamedTemporaryFile
    monkeypatch.setattr(
        output_layout.tempfile, "NamedTemporaryFile", lambda **kw: probes.append(kw) or real(**kw)
    )
    ensure_writable(folder)
    assert probes == []  # proven this session: no second probe file
    # A folder that went away (here: replaced by a file) is probed again and reported.
    folder.rmdir()
    folder.write_text("not a folder")
    with pytest.raises(OutputError, match="Cannot write"):
        ensure_writable(folder)


# A pass's PNG is the one source of what an engine sees ----------------------------------------------------


def _random_pass(name, rng, shape=(7, 9)):
    if name == "object_index":
        return rng.integers(0, 40000, size=shape).astype(np.int32)
    if name in output_layout.GREY_PASSES:
        return rng.random(shape, dtype=np.float32) * 1.2 - 0.1  # out-of-range values are clipped
    return rng.random((*shape, 3), dtype=np.float32)


@pytest.mark.parametrize("name", output_layout.PASS_NAMES)
def test_stored_pass_is_exactly_what_reading_the_png_back_gives(name, tmp_path):
    rng = np.random.default_rng(11)
    array = _random_pass(name, rng)
    path = tmp_path / f"{name}.png"
    png.write_png(path, output_layout.encode_pass(name, array), bit_depth=output_layout.PASS_BIT_DEPTHS[name])
    from_disk = output_layout.decode_pass(name, png.read_png(path))
    in_memory = output_layout.stored_pass(name, array)
    assert in_memory.dtype == from_disk.dtype
    assert in_memory.shape == from_disk.shape
    assert np.array_equal(in_memory, from_disk)
    # Storing a stored pass again changes nothing: a reloaded frame written again stays the same.
    assert np.array_equal(output_layout.stored_pass(name, in_memory), in_memory)


@pytest.mark.parametrize("name", [n for n in output_layout.PASS_NAMES if n != "object_index"])
def test_float_passes_are_rounded_as_png_write_rounds_them(name, tmp_path):
    """The files stay byte-identical to those written before passes were encoded explicitly."""
    array = _random_pass(name, np.random.default_rng(3))
    bits = output_layout.PASS_BIT_DEPTHS[name]
    explicit, implicit = tmp_path / "explicit.png", tmp_path / "implicit.png"
    png.write_png(explicit, output_layout.encode_pass(name, array), bit_depth=bits)
    png.write_png(implicit, array if name in output_layout.GREY_PASSES else array[..., :3], bit_depth=bits)
    assert explicit.read_bytes() == implicit.read_bytes()
    assert np.array_equal(output_layout.stored_pass(name, array), _read_float(implicit, name))


def _read_float(path, name):
    image = png.read_png_float(path)
    return image[..., 0] if name in output_layout.GREY_PASSES else image[..., :3]


def test_encode_pass_refuses_what_the_png_cannot_hold():
    with pytest.raises(ValueError, match="0-65535"):
        output_layout.encode_pass("object_index", np.full((2, 2), 70000, dtype=np.int32))
    with pytest.raises(ValueError, match="NaN"):
        output_layout.encode_pass("depth", np.full((2, 2), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        output_layout.encode_pass("normal", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="one channel"):
        output_layout.encode_pass("lineart", np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        output_layout.encode_pass("beauty", np.zeros((2, 2, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match="unknown pass"):
        output_layout.decode_pass("colour", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        output_layout.decode_pass("depth", np.zeros((2, 2), dtype=np.uint8))
