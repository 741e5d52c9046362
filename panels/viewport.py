# SPDX-License-Identifier: GPL-3.0-or-later
"""The Stylepass tab in the 3D viewport's sidebar (N). Layout only."""

import bpy

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
            draw_object(layout, obj)


class VIEW3D_PT_stylepass_passes(_SidebarTab, bpy.types.Panel):
    bl_label = "Control Passes"
    bl_parent_id = "VIEW3D_PT_stylepass"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        self.layout.use_property_decorate = False
        draw_passes(self.layout, context.scene)


classes = (VIEW3D_PT_stylepass, VIEW3D_PT_stylepass_passes)
