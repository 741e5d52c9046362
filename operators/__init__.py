# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass operators: thin buttons that read settings, call one function of `addon/`, and report.

`modal` holds what every long-running operator shares (timer, progress, ESC, cleanup, the error report).
"""

import bpy

from . import animation, comfyui, diffusion_lists, engine, live, modal, passes, style_groups, stylise, takes

classes = (
    *modal.classes,
    *passes.classes,
    *stylise.classes,
    *animation.classes,
    *engine.classes,
    *diffusion_lists.classes,
    *comfyui.classes,
    *takes.classes,
    *live.classes,
    *style_groups.classes,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_render.append(animation.draw_render_menu)
    modal.register()


def unregister() -> None:
    live.unregister()
    modal.unregister()
    bpy.types.TOPBAR_MT_render.remove(animation.draw_render_menu)
    _unregister_classes()
