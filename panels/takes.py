# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes of the current frame: under Properties > Render > Stylepass, in the 3D viewport's Stylepass tab, and in
the compositor's sidebar (Node tab) while the Stylepass group node is active or open. Layout only."""

import bpy

from ..addon import compositor, takes
from .draw_common import TAKES_MENU, draw_take, draw_takes


class _Takes:
    bl_label = "Takes"

    def draw(self, context: bpy.types.Context) -> None:
        draw_takes(self.layout, context.scene)


class STYLEPASS_PT_render_takes(_Takes, bpy.types.Panel):
    """Takes of the current frame in Properties > Render > Stylepass"""

    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    bl_parent_id = "STYLEPASS_PT_render"


class VIEW3D_PT_stylepass_takes(_Takes, bpy.types.Panel):
    """Takes of the current frame in the 3D viewport's Stylepass tab"""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Stylepass"
    bl_parent_id = "VIEW3D_PT_stylepass"


class NODE_PT_stylepass_takes(_Takes, bpy.types.Panel):
    """Takes of the current frame beside the Stylepass group in the compositor"""

    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Node"
    bl_label = "Stylepass Takes"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        space = context.space_data
        if context.scene is None or getattr(space, "tree_type", "") != "CompositorNodeTree":
            return False
        return compositor.is_group_in_editor(space.edit_tree, context.active_node)


class STYLEPASS_MT_takes(bpy.types.Menu):
    """Every take of the current frame"""

    bl_idname = TAKES_MENU
    bl_label = "Takes"

    def draw(self, context: bpy.types.Context) -> None:
        shown = takes.listing(context.scene)
        if not shown.takes:
            self.layout.label(text=f"Frame {shown.frame}: no takes yet")
        for entry in shown.takes:
            draw_take(self.layout, entry, entry.number == shown.current)


classes = (STYLEPASS_MT_takes, STYLEPASS_PT_render_takes, VIEW3D_PT_stylepass_takes, NODE_PT_stylepass_takes)
