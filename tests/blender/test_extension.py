# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension as an artist gets it: zip built and validated by Blender's tool, installed, enabled,
registered again, uninstalled, with nothing left behind."""

import subprocess
import sys
import textwrap

import addon_utils
import blender_harness
import bpy
from conftest import ROOT, ZIP_PATH


def _hooks() -> dict:
    handlers = {
        name: len(getattr(bpy.app.handlers, name))
        for name in dir(bpy.app.handlers)
        if isinstance(getattr(bpy.app.handlers, name), list)
    }
    return handlers


def test_zip_contains_the_extension_and_no_dev_files():
    import zipfile

    names = zipfile.ZipFile(ZIP_PATH).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "addon/scene_passes.py" in names and "addon/stylepass_core/conditioning.py" in names
    assert not [n for n in names if n.startswith(("tests/", "tools/", ".git", "demo/", "bench/"))]


def test_register_unregister_register_leaves_no_handlers():
    module = blender_harness.MODULE
    baseline = _hooks()
    for _ in range(2):
        addon_utils.disable(module, default_set=True)
        assert not hasattr(bpy.types.Scene, "stylepass")
        assert not hasattr(bpy.ops.stylepass, "render_passes") or "stylepass" not in dir(bpy.ops)
        assert _hooks() == baseline
        addon_utils.enable(module, default_set=True)
        assert hasattr(bpy.types.Scene, "stylepass")
        assert bpy.ops.stylepass.render_passes.poll() in (True, False)
        assert _hooks() == baseline


def test_install_enable_uninstall_in_a_fresh_blender():
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tools")!r})
        import blender_harness as h
        user = h.use_throwaway_user_folder()
        import bpy, addon_utils
        mod = h.install_extension({str(ZIP_PATH)!r})
        assert addon_utils.check(h.MODULE)[1], "not enabled"
        assert hasattr(bpy.types.Scene, "stylepass")
        assert "stylepass" in dir(bpy.ops)
        h.uninstall_extension()
        assert not hasattr(bpy.types.Scene, "stylepass"), "still registered after uninstall"
        assert h.MODULE not in bpy.context.preferences.addons
        import os
        assert not os.path.exists(os.path.join(str(user), "extensions", h.REPO, h.EXTENSION_ID))
        print("ROUNDTRIP-OK")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "ROUNDTRIP-OK" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
