# SPDX-License-Identifier: GPL-3.0-or-later
"""The layout rules a newcomer relies on, checked on the source: one import identity for the core, no engine
ids outside the engine registry and its settings, and Stylepass's mix never crossing the worker."""

import dataclasses
import re
from pathlib import Path

from stylepass_core.engine_api import StyleRequest
from stylepass_core.settings import engine_settings

ROOT = Path(__file__).resolve().parents[2]
BLENDER_SIDE = ("addon", "operators", "panels")


def _python_files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


def test_no_engine_id_outside_the_engine_registry_and_its_settings():
    # Engine kinds were string tests in three places; now the Blender side asks the settings class.
    found = []
    for path in [*_python_files(*BLENDER_SIDE), ROOT / "__init__.py"]:
        text = path.read_text()
        for cls in engine_settings():
            if re.search(rf"[\"']{cls.ENGINE}[\"']", text):
                found.append(f"{path.relative_to(ROOT)}: {cls.ENGINE}")
    assert not found, found


def test_the_core_has_one_import_identity_and_nothing_inserts_into_sys_path():
    assert not (ROOT / "addon" / "stylepass_core").exists()
    offenders = []
    for path in _python_files(*BLENDER_SIDE, "stylepass_core", "tests", "tools", "bench", "demo"):
        text = path.read_text()
        if path == Path(__file__).resolve():
            continue
        if "sys.path.insert" in text or "sys.path.append" in text:
            offenders.append(str(path.relative_to(ROOT)))
        if re.search(r"from \.+stylepass_core|addon\.stylepass_core", text):
            offenders.append(f"{path.relative_to(ROOT)} (relative import of the core)")
    assert not offenders, offenders


def test_stylepass_mix_never_crosses_the_worker():
    # Strength, Keep Scene Colours and the object selection are applied by the frame writer in Blender.
    fields = {field.name for field in dataclasses.fields(StyleRequest)}
    assert fields == {"beauty", "settings", "controls", "images", "seed", "width", "height", "regions"}
    for cls in engine_settings():
        names = {name for name, *_ in cls.specs()}
        assert not names & {"strength", "keep_colours", "object_filter"}, cls.__name__


def test_operators_and_panels_are_split_by_concern():
    for folder in ("operators", "panels"):
        init = (ROOT / folder / "__init__.py").read_text()
        assert "bpy.types.Operator)" not in init and "bpy.types.Panel)" not in init, folder
        assert len(list((ROOT / folder).glob("*.py"))) >= 4
