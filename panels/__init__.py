# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass UI: Properties > Render > Stylepass, the 3D viewport's Stylepass tab, and the object's settings.

Layout only: every `draw()` shows properties and operators, it never computes or changes anything. The shared
pieces are in `draw_common` (buttons, frame, output, passes, animation) and `draw_engines` (each engine's own
settings).
"""

import bpy

from . import object_properties, render_properties, style_groups, takes, viewport

classes = (*render_properties.classes, *viewport.classes, *object_properties.classes, *takes.classes)

# The UI lists the panels draw are registered first.
_register_classes, _unregister_classes = bpy.utils.register_classes_factory((*style_groups.lists, *classes))


def register() -> None:
    _register_classes()
    bpy.types.VIEW3D_HT_header.append(viewport.draw_header)
    bpy.types.VIEW3D_MT_view.append(viewport.draw_view_menu)


def unregister() -> None:
    bpy.types.VIEW3D_MT_view.remove(viewport.draw_view_menu)
    bpy.types.VIEW3D_HT_header.remove(viewport.draw_header)
    _unregister_classes()
