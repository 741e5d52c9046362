# SPDX-License-Identifier: GPL-3.0-or-later
"""What every long-running operator shares: the timer, the progress bar, the status text, ESC, cleanup, and the
one place an error becomes a report.

A `StylepassError` carries a message for the artist and becomes an ERROR report; anything else is a bug, so
its traceback goes to the system console and the report says so.
"""

import traceback
import weakref
from collections.abc import Callable

import bpy

from stylepass_core.errors import StylepassError

from ..addon import images

Status = set[str]


class StatusBar:
    """The progress bar a running Stylepass job draws in the status bar, with its percentage.

    Blender's own jobs (render, bake) get one from `template_running_jobs`, but Python cannot start a Blender
    job; so the status bar header gets this draw function, which shows the bar while `fraction` is set.
    """

    fraction: float | None = None
    text = ""


def draw_status_progress(header, context: bpy.types.Context) -> None:
    """`StatusBar`'s bar, drawn into the status bar header while a job runs."""
    if StatusBar.fraction is None:
        return
    layout = header.layout
    layout.separator()
    row = layout.row()
    row.ui_units_x = 14
    text = " ".join(
        part for part in ("Stylepass", StatusBar.text, f"{int(100 * StatusBar.fraction)}%") if part
    )
    row.progress(factor=StatusBar.fraction, type="BAR", text=text)


def register() -> None:
    bpy.types.STATUSBAR_HT_header.append(draw_status_progress)
    register_keymaps()


def unregister() -> None:
    unregister_keymaps()
    bpy.types.STATUSBAR_HT_header.remove(draw_status_progress)
    StatusBar.fraction = None


def report_error(operator: bpy.types.Operator, error: BaseException) -> Status:
    """Report `error` on `operator` and return {'CANCELLED'}."""
    if isinstance(error, StylepassError):
        operator.report({"ERROR"}, f"Stylepass: {error}")
    else:
        traceback.print_exception(type(error), error, error.__traceback__)
        operator.report(
            {"ERROR"},
            f"Stylepass: unexpected {type(error).__name__}: {error} (details in the system console)",
        )
    return {"CANCELLED"}


def reported(operator: bpy.types.Operator, work: Callable[[], Status]) -> Status:
    """`work()`, with a `StylepassError` turned into a report."""
    try:
        return work()
    except StylepassError as error:
        return report_error(operator, error)


# The running jobs, newest last; `STYLEPASS_OT_escape_running` hands ESC over another window to the newest.
_running: list = []


class ModalJob:
    """Mixin for an operator that polls long work from a timer so Blender never waits on it.

    Subclasses implement `step(context)`: one short poll, returning None while the work goes on or the final
    status; `escape(context)` (ESC pressed) and `close(context)` (Blender ends the operator: file load, quit).

    ESC stops the job over any Blender window: a modal handler belongs to the window it started in, so ESC
    over another one (the render view showing the last result or a step preview, a second main window) goes
    to `STYLEPASS_OT_escape_running`, which Stylepass's key map puts before the render view's own ESC.
    """

    _timer = None
    _status = ""
    _escape_elsewhere = False
    timer_interval = 0.05
    escape_text = "Stylepass: cancelling..."
    # False for work that cannot say how far it is (one request): the status text alone, no bar stuck at 0%.
    shows_progress = True

    def start_modal(self, context: bpy.types.Context, status: str) -> Status:
        wm = context.window_manager
        if self.shows_progress:
            wm.progress_begin(0, 100)
            StatusBar.fraction, StatusBar.text = 0.0, ""
        self._timer = wm.event_timer_add(self.timer_interval, window=context.window)
        wm.modal_handler_add(self)
        self.show_status(context, status)
        _running.append(weakref.ref(self))
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if (event.type == "ESC" and event.value == "PRESS") or self._escape_elsewhere:
            self._escape_elsewhere = False
            self.escape(context)
            self.show_status(context, self.escape_text)
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            status = self.step(context)
        except Exception as error:  # every failure ends the modal cleanly and is reported once
            self.end_modal(context)
            return report_error(self, error)
        if status is None:
            return {"PASS_THROUGH"}
        self.end_modal(context)
        return status

    def cancel(self, context: bpy.types.Context) -> None:
        self.close(context)
        self.end_modal(context)

    def end_modal(self, context: bpy.types.Context) -> None:
        _running[:] = [ref for ref in _running if ref() not in (None, self)]
        wm = context.window_manager
        images.end_step_previews(wm)
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        if self.shows_progress:
            wm.progress_end()
            StatusBar.fraction = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def show_progress(self, context: bpy.types.Context, fraction: float, what: str = "") -> None:
        """Move the status bar's progress bar (and the cursor's counter) to `fraction`; `what` names the step."""
        fraction = min(1.0, max(0.0, fraction))
        context.window_manager.progress_update(int(100 * fraction))
        StatusBar.fraction = fraction
        if what:
            StatusBar.text = what
        # Setting the text again is what asks Blender to redraw the status bar.
        self.show_status(context, self._status)

    def show_status(self, context: bpy.types.Context, text: str) -> None:
        self._status = text
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def escape_from_another_window(self) -> None:
        """ESC over another window: handled at this job's next timer tick, in its own window's context."""
        self._escape_elsewhere = True

    # -- for subclasses ----------------------------------------------------------------------------------

    def step(self, context: bpy.types.Context) -> Status | None:
        raise NotImplementedError

    def escape(self, context: bpy.types.Context) -> None:
        raise NotImplementedError

    def close(self, context: bpy.types.Context) -> None:
        raise NotImplementedError


def newest_job() -> "ModalJob | None":
    """The most recently started job still running, if any."""
    for ref in reversed(_running):
        job = ref()
        if job is not None:
            return job
    return None


class STYLEPASS_OT_escape_running(bpy.types.Operator):
    """Stop the running Stylepass job"""

    bl_idname = "stylepass.escape_running"
    bl_label = "Stop Stylepass"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        # Only while a job runs: otherwise ESC does what it always does there (closes the render view).
        return newest_job() is not None

    def execute(self, context: bpy.types.Context) -> Status:
        newest_job().escape_from_another_window()
        return {"FINISHED"}


classes = (STYLEPASS_OT_escape_running,)

# ESC over the Image Editor (the render view) and over any other window; add-on key map items come before
# Blender's own in the same key map, and the operator's poll lets ESC through when no job runs.
_KEYMAPS = (("Image", "IMAGE_EDITOR"), ("Window", "EMPTY"))
_keymap_items: list = []


def register_keymaps() -> None:
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    if keyconfig is None:  # background mode has no key configuration
        return
    for name, space in _KEYMAPS:
        keymap = keyconfig.keymaps.new(name=name, space_type=space)
        item = keymap.keymap_items.new(STYLEPASS_OT_escape_running.bl_idname, "ESC", "PRESS")
        _keymap_items.append((keymap, item))


def unregister_keymaps() -> None:
    for keymap, item in _keymap_items:
        keymap.keymap_items.remove(item)
    _keymap_items.clear()
