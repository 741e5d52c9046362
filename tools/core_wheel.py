# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the bpy-free core as a pure-Python wheel: `wheels/stylepass_core-<version>-py3-none-any.whl`.

The extension zip carries the core only as this wheel (listed in `blender_manifest.toml`), so that Blender
installs it into the extension's site-packages and the add-on, the tests and the worker all import the same
top-level `stylepass_core`. The same file is what a remote GPU box installs with `pip install`.

Standard library only, and deterministic: the same sources give the same bytes (fixed timestamps and
permissions, sorted entries), so rebuilding changes nothing that git or a cache could notice.

    python tools/core_wheel.py [--out FOLDER]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "stylepass_core"
SOURCE = ROOT / PACKAGE
WHEEL_TAG = "py3-none-any"
# What the core imports outside the standard library (engines install their own stacks in their venv): the
# worker's HTTP stack is pinned as in stylepass_core/engines/diffusion/requirements.txt. Blender installs the
# wheel and resolves no dependencies (the add-on never imports the worker's server).
REQUIRES = ("numpy>=1.26", "requests", "starlette==1.10.0", "uvicorn==0.54.0")
# Zip entries get this fixed timestamp (the zip format cannot store earlier) and mode: deterministic bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644 << 16


def manifest_version() -> str:
    with open(ROOT / "blender_manifest.toml", "rb") as stream:
        return tomllib.load(stream)["version"]


def wheel_name(version: str | None = None) -> str:
    """`stylepass_core-<version>-py3-none-any.whl`; the version is the manifest's by default."""
    return f"{PACKAGE}-{version or manifest_version()}-{WHEEL_TAG}.whl"


def package_files(source: Path = SOURCE) -> list[Path]:
    """Every file of the package that ships, sorted: sources, READMEs, the engines' requirements files.

    Skipped: `__pycache__` folders, `*.pyc`, hidden files and editor backups (`*~`).
    """
    files = []
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        if any(part.startswith(".") for part in relative.parts) or path.name.endswith("~"):
            continue
        files.append(path)
    return sorted(files, key=lambda path: path.relative_to(source).as_posix())


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def _metadata(version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        "Name: stylepass-core",
        f"Version: {version}",
        "Summary: Stylepass's bpy-free core: engine interface, conditioning maps, engines and the worker",
        "License: GPL-3.0-or-later",
        "Requires-Python: >=3.11",
        *(f"Requires-Dist: {requirement}" for requirement in REQUIRES),
    ]
    return "\n".join(lines) + "\n"


def _wheel_file() -> str:
    lines = [
        "Wheel-Version: 1.0",
        "Generator: stylepass tools/core_wheel.py",
        "Root-Is-Purelib: true",
        f"Tag: {WHEEL_TAG}",
    ]
    return "\n".join(lines) + "\n"


def build_core_wheel(out_dir: Path = ROOT / "wheels", version: str | None = None) -> Path:
    """Write the core wheel into out_dir (replacing one of the same name); returns its path.

    Args:
        out_dir: Destination folder, created if missing.
        version: The wheel's version; default: the manifest's `version`.
    """
    # 1. Collect the entries: the package's files, then the metadata
    version = version or manifest_version()
    dist_info = f"{PACKAGE}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"{PACKAGE}/{path.relative_to(SOURCE).as_posix()}", path.read_bytes()) for path in package_files()
    ]
    if not any(name == f"{PACKAGE}/__init__.py" for name, _ in entries):
        raise SystemExit(f"{SOURCE} holds no __init__.py: is this a Stylepass checkout?")
    entries.append((f"{dist_info}/METADATA", _metadata(version).encode()))
    entries.append((f"{dist_info}/WHEEL", _wheel_file().encode()))

    # 2. RECORD: every entry with its hash and size, and itself without either
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))

    # 3. Write to a temporary name, then replace: a reader never sees half a wheel
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel_name(version)
    # Unique per build: two builds at once (tests, a bench, a UI run) must not share the half-written file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    with zipfile.ZipFile(partial, "w") as wheel:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # Unix, whatever builds it: the mode bits below are Unix ones
            info.external_attr = _FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data, compresslevel=9)
    partial.replace(target)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "wheels", help="destination folder")
    print(build_core_wheel(parser.parse_args().out))
