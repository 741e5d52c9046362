# SPDX-License-Identifier: GPL-3.0-or-later
"""Every difference between the Blender versions Stylepass supports (4.2 LTS to 5.2 LTS), in one place.

Measured on bpy 4.2, 4.5 and 5.2 (see ../shared/FACTS.md): 5.0 made the compositor a node-group datablock
with a Group Output instead of `scene.node_tree` and its Composite node; compositor trees accept the shader
Mix node only from 4.5 (4.2-4.4 refuse it: "Not a shader or geometry node tree"), while 5.0 dropped the
compositor's own MixRGB; 4.5 added the flag that lets a path property take '//' without a warning.
"""

from typing import NamedTuple

import bpy

VERSION = bpy.app.version

# 5.0: the compositor tree is `scene.compositing_node_group`, output through a Group Output node.
COMPOSITOR_IS_GROUP = VERSION >= (5, 0, 0)

# 4.5: compositor trees take ShaderNodeMix (and 5.0 has no CompositorNodeMixRGB any more).
COMPOSITOR_MIX_IS_SHADER_MIX = VERSION >= (4, 5, 0)

# Before 5.0 a 3D viewport's POST_PIXEL drawing lands in an sRGB-encoding framebuffer: a texture of display
# values must be given linear values there, or it shows washed out (seen in the real UI on 4.3; 5.2 shows
# display values as they are; BlenderKit's thumbnails met the same change in 5.0).
VIEWPORT_OVERLAY_ENCODES_SRGB = VERSION < (5, 0, 0)

# 4.5: StringProperty(options={"PATH_SUPPORTS_BLEND_RELATIVE"}); older versions reject the option.
PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"} if VERSION >= (4, 5, 0) else set()


class MixSockets(NamedTuple):
    """A colour mix node's sockets: result = a * (1 - factor) + b * factor, unclamped."""

    node: object
    factor: object
    a: object
    b: object
    result: object


def new_colour_mix(nodes, name: str, location: tuple[float, float]) -> MixSockets:
    """A plain colour mix in a compositor tree, on every supported version (factor 0 gives A, 1 gives B)."""
    if COMPOSITOR_MIX_IS_SHADER_MIX:
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.clamp_result = False
        # Names repeat on ShaderNodeMix (three inputs are called "A"): sockets by identifier.
        by_id = {socket.identifier: socket for socket in mix.inputs}
        sockets = (by_id["Factor_Float"], by_id["A_Color"], by_id["B_Color"])
        result = next(socket for socket in mix.outputs if socket.identifier == "Result_Color")
    else:
        mix = nodes.new("CompositorNodeMixRGB")
        mix.use_clamp = False
        mix.use_alpha = False
        by_id = {socket.identifier: socket for socket in mix.inputs}
        sockets = (by_id["Fac"], by_id["Image"], by_id["Image_001"])
        result = mix.outputs["Image"]
    mix.name = mix.label = name
    mix.blend_type = "MIX"
    mix.location = location
    return MixSockets(mix, *sockets, result)
