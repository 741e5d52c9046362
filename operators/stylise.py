# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Frame: passes -> engine -> image -> compositor for the current frame."""

import time

import bpy

from stylepass_core.jobs import BackgroundJob

from ..addon import images, settings, stylise
from .modal import ModalJob, Status, reported


def _report_done(
    operator: bpy.types.Operator, warnings: list[str], frame: int, png_path, seconds: float, engine: float
) -> None:
    for warning in warnings:
        operator.report({"WARNING"}, warning)
    operator.report(
        {"INFO"},
        f"Stylepass: frame {frame} stylised in {seconds:.1f} s (engine {engine:.2f} s); files in {png_path.parent}",
    )


class STYLEPASS_OT_stylise(ModalJob, bpy.types.Operator):
    """Render the control passes, stylise the frame with the selected engine and put the result into the
    compositor as the Stylepass node group (ESC cancels)"""

    bl_idname = "stylepass.stylise"
    bl_label = "Stylise Frame"
    bl_options = {"REGISTER", "UNDO"}

    _job: BackgroundJob | None = None
    _prepared: "stylise.PreparedFrame | None" = None
    _started = 0.0

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.view_layer is not None

    def execute(self, context: bpy.types.Context) -> Status:
        # Synchronous: background mode, scripts and farms get the same result as the UI.
        return reported(self, lambda: self._stylise(context))

    def _stylise(self, context: bpy.types.Context) -> Status:
        started = time.perf_counter()
        prefs = settings.preferences(context)
        run_settings = stylise.RunSettings.from_scene(context.scene, prefs)
        result = stylise.stylise(context.scene, context.view_layer, run_settings, prefs=prefs)
        seconds = time.perf_counter() - started
        frame, png_path = result.passes.frame, result.frame.png_path
        _report_done(self, result.warnings, frame, png_path, seconds, result.timings["engine"])
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        return reported(self, lambda: self._start(context))

    def _start(self, context: bpy.types.Context) -> Status:
        self._started = time.perf_counter()
        prefs = settings.preferences(context)
        run_settings = stylise.RunSettings.from_scene(context.scene, prefs)
        # The pass render blocks briefly (it is a Blender render); the engine then runs on a thread.
        prepared = self._prepared = stylise.prepare(
            context.scene, context.view_layer, run_settings, prefs=prefs
        )
        self._job = BackgroundJob(lambda progress, abort: stylise.run(prepared, progress, abort)).start()
        return self.start_modal(context, "Stylepass: stylising... (Esc to cancel)")

    def step(self, context: bpy.types.Context) -> Status | None:
        job = self._job
        for progress in job.poll():
            self.show_progress(context, progress.fraction)
            if progress.message:
                self.show_status(context, f"Stylepass: {progress.message} (Esc to cancel)")
        if not job.done:
            return None
        if job.cancelled:
            self.report({"WARNING"}, "Stylepass: cancelled; the scene and earlier results are unchanged.")
            return {"CANCELLED"}
        if job.error is not None:
            raise job.error
        image, warnings = stylise.finish(context.scene, self._prepared, job.result)
        # Opening Blender's render view from inside this modal handler keeps the operator modal after it
        # returns (seen in the real UI on 4.3 and 5.2): show the result once the handler has finished.
        images.show_result_soon(image)
        _report_done(
            self,
            self._prepared.warnings + warnings,
            self._prepared.passes.frame,
            job.result.png_path,
            time.perf_counter() - self._started,
            job.result.record["timings"]["engine"],
        )
        return {"FINISHED"}

    def escape(self, context: bpy.types.Context) -> None:
        self._job.cancel()

    def close(self, context: bpy.types.Context) -> None:
        # Blender is closing the operator (file load, quit): stop the thread before its data goes away.
        if self._job is not None:
            self._job.cancel(wait=5.0)


classes = (STYLEPASS_OT_stylise,)
