# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass logic.

`stylepass_core/` is the bpy-free core (conditioning maps, codecs, engines): it never imports bpy, so it runs
in a worker process and under plain pytest. The other modules here are the Blender side: they read the scene,
render, move pixels and build nodes. This file itself stays bpy-free so that importing the core through the
package does not drag Blender in.
"""

# The add-on's own module name: "bl_ext.<repo>.stylepass" once installed as an extension, so never hard-code it.
ADDON_PACKAGE = __package__.rpartition(".")[0]
