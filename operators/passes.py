# SPDX-License-Identifier: GPL-3.0-or-later
"""Render Control Passes: the exact passes of the current frame, without stylising."""

import bpy

from stylepass_core.settings import PassSettings

from ..addon import properties, runtime, scene_passes, settings
from .modal import Status, reported


class STYLEPASS_OT_render_passes(bpy.types.Operator):
    """Render exact control passes (beauty, depth, normals, line art, segmentation, object index, motion) of
    the current frame through the scene camera"""

    bl_idname = "stylepass.render_passes"
    bl_label = "Render Control Passes"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.view_layer is not None

    def execute(self, context: bpy.types.Context) -> Status:
        return reported(self, lambda: self._render(context))

    def _render(self, context: bpy.types.Context) -> Status:
        scene = context.scene
        device = runtime.render_device(settings.preferences(context))
        options = scene_passes.PassOptions.from_settings(
            properties.read(scene.stylepass, PassSettings), device
        )
        result = scene_passes.render_passes(scene, context.view_layer, options)
        for warning in result.warnings:
            self.report({"WARNING"}, warning)
        self.report(
            {"INFO"},
            f"Stylepass: {len(result.files)} passes of frame {result.frame} ({result.width} x {result.height}) "
            f"written to {result.json_path.parent}",
        )
        return {"FINISHED"}


classes = (STYLEPASS_OT_render_passes,)
