# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass logic: the Blender side. The modules here read the scene, render, move pixels and build nodes.

They import the bpy-free core (conditioning maps, codecs, engines) as the top-level package `stylepass_core`,
which Blender installs from the wheel the extension zip carries; it never imports bpy, so it runs in a worker
process and under plain pytest.
"""

# The add-on's own module name: "bl_ext.<repo>.stylepass" once installed as an extension, so never hard-code it.
ADDON_PACKAGE = __package__.rpartition(".")[0]
