# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups in Properties > Render > Stylepass, and an object's groups in Properties > Object. Layout only."""

import bpy

from ..addon.settings import chosen_engine
from .draw_engines import draw_engine_settings


class STYLEPASS_UL_style_groups(bpy.types.UIList):
    """The scene's style groups: name and how many objects are listed."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "name", text="", emboss=False, icon="MATERIAL")
        row.label(text=str(len(item.objects)) if len(item.objects) else "")


class STYLEPASS_UL_group_objects(bpy.types.UIList):
    """The objects listed in a style group."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        layout.prop(item, "object", text="", emboss=False, icon="OBJECT_DATA")


def draw_style_groups(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """The list of groups, and the active group's members and style."""
    settings = scene.stylepass
    row = layout.row()
    row.template_list(
        "STYLEPASS_UL_style_groups", "", settings, "style_groups", settings, "style_group_index", rows=3
    )
    column = row.column(align=True)
    column.operator("stylepass.style_group_add", text="", icon="ADD")
    column.operator("stylepass.style_group_remove", text="", icon="REMOVE")
    if not 0 <= settings.style_group_index < len(settings.style_groups):
        layout.label(text="Objects in no group, and the background, take the scene's style.", icon="INFO")
        return
    group = settings.style_groups[settings.style_group_index]
    layout.label(text="Objects")
    row = layout.row()
    row.template_list("STYLEPASS_UL_group_objects", "", group, "objects", group, "object_index", rows=2)
    column = row.column(align=True)
    column.operator("stylepass.style_group_assign", text="", icon="ADD")
    column.operator("stylepass.style_group_unassign", text="", icon="REMOVE")
    split = layout.column()
    split.use_property_split = True
    split.use_property_decorate = False
    split.prop(group, "collection")
    split.prop(group, "semantic_class")
    split.separator()
    cls = chosen_engine(settings)
    if cls.REGION_FIELDS:
        # The frame's one run takes everything else from the scene: only what the region changes is shown.
        for name in cls.REGION_FIELDS:
            split.prop(getattr(group, cls.PROPERTY), name)
    else:
        draw_engine_settings(split, getattr(group, cls.PROPERTY), cls)
    split.prop(group, "strength")
    split.prop(group, "keep_colours")


def draw_object_groups(layout: bpy.types.UILayout, scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """Which style groups list the object (the first wins), and a button to add it to the active one."""
    listed = [
        group.name for group in scene.stylepass.style_groups if any(e.object == obj for e in group.objects)
    ]
    layout.label(text=f"Style Groups: {', '.join(listed) if listed else 'none'}", icon="MATERIAL")
    layout.operator("stylepass.style_group_assign", text="Add to Active Style Group")


lists = (STYLEPASS_UL_style_groups, STYLEPASS_UL_group_objects)
