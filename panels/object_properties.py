# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass settings of the active object, in Properties > Object. Layout only."""

import bpy


def draw_object(layout: bpy.types.UILayout, obj: bpy.types.Object) -> None:
    layout.prop(obj.stylepass, "semantic_class")
    layout.prop(obj.stylepass, "in_selection")


class OBJECT_PT_stylepass(bpy.types.Panel):
    """Stylepass settings of the active object, in Properties > Object"""

    bl_label = "Stylepass"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "object"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        draw_object(self.layout, context.object)


classes = (OBJECT_PT_stylepass,)
