# SPDX-License-Identifier: GPL-3.0-or-later
"""Layout shared by the render-properties and viewport panels: buttons, the frame controls, output, passes,
animation. Layout only."""

import bpy

from ..addon.settings import chosen_engine
from .draw_engines import draw_engine


def draw_buttons(layout: bpy.types.UILayout) -> None:
    row = layout.row(align=True)
    row.scale_y = 1.4
    row.operator("stylepass.stylise", icon="BRUSH_DATA")
    row = layout.row(align=True)
    row.operator("stylepass.stylise_animation", icon="RENDER_ANIMATION")
    row.operator("stylepass.render_passes", text="Passes", icon="RENDERLAYERS")


def draw_main(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """What both Stylepass panels open with: the buttons, the engine and its settings, the frame controls."""
    layout.use_property_split = True
    layout.use_property_decorate = False
    draw_buttons(layout)
    draw_engine(layout, scene)
    draw_frame(layout, scene)


def draw_frame(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """Stylepass's mix with the render, the objects, and the seed for engines that use one."""
    settings = scene.stylepass
    if chosen_engine(settings).USES_SEED:
        row = layout.row(align=True)
        row.prop(settings, "seed")
        row.prop(settings, "seed_locked", text="", icon="LOCKED" if settings.seed_locked else "UNLOCKED")
    layout.prop(settings, "strength")
    layout.prop(settings, "keep_colours")
    layout.prop(settings, "object_filter")


def draw_output(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    # Short labels: the viewport sidebar is narrow by default, and longer ones were cut off there.
    layout.prop(settings, "output_dir", text="Folder")
    layout.prop(settings, "png_compression", text="Compression")
    layout.prop(settings, "resolution_scale", text="Pass Scale")
    layout.prop(settings, "show_images")


def draw_passes(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "pass_samples")
    # A column heading is drawn only beside a checkbox, so the line-art group gets a label of its own.
    layout.label(text="Line Art")
    col = layout.column(align=True)
    col.prop(settings, "line_thickness", text="Thickness")
    col.prop(settings, "line_depth_threshold")
    col.prop(settings, "line_crease_angle")


def draw_animation(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "temporal_coherence")
    col = layout.column()
    col.active = settings.temporal_coherence
    col.prop(settings, "temporal_weight")
    col.prop(settings, "keyframe_interval")
    col.prop(settings, "temporal_denoise")
    layout.operator("stylepass.render_animation", icon="RENDER_ANIMATION")
