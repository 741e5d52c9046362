# SPDX-License-Identifier: GPL-3.0-or-later
"""Image -> compositor: the Stylepass node group in the scene's own compositor, on the 4.x and 5.x APIs.

The group (a `CompositorNodeTree` datablock, "Stylepass" unless the artist has one by that name) has inputs
Image (the render), Factor and Mask and outputs Image (render mixed with the stylised image by Factor x Mask)
and Stylised, then the frame's layers (`stylepass_core.compositor_layers`): Line Art, and each style group's
"<group> Layer" and "<group> Mask". It is used by one group node in the scene's tree. A new or default tree
gets it wired between Render Layers and the output; a tree the artist built gets the node added and fed from Render Layers, and none
of their nodes or links change. The group is found by its ownership marker (`ownership.py`), never by name; a
group whose inside the artist changed keeps their nodes: only its image is updated.
"""

from dataclasses import dataclass
from pathlib import Path

import bpy

from stylepass_core.compositor_layers import LINE_ART, LayerPasses, pass_names
from stylepass_core.errors import StylepassError

from . import images, ownership, versions

GROUP_NAME = "Stylepass"
GROUP_ROLE = "group"
STYLISED_IMAGE = "Stylepass stylised"
STYLISED_ROLE = "stylised"
LAYERS_IMAGE = "Stylepass layers"
LAYERS_ROLE = "layers"
GROUP_NODE_NAME = "Stylepass"

COMPOSITOR_IS_GROUP = versions.COMPOSITOR_IS_GROUP


class CompositorError(StylepassError):
    """The compositor could not be set up; the message says why."""


@dataclass(frozen=True)
class Layers:
    """The frame's layers file in Stylepass's multilayer Image datablock, and the style groups' passes in it."""

    image: bpy.types.Image
    passes: tuple[LayerPasses, ...] = ()

    def outputs(self) -> list[tuple[str, str]]:
        """The group's layer outputs, in order: (name, socket type)."""
        out = [(LINE_ART, "NodeSocketFloat")]
        for passes in self.passes:
            out += [(passes.layer, "NodeSocketColor"), (passes.mask, "NodeSocketFloat")]
        return out


def show_layers(
    path: Path, group_names: list[str], colour_space: str, notes: list[str], sequence: bool = False
) -> Layers | None:
    """The layers file `path` (the first of a sequence) in Stylepass's multilayer image, for `install`; None
    when there is no such file (a take made before Stylepass wrote one)."""
    if not path.is_file():
        return None
    show = images.show_sequence if sequence else images.show_file
    image = show(LAYERS_ROLE, LAYERS_IMAGE, path, colour_space, notes)
    return Layers(image, tuple(pass_names(group_names)))


# The group itself -----------------------------------------------------------------------------------------


def _ensure_socket(group, name: str, in_out: str, socket_type: str, **limits) -> None:
    for item in group.interface.items_tree:
        if getattr(item, "item_type", "SOCKET") == "SOCKET" and item.name == name and item.in_out == in_out:
            if item.socket_type == socket_type:
                return
            group.interface.remove(item)
            break
    socket = group.interface.new_socket(name, in_out=in_out, socket_type=socket_type)
    for key, value in limits.items():
        setattr(socket, key, value)


def find_group() -> bpy.types.NodeTree | None:
    """Stylepass's own group (by its marker), or None."""
    group = ownership.find(bpy.data.node_groups, GROUP_ROLE)
    return group if group is not None and group.bl_idname == "CompositorNodeTree" else None


