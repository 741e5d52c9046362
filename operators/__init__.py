# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass operators: thin buttons that read settings, call one function of `addon/`, and report."""

import bpy

from ..addon import images, scene_passes, settings, stylise
from ..addon.stylepass_core.jobs import BackgroundJob


def _device(context: bpy.types.Context) -> str:
    prefs = settings.preferences(context)
    return prefs.render_device if prefs else "CPU"


class STYLEPASS_OT_render_passes(bpy.types.Operator):
    """Render exact control passes (beauty, depth, normals, line art, segmentation, object index, motion) of
    the current frame through the scene camera"""

    bl_idname = "stylepass.render_passes"
    bl_label = "Render Control Passes"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.view_layer is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        options = scene_passes.PassOptions.from_scene(scene, device=_device(context))
        try:
            result = scene_passes.render_passes(scene, context.view_layer, options)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        for warning in result.warnings:
            self.report({"WARNING"}, warning)
        folder = result.json_path.parent
        self.report(
            {"INFO"},
            f"Stylepass: {len(result.files)} passes of frame {result.frame} "
            f"({result.width} x {result.height}) written to {folder}",
        )
        return {"FINISHED"}


def _report_done(operator: bpy.types.Operator, result: "stylise.StyliseResult") -> None:
    for warning in result.warnings:
        operator.report({"WARNING"}, warning)
    operator.report(
        {"INFO"},
        f"Stylepass: frame {result.passes.frame} stylised in {result.timings['engine']:.2f} s -> "
        f"{result.frame.png_path}",
    )


class STYLEPASS_OT_stylise(bpy.types.Operator):
    """Render the control passes, stylise the frame with the selected engine and put the result into the
    compositor as the Stylepass node group (ESC cancels)"""

    bl_idname = "stylepass.stylise"
    bl_label = "Stylise Frame"
    bl_options = {"REGISTER", "UNDO"}

    _job: BackgroundJob | None = None
    _prepared: "stylise.PreparedFrame | None" = None
    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.view_layer is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Synchronous: background mode, scripts and farms get the same result as the UI.
        scene = context.scene
        options = stylise.StyleOptions.from_scene(scene, _device(context))
        try:
            result = stylise.stylise(scene, context.view_layer, options)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        _report_done(self, result)
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        scene = context.scene
        options = stylise.StyleOptions.from_scene(scene, _device(context))
        try:
            # The pass render blocks briefly (it is a Blender render); the engine then runs on a thread.
            self._prepared = stylise.prepare(scene, context.view_layer, options)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        prepared = self._prepared
        self._job = BackgroundJob(lambda progress, abort: stylise.run(prepared, progress, abort)).start()
        wm = context.window_manager
        wm.progress_begin(0, 100)
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        context.workspace.status_text_set("Stylepass: stylising... (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            context.workspace.status_text_set("Stylepass: cancelling...")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        for progress in job.poll():
            context.window_manager.progress_update(int(progress.fraction * 100))
            if progress.message:
                context.workspace.status_text_set(f"Stylepass: {progress.message} (Esc to cancel)")
        if not job.done:
            return {"PASS_THROUGH"}
        self._cleanup(context)
        if job.cancelled:
            self.report({"WARNING"}, "Stylepass: cancelled; the scene and earlier results are unchanged.")
            return {"CANCELLED"}
        if job.error is not None:
            self.report({"ERROR"}, f"Stylepass: {job.error}")
            return {"CANCELLED"}
        try:
            image, warnings = stylise.finish(context.scene, self._prepared, job.result)
        except (scene_passes.StylepassError, OSError) as error:
            self.report({"ERROR"}, f"Stylepass: {error}")
            return {"CANCELLED"}
        images.show_in_image_editor(context, image)
        for warning in self._prepared.passes.warnings + warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Stylepass: stylised -> {job.result.png_path}")
        return {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:
        # Blender is closing the operator (file load, quit): stop the thread before its data goes away.
        if self._job is not None:
            self._job.cancel(wait=5.0)
        self._cleanup(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)


classes = (STYLEPASS_OT_render_passes, STYLEPASS_OT_stylise)

register, unregister = bpy.utils.register_classes_factory(classes)
