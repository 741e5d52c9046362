# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass settings of the active object, in Properties > Object. Layout only."""

import bpy

from .style_groups import draw_object_groups


def draw_object(layout: bpy.types.UILayout, obj: bpy.types.Object, scene: bpy.types.Scene) -> None:
    layout.prop(obj.stylepass, "semantic_class")
    layout.prop(obj.stylepass, "in_selection")
    draw_object_groups(layout, scene, obj)


class OBJECT_PT_stylepass(bpy.types.Panel):
    """Stylepass settings of the active object, in Properties > Object"""

    bl_label = "Stylepass"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "object"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        draw_object(self.layout, context.object, context.scene)


classes = (OBJECT_PT_stylepass,)
