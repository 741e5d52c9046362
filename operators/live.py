# SPDX-License-Identifier: GPL-3.0-or-later
"""Live Preview on/off per 3D viewport, and Pin (keep the live picture). From preview to final is the Stylise
Frame button: the live preview runs on the same settings."""

import bpy

from ..addon import images, live_preview
from .modal import Status, reported


def _viewport(context: bpy.types.Context) -> bool:
    return not bpy.app.background and context.space_data is not None and context.space_data.type == "VIEW_3D"


class STYLEPASS_OT_live_preview(bpy.types.Operator):
    """Show the stylised picture of this viewport's view, updated as you orbit, model, edit materials or lights,
    scrub the timeline or change a Stylepass setting. In camera view only the camera frame is stylised"""

    bl_idname = "stylepass.live_preview"
    bl_label = "Live Preview"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _viewport(context)

    def execute(self, context: bpy.types.Context) -> Status:
        return reported(self, lambda: self._toggle(context))

    def _toggle(self, context: bpy.types.Context) -> Status:
        space = context.space_data
        if live_preview.is_on(space):
            live_preview.stop(space)
            return {"FINISHED"}
        live_preview.check_can_start(context)  # a SettingsError is a StylepassError: `reported` says it
        live_preview.start(space)
        context.area.tag_redraw()
        return {"FINISHED"}


class STYLEPASS_OT_live_pin(bpy.types.Operator):
    """Keep the live picture shown now as a new image 'Stylepass Live Pin' (packed into the .blend), shown in an
    Image Editor that is open"""

    bl_idname = "stylepass.live_pin"
    bl_label = "Pin"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        view = live_preview.view_of(context.space_data) if _viewport(context) else None
        return view is not None and view.picture is not None

    def execute(self, context: bpy.types.Context) -> Status:
        return reported(self, lambda: self._pin(context))

    def _pin(self, context: bpy.types.Context) -> Status:
        image = live_preview.pin(live_preview.view_of(context.space_data))
        # Only an Image Editor already open shows it: a new window would take the viewport's place mid-work.
        shown = images.show_in_open_editors(context.window_manager, image)
        where = "; an open Image Editor shows it" if shown else "; open it in an Image Editor"
        self.report({"INFO"}, f"Stylepass: the live picture is kept as image '{image.name}'{where}")
        return {"FINISHED"}


classes = (STYLEPASS_OT_live_preview, STYLEPASS_OT_live_pin)


def unregister() -> None:
    live_preview.stop_all()
