# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass operators: thin buttons that read settings, call one function of `addon/`, and report."""

import bpy

from ..addon import scene_passes, settings


class STYLEPASS_OT_render_passes(bpy.types.Operator):
    """Render exact control passes (beauty, depth, normals, line art, segmentation, object index, motion) of
    the current frame through the scene camera"""

    bl_idname = "stylepass.render_passes"
    bl_label = "Render Control Passes"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.view_layer is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        prefs = settings.preferences(context)
        options = scene_passes.PassOptions.from_scene(scene, device=prefs.render_device if prefs else "CPU")
        try:
            result = scene_passes.render_passes(scene, context.view_layer, options)
        except scene_passes.StylepassError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        for warning in result.warnings:
            self.report({"WARNING"}, warning)
        folder = result.json_path.parent
        self.report(
            {"INFO"},
            f"Stylepass: {len(result.files)} passes of frame {result.frame} "
            f"({result.width} x {result.height}) written to {folder}",
        )
        return {"FINISHED"}


classes = (STYLEPASS_OT_render_passes,)

register, unregister = bpy.utils.register_classes_factory(classes)
