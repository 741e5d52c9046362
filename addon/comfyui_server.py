# SPDX-License-Identifier: GPL-3.0-or-later
"""What the artist's ComfyUI server has, for the panel's pickers: its checkpoints, LoRAs, ControlNets,
samplers and schedulers, read from `/object_info` (on a thread: a slow server never holds Blender).

The lists live on the window manager (`wm.stylepass_comfyui`), so they belong to this Blender session and no
scene datablock changes when they are read.
"""

import bpy
from bpy.props import CollectionProperty, StringProperty

from stylepass_core.engines.comfyui.client import ComfyClient
from stylepass_core.engines.comfyui.settings import ComfyUISettings, parse_headers
from stylepass_core.engines.comfyui.workflow import choices

# Picker name -> (node type, input) in /object_info.
LISTS = {
    "checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
    "loras": ("LoraLoader", "lora_name"),
    "controlnets": ("ControlNetLoader", "control_net_name"),
    "samplers": ("KSampler", "sampler_name"),
    "schedulers": ("KSampler", "scheduler"),
}


class StylepassServerName(bpy.types.PropertyGroup):
    """One name the server lists (`name` is the item's own)."""


class StylepassComfyUILists(bpy.types.PropertyGroup):
    server: StringProperty(name="Server", description="The server these lists were read from")
    status: StringProperty(name="Status", description="What the last read found")
    checkpoints: CollectionProperty(type=StylepassServerName)
    loras: CollectionProperty(type=StylepassServerName)
    controlnets: CollectionProperty(type=StylepassServerName)
    samplers: CollectionProperty(type=StylepassServerName)
    schedulers: CollectionProperty(type=StylepassServerName)


def read_lists(server: str, headers: str, timeout: float = 10.0) -> dict[str, list[str]]:
    """The server's lists (any thread, no bpy).

    Raises:
        ComfyUIError: the server cannot be reached or refuses (the message says why); ValueError: bad headers.
    """
    info = ComfyClient(server, parse_headers(headers), timeout=timeout).object_info()
    return {name: choices(info, kind, field) for name, (kind, field) in LISTS.items()}


def show_lists(
    wm: bpy.types.WindowManager, server: str, lists: dict[str, list[str]] | None, status: str
) -> None:
    """Put what `read_lists` found (None after a failure: the lists empty) on the window manager (main thread)."""
    target = wm.stylepass_comfyui
    target.server, target.status = server, status
    for name in LISTS:
        collection = getattr(target, name)
        collection.clear()
        for value in (lists or {}).get(name, ()):
            collection.add().name = value


def summary(lists: dict[str, list[str]]) -> str:
    """ "3 checkpoints, 2 LoRAs, 2 ControlNets" """
    return (
        f"{len(lists['checkpoints'])} checkpoint(s), {len(lists['loras'])} LoRA(s), "
        f"{len(lists['controlnets'])} ControlNet(s)"
    )  # the panel gives it a line of its own


def server_of(prefs) -> tuple[str, str, float]:
    """The server address, headers and timeout from the preferences (their defaults without preferences)."""
    defaults = ComfyUISettings()
    if prefs is None:
        return defaults.comfyui_server, defaults.comfyui_headers, defaults.comfyui_timeout
    return prefs.comfyui_server.strip(), prefs.comfyui_headers, prefs.comfyui_timeout


classes = (StylepassServerName, StylepassComfyUILists)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.stylepass_comfyui = bpy.props.PointerProperty(type=StylepassComfyUILists)


def unregister() -> None:
    del bpy.types.WindowManager.stylepass_comfyui
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
