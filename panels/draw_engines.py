# SPDX-License-Identifier: GPL-3.0-or-later
"""Each engine's settings in the panel: one function per settings class, one line per setting. Layout only.

An engine without a function here still gets every setting drawn, in declaration order (`draw_fields`).
"""

import bpy

from stylepass_core.engines.comfyui import ComfyUISettings
from stylepass_core.engines.diffusion import DiffusionSettings
from stylepass_core.engines.neural_style import NeuralStyleSettings

from ..addon import style_previews
from ..addon.settings import chosen_engine, engine_group


def draw_engine(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """The engine menu and the chosen engine's own settings."""
    settings = scene.stylepass
    layout.prop(settings, "engine")
    cls = chosen_engine(settings)
    draw_engine_settings(layout, engine_group(settings, cls), cls)


def draw_engine_settings(layout: bpy.types.UILayout, group, cls) -> None:
    """One engine's settings in `group` (the scene's, or a style group's own)."""
    draw = _DRAW.get(cls)
    if draw is not None:
        draw(layout, group)
    else:
        draw_fields(layout, group, cls)


def draw_fields(layout: bpy.types.UILayout, group, cls) -> None:
    for name, _, spec, _ in cls.specs():
        if name not in cls.HOST_FIELDS and spec.item is None:
            layout.prop(group, name)


def _draw_neural_style(layout: bpy.types.UILayout, group) -> None:
    layout.prop(group, "style_source")
    if group.style_source == "PRESET":
        _draw_builtin_styles(layout, group, ("style_preset",))
    if group.style_source == "BLEND":
        _draw_builtin_styles(layout, group, ("style_preset", "style_blend_preset"))
        layout.prop(group, "style_blend_amount")
    if group.style_source == "IMAGE":
        layout.template_ID(group, "style_image", open="image.open")
        layout.prop(group, "style_image_weight")
    layout.prop(group, "detail_scale")


def _draw_builtin_styles(layout: bpy.types.UILayout, group, names: tuple[str, ...]) -> None:
    """Built-in styles: picked by picture once the thumbnails are loaded (a blend's two side by side), and
    by name from the menus."""
    if style_previews.PREVIEWS.ready:
        row = layout.row()
        for name in names:
            row.template_icon_view(group, name, show_labels=True, scale=6.0, scale_popup=5.0)
    for name in names:
        layout.prop(group, name)


def _draw_diffusion(layout: bpy.types.UILayout, group) -> None:
    layout.operator_menu_enum("stylepass.diffusion_preset", "preset", text="Presets", icon="PRESET")
    layout.prop(group, "model")
    layout.prop(group, "prompt")
    layout.prop(group, "negative_prompt")
    layout.prop(group, "style_preset")
    layout.prop(group, "clip_skip")
    layout.prop(group, "steps")
    layout.prop(group, "denoise")
    layout.prop(group, "guidance")
    layout.prop(group, "scheduler")

    _draw_controls_and_loras(layout, group)

    box = layout.box()
    box.label(text="Reference Image (IP-Adapter)", icon="IMAGE_DATA")
    box.prop(group, "ip_adapter_model")
    col = box.column()
    col.active = bool(group.ip_adapter_model)
    col.template_ID(group, "ip_adapter_image", open="image.open")
    col.prop(group, "ip_adapter_scale")
    col.prop(group, "ip_adapter_subfolder")
    col.prop(group, "ip_adapter_weight_name")

    box = layout.box()
    box.label(text="Model Files, Memory and Precision", icon="MEMORY")
    box.prop(group, "vae")
    box.prop(group, "model_config")
    box.prop(group, "dtype")
    box.prop(group, "attention_slicing")
    box.prop(group, "vae_tiling")
    box.prop(group, "cpu_offload")
    box.prop(group, "allow_pickle")
    layout.operator("stylepass.release_memory", icon="X")


def _picker(layout: bpy.types.UILayout, item, name: str, lists, listed: str, **kwargs) -> None:
    """A name picked from the server's list; a plain field until the list is read (an empty list would show
    every value in red, as if it were wrong)."""
    if len(getattr(lists, listed)):
        layout.prop_search(item, name, lists, listed, **kwargs)
    else:
        layout.prop(item, name, **kwargs)


def _draw_controls_and_loras(layout: bpy.types.UILayout, group, lists=None) -> None:
    """The ControlNet units and LoRAs (the diffusion and ComfyUI engines share them). With `lists` (the
    ComfyUI server's names) the models are picked from those; else they are files or model ids."""

    def model(row, item, name: str, listed: str) -> None:
        if lists is None:
            row.prop(item, name, text="")
        else:
            _picker(row, item, name, lists, listed, text="")

    box = layout.box()
    box.label(text="Controls", icon="MODIFIER")
    for index, control in enumerate(group.controls):
        col = box.column(align=True)
        row = col.row(align=True)
        row.prop(control, "enabled", text="")
        row.prop(control, "map", text="")
        row.prop(control, "weight", text="Weight")
        row.operator("stylepass.control_remove", text="", icon="X").index = index
        model(col, control, "model", "controlnets")
        row = col.row(align=True)
        row.prop(control, "start")
        row.prop(control, "end")
    box.operator_menu_enum("stylepass.control_add", "map", text="Add Control", icon="ADD")

    box = layout.box()
    box.label(text="LoRAs", icon="NODE_MATERIAL")
    for index, lora in enumerate(group.loras):
        row = box.row(align=True)
        row.prop(lora, "enabled", text="")
        model(row, lora, "file", "loras")
        row.prop(lora, "weight", text="")
        row.operator("stylepass.lora_remove", text="", icon="X").index = index
    box.operator("stylepass.lora_add", icon="ADD")


def _draw_comfyui(layout: bpy.types.UILayout, group) -> None:
    # Names are picked from what the server lists (Read from Server); a name typed by hand works too.
    lists = bpy.context.window_manager.stylepass_comfyui
    row = layout.row(align=True)
    row.label(text=lists.server or "Server not read yet", icon="URL")
    row.operator("stylepass.comfyui_read", text="", icon="FILE_REFRESH")
    # On its own line, always there (the fields below never jump): a narrow sidebar cuts a long line short.
    layout.label(text=lists.status or "Refresh to list the server's models")
    layout.prop(group, "workflow")
    own = bool(group.workflow)
    col = layout.column()
    col.active = not own  # an artist's own workflow takes only the prompts and the seed from here
    _picker(col, group, "checkpoint", lists, "checkpoints")
    layout.prop(group, "prompt")
    layout.prop(group, "negative_prompt")
    layout.prop(group, "style_preset")
    col = layout.column()
    col.active = not own
    col.prop(group, "steps")
    col.prop(group, "denoise")
    col.prop(group, "guidance")
    _picker(col, group, "sampler", lists, "samplers")
    _picker(col, group, "scheduler", lists, "schedulers")

    _draw_controls_and_loras(col, group, lists)
    layout.operator("stylepass.release_memory", icon="X")


# Keyed by settings class, never by engine id: the class is the engine's one contract.
_DRAW = {
    NeuralStyleSettings: _draw_neural_style,
    DiffusionSettings: _draw_diffusion,
    ComfyUISettings: _draw_comfyui,
}