def ensure_group(
    image: bpy.types.Image | None,
    sequence: tuple[int, int] | None = None,
    notes: list[str] | None = None,
    label: str | None = None,
    layers: Layers | None = None,
) -> bpy.types.NodeTree:
    """Create, update or rebuild Stylepass's group around `image` (the stylised result). Returns the group.

    Args:
        sequence: (first frame, frame count) when `image` is an image sequence with one file per scene frame
            (file 0012 for frame 12): the node then shows the file of the frame being rendered or scrubbed.
            The layers image is then a sequence too.
        notes: receives a sentence for the artist when a name was taken or their edits were kept.
        label: what the group's image node is labelled: the take it shows ("Take 3 · Style 7"), or
            "Stylised" when None.
        layers: the frame's layers file, which becomes the group's layer outputs; None for a result without
            one (a take made before Stylepass wrote them).
    """
    group = find_group()
    if group is not None and not _is_current(group, layers) and _edited_by_artist(group):
        stylised = group.nodes.get("Stylised")
        if stylised is not None and stylised.bl_idname == "CompositorNodeImage":
            # Their nodes inside stay; only the images the group shows follow the new result.
            _show(stylised, image, sequence, label)
            shown = group.nodes.get(_LAYERS_NODE)
            if layers is not None and shown is not None and shown.bl_idname == "CompositorNodeImage":
                _show(shown, layers.image, sequence, "Layers")
            return group
        # The result has no place left in it: the group is theirs now, and Stylepass makes a new one.
        del group[ownership.ROLE_KEY]
        if notes is not None:
            notes.append(
                f"The node group '{group.name}' was changed so it no longer shows the result; Stylepass left it as "
                "it is and made a new group."
            )
        group = None
    if group is None:
        group = bpy.data.node_groups.new(GROUP_NAME, "CompositorNodeTree")
        ownership.claim(group, GROUP_ROLE, GROUP_NAME, notes)
    elif _is_current(group, layers):
        # Re-running only points the group at the new result: rebuilding it costs ~10 ms.
        _show(group.nodes["Stylised"], image, sequence, label)
        if layers is not None:
            _show(group.nodes[_LAYERS_NODE], layers.image, sequence, "Layers")
        return group
    wanted = _sockets(layers)
    kept = {(in_out, name) for in_out, name, _ in wanted}
    for item in list(group.interface.items_tree):
        # Layer outputs of groups that are gone: the sockets go with them.
        if getattr(item, "item_type", "SOCKET") == "SOCKET" and (item.in_out, item.name) not in kept:
            group.interface.remove(item)
    for in_out, name, socket_type in wanted:
        limits = {}
        if name in ("Factor", "Mask") and in_out == "INPUT":
            limits = {"default_value": 1.0, "min_value": 0.0, "max_value": 1.0}
        _ensure_socket(group, name, in_out, socket_type, **limits)
    _order_outputs(group, [name for in_out, name, _ in wanted if in_out == "OUTPUT"])
    for item in group.interface.items_tree:
        if item.name == "Factor" and item.in_out == "INPUT" and hasattr(item, "subtype"):
            item.subtype = "FACTOR"

    # The inside is all ours (nothing the artist added): rebuilding is simpler and safer than patching it.
    nodes, links = group.nodes, group.links
    nodes.clear()
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-500, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (400, 0)
    stylised = nodes.new("CompositorNodeImage")
    stylised.name = "Stylised"
    stylised.location = (-500, -250)
    _show(stylised, image, sequence, label)
    by_factor = versions.new_colour_mix(nodes, "Mix by Factor", (-150, 0))
    by_mask = versions.new_colour_mix(nodes, "Mix by Mask", (150, 0))
    links.new(group_in.outputs["Image"], by_factor.a)
    links.new(stylised.outputs["Image"], by_factor.b)
    links.new(group_in.outputs["Factor"], by_factor.factor)
    # Mask then blends the plain render back in: render + Mask * Factor * (stylised - render).
    links.new(group_in.outputs["Image"], by_mask.a)
    links.new(by_factor.result, by_mask.b)
    links.new(group_in.outputs["Mask"], by_mask.factor)
    links.new(by_mask.result, group_out.inputs["Image"])
    links.new(stylised.outputs["Image"], group_out.inputs["Stylised"])
    if layers is not None:
        shown = nodes.new("CompositorNodeImage")
        shown.name = _LAYERS_NODE
        shown.location = (-500, -550)
        _show(shown, layers.image, sequence, "Layers")
        # The Image node's outputs are the file's passes (Blender reads the file to list them).
        for name, _ in layers.outputs():
            if name in shown.outputs:
                links.new(shown.outputs[name], group_out.inputs[name])
    group[_LAYOUT_KEY] = _LAYOUT
    group[_LINKS_KEY] = len(group.links)
    return group


