# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass operators: thin buttons that read settings, call one function of `addon/`, and report."""

import threading

import bpy

from ..addon import animation, display_colour, engine_host, images, scene_passes, settings, stylise
from ..addon.stylepass_core.jobs import BackgroundJob
from ..addon.stylepass_core.worker import installer


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


def _end_modal(context: bpy.types.Context, timer) -> None:
    """Undo what a modal operator set up: its timer, the progress bar, the status text. Returns None."""
    wm = context.window_manager
    if timer is not None:
        wm.event_timer_remove(timer)
    wm.progress_end()
    if context.workspace is not None:
        context.workspace.status_text_set(None)


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
        prefs = settings.preferences(context)
        options = stylise.StyleOptions.from_scene(scene, _device(context), prefs)
        try:
            result = stylise.stylise(scene, context.view_layer, options, prefs=prefs)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        _report_done(self, result)
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        scene = context.scene
        prefs = settings.preferences(context)
        options = stylise.StyleOptions.from_scene(scene, _device(context), prefs)
        try:
            # The pass render blocks briefly (it is a Blender render); the engine then runs on a thread.
            self._prepared = stylise.prepare(scene, context.view_layer, options, prefs=prefs)
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
        self._timer = _end_modal(context, self._timer)


class STYLEPASS_OT_release_memory(bpy.types.Operator):
    """Stop the diffusion worker and free the memory its models and the colour tables hold (they load again
    on the next run)"""

    bl_idname = "stylepass.release_memory"
    bl_label = "Release Memory"

    def execute(self, context: bpy.types.Context) -> set[str]:
        stopped = engine_host.release_memory()
        display_colour.release_memory()
        scene_passes.forget_recent()
        self.report(
            {"INFO"}, f"Stylepass: stopped {stopped} worker(s)" if stopped else "Stylepass: no worker running"
        )
        return {"FINISHED"}


