# SPDX-License-Identifier: GPL-3.0-or-later
"""The core must run in a worker process and under plain pytest: no module of it may pull in bpy or torch.

Each module is imported in a fresh interpreter, because this test process may already hold modules that
other tests imported, which would hide an offending import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "stylepass_core"
# Found on disk rather than by importing, so that the list itself cannot import anything.
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in CORE.rglob("*.py")
)
# Codecs that only numpy and the standard library may serve (Blender's Python has no PIL or OpenEXR).
NUMPY_ONLY = ["stylepass_core.exr", "stylepass_core.png"]

# numpy is imported before the snapshot: what it loads itself (Cython runtime modules with numpy 1.26) is
# numpy's business, not the module's under test.
_PROBE = """
import importlib, json, sys
import numpy
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps({"new": sorted(set(sys.modules) - before), "stdlib": sorted(sys.stdlib_module_names)}))
"""


def _import_in_fresh_interpreter(module: str) -> tuple[set[str], set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return set(report["new"]), set(report["stdlib"])


def test_modules_found():
    assert "stylepass_core" in MODULES and set(NUMPY_ONLY) <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_bpy_or_torch(module):
    loaded, _stdlib = _import_in_fresh_interpreter(module)
    assert "bpy" not in loaded, f"{module} imports bpy"
    assert "torch" not in loaded, f"{module} imports torch at import time; import it inside the function"


@pytest.mark.parametrize("module", NUMPY_ONLY)
def test_codecs_need_only_numpy(module):
    loaded, stdlib = _import_in_fresh_interpreter(module)
    top_level = {name.partition(".")[0] for name in loaded}
    foreign = sorted(top_level - stdlib - {"numpy", "stylepass_core"})
    assert foreign == [], f"{module} pulls in {foreign}"
