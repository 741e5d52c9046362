# SPDX-License-Identifier: GPL-3.0-or-later
"""One-click engine installer: a venv with the diffusion engine's dependencies, with progress and a log.

The venv lives in the extension's user folder (never inside Blender's own Python), so torch and diffusers
cannot break Blender and a reinstall is just deleting one folder. Steps:
    1. create the venv with the given interpreter;
    2. `pip install` the requirements (the torch build chosen for this platform), streaming pip's output
       into the log and turning it into progress;
    3. check that the engine imports in the new environment;
    4. mark the venv complete with a hash of what was installed, so an unchanged install is not redone.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..engine_api import Aborted, NullProgress, Progress, check_abort
from ..errors import StylepassError

MARKER = ".stylepass-complete"
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "engines" / "diffusion" / "requirements.txt"


class InstallError(StylepassError, RuntimeError):
    """The install failed; the message says which step, quotes pip, and names the log file."""


def venv_python(venv: Path) -> Path:
    """The interpreter inside a venv on this platform."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments and blanks dropped)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def torch_index_args(index_url: str = "") -> list[str]:
    """pip arguments that choose the torch build: PyTorch's own package index when the user gives one.

    The default package index serves CUDA builds for Linux x86-64 (they also run on the CPU), Metal (MPS)
    builds for Apple silicon, and CPU builds for Windows. A CUDA build on Windows, or a CPU-only build on
    Linux, comes from PyTorch's own package index: the user gives its URL in the preferences (`index_url`).
    """
    return ["--extra-index-url", index_url] if index_url else []


def requirements_digest(requirements: Sequence[str], extra_args: Sequence[str]) -> str:
    text = "\n".join([*requirements, *extra_args, platform.python_version()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_installed(venv: Path, requirements: Sequence[str], extra_args: Sequence[str] = ()) -> bool:
    marker = venv / MARKER
    return (
        venv_python(venv).is_file()
        and marker.is_file()
        and marker.read_text(encoding="utf-8").strip() == requirements_digest(requirements, extra_args)
    )


def _stream(
    command: list[str],
    log,
    progress: Progress,
    abort: threading.Event | None,
    step: str,
    done: int,
    total: int,
) -> list[str]:
    """Run `command`, copying its output to `log`; progress ticks per package pip reports. Returns the lines."""
    check_abort(abort)
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            lines.append(line.rstrip())
            if line.startswith(("Collecting", "Downloading", "Installing collected", "Successfully")):
                done = min(total - 1, done + 1)
                progress.update(done, total, f"{step}: {line.strip()[:80]}")
            if abort is not None and abort.is_set():
                process.terminate()
                raise Aborted("install cancelled")
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.flush()
    if code != 0:
        tail = "\n".join(lines[-8:])
        raise InstallError(f"{step} failed (exit code {code}):\n{tail}")
    return lines


def install(
    venv: Path,
    log_path: Path,
    requirements: Sequence[str] | None = None,
    base_python: str = sys.executable,
    pip_args: Sequence[str] = (),
    check_imports: Sequence[str] = ("torch", "diffusers", "transformers", "starlette", "uvicorn"),
    progress: Progress | None = None,
    abort: threading.Event | None = None,
) -> Path:
    """Create or update the engine venv. Returns its Python.

    Args:
        venv: the folder for the venv (created; an unfinished earlier attempt is replaced).
        log_path: every command and all of pip's output go here; the error message names it.
        requirements: requirement lines; default: the diffusion engine's `requirements.txt`.
        base_python: the interpreter that creates the venv (Blender's own by default).
        pip_args: extra pip arguments, such as the torch index from `torch_index_args`.
        check_imports: modules that must import in the finished venv.

    Raises:
        InstallError: which step failed and why; see `log_path` for everything.
        Aborted: cancelled; the half-made venv is removed.
    """
    progress = progress or NullProgress()
    requirements = list(requirements if requirements is not None else read_requirements())
    if is_installed(venv, requirements, pip_args):
        progress.update(1, 1, "already installed")
        return venv_python(venv)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    total = 4 + 2 * len(requirements) + 40  # pip reports dependencies too; the bar saturates gracefully
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== Stylepass engine install {time.strftime('%Y-%m-%d %H:%M:%S')} into {venv}\n")
        try:
            # 1. A fresh venv (a previous unfinished one may be broken)
            progress.update(0, total, "creating the Python environment")
            if venv.exists() and not (venv / MARKER).is_file():
                shutil.rmtree(venv)
            _stream(
                [base_python, "-m", "venv", str(venv)], log, progress, abort, "creating the venv", 0, total
            )
            python = str(venv_python(venv))
            # 2. Packages
            progress.update(1, total, "installing packages")
            _stream(
                [python, "-m", "pip", "install", "--progress-bar", "off", *pip_args, *requirements],
                log,
                progress,
                abort,
                "pip install",
                1,
                total,
            )
            # 3. The engine imports
            if check_imports:
                progress.update(total - 2, total, "checking the engine imports")
                code = "import " + ", ".join(check_imports)
                _stream(
                    [python, "-c", code],
                    log,
                    progress,
                    abort,
                    "checking the installed engine",
                    total - 2,
                    total,
                )
        except Aborted:
            log.write("cancelled\n")
            shutil.rmtree(venv, ignore_errors=True)
            raise
        except InstallError as error:
            log.write(f"FAILED: {error}\n")
            raise InstallError(
                f"{error}\nFull log: {log_path}. Fix the cause and press Install again."
            ) from None
        except OSError as error:
            log.write(f"FAILED: {error}\n")
            raise InstallError(f"Could not run the installer: {error}. Full log: {log_path}.") from error
        # 4. Done
        (venv / MARKER).write_text(requirements_digest(requirements, pip_args) + "\n", encoding="utf-8")
        log.write("done\n")
    progress.update(total, total, "installed")
    return venv_python(venv)
