# SPDX-License-Identifier: GPL-3.0-or-later
"""The runtime: the one owner of everything Stylepass keeps alive between runs, and where engines run.

Engines that need no worker (the embedded neural style) run in Blender's own process; the others in a worker:
managed here (a venv in the extension's user folder, or a Python the artist points at) or remote (URL +
token). `RUNTIME` holds the workers, the remote clients, the warm in-process engines, the colour tables and
the passes kept in memory; `RUNTIME.release()` frees all of it (Release Memory, and `unregister`).
"""

import functools
import os
from pathlib import Path

import bpy

from stylepass_core.engine_api import release_engines
from stylepass_core.errors import StylepassError
from stylepass_core.settings import EngineSettings
from stylepass_core.stylise_job import EngineRunner, run_in_process
from stylepass_core.worker import installer

from . import ADDON_PACKAGE


class EngineHostError(StylepassError):
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


def render_device(prefs) -> str:
    """The pass render's device from the preferences (CPU without them)."""
    return prefs.render_device if prefs is not None else "CPU"


class Runtime:
    """Owns the long-lived state: workers, remote clients, in-process engines, colour tables, kept passes."""

    def __init__(self) -> None:
        # Managed workers by interpreter, at most one each (a job that needs other model folders restarts it with
        # them, so two sets of models are never loaded at once), and remote clients by (url, token): process and
        # connection handles, not scene data, so never in Scene properties.
        self.workers: dict[str, object] = {}
        self.remote_clients: dict[tuple[str, str], object] = {}
        # Colour: inverse view transforms by cache key (~1 MB each) and their per-8-bit-colour tables (up to
        # 128 MB each); see `display_colour`.
        self.inverse_views: dict[str, object] = {}
        self.colour_tables: dict[str, object] = {}
        # The last frame's passes, by record path: (fingerprint, record stamp, PassSet); see `scene_passes`.
        self.kept_passes: dict[Path, tuple] = {}

    @staticmethod
    def is_remote(settings: EngineSettings, prefs) -> bool:
        """Whether `settings`' engine runs on a remote worker (its paths are then written with '/')."""
        return settings.NEEDS_WORKER and prefs is not None and prefs.engine_location == "REMOTE"

    def runner_for(self, settings: EngineSettings, prefs, extra_model_dirs: list[str] = ()) -> EngineRunner:
        """A runner for the engine of `settings` as the preferences say. Checks the set-up, starts nothing.

        Raises:
            EngineHostError: the worker is not installed or not configured (the message says what to set).
        """
        if not settings.NEEDS_WORKER:
            return run_in_process
        if self.is_remote(settings, prefs):
            return self._remote(prefs.remote_url.strip(), prefs.remote_token.strip()).run
        return self._local(_worker_python(prefs), sorted({*model_folders(prefs), *extra_model_dirs}))

    def _remote(self, url: str, token: str):
        if not url or not token:
            raise EngineHostError(
                "Remote worker chosen but its URL or token is empty: set both in Preferences > Add-ons > Stylepass."
            )
        client = self.remote_clients.get((url, token))
        if client is None:
            from stylepass_core.worker.client import WorkerClient

            try:
                client = WorkerClient(url, token)
            except ValueError as error:
                raise EngineHostError(f"Remote worker: {error}") from error
            # One client (and its connection pool) per worker, kept between frames.
            self.remote_clients[(url, token)] = client
        return client

    def _local(self, python: str, folders: list[str]) -> EngineRunner:
        """The runner of this interpreter's one managed worker, for a job that needs `folders`.

        Nothing starts or stops here (the main thread never waits on a worker): the worker switches to these
        folders when the job runs, after the jobs running on it with other folders have ended.
        """
        worker = self.workers.get(python)
        if worker is None:
            from stylepass_core.worker.manager import LocalWorker, stage_core

            # A private copy of just the core: the extension's site-packages, where Blender installed it, also
            # holds wheels for Blender's Python that would shadow the worker venv's own packages.
            core_dir = stage_core(user_folder() / "worker-code")
            worker_log().parent.mkdir(parents=True, exist_ok=True)
            worker = LocalWorker(python, core_dir=core_dir, model_dirs=folders, log_path=worker_log())
            self.workers[python] = worker
        return functools.partial(worker.run, model_dirs=folders)

    def release(self) -> int:
        """Free everything held: stop the workers, close remote connections, release in-process engines, and
        forget the colour tables and kept passes (all load again when next needed). Returns the number of
        workers that were running."""
        stopped = 0
        for worker in list(self.workers.values()):
            if worker.pid is not None:
                stopped += 1
            worker.stop()
        self.workers.clear()
        for client in list(self.remote_clients.values()):
            client.close()
        self.remote_clients.clear()
        release_engines()
        self.inverse_views.clear()
        self.colour_tables.clear()
        self.kept_passes.clear()
        return stopped


RUNTIME = Runtime()
