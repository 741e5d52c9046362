# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass UI: Properties > Render > Stylepass, the 3D viewport's Stylepass tab, and the object's class.

Layout only: every `draw()` shows properties and operators, it never computes or changes anything.
"""

import bpy


def _draw_style(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "engine")
    if settings.engine == "DIFFUSION":
        _draw_diffusion(layout, settings)
    else:
        layout.prop(settings, "style_source")
        if settings.style_source in {"PRESET", "BLEND"}:
            layout.prop(settings, "style_preset")
        if settings.style_source == "BLEND":
            layout.prop(settings, "style_blend_preset")
            layout.prop(settings, "style_blend_amount")
        if settings.style_source == "IMAGE":
            layout.template_ID(settings, "style_image", open="image.open")
        layout.prop(settings, "detail_scale")
    layout.prop(settings, "strength")
    layout.prop(settings, "keep_colours")
    layout.prop(settings, "object_filter")


def _draw_diffusion(layout: bpy.types.UILayout, settings) -> None:
    layout.operator_menu_enum("stylepass.diffusion_preset", "preset", text="Presets", icon="PRESET")
    layout.prop(settings, "model")
    layout.prop(settings, "prompt")
    layout.prop(settings, "negative_prompt")
    row = layout.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "seed_locked", text="", icon="LOCKED" if settings.seed_locked else "UNLOCKED")
    layout.prop(settings, "steps")
    layout.prop(settings, "denoise")
    layout.prop(settings, "guidance")
    layout.prop(settings, "scheduler")
    box = layout.box()
    box.label(text="Controls", icon="MODIFIER")
    for index, control in enumerate(settings.controls):
        col = box.column(align=True)
        row = col.row(align=True)
        row.prop(control, "enabled", text="")
        row.prop(control, "map", text="")
        row.prop(control, "weight", text="Weight")
        row.operator("stylepass.control_remove", text="", icon="X").index = index
        col.prop(control, "model", text="")
        row = col.row(align=True)
        row.prop(control, "start")
        row.prop(control, "end")
    box.operator_menu_enum("stylepass.control_add", "map", text="Add Control", icon="ADD")
    layout.operator("stylepass.release_memory", icon="X")


def _draw_buttons(layout: bpy.types.UILayout) -> None:
    row = layout.row(align=True)
    row.scale_y = 1.4
    row.operator("stylepass.stylise", icon="BRUSH_DATA")
    row = layout.row(align=True)
    row.operator("stylepass.stylise_animation", icon="RENDER_ANIMATION")
    row.operator("stylepass.render_passes", text="", icon="RENDERLAYERS")


def _draw_animation(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "temporal_coherence")
    col = layout.column()
    col.active = settings.temporal_coherence
    col.prop(settings, "temporal_weight")
    col.prop(settings, "keyframe_interval")
    layout.operator("stylepass.render_animation", icon="RENDER_ANIMATION")


def _draw_output(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "output_dir")
    layout.prop(settings, "png_compression")
    layout.prop(settings, "resolution_scale")
    layout.prop(settings, "show_images")


def _draw_passes(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    settings = scene.stylepass
    layout.prop(settings, "pass_samples")
    col = layout.column(heading="Line Art")
    col.prop(settings, "line_thickness", text="Thickness")
    col.prop(settings, "line_depth_threshold")
    col.prop(settings, "line_crease_angle")


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
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        _draw_buttons(layout)
        _draw_style(layout, context.scene)


class STYLEPASS_PT_render_output(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Output"

    def draw(self, context: bpy.types.Context) -> None:
        _draw_output(self._split(), context.scene)


class STYLEPASS_PT_render_passes(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Control Passes"

    def draw(self, context: bpy.types.Context) -> None:
        _draw_passes(self._split(), context.scene)


class STYLEPASS_PT_render_animation(_RenderSubPanel, bpy.types.Panel):
    bl_label = "Animation"

    def draw(self, context: bpy.types.Context) -> None:
        _draw_animation(self._split(), context.scene)


class VIEW3D_PT_stylepass(bpy.types.Panel):
    """Stylepass tab in the 3D viewport sidebar"""

    bl_label = "Stylepass"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Stylepass"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        _draw_buttons(layout)
        _draw_style(layout, context.scene)
        _draw_output(layout.column(), context.scene)
        obj = context.active_object
        if obj is not None and hasattr(obj, "stylepass"):
            layout.separator()
            layout.label(text=obj.name, icon="OBJECT_DATA")
            layout.prop(obj.stylepass, "semantic_class")
            layout.prop(obj.stylepass, "in_selection")


class VIEW3D_PT_stylepass_passes(bpy.types.Panel):
    bl_label = "Control Passes"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Stylepass"
    bl_parent_id = "VIEW3D_PT_stylepass"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        self.layout.use_property_decorate = False
        _draw_passes(self.layout, context.scene)


class OBJECT_PT_stylepass(bpy.types.Panel):
    """Stylepass settings of the active object, in Properties > Object"""

    bl_label = "Stylepass"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "object"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.use_property_split = True
        self.layout.prop(context.object.stylepass, "semantic_class")
        self.layout.prop(context.object.stylepass, "in_selection")


classes = (
    STYLEPASS_PT_render,
    STYLEPASS_PT_render_output,
    STYLEPASS_PT_render_passes,
    STYLEPASS_PT_render_animation,
    VIEW3D_PT_stylepass,
    VIEW3D_PT_stylepass_passes,
    OBJECT_PT_stylepass,
)

register, unregister = bpy.utils.register_classes_factory(classes)