# Bump when `ensure_group` builds a different inside, so groups saved in older .blend files are rebuilt.
_LAYOUT = 2
_LAYOUT_KEY = "stylepass_layout"
_LINKS_KEY = "stylepass_links"  # how many links the build made (a layer the file lacks has none)
_LAYERS_NODE = "Layers"
_SOCKETS = (
    ("INPUT", "Image", "NodeSocketColor"),
    ("INPUT", "Factor", "NodeSocketFloat"),
    ("INPUT", "Mask", "NodeSocketFloat"),
    ("OUTPUT", "Image", "NodeSocketColor"),
    ("OUTPUT", "Stylised", "NodeSocketColor"),
)
_NODES = {"Group Input", "Group Output", "Stylised", "Mix by Factor", "Mix by Mask"}


def _sockets(layers: Layers | None) -> list[tuple[str, str, str]]:
    """Every socket of the group for `layers`, in order: (in_out, name, socket type)."""
    extra = [("OUTPUT", name, kind) for name, kind in layers.outputs()] if layers is not None else []
    return [*_SOCKETS, *extra]


def _order_outputs(group, names: list[str]) -> None:
    """Put the group's outputs in `names` order (new layer outputs are appended where a group was inserted)."""
    sockets = {
        item.name: item
        for item in group.interface.items_tree
        if getattr(item, "item_type", "SOCKET") == "SOCKET" and item.in_out == "OUTPUT"
    }
    for position, name in enumerate(names):
        item = sockets.get(name)
        if item is not None and item.position != position:
            group.interface.move(item, position)


def _edited_by_artist(group) -> bool:
    """Whether the artist put nodes of their own inside the group (a grade, a blur...)."""
    return any(node.name not in _NODES | {_LAYERS_NODE} for node in group.nodes)


def _is_current(group, layers: Layers | None) -> bool:
    """Whether the group is exactly what `ensure_group` builds for `layers` (this layout, untouched inside)."""
    if group.get(_LAYOUT_KEY) != _LAYOUT or len(group.links) != group.get(_LINKS_KEY):
        return False
    if {node.name for node in group.nodes} != (_NODES | {_LAYERS_NODE} if layers is not None else _NODES):
        return False
    if group.nodes["Stylised"].bl_idname != "CompositorNodeImage":
        return False
    sockets = [
        (item.in_out, item.name, item.socket_type)
        for item in group.interface.items_tree
        if getattr(item, "item_type", "SOCKET") == "SOCKET"
    ]
    wanted = _sockets(layers)
    return sorted(sockets) == sorted(wanted) and [s for s in sockets if s[0] == "OUTPUT"] == [
        s for s in wanted if s[0] == "OUTPUT"
    ]


def _show(node, image: bpy.types.Image | None, sequence: tuple[int, int] | None, label: str | None) -> None:
    # The label says which take the group shows; found by its name, so the label is free to change.
    if node.label != (label or "Stylised"):
        node.label = label or "Stylised"
    if node.image != image:
        node.image = image
    if sequence is not None:
        first, count = sequence
        # Blender shows file number (frame - frame_start + 1 + frame_offset): this maps frame f to file f.
        node.frame_start = first
        node.frame_duration = count
        node.frame_offset = first - 1
        node.use_auto_refresh = True
        node.use_cyclic = False


# The scene's tree -----------------------------------------------------------------------------------------


