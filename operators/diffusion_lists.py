# SPDX-License-Identifier: GPL-3.0-or-later
"""The lists of the scene's engine (ControlNet units, LoRAs: the diffusion and ComfyUI engines share them) and
the diffusion presets."""

import bpy

from stylepass_core.engines.diffusion.presets import PRESETS
from stylepass_core.engines.diffusion.settings import CONTROL_CHOICES

from ..addon import settings
from .modal import Status


def _lists(context: bpy.types.Context):
    """The chosen engine's settings, whose `controls` and `loras` these operators edit."""
    scene_settings = context.scene.stylepass
    return settings.engine_group(scene_settings, settings.chosen_engine(scene_settings))


def _remove(collection, index: int) -> Status:
    if not 0 <= index < len(collection):
        return {"CANCELLED"}
    collection.remove(index)
    return {"FINISHED"}


class STYLEPASS_OT_control_add(bpy.types.Operator):
    """Add a ControlNet unit driven by one of the control passes"""

    bl_idname = "stylepass.control_add"
    bl_label = "Add Control"
    bl_options = {"REGISTER", "UNDO"}

    map: bpy.props.EnumProperty(name="Pass", description="Which pass drives it", items=list(CONTROL_CHOICES))

    def execute(self, context: bpy.types.Context) -> Status:
        _lists(context).controls.add().map = self.map
        return {"FINISHED"}


class STYLEPASS_OT_control_remove(bpy.types.Operator):
    """Remove this ControlNet unit"""

    bl_idname = "stylepass.control_remove"
    bl_label = "Remove Control"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(name="Index", description="Which control", default=0)

    def execute(self, context: bpy.types.Context) -> Status:
        return _remove(_lists(context).controls, self.index)


class STYLEPASS_OT_lora_add(bpy.types.Operator):
    """Add a LoRA to the model"""

    bl_idname = "stylepass.lora_add"
    bl_label = "Add LoRA"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> Status:
        _lists(context).loras.add()
        return {"FINISHED"}


class STYLEPASS_OT_lora_remove(bpy.types.Operator):
    """Remove this LoRA"""

    bl_idname = "stylepass.lora_remove"
    bl_label = "Remove LoRA"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(name="Index", description="Which LoRA", default=0)

    def execute(self, context: bpy.types.Context) -> Status:
        return _remove(_lists(context).loras, self.index)


class STYLEPASS_OT_diffusion_preset(bpy.types.Operator):
    """Choose the diffusion engine and set model, scheduler, steps and controls for a common set-up (the prompt
    is kept)"""

    bl_idname = "stylepass.diffusion_preset"
    bl_label = "Diffusion Preset"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(
        name="Preset",
        description="Which set-up",
        items=[(key, preset.label, preset.description) for key, preset in PRESETS.items()],
    )

    def execute(self, context: bpy.types.Context) -> Status:
        settings.apply_diffusion_preset(context.scene.stylepass, self.preset)
        return {"FINISHED"}


classes = (
    STYLEPASS_OT_control_add,
    STYLEPASS_OT_control_remove,
    STYLEPASS_OT_lora_add,
    STYLEPASS_OT_lora_remove,
    STYLEPASS_OT_diffusion_preset,
)
