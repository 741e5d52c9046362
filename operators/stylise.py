# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Frame: passes -> engine -> image -> compositor for the current frame."""

import time

import bpy

from stylepass_core.stylise_job import StylisedFrame

from ..addon import images, settings, stylise
from .modal import ModalJob, Status, reported


def _report_done(
    operator: bpy.types.Operator,
    warnings: list[str],
    frame: int,
    stylised: StylisedFrame,
    seconds: float,
    engine: float,
) -> None:
    for warning in warnings:
        operator.report({"WARNING"}, warning)
    kept = f"kept as {stylised.take.name}; " if stylised.take is not None else ""
    operator.report(
        {"INFO"},
        f"Stylepass: frame {frame} stylised in {seconds:.1f} s (engine {engine:.2f} s); {kept}files in "
        f"{stylised.png_path.parent}",
    )


class STYLEPASS_OT_stylise(ModalJob, bpy.types.Operator):
    """Render the control passes, stylise the frame with the selected engine and put the result into the
    compositor as the Stylepass node group (ESC cancels)"""

    bl_idname = "stylepass.stylise"
    bl_label = "Stylise Frame"
    bl_options = {"REGISTER", "UNDO"}

    _job: "stylise.FrameJob | None" = None

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
        _report_done(
            self, result.warnings, result.passes.frame, result.frame, seconds, result.timings["engine"]
        )
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        return reported(self, lambda: self._start(context))

    def _start(self, context: bpy.types.Context) -> Status:
        prefs = settings.preferences(context)
        run_settings = stylise.RunSettings.from_scene(context.scene, prefs)
        self._job = stylise.FrameJob(context.scene, context.view_layer, run_settings, prefs)
        return self.start_modal(context, "Stylepass: rendering passes... (Esc to cancel)")

    def step(self, context: bpy.types.Context) -> Status | None:
        job = self._job
        events = job.poll()
        if events:  # only the latest counts; several arrive between two timer ticks
            latest = events[-1]
            if latest.message:
                self._status = f"Stylepass: {latest.message} (Esc to cancel)"
            self.show_progress(context, latest.fraction, latest.message)
            images.show_latest_step_preview(context.window_manager, events)
        if not job.done:
            return None
        if job.cancelled:
            job.close()
            self.report({"WARNING"}, "Stylepass: cancelled; the scene and earlier results are unchanged.")
            return {"CANCELLED"}
        prepared, frame, image, warnings = job.complete(context.scene)
        # Opening Blender's render view from inside this modal handler keeps the operator modal after it
        # returns (seen in the real UI on 4.3 and 5.2): show the result once the handler has finished.
        images.show_result_soon(image)
        _report_done(
            self,
            warnings,
            prepared.passes.frame,
            frame,
            time.perf_counter() - job.started,
            frame.record["timings"]["engine"],
        )
        return {"FINISHED"}

    def escape(self, context: bpy.types.Context) -> None:
        self._job.cancel()

    def close(self, context: bpy.types.Context) -> None:
        # Blender is closing the operator (file load, quit): stop the thread and the second Blender.
        if self._job is not None:
            self._job.close()


classes = (STYLEPASS_OT_stylise,)
