# SPDX-License-Identifier: GPL-3.0-or-later
"""Fetch the wheels the manifest lists into wheels/ (cached under ~/.cache/stylepass/wheels).

Each name says what to download: `<dist>-<version>-<python>-<abi>-<platform>.whl`, so a pinned manifest
entry is enough to fetch the exact file for another platform than this one. The core's own wheel
(`stylepass_core-*.whl`) is built from the sources by `core_wheel`, never downloaded.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from core_wheel import PACKAGE as CORE_PACKAGE

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("STYLEPASS_CACHE", Path.home() / ".cache" / "stylepass")) / "wheels"


def manifest_wheels() -> list[Path]:
    with open(ROOT / "blender_manifest.toml", "rb") as stream:
        return [ROOT / entry for entry in tomllib.load(stream).get("wheels", [])]


def _download(name: str) -> None:
    dist, version, python_tag, _abi, platform = name[: -len(".whl")].split("-")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(CACHE),
    ]
    if platform != "any":
        command += ["--platform", platform, "--implementation", "cp"]
        command += ["--python-version", f"{python_tag[2]}.{python_tag[3:]}"]
    command.append(f"{dist.replace('_', '-')}=={version}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not (CACHE / name).is_file():
        raise SystemExit(f"could not fetch {name}:\n{done.stdout}{done.stderr}")


def fetch() -> list[Path]:
    """Make every manifest wheel present in wheels/; returns their paths."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = manifest_wheels()
    for target in wheels:
        if target.is_file() or target.name.startswith(f"{CORE_PACKAGE}-"):
            continue
        cached = CACHE / target.name
        if not cached.is_file():
            print(f"fetching {target.name}", file=sys.stderr)
            _download(target.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
    return wheels


if __name__ == "__main__":
    for path in fetch():
        print(path)
