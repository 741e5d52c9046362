# SPDX-License-Identifier: GPL-3.0-or-later
"""Where engines run: neural style in Blender's own process, diffusion in a worker process.

The worker is either managed here (a venv in the extension's user folder, or a Python the artist points
at) or a remote one (URL + token). Managed workers are kept warm between jobs and stopped when the add-on
is disabled or Blender quits; "Release Memory" stops them on request.
"""

import os
from pathlib import Path

import bpy

from . import ADDON_PACKAGE
from .stylepass_core.stylise_job import EngineRunner, run_in_process
from .stylepass_core.worker import installer

# Engines that need torch run in a worker; the rest (the embedded neural style) run in Blender itself.
WORKER_ENGINES = {"DIFFUSION"}

# Managed workers by (python, model folders): process handles, not scene data, so not in Scene properties.
_workers: dict[tuple, object] = {}


class EngineHostError(Exception):
    """The engine cannot be reached; the message says what to set up."""


def user_folder() -> Path:
    """The extension's writable per-user folder (engine venv, logs)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=True))
    except (ValueError, AttributeError):
        # Installed as a legacy add-on (not an extension): fall back to Blender's user config folder.
        folder = Path(bpy.utils.user_resource("CONFIG")) / "stylepass"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def engine_venv() -> Path:
    return user_folder() / "engine-venv"


def install_log() -> Path:
    return user_folder() / "logs" / "install.log"


def worker_log() -> Path:
    return user_folder() / "logs" / "worker.log"


def model_folders(prefs) -> list[str]:
    folders = [bpy.path.abspath(item.path) for item in prefs.model_dirs if item.path] if prefs else []
    return [os.path.normpath(f) for f in folders]


def _worker_python(prefs) -> str:
    if prefs is None or prefs.engine_location == "MANAGED":
        python = installer.venv_python(engine_venv())
        if not (engine_venv() / installer.MARKER).is_file():
            raise EngineHostError(
                "The diffusion engine is not installed: Edit > Preferences > Add-ons > Stylepass > "
                "Install Engine (or choose an existing Python or a remote worker there)."
            )
        return str(python)
    python = bpy.path.abspath(prefs.python_path)
    if not python or not os.path.isfile(python):
        raise EngineHostError(
            f"The engine Python '{prefs.python_path}' does not exist: set it in Preferences > Add-ons > Stylepass."
        )
    return python


def runner_for(engine_id: str, prefs, extra_model_dirs: list[str] = ()) -> EngineRunner:
    """A runner for `engine_id` as the preferences say. Checks the set-up, starts nothing (the job does)."""
    if engine_id not in WORKER_ENGINES:
        return run_in_process
    from .stylepass_core.worker.client import WorkerClient

    if prefs is not None and prefs.engine_location == "REMOTE":
        if not prefs.remote_url or not prefs.remote_token:
            raise EngineHostError(
                "Remote worker chosen but its URL or token is empty: set both in Preferences > Add-ons > Stylepass."
            )
        try:
            client = WorkerClient(prefs.remote_url.strip(), prefs.remote_token.strip())
        except ValueError as error:
            raise EngineHostError(f"Remote worker: {error}") from error
        return client.run
    python = _worker_python(prefs)
    folders = sorted({*model_folders(prefs), *extra_model_dirs})
    key = (python, tuple(folders))
    worker = _workers.get(key)
    if worker is None:
        from .stylepass_core.worker.manager import LocalWorker

        addon_dir = Path(__file__).resolve().parent
        worker_log().parent.mkdir(parents=True, exist_ok=True)
        worker = LocalWorker(python, pythonpath=[str(addon_dir)], model_dirs=folders, log_path=worker_log())
        _workers[key] = worker
    return worker.run


def release_memory() -> int:
    """Stop every managed worker (frees its GPU and RAM). Returns how many were running."""
    stopped = 0
    for worker in list(_workers.values()):
        if worker.pid is not None:
            stopped += 1
        worker.stop()
    _workers.clear()
    return stopped