class STYLEPASS_OT_install_engine(bpy.types.Operator):
    """Install the diffusion engine (torch, diffusers) into a Python environment in Stylepass's user folder.
    Downloads a few GB; progress in the status bar, ESC cancels, everything is logged"""

    bl_idname = "stylepass.install_engine"
    bl_label = "Install Engine"

    _job: BackgroundJob | None = None
    _timer = None

    def _work(self, context: bpy.types.Context):
        prefs = settings.preferences(context)
        pip_args = installer.torch_index_args(index_url=prefs.torch_index_url if prefs else "")
        venv, log = engine_host.engine_venv(), engine_host.install_log()
        return lambda progress, abort: installer.install(
            venv, log, pip_args=pip_args, progress=progress, abort=abort, base_python=_base_python()
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            self.report(
                {"ERROR"},
                "Online access is off (Preferences > System > Network): the install downloads packages.",
            )
            return {"CANCELLED"}
        job = BackgroundJob(self._work(context)).start()
        job.wait()
        return self._finish(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not bpy.app.online_access:
            self.report(
                {"ERROR"},
                "Online access is off (Preferences > System > Network): the install downloads packages.",
            )
            return {"CANCELLED"}
        self._job = BackgroundJob(self._work(context)).start()
        wm = context.window_manager
        wm.progress_begin(0, 100)
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            self._job.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        for progress in self._job.poll():
            context.window_manager.progress_update(int(progress.fraction * 100))
            context.workspace.status_text_set(f"Stylepass install: {progress.message} (Esc to cancel)")
        if not self._job.done:
            return {"PASS_THROUGH"}
        self.cancel(context)
        return self._finish(self._job)

    def cancel(self, context: bpy.types.Context) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel(wait=10.0)
        self._timer = _end_modal(context, self._timer)

    def _finish(self, job: BackgroundJob) -> set[str]:
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


def _base_python() -> str:
    import sys

    return sys.executable


class STYLEPASS_OT_open_engine_log(bpy.types.Operator):
    """Open the engine install and worker logs in Blender's text editor"""

    bl_idname = "stylepass.open_engine_log"
    bl_label = "Open Engine Log"

    def execute(self, context: bpy.types.Context) -> set[str]:
        opened = 0
        for path in (engine_host.install_log(), engine_host.worker_log()):
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

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings.preferences(context).model_dirs.add()
        return {"FINISHED"}


class STYLEPASS_OT_model_folder_remove(bpy.types.Operator):
    """Remove this model folder"""

    bl_idname = "stylepass.model_folder_remove"
    bl_label = "Remove Model Folder"

    index: bpy.props.IntProperty(name="Index", description="Which folder", default=0)

    def execute(self, context: bpy.types.Context) -> set[str]:
        folders = settings.preferences(context).model_dirs
        if 0 <= self.index < len(folders):
            folders.remove(self.index)
        return {"FINISHED"}


class STYLEPASS_OT_control_add(bpy.types.Operator):
    """Add a ControlNet unit driven by one of the control passes"""

    bl_idname = "stylepass.control_add"
    bl_label = "Add Control"
    bl_options = {"REGISTER", "UNDO"}

    map: bpy.props.EnumProperty(name="Pass", description="Which pass drives it", items=settings.CONTROL_MAPS)

    def execute(self, context: bpy.types.Context) -> set[str]:
        controls = context.scene.stylepass.controls
        control = controls.add()
        control.map = self.map
        return {"FINISHED"}


class STYLEPASS_OT_control_remove(bpy.types.Operator):
    """Remove this ControlNet unit"""

    bl_idname = "stylepass.control_remove"
    bl_label = "Remove Control"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(name="Index", description="Which control", default=0)

    def execute(self, context: bpy.types.Context) -> set[str]:
        controls = context.scene.stylepass.controls
        if 0 <= self.index < len(controls):
            controls.remove(self.index)
        return {"FINISHED"}


class STYLEPASS_OT_diffusion_preset(bpy.types.Operator):
    """Set model, scheduler, steps and controls for a common diffusion set-up"""

    bl_idname = "stylepass.diffusion_preset"
    bl_label = "Diffusion Preset"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(
        name="Preset",
        description="Which set-up",
        items=[(key, preset.label, preset.description) for key, preset in settings.DIFFUSION_PRESETS.items()],
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings.apply_diffusion_preset(context.scene.stylepass, self.preset)
        return {"FINISHED"}


def _animation_options(op, scene: bpy.types.Scene) -> "animation.AnimationOptions":
    s = scene.stylepass
    start = op.frame_start if op.use_range else scene.frame_start
    end = op.frame_end if op.use_range else scene.frame_end
    return animation.AnimationOptions(
        frame_start=start,
        frame_end=end,
        frame_step=scene.frame_step,
        overwrite=op.overwrite,
        temporal=s.temporal_coherence,
        temporal_weight=s.temporal_weight,
        keyframe_interval=s.keyframe_interval,
    )


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


class STYLEPASS_OT_stylise_animation(_AnimationRange, bpy.types.Operator):
    """Stylise every frame of the range with temporal coherence; frames already up to date are skipped, so a
    stopped run continues where it left off (ESC stops after the current frame)"""

    bl_idname = "stylepass.stylise_animation"
    bl_label = "Stylise Animation"
    bl_options = {"REGISTER", "UNDO"}

    _steps = None
    _stop: threading.Event | None = None
    _timer = None

    def _start(self, context: bpy.types.Context):
        scene = context.scene
        prefs = settings.preferences(context)
        style = stylise.StyleOptions.from_scene(scene, _device(context), prefs)
        style.passes.show_images = False
        self._stop = threading.Event()
        self._summary = animation.AnimationSummary()
        return animation.animation_steps(
            scene,
            context.view_layer,
            style,
            _animation_options(self, scene),
            prefs,
            self._stop,
            self._summary,
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            for step in self._start(context):
                print(f"Stylepass: {step.done}/{step.total} {step.message}", flush=True)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return self._report(self._summary)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._steps = self._start(context)
        wm = context.window_manager
        wm.progress_begin(0, 100)
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            self._stop.set()
            context.workspace.status_text_set("Stylepass: stopping after the current frame...")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            step = next(self._steps)
        except StopIteration:
            self._cleanup(context)
            return self._report(self._summary)
        except scene_passes.StylepassError as error:
            self._cleanup(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        context.window_manager.progress_update(int(100 * step.done / max(1, step.total)))
        left = f", about {step.seconds_left:.0f} s left" if step.seconds_left else ""
        context.workspace.status_text_set(
            f"Stylepass: frame {step.done + 1} of {step.total}{left} - {step.message} (Esc stops after this frame)"
        )
        return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._steps is not None:
            self._steps.close()  # runs the generator's cleanup: waits for the running frame, restores the frame
        self._cleanup(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        self._timer = _end_modal(context, self._timer)

    def _report(self, summary: "animation.AnimationSummary") -> set[str]:
        message = (
            f"Stylepass: {len(summary.stylised)} frame(s) stylised, {len(summary.skipped)} up to date "
            f"in {summary.seconds:.1f} s"
        )
        if summary.stopped_early:
            self.report({"WARNING"}, message + "; stopped early, run again to continue")
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}


class STYLEPASS_OT_render_animation(_AnimationRange, bpy.types.Operator):
    """Stylise the frames that are missing or out of date, then render the animation through the compositor
    to the scene's output path (also from the command line)"""

    bl_idname = "stylepass.render_animation"
    bl_label = "Render Stylised Animation"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        prefs = settings.preferences(context)
        style = stylise.StyleOptions.from_scene(scene, _device(context), prefs)
        style.passes.show_images = False
        try:
            summary = animation.stylise_animation(
                scene, context.view_layer, style, _animation_options(self, scene), prefs
            )
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if not scene.render.use_compositing:
            self.report(
                {"ERROR"},
                "Compositing is off (Output > Post Processing): the render would not show Stylepass.",
            )
            return {"CANCELLED"}
        frame_range = (scene.frame_start, scene.frame_end)
        if self.use_range:
            scene.frame_start, scene.frame_end = self.frame_start, self.frame_end
        try:
            result = bpy.ops.render.render(animation=True, scene=scene.name)
        finally:
            scene.frame_start, scene.frame_end = frame_range
        if "FINISHED" not in result:
            self.report({"WARNING"}, "Stylepass: the animation render was cancelled")
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f"Stylepass: rendered frames {summary.frames[0]}-{summary.frames[-1]} to {bpy.path.abspath(scene.render.filepath)}",
        )
        return {"FINISHED"}


def draw_render_menu(self, context: bpy.types.Context) -> None:
    self.layout.separator()
    self.layout.operator(STYLEPASS_OT_stylise.bl_idname, icon="BRUSH_DATA")
    self.layout.operator(STYLEPASS_OT_render_animation.bl_idname, icon="RENDER_ANIMATION")


classes = (
    STYLEPASS_OT_render_passes,
    STYLEPASS_OT_stylise,
    STYLEPASS_OT_stylise_animation,
    STYLEPASS_OT_render_animation,
    STYLEPASS_OT_release_memory,
    STYLEPASS_OT_install_engine,
    STYLEPASS_OT_open_engine_log,
    STYLEPASS_OT_model_folder_add,
    STYLEPASS_OT_model_folder_remove,
    STYLEPASS_OT_control_add,
    STYLEPASS_OT_control_remove,
    STYLEPASS_OT_diffusion_preset,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_render.append(draw_render_menu)


def unregister() -> None:
    bpy.types.TOPBAR_MT_render.remove(draw_render_menu)
    _unregister_classes()
