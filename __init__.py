# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass: AI stylisation of a Blender scene, driven by exact control passes rendered from it.

This file only wires registration; the data flow lives in `addon/` (scene -> passes -> engine -> image ->
compositor) on top of the bpy-free core `stylepass_core`, the buttons in `operators/` and the UI in `panels/`.
"""

try:
    import numpy  # noqa: F401  - everything below needs it; say so plainly instead of a bare traceback
except ImportError as error:  # some Linux distribution builds of Blender ship without it
    raise ImportError(
        "Stylepass needs numpy, which this Blender does not include: install numpy for Blender's own Python "
        "(on Debian or Ubuntu: sudo apt install python3-numpy), or use a Blender build from blender.org"
    ) from error

from . import operators, panels
from .addon import comfyui_server, legacy, runtime, settings, style_previews


def register() -> None:
    settings.register()
    comfyui_server.register()
    style_previews.register()
    legacy.register()
    operators.register()
    panels.register()


def unregister() -> None:
    # A worker outliving the add-on would hold GPU memory for nothing; warm engines and tables are freed too.
    runtime.RUNTIME.release()
    panels.unregister()
    operators.unregister()
    legacy.unregister()
    style_previews.unregister()
    comfyui_server.unregister()
    settings.unregister()
