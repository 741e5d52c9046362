# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass: AI stylisation of a Blender scene, driven by exact control passes rendered from it.

This file only wires registration; the data flow lives in `addon/` (scene -> passes -> engine -> image ->
compositor), the buttons in `operators/` and the UI in `panels/`.
"""

from . import operators, panels
from .addon import engine_host, settings


def register() -> None:
    settings.register()
    operators.register()
    panels.register()


def unregister() -> None:
    # A worker outliving the add-on would hold GPU memory for nothing.
    engine_host.release_memory()
    panels.unregister()
    operators.unregister()
    settings.unregister()
