# SPDX-License-Identifier: GPL-3.0-or-later
"""Read what the ComfyUI server has (for the pickers), on a thread; ESC cancels."""

import bpy

from stylepass_core.errors import StylepassError
from stylepass_core.jobs import BackgroundJob

from ..addon import comfyui_server, settings
from .modal import ModalJob, Status


class STYLEPASS_OT_comfyui_read(ModalJob, bpy.types.Operator):
    """Read the ComfyUI server's checkpoints, LoRAs, ControlNets, samplers and schedulers for the pickers"""

    bl_idname = "stylepass.comfyui_read"
    bl_label = "Read from Server"

    timer_interval = 0.1
    shows_progress = False  # one request: its status text says what it does
    _job: BackgroundJob | None = None
    _server = ""

    def _start(self, context: bpy.types.Context) -> BackgroundJob:
        server, headers, timeout = comfyui_server.server_of(settings.preferences(context))
        self._server = server
        return BackgroundJob(
            lambda progress, abort: comfyui_server.read_lists(server, headers, min(timeout, 30.0))
        ).start()

    def execute(self, context: bpy.types.Context) -> Status:
        job = self._start(context)
        job.wait()
        return self._finish(context, job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._job = self._start(context)
        return self.start_modal(context, f"Stylepass: reading {self._server}... (Esc to cancel)")

    def step(self, context: bpy.types.Context) -> Status | None:
        return self._finish(context, self._job) if self._job.done else None

    def escape(self, context: bpy.types.Context) -> None:
        self._job.cancel()

    def close(self, context: bpy.types.Context) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel()

    def _finish(self, context: bpy.types.Context, job: BackgroundJob) -> Status:
        wm = context.window_manager
        if job.cancelled:
            return {"CANCELLED"}
        if job.error is not None:
            message = (
                str(job.error) if isinstance(job.error, StylepassError | ValueError) else repr(job.error)
            )
            comfyui_server.show_lists(wm, self._server, None, message)
            self.report({"ERROR"}, f"Stylepass: {message}")
            return {"CANCELLED"}
        found = comfyui_server.summary(job.result)
        comfyui_server.show_lists(wm, self._server, job.result, found)
        self.report({"INFO"}, f"Stylepass: {self._server} has {found}")
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()
        return {"FINISHED"}


classes = (STYLEPASS_OT_comfyui_read,)
