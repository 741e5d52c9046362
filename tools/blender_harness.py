# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the extension zip with Blender's own tool and run headless Blender (the `bpy` module) with it.

Used by `./run build`, `./run py`, the demo, the benchmarks and the Blender tests, so that every one of them
exercises the extension exactly as an artist installs it: from the zip, in a user folder of its own.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSION_ID = "stylepass"
REPO = "user_default"
MODULE = f"bl_ext.{REPO}.{EXTENSION_ID}"


def blender_ext_tool() -> Path:
    """Blender's extension command-line tool, shipped inside the bpy wheel (standard library only)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bpy is not installed in this Python; use ./run, which sets up the venvs")
    base = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"blender_ext.py not found under {base}")
    return found[-1]


def manifest_version() -> str:
    import tomllib

    with open(ROOT / "blender_manifest.toml", "rb") as stream:
        return tomllib.load(stream)["version"]


def build_zip(out_dir: Path, split_platforms: bool = False) -> Path:
    """Build `stylepass-<version>.zip` into out_dir with Blender's extension tool, then validate it.

    The core goes in as a wheel built from the sources (`core_wheel`); the manifest excludes the
    `stylepass_core/` folder itself, so the add-on can only import the core Blender installed from that wheel.
    With `split_platforms`, also one zip per platform (`stylepass-<version>-<platform>.zip`) carrying only
    that platform's wheels. Returns the all-platform zip.
    """
    from core_wheel import build_core_wheel
    from fetch_wheels import fetch, manifest_wheels

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    core = build_core_wheel(ROOT / "wheels")
    if core not in manifest_wheels():
        raise SystemExit(f"blender_manifest.toml's wheels do not list ./wheels/{core.name}: add it there")
    fetch()
    tool = [sys.executable, str(blender_ext_tool())]
    _run_tool([*tool, "build", "--source-dir", str(ROOT), "--output-dir", str(out_dir)])
    whole = out_dir / f"{EXTENSION_ID}-{manifest_version()}.zip"
    if not whole.is_file():
        raise SystemExit(f"the build wrote no {whole.name} into {out_dir}")
    _run_tool([*tool, "validate", str(whole)])
    if split_platforms:
        _run_tool(
            [*tool, "build", "--source-dir", str(ROOT), "--output-dir", str(out_dir), "--split-platforms"]
        )
        for part in platform_zips(out_dir):
            _run_tool([*tool, "validate", str(part)])
    return whole


def platform_zips(out_dir: Path) -> list[Path]:
    """The per-platform zips `build_zip(..., split_platforms=True)` wrote."""
    return sorted(Path(out_dir).glob(f"{EXTENSION_ID}-{manifest_version()}-*.zip"))


def _run_tool(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:3])} failed:\n{done.stdout}{done.stderr}")


def use_throwaway_user_folder() -> Path:
    """Point Blender's user resources at a temp folder; must happen before `import bpy`."""
    if "bpy" in sys.modules:
        raise RuntimeError("use_throwaway_user_folder() must run before bpy is imported")
    folder = Path(tempfile.mkdtemp(prefix="stylepass-user-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(folder)
    return folder


def install_extension(zip_path: Path):
    """Install and enable the zip in the running bpy; returns the add-on module."""
    import bpy

    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo=REPO, enable_on_install=True
    )
    if "FINISHED" not in result:
        raise RuntimeError(f"installing {zip_path} failed: {result}")
    return importlib.import_module(MODULE)


def uninstall_extension() -> None:
    import bpy

    bpy.ops.extensions.package_uninstall(repo_index=_repo_index(), pkg_id=EXTENSION_ID)


def _repo_index() -> int:
    import bpy

    for index, repo in enumerate(bpy.context.preferences.extensions.repos):
        if repo.module == REPO:
            return index
    raise RuntimeError(f"extension repository {REPO!r} not found")


def disable_extension() -> None:
    """Disable the add-on (runs its unregister) so no handler or timer is left for interpreter exit."""
    import addon_utils

    addon_utils.disable(MODULE, default_set=True)
