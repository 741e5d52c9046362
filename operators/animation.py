# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylise Animation (resumable, coherent, never blocking the UI) and Render Stylised Animation."""

import dataclasses
import os
import threading

import bpy

from stylepass_core.errors import StylepassError
from stylepass_core.frame_steps import run_to_end
from stylepass_core.settings import CoherenceSettings

from ..addon import animation, images, properties, settings, stylise
from .modal import ModalJob, Status, reported

# Stylise Animation asks first when the range is longer than this (the default scene has 250 frames).
CONFIRM_ABOVE_FRAMES = 50


class _AnimationRange:
    use_range: bpy.props.BoolProperty(
        name="Custom Range", description="Use the range below instead of the scene's", default=False
    )
    frame_start: bpy.props.IntProperty(name="Start", description="First frame of the custom range", default=1)
    frame_end: bpy.props.IntProperty(name="End", description="Last frame of the custom range", default=250)
    overwrite: bpy.props.BoolProperty(
        name="Overwrite",
        description="Stylise every frame again, also those whose result on disk is up to date",
        default=False,
    )
    farm_chunk: bpy.props.BoolProperty(
        name="Farm Chunk",
        description=(
            "The custom range is one chunk of the scene's frame range (a render farm's task): keyframes are "
            "placed as for the whole range, and the chunk also stylises the rest of the keyframe spans it "
            "starts or ends in, so chunks stylised apart give the frames of one run"
        ),
        default=False,
        options={"SKIP_SAVE"},
    )

    def animation_options(self, scene: bpy.types.Scene) -> animation.AnimationOptions:
        return animation.AnimationOptions(
            frame_start=self.frame_start if self.use_range else scene.frame_start,
            frame_end=self.frame_end if self.use_range else scene.frame_end,
            frame_step=scene.frame_step,
            overwrite=self.overwrite,
            coherence=properties.read(scene.stylepass, CoherenceSettings),
            shot=(scene.frame_start, scene.frame_end) if self.farm_chunk else None,
        )

    @staticmethod
    def run_settings(context: bpy.types.Context) -> "stylise.RunSettings":
        run_settings = stylise.RunSettings.from_scene(context.scene, settings.preferences(context))
        # A whole shot would flood the image list with per-frame pass images.
        return dataclasses.replace(run_settings, passes=run_settings.passes.replace(show_images=False))


def _summary_report(operator: bpy.types.Operator, summary: animation.AnimationSummary) -> Status:
    for warning in summary.warnings:
        operator.report({"WARNING"}, f"Stylepass: {warning}")
    message = (
        f"Stylepass: {len(summary.stylised)} frame(s) stylised, {len(summary.skipped)} up to date "
        f"in {summary.seconds:.1f} s"
    )
    if summary.stopped_early:
        operator.report({"WARNING"}, message + "; stopped early, run again to continue")
        return {"CANCELLED"}
    operator.report({"INFO"}, message)
    return {"FINISHED"}


