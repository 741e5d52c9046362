# SPDX-License-Identifier: GPL-3.0-or-later
"""The Stylepass tab in the 3D viewport's sidebar (N). Layout only."""

import bpy

from ..addon import live_preview
from .draw_common import draw_main, draw_output, draw_passes
from .object_properties import draw_object


class _SidebarTab:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Stylepass"


class VIEW3D_PT_stylepass(_SidebarTab, bpy.types.Panel):
    """Stylepass tab in the 3D viewport sidebar"""

    bl_label = "Stylepass"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        draw_main(layout, context.scene)
        draw_output(layout.column(), context.scene)
        obj = context.active_object
        if obj is not None and hasattr(obj, "stylepass"):
            layout.separator()
            layout.label(text=obj.name, icon="OBJECT_DATA")
            draw_object(layout, obj, context.scene)


class VIEW3D_PT_stylepass_passes(_SidebarTab, bpy.types.Panel):
    bl_label = "Control Passes"
    bl_parent_id = "VIEW3D_PT_stylepass"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        self.layout.use_property_decorate = False
        draw_passes(self.layout, context.scene)


class VIEW3D_PT_stylepass_live(_SidebarTab, bpy.types.Panel):
    bl_label = "Live Preview"
    bl_parent_id = "VIEW3D_PT_stylepass"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        draw_live_toggle(layout, context, text=None)
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.stylepass
        layout.prop(settings, "live_resolution")
        layout.prop(settings, "live_opacity")
        layout.prop(settings, "live_wipe")
        row = layout.row(align=True)
        row.operator("stylepass.live_pin", icon="PINNED")
        # From preview to final: the same settings drive Stylise Frame, for the scene camera.
        row.operator("stylepass.stylise", text="Final", icon="RENDER_STILL")


def draw_live_toggle(layout: bpy.types.UILayout, context: bpy.types.Context, text: str | None = "") -> None:
    """The Live Preview on/off button of the viewport being drawn, pressed while it is on."""
    on = live_preview.is_on(context.space_data)
    layout.operator("stylepass.live_preview", text=text, icon="SHADERFX", depress=on)


def draw_header(header, context: bpy.types.Context) -> None:
    """The Live Preview button in the 3D viewport's header."""
    draw_live_toggle(header.layout, context)


def draw_view_menu(menu, context: bpy.types.Context) -> None:
    """View > Live Preview (also what F3 finds)."""
    menu.layout.separator()
    on = live_preview.is_on(context.space_data)
    menu.layout.operator("stylepass.live_preview", icon="CHECKBOX_HLT" if on else "CHECKBOX_DEHLT")
    if on:
        menu.layout.operator("stylepass.live_pin", text="Pin Live Picture", icon="PINNED")


classes = (VIEW3D_PT_stylepass, VIEW3D_PT_stylepass_passes, VIEW3D_PT_stylepass_live)
