# SPDX-License-Identifier: GPL-3.0-or-later
"""What every long-running operator shares: the timer, the progress bar, the status text, ESC, cleanup, and the
one place an error becomes a report.

A `StylepassError` carries a message for the artist and becomes an ERROR report; anything else is a bug, so
its traceback goes to the system console and the report says so.
"""

import traceback
from collections.abc import Callable

import bpy

from stylepass_core.errors import StylepassError

Status = set[str]


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


class ModalJob:
    """Mixin for an operator that polls long work from a timer so Blender never waits on it.

    Subclasses implement `step(context)`: one short poll, returning None while the work goes on or the final
    status; `escape(context)` (ESC pressed) and `close(context)` (Blender ends the operator: file load, quit).
    """

    _timer = None
    timer_interval = 0.05
    escape_text = "Stylepass: cancelling..."

    def start_modal(self, context: bpy.types.Context, status: str) -> Status:
        wm = context.window_manager
        wm.progress_begin(0, 100)
        self._timer = wm.event_timer_add(self.timer_interval, window=context.window)
        wm.modal_handler_add(self)
        self.show_status(context, status)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> Status:
        if event.type == "ESC" and event.value == "PRESS":
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
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    @staticmethod
    def show_progress(context: bpy.types.Context, fraction: float) -> None:
        context.window_manager.progress_update(int(100 * min(1.0, max(0.0, fraction))))

    @staticmethod
    def show_status(context: bpy.types.Context, text: str) -> None:
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    # -- for subclasses ----------------------------------------------------------------------------------

    def step(self, context: bpy.types.Context) -> Status | None:
        raise NotImplementedError

    def escape(self, context: bpy.types.Context) -> None:
        raise NotImplementedError

    def close(self, context: bpy.types.Context) -> None:
        raise NotImplementedError