class STYLEPASS_OT_stylise_animation(_AnimationRange, ModalJob, bpy.types.Operator):
    """Stylise every frame of the range with temporal coherence; frames already up to date are skipped, so a
    stopped run continues where it left off (ESC cancels the frame being stylised)"""

    bl_idname = "stylepass.stylise_animation"
    bl_label = "Stylise Animation"
    bl_options = {"REGISTER", "UNDO"}

    escape_text = "Stylepass: stopping, cancelling the frame being stylised..."
    _steps = None
    _job = None  # the frame job the latest step waited on, and its latest progress event
    _job_event = None
    _stop: threading.Event | None = None
    _summary: animation.AnimationSummary | None = None

    def _begin(self, context: bpy.types.Context, interactive: bool = False):
        self._stop = threading.Event()
        self._summary = animation.AnimationSummary()
        return animation.animation_steps(
            context.scene,
            context.view_layer,
            self.run_settings(context),
            self.animation_options(context.scene),
            settings.preferences(context),
            self._stop,
            self._summary,
            separate_process=interactive,  # the UI never waits on a pass render
        )

    _interactive = False  # set by invoke: after its confirmation Blender calls execute on this instance

    def execute(self, context: bpy.types.Context) -> Status:
        if self._interactive and context.window is not None:
            return self._start(context)

        def work() -> Status:
            steps = self._begin(context)
            run_to_end(
                steps, lambda step: print(f"Stylepass: {step.done}/{step.total} {step.message}", flush=True)
            )
            return _summary_report(self, self._summary)

        return reported(self, work)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._interactive = True
        frames = len(self.animation_options(context.scene).frames)
        if frames > CONFIRM_ABOVE_FRAMES:
            return context.window_manager.invoke_confirm(
                self,
                event,
                title=f"Stylise {frames} frames?",
                message="ESC stops it; finished frames are kept.",
            )
        return self._start(context)

    def _start(self, context: bpy.types.Context) -> Status:
        def start() -> Status:
            self._steps = self._begin(context, interactive=True)
            return self.start_modal(context, "Stylepass: stylising the animation... (Esc to stop)")

        return reported(self, start)

    def step(self, context: bpy.types.Context) -> Status | None:
        # One short step: never waits on the engine (it yields while a frame's job runs).
        try:
            current = next(self._steps)
        except StopIteration:
            return _summary_report(self, self._summary)
        # While a frame's job runs, its own progress says what it does (the pass render, the engine, the
        # frames between two keyframes being fused and written).
        poll = getattr(current.job, "poll", None)
        events = poll() if poll is not None else []
        if current.job is not self._job:
            self._job, self._job_event = current.job, None
        if events:
            self._job_event = events[-1]
            images.show_latest_step_preview(context.window_manager, events)
        event = self._job_event if current.waiting else None
        fraction = current.done + (event.fraction if event is not None else 0.0)
        self.show_progress(context, fraction / max(1, current.total))
        if not self._stop.is_set():
            doing = current.message + (f": {event.message}" if event is not None and event.message else "")
            self.show_status(
                context, f"Stylepass: {current.done} of {current.total} frames - {doing} (Esc to stop)"
            )
        return None

    def escape(self, context: bpy.types.Context) -> None:
        self._stop.set()

    def close(self, context: bpy.types.Context) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._steps is not None:
            self._steps.close()  # cancels the running frame and restores the scene frame


def _output_problem(scene: bpy.types.Scene) -> str:
    """Why the animation render could not write or show Stylepass, or "" when it can."""
    if not scene.render.use_compositing:
        return "Compositing is off (Output > Post Processing): the render would not show Stylepass."
    folder = os.path.dirname(bpy.path.abspath(scene.render.filepath)) or "."
    existing = (
        folder  # the render creates missing folders: the nearest existing one must be a writable folder
    )
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        return f"The render output folder '{folder}' cannot be written: set Output > Output Path to a writable folder."
    return ""


class STYLEPASS_OT_render_animation(_AnimationRange, bpy.types.Operator):
    """Stylise the frames that are missing or out of date, then render the animation through the compositor
    to the scene's output path (also from the command line)"""

    bl_idname = "stylepass.render_animation"
    bl_label = "Render Stylised Animation"

    def execute(self, context: bpy.types.Context) -> Status:
        return reported(self, lambda: self._render(context))

    def _render(self, context: bpy.types.Context) -> Status:
        scene = context.scene
        # 1. Everything that would make the render useless is refused before any frame is stylised
        problem = _output_problem(scene)
        if problem:
            raise StylepassError(problem)
        summary = animation.stylise_animation(
            scene,
            context.view_layer,
            self.run_settings(context),
            self.animation_options(scene),
            settings.preferences(context),
        )
        for warning in summary.warnings:
            self.report({"WARNING"}, f"Stylepass: {warning}")
        # 2. The render through the compositor
        frame_range = (scene.frame_start, scene.frame_end)
        rendered = (self.frame_start, self.frame_end) if self.use_range else frame_range
        scene.frame_start, scene.frame_end = rendered  # a farm chunk renders its own frames only
        try:
            result = bpy.ops.render.render(animation=True, scene=scene.name)
        finally:
            scene.frame_start, scene.frame_end = frame_range
        if "FINISHED" not in result:
            self.report({"WARNING"}, "Stylepass: the animation render was cancelled")
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f"Stylepass: rendered frames {rendered[0]}-{rendered[1]} to "
            f"{bpy.path.abspath(scene.render.filepath)}",
        )
        return {"FINISHED"}


def draw_render_menu(self, context: bpy.types.Context) -> None:
    self.layout.separator()
    self.layout.operator("stylepass.stylise", icon="BRUSH_DATA")
    self.layout.operator(STYLEPASS_OT_render_animation.bl_idname, icon="RENDER_ANIMATION")


classes = (STYLEPASS_OT_stylise_animation, STYLEPASS_OT_render_animation)
