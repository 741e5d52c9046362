# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Frame: passes -> engine -> image -> compositor for the current frame."""

import time

import bpy

from stylepass_core.jobs import BackgroundJob

from ..addon import images, settings, stylise
from ..addon.pass_process import PassProcess
from ..addon.scene_passes import PassPlan, discard, publish
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
    _process: PassProcess | None = None
    _plan: "PassPlan | None" = None
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
        scene = context.scene
        prefs = settings.preferences(context)
        run_settings = stylise.RunSettings.from_scene(scene, prefs)
        checked = stylise.check(scene, context.view_layer, run_settings, prefs=prefs)
        plan = checked.plan
        if plan.reused is not None:
            prepared = stylise.build(checked, plan.reused)
            self._job = BackgroundJob(
                lambda progress, abort: (prepared, stylise.run(prepared, progress, abort))
            )
        else:
            # A second Blender renders the passes: this one only writes the scene's copy (milliseconds).
            try:
                process = self._process = PassProcess.start(scene, run_settings.passes.device)
            except BaseException:
                discard(plan)
                raise
            self._plan = plan
            self._job = BackgroundJob(
                lambda progress, abort: stylise.render_and_run(checked, process, progress, abort)
            )
        self._job.start()
        return self.start_modal(context, "Stylepass: rendering passes... (Esc to cancel)")

    def step(self, context: bpy.types.Context) -> Status | None:
        job = self._job
        events = job.poll()
        if events:  # only the latest counts; several arrive between two timer ticks
            latest = events[-1]
            if latest.message:
                self._status = f"Stylepass: {latest.message} (Esc to cancel)"
            self.show_progress(context, latest.fraction, latest.message)
        if not job.done:
            return None
        self._close_process()
        if job.cancelled:
            self.report({"WARNING"}, "Stylepass: cancelled; the scene and earlier results are unchanged.")
            return {"CANCELLED"}
        if job.error is not None:
            raise job.error
        prepared, frame = job.result
        if self._plan is not None:
            publish(prepared.passes, self._plan)
        image, warnings = stylise.finish(context.scene, prepared, frame)
        # Opening Blender's render view from inside this modal handler keeps the operator modal after it
        # returns (seen in the real UI on 4.3 and 5.2): show the result once the handler has finished.
        images.show_result_soon(image)
        _report_done(
            self,
            prepared.warnings + warnings,
            prepared.passes.frame,
            frame.png_path,
            time.perf_counter() - self._started,
            frame.record["timings"]["engine"],
        )
        return {"FINISHED"}

    def _close_process(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None

    def escape(self, context: bpy.types.Context) -> None:
        self._job.cancel()

    def close(self, context: bpy.types.Context) -> None:
        # Blender is closing the operator (file load, quit): stop the thread before its data goes away.
        if self._job is not None:
            self._job.cancel(wait=5.0)
        if self._process is not None:
            self._process.kill()
            self._process = None


classes = (STYLEPASS_OT_stylise,)
