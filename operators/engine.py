# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine's machinery: install it, read its logs, its model folders, and Release Memory."""

import sys

import bpy

from stylepass_core.jobs import BackgroundJob
from stylepass_core.worker import installer

from ..addon import runtime, settings
from .modal import ModalJob, Status

_OFFLINE = "Online access is off (Preferences > System > Network): the install downloads packages."


class STYLEPASS_OT_release_memory(bpy.types.Operator):
    """Stop the diffusion worker and free what Stylepass holds in memory: warm engines, colour tables, kept
    passes (they load again on the next run)"""

    bl_idname = "stylepass.release_memory"
    bl_label = "Release Memory"

    def execute(self, context: bpy.types.Context) -> Status:
        stopped = runtime.RUNTIME.release()
        worker = f"stopped {stopped} worker(s)" if stopped else "no worker was running"
        self.report({"INFO"}, f"Stylepass: memory released; {worker}")
        return {"FINISHED"}


class STYLEPASS_OT_install_engine(ModalJob, bpy.types.Operator):
    """Install the diffusion engine (torch, diffusers) into a Python environment in Stylepass's user folder.
    Downloads a few GB; progress in the status bar, ESC cancels, everything is logged"""

    bl_idname = "stylepass.install_engine"
    bl_label = "Install Engine"

    timer_interval = 0.2
    _job: BackgroundJob | None = None

    @staticmethod
    def _work(context: bpy.types.Context):
        prefs = settings.preferences(context)
        pip_args = installer.torch_index_args(index_url=prefs.torch_index_url if prefs else "")
        venv, log = runtime.engine_venv(), runtime.install_log()
        return lambda progress, abort: installer.install(
            venv, log, pip_args=pip_args, progress=progress, abort=abort, base_python=sys.executable
        )

    def execute(self, context: bpy.types.Context) -> Status:
        if not bpy.app.online_access:
            self.report({"ERROR"}, _OFFLINE)
            return {"CANCELLED"}
        job = BackgroundJob(self._work(context)).start()
        job.wait()
        return self._finish(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not bpy.app.online_access:
            self.report({"ERROR"}, _OFFLINE)
            return {"CANCELLED"}
        self._job = BackgroundJob(self._work(context)).start()
        return self.start_modal(context, "Stylepass install: starting... (Esc to cancel)")

    def step(self, context: bpy.types.Context) -> Status | None:
        for progress in self._job.poll():
            self.show_progress(context, progress.fraction)
            self.show_status(context, f"Stylepass install: {progress.message} (Esc to cancel)")
        return self._finish(self._job) if self._job.done else None

    def escape(self, context: bpy.types.Context) -> None:
        self._job.cancel()

    def close(self, context: bpy.types.Context) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel(wait=10.0)

    def _finish(self, job: BackgroundJob) -> Status:
        if job.cancelled:
            self.report(
                {"WARNING"}, "Stylepass: engine install cancelled; press Install Engine to start again."
            )
            return {"CANCELLED"}
        if job.error is not None:
            self.report({"ERROR"}, f"Stylepass: engine install failed: {job.error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Stylepass: diffusion engine installed ({job.result})")
        return {"FINISHED"}


class STYLEPASS_OT_open_engine_log(bpy.types.Operator):
    """Open the engine install and worker logs in Blender's text editor"""

    bl_idname = "stylepass.open_engine_log"
    bl_label = "Open Engine Log"

    def execute(self, context: bpy.types.Context) -> Status:
        opened = 0
        for path in (runtime.install_log(), runtime.worker_log()):
            if path.is_file():
                bpy.data.texts.load(str(path))
                opened += 1
        if not opened:
            self.report({"WARNING"}, "Stylepass: no engine log yet")
            return {"CANCELLED"}
        self.report({"INFO"}, "Stylepass: logs opened in the Text Editor")
        return {"FINISHED"}


class STYLEPASS_OT_model_folder_add(bpy.types.Operator):
    """Add a folder the diffusion worker may load models from"""

    bl_idname = "stylepass.model_folder_add"
    bl_label = "Add Model Folder"

    def execute(self, context: bpy.types.Context) -> Status:
        settings.preferences(context).model_dirs.add()
        return {"FINISHED"}


class STYLEPASS_OT_model_folder_remove(bpy.types.Operator):
    """Remove this model folder"""

    bl_idname = "stylepass.model_folder_remove"
    bl_label = "Remove Model Folder"

    index: bpy.props.IntProperty(name="Index", description="Which folder", default=0)

    def execute(self, context: bpy.types.Context) -> Status:
        folders = settings.preferences(context).model_dirs
        if 0 <= self.index < len(folders):
            folders.remove(self.index)
        return {"FINISHED"}


classes = (
    STYLEPASS_OT_release_memory,
    STYLEPASS_OT_install_engine,
    STYLEPASS_OT_open_engine_log,
    STYLEPASS_OT_model_folder_add,
    STYLEPASS_OT_model_folder_remove,
)
