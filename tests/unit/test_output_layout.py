# SPDX-License-Identifier: GPL-3.0-or-later
import json
import os
import tempfile
from pathlib import Path

import pytest

from stylepass_core import atomic_file, output_layout
from stylepass_core.output_layout import OutputError, SceneLayout, ensure_writable, resolve_output_root


def test_relative_to_the_blend_file():
    folder, warning = resolve_output_root("//stylepass/", "/projects/shot/shot.blend")
    assert folder == Path("/projects/shot/stylepass")
    assert warning is None


def test_unsaved_file_falls_back_to_temp_with_a_warning():
    folder, warning = resolve_output_root("//stylepass/", "")
    assert folder == Path(tempfile.gettempdir()) / "stylepass"
    assert "not saved" in warning


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
