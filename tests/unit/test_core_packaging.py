# SPDX-License-Identifier: GPL-3.0-or-later
"""How the core reaches where it runs: the wheel the extension zip carries (tools/core_wheel.py), and the
private copy a local worker imports (`stage_core`)."""

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import threading
import tomllib
import zipfile
from pathlib import Path

import core_wheel
import pytest

from stylepass_core.worker.manager import LocalWorker, stage_core

ROOT = Path(__file__).resolve().parents[2]


def _package(folder: Path) -> Path:
    """A small stand-in for stylepass_core, with the byte-code caches a real checkout collects."""
    package = folder / "stylepass_core"
    (package / "worker" / "__pycache__").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("VERSION = 1\n")
    (package / "worker" / "__init__.py").write_text("")
    (package / "worker" / "requirements.txt").write_text("numpy\n")
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"stale")
    (package / "worker" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    return package


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- stage_core -----------------------------------------------------------------------------------------


def test_stage_core_copies_the_package_without_caches(tmp_path):
    package = _package(tmp_path / "src")
    staged = stage_core(tmp_path / "worker-code", package)
    assert staged.parent == tmp_path / "worker-code" and len(staged.name) == 16
    assert _files(staged) == [
        "stylepass_core/__init__.py",
        "stylepass_core/worker/__init__.py",
        "stylepass_core/worker/requirements.txt",
    ]
    assert [p.name for p in staged.parent.iterdir()] == [staged.name]  # no temporary folder left


def test_stage_core_copies_once_per_content(tmp_path):
    package = _package(tmp_path / "src")
    dest = tmp_path / "worker-code"
    staged = stage_core(dest, package)
    first = (staged / "stylepass_core" / "__init__.py").stat().st_ino
    # Same content: the same folder, not copied again; new byte-code caches change nothing.
    (package / "__pycache__" / "other.cpython-313.pyc").write_bytes(b"new")
    assert stage_core(dest, package) == staged
    assert (staged / "stylepass_core" / "__init__.py").stat().st_ino == first
    # New code: a folder of its own; the old copy stays for a worker that may still run it.
    (package / "__init__.py").write_text("VERSION = 2\n")
    newer = stage_core(dest, package)
    assert newer != staged and (newer / "stylepass_core" / "__init__.py").read_text() == "VERSION = 2\n"
    assert (staged / "stylepass_core" / "__init__.py").read_text() == "VERSION = 1\n"
    # A renamed file is new content too, even with the same bytes.
    (package / "worker" / "requirements.txt").rename(package / "worker" / "requirements-cpu.txt")
    assert stage_core(dest, package) not in (staged, newer)


def test_stage_core_from_several_threads_makes_one_copy(tmp_path):
    package = _package(tmp_path / "src")
    dest = tmp_path / "worker-code"
    results, barrier = [], threading.Barrier(4)

    def stage():
        barrier.wait()
        results.append(stage_core(dest, package))

    threads = [threading.Thread(target=stage) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4 and len(set(results)) == 1
    assert [p.name for p in dest.iterdir()] == [results[0].name]


def test_staged_real_core_imports_from_the_copy(tmp_path):
    staged = stage_core(tmp_path / "worker-code")
    assert (staged / "stylepass_core" / "engines" / "diffusion" / "requirements.txt").is_file()
    assert not list(staged.rglob("__pycache__"))
    code = "import stylepass_core.worker.protocol as p, stylepass_core as c; print(c.__file__)"
    env = {**os.environ, "PYTHONPATH": str(staged)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    )
    assert Path(out.stdout.strip()).is_relative_to(staged)


def test_local_worker_puts_core_dir_first(tmp_path):
    staged = stage_core(tmp_path / "worker-code")
    worker = LocalWorker(sys.executable, pythonpath=[tmp_path / "extra"], core_dir=staged)
    assert worker.pythonpath == (str(staged), str(tmp_path / "extra"))
    # From a checkout, the default is the folder holding the package: the repo root.
    assert LocalWorker(sys.executable).pythonpath == (str(ROOT),)
    with pytest.raises(ValueError, match="must hold the stylepass_core package"):
        LocalWorker(sys.executable, core_dir=tmp_path)


# -- the core wheel -------------------------------------------------------------------------------------


def test_core_wheel_is_deterministic_and_listed_in_the_manifest(tmp_path):
    first = core_wheel.build_core_wheel(tmp_path / "a")
    second = core_wheel.build_core_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with open(ROOT / "blender_manifest.toml", "rb") as stream:
        manifest = tomllib.load(stream)
    assert first.name == f"stylepass_core-{manifest['version']}-py3-none-any.whl"
    assert f"./wheels/{first.name}" in manifest["wheels"]
    assert "/stylepass_core/" in manifest["build"]["paths_exclude_pattern"]


def test_core_wheel_record_matches_its_files(tmp_path):
    wheel = zipfile.ZipFile(core_wheel.build_core_wheel(tmp_path))
    names = wheel.namelist()
    dist_info = f"stylepass_core-{core_wheel.manifest_version()}.dist-info"
    sources = sorted(
        f"stylepass_core/{p.relative_to(ROOT / 'stylepass_core').as_posix()}"
        for p in (ROOT / "stylepass_core").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    assert sorted(n for n in names if n.startswith("stylepass_core/")) == sources
    assert "stylepass_core/engines/diffusion/requirements.txt" in names  # the installer reads it
    assert {f"{dist_info}/{n}" for n in ("METADATA", "WHEEL", "RECORD")} <= set(names)
    assert "Tag: py3-none-any" in wheel.read(f"{dist_info}/WHEEL").decode()
    rows = list(csv.reader(io.StringIO(wheel.read(f"{dist_info}/RECORD").decode())))
    assert sorted(row[0] for row in rows) == sorted(names)
    for name, digest, size in rows:
        if name.endswith("/RECORD"):
            assert digest == size == ""
            continue
        data = wheel.read(name)
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={expected}", len(data)), name


def test_core_wheel_installs_with_pip(tmp_path):
    wheel = core_wheel.build_core_wheel(tmp_path / "dist")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    code = "import stylepass_core.worker.server, stylepass_core as c; print(c.__file__)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    )
    assert Path(out.stdout.strip()).is_relative_to(target)
