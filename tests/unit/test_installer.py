# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine installer's mechanics, hermetic: a tiny wheel built here, installed with --no-index."""

import sys
import threading
import zipfile

import pytest

from stylepass_core.engine_api import Aborted
from stylepass_core.worker import installer


def _wheel(folder, name="stylepass_probe", version="1.0"):
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


class Recorder:
    def __init__(self):
        self.events = []

    def update(self, done, total, message=""):
        self.events.append((done, total, message))


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder)
    return ["--no-index", "--find-links", str(folder)]


def test_install_then_already_installed(tmp_path, wheels):
    venv, log = tmp_path / "venv", tmp_path / "logs" / "install.log"
    progress = Recorder()
    python = installer.install(
        venv, log, ["stylepass_probe==1.0"], sys.executable, wheels, ("stylepass_probe",), progress
    )
    assert python == installer.venv_python(venv) and python.is_file()
    assert installer.is_installed(venv, ["stylepass_probe==1.0"], wheels)
    assert progress.events[-1][0] == progress.events[-1][1]
    assert any("pip install" in message for _, _, message in progress.events)
    text = log.read_text()
    assert "stylepass_probe" in text and "done" in text
    # Unchanged requirements: nothing is redone.
    again = Recorder()
    installer.install(
        venv, log, ["stylepass_probe==1.0"], sys.executable, wheels, ("stylepass_probe",), again
    )
    assert again.events == [(1, 1, "already installed")]
    assert not installer.is_installed(venv, ["stylepass_probe==2.0"], wheels)


def test_failure_names_the_step_and_the_log(tmp_path, wheels):
    venv, log = tmp_path / "venv", tmp_path / "install.log"
    with pytest.raises(installer.InstallError) as failure:
        installer.install(venv, log, ["no-such-package-for-stylepass==9.9"], sys.executable, wheels, ())
    message = str(failure.value)
    assert "pip install failed" in message and str(log) in message and "Install again" in message
    assert not (venv / installer.MARKER).exists()
    assert "FAILED" in log.read_text()


def test_cancel_removes_the_half_made_venv(tmp_path, wheels):
    abort = threading.Event()
    abort.set()
    with pytest.raises(Aborted):
        installer.install(
            tmp_path / "venv",
            tmp_path / "log",
            ["stylepass_probe==1.0"],
            sys.executable,
            wheels,
            (),
            abort=abort,
        )
    assert not (tmp_path / "venv").exists()


def test_requirements_file_pins_torch_and_reads_cleanly():
    lines = installer.read_requirements()
    assert "torch==2.13.0" in lines and all("#" not in line for line in lines)


def test_torch_index_args_add_the_users_index_only_when_given():
    assert installer.torch_index_args() == []
    assert installer.torch_index_args(index_url="") == []
    assert installer.torch_index_args(index_url="https://example.invalid/whl") == [
        "--extra-index-url",
        "https://example.invalid/whl",
    ]