def scene_tree(scene: bpy.types.Scene) -> bpy.types.NodeTree:
    """The scene's compositor tree, created if missing."""
    if COMPOSITOR_IS_GROUP:
        tree = scene.compositing_node_group
        if tree is not None:
            return tree
        tree = bpy.data.node_groups.new(f"{scene.name} Compositing", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        layers = tree.nodes.new("CompositorNodeRLayers")
        layers.location = (-400, 0)
        output = tree.nodes.new("NodeGroupOutput")
        output.location = (400, 0)
        tree.links.new(layers.outputs["Image"], output.inputs[0])
        scene.compositing_node_group = tree
        return tree
    if not scene.use_nodes:
        scene.use_nodes = True  # creates Blender's default tree the first time
    if scene.node_tree is None:
        raise CompositorError(f"Scene '{scene.name}' has no compositor node tree.")
    return scene.node_tree


def _final_input(tree):
    """The socket whose image becomes the render result: Composite's Image (4.x), Group Output's first (5.x)."""
    if COMPOSITOR_IS_GROUP:
        outputs = [n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"]
        active = [n for n in outputs if getattr(n, "is_active_output", False)] or outputs
        return active[0].inputs[0] if active and active[0].inputs else None
    composites = [n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"]
    return composites[0].inputs["Image"] if composites else None


def _source_of(socket):
    """The output socket feeding `socket`, looking through reroutes."""
    while socket is not None and socket.is_linked:
        link = socket.links[0]
        if link.from_node.bl_idname != "NodeReroute":
            return link.from_socket
        socket = link.from_node.inputs[0]
    return None


_DEFAULT_NODE_TYPES = {
    "CompositorNodeRLayers",
    "CompositorNodeComposite",
    "CompositorNodeViewer",
    "NodeReroute",
    "NodeGroupOutput",
}


def is_default_tree(tree) -> bool:
    """True for Blender's untouched tree: Render Layers -> (reroutes) -> output (and viewer), nothing else."""
    if any(node.bl_idname not in _DEFAULT_NODE_TYPES for node in tree.nodes):
        return False
    layers = [n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"]
    final = _final_input(tree)
    if len(layers) != 1 or final is None:
        return False
    source = _source_of(final)
    return source is not None and source.node == layers[0] and source.identifier == "Image"


def find_group_node(tree):
    """The group node in `tree` that uses Stylepass's own group (recognised by its marker, not its name)."""
    for node in tree.nodes:
        if node.bl_idname == "CompositorNodeGroup" and ownership.is_ours(node.node_tree, GROUP_ROLE):
            return node
    return None


def is_group_in_editor(edit_tree, active_node) -> bool:
    """Whether a node editor shows Stylepass's group: its group node is active, or the group itself is open."""
    if edit_tree is None:
        return False
    if ownership.is_ours(edit_tree, GROUP_ROLE):
        return True
    return (
        active_node is not None
        and active_node.bl_idname == "CompositorNodeGroup"
        and ownership.is_ours(active_node.node_tree, GROUP_ROLE)
    )


def install(
    scene: bpy.types.Scene,
    image: bpy.types.Image,
    factor: float | None = None,
    sequence: tuple[int, int] | None = None,
    notes: list[str] | None = None,
    label: str | None = None,
    layers: Layers | None = None,
) -> bpy.types.Node:
    """Build or update the Stylepass group and its node in the scene's compositor. Returns the group node.

    Args:
        scene: the scene whose compositor gets the node.
        image: the stylised image the group shows.
        factor: sets the node's Factor when given; otherwise a new node starts at 1 and an existing one
            keeps the artist's value.
        sequence: (first frame, frame count) for a per-frame image sequence (see `ensure_group`).
        notes: receives sentences for the artist (a name that was taken, edits that were kept).
        label: the take the group shows, for its image node's label (see `ensure_group`).
        layers: the frame's layers file (see `ensure_group`).
    """
    group = ensure_group(image, sequence, notes, label, layers)
    tree = scene_tree(scene)
    node = find_group_node(tree)
    if node is not None:
        if factor is not None:
            node.inputs["Factor"].default_value = factor
        return node

    default = is_default_tree(tree)
    layers = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"), None)
    node = tree.nodes.new("CompositorNodeGroup")
    node.node_tree = group
    node.name = node.label = GROUP_NODE_NAME
    node.inputs["Factor"].default_value = 1.0 if factor is None else factor
    if layers is not None:
        node.location = (layers.location.x + 300, layers.location.y)
        tree.links.new(layers.outputs["Image"], node.inputs["Image"])
    if default:
        final = _final_input(tree)
        # The only link we ever replace: the default tree's Render Layers -> output.
        tree.links.new(node.outputs["Image"], final)
        final.node.location.x = max(final.node.location.x, node.location.x + 300)
    return node
