# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender tests run inside the `bpy` module of the venv's Blender version, with the extension installed
from a freshly built zip into a throwaway user folder, exactly as an artist installs it.

`tools/` and `demo/` come from `pythonpath` in tests/pytest.ini, and so does the repo root: in this process
`stylepass_core` is the repo's copy, shared by the tests and the installed add-on (one module, one
identity). That the zip's own wheel serves the core is checked in a fresh Blender (test_extension).
"""

import importlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import blender_harness
import comfyui_server
import pytest

ROOT = Path(__file__).resolve().parents[2]

_USER = blender_harness.use_throwaway_user_folder()
_DIST = Path(tempfile.mkdtemp(prefix="stylepass-dist-"))
ZIP_PATH = blender_harness.build_zip(_DIST)

import bpy  # noqa: E402

ADDON = blender_harness.install_extension(ZIP_PATH)


def addon_module(name: str):
    """A module of the installed extension's Blender side, e.g. addon_module('addon.scene_passes');
    the core is imported as itself: `from stylepass_core import png`."""
    return importlib.import_module(f"{blender_harness.MODULE}.{name}")


def pytest_sessionfinish(session, exitstatus):
    # Blender 4.5 hangs at interpreter exit while add-on handlers or timers are registered.
    blender_harness.disable_extension()
    shutil.rmtree(_DIST, ignore_errors=True)
    shutil.rmtree(_USER, ignore_errors=True)


@pytest.fixture
def empty_file():
    """A new empty file (the extension stays enabled); returns its scene."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


UNSET = "<unset enum>"


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A real ComfyUI server on loopback (`tools/comfyui_server.py`), started the first time a test asks."""
    if os.environ.get("STYLEPASS_COMFYUI") == "0":
        pytest.skip("STYLEPASS_COMFYUI=0: the real ComfyUI server is switched off")
    with comfyui_server.running(tmp_path_factory.mktemp("comfyui")) as server:
        yield server


def rna_snapshot(struct, depth: int = 3) -> dict:
    """Every readable RNA property of `struct`, following nested structs (not IDs) `depth` levels deep."""
    snapshot = {}
    for prop in struct.bl_rna.properties:
        name = prop.identifier
        # Tool settings are the UI's, never touched by a render; reading their brush slots crashes 4.2 headless.
        if name in ("rna_type", "tool_settings"):
            continue
        try:
            with warnings.catch_warnings():
                # Reading deprecated properties (Scene.use_nodes in 5.x) is part of a full snapshot.
                warnings.simplefilter("ignore", DeprecationWarning)
                value = getattr(struct, name)
        except (AttributeError, RuntimeError, TypeError):
            continue
        if prop.type == "ENUM" and value == "" and not getattr(prop, "is_enum_flag", False):
            # An enum that matches no item (Blender's "not initialised yet", e.g. a new scene's output
            # colour space) is not a setting: Blender itself fills it the first time the format changes.
            snapshot[name] = UNSET
            continue
        if prop.type == "POINTER":
            if value is None or isinstance(value, bpy.types.ID):
                snapshot[name] = getattr(value, "name_full", None)
            elif depth > 0:
                snapshot[name] = rna_snapshot(value, depth - 1)
        elif prop.type == "COLLECTION":
            if depth > 0:
                snapshot[name] = [
                    getattr(item, "name_full", None)
                    if isinstance(item, bpy.types.ID)
                    else rna_snapshot(item, depth - 1)
                    for item in value
                ]
        else:
            snapshot[name] = _plain(value)
    return snapshot


def _plain(value):
    """Numbers, strings and (nested) tuples of them: vectors, colours and matrices become comparable."""
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return value
    return tuple(_plain(item) for item in value)


def scene_snapshot(scene) -> dict:
    """Everything the pass render may touch: scene (render, Cycles, colour management, view layers, frame)
    and every object's RNA (pass index, visibility...)."""
    # Evaluate first: derived values such as matrix_world are only current after an update.
    bpy.context.view_layer.update()
    return {
        "scene": rna_snapshot(scene, depth=3),
        "objects": {obj.name: rna_snapshot(obj, depth=1) for obj in scene.objects},
    }


def diff_snapshots(before, after, path="") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += diff_snapshots(before.get(key), after.get(key), f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += diff_snapshots(b, a, f"{path}[{i}]")
        return out
    return [] if before in (after, UNSET) else [f"{path}: {before!r} -> {after!r}"]


def readme_python_examples() -> list[str]:
    """The ```python blocks of the top-level README, in order (tests run them as an artist's script would)."""
    text = (ROOT / "README.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
