# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass in Properties > Render, with Style Groups, Output, Control Passes and Animation sub-panels. Layout
only."""

import bpy

from .draw_common import draw_animation, draw_main, draw_output, draw_passes
from .style_groups import draw_style_groups


class _RenderProperties:
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"


class _RenderSubPanel(_RenderProperties):
    bl_parent_id = "STYLEPASS_PT_render"
    bl_options = {"DEFAULT_CLOSED"}

    def _split(self) -> bpy.types.UILayout:
        self.layout.use_property_split = True
        self.layout.use_property_decorate = False
        return self.layout


class STYLEPASS_PT_render(_RenderProperties, bpy.types.Panel):
    """Stylepass in Properties > Render"""

    bl_label = "Stylepass"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        draw_main(self.layout, context.scene)


class STYLEPASS_PT_render_style_groups(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Style Groups"

    def draw(self, context: bpy.types.Context) -> None:
        draw_style_groups(self.layout, context.scene)


class STYLEPASS_PT_render_output(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Output"

    def draw(self, context: bpy.types.Context) -> None:
        draw_output(self._split(), context.scene)


class STYLEPASS_PT_render_passes(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Control Passes"

    def draw(self, context: bpy.types.Context) -> None:
        draw_passes(self._split(), context.scene)


class STYLEPASS_PT_render_animation(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Animation"

    def draw(self, context: bpy.types.Context) -> None:
        draw_animation(self._split(), context.scene)


classes = (
    STYLEPASS_PT_render,
    STYLEPASS_PT_render_style_groups,
    STYLEPASS_PT_render_output,
    STYLEPASS_PT_render_passes,
    STYLEPASS_PT_render_animation,
)
