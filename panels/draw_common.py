# SPDX-License-Identifier: GPL-3.0-or-later
"""Layout shared by the render-properties and viewport panels: buttons, the frame controls, output, passes,
animation. Layout only."""

import bpy

from ..addon import takes
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


TAKES_MENU = "STYLEPASS_MT_takes"
TAKE_ROWS = 8  # the newest takes as buttons; every take is in the menu below them


def draw_takes(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """The current frame's takes, newest first, the current one marked; pressing one makes it current."""
    shown = takes.listing(scene)
    if not shown.takes:
        layout.label(text=f"Frame {shown.frame}: no takes yet", icon="INFO")
        layout.label(text="Each Stylise Frame keeps one here")
        return
    col = layout.column(align=True)
    for entry in shown.takes[:TAKE_ROWS]:
        draw_take(col, entry, entry.number == shown.current)
    row = layout.row(align=True)
    if len(shown.takes) > TAKE_ROWS:
        menu = row.operator("wm.call_menu", text=f"All {len(shown.takes)} Takes", icon="COLLAPSEMENU")
        menu.name = TAKES_MENU
    row.operator("wm.path_open", text="Open Folder", icon="FILEBROWSER").filepath = str(shown.folder)
    if shown.current is None and shown.has_result:
        # Stylise Animation writes no take; choosing one first keeps that result as a new take.
        layout.label(text="The current result is no take (animation)", icon="INFO")


def draw_take(layout: bpy.types.UILayout, entry, current: bool) -> None:
    """One take as a button that makes it current; the current one is pressed."""
    icon = "RADIOBUT_ON" if current else "RADIOBUT_OFF"
    layout.operator("stylepass.choose_take", text=entry.name, icon=icon, depress=current).take = entry.number
