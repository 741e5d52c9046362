# SPDX-License-Identifier: GPL-3.0-or-later
"""A fingerprint of everything that shapes a frame's control passes, so unchanged frames are not re-rendered.

It covers the evaluated geometry (modifiers and animation included), transforms, the camera, lights,
materials' node values, the world, render, Cycles and colour-management settings, the frame and the pass
options. Anything it misses can only cause a re-render to be skipped wrongly, so it errs on the side of
hashing more: a false "changed" costs one render, a false "unchanged" shows a stale image.
"""

import hashlib
from collections.abc import Iterable

import bpy
import numpy as np


def _plain_values(struct) -> tuple[tuple[str, object], ...]:
    """The struct's plain (non-pointer) properties as (name, value) pairs, values made hashable by repr."""
    kind = struct.bl_rna
    names = _NAMES.get(kind.identifier)
    if names is None:
        names = _NAMES[kind.identifier] = tuple(
            prop.identifier
            for prop in kind.properties
            if prop.type not in {"POINTER", "COLLECTION"}
            and prop.identifier != "rna_type"
            and not getattr(prop, "is_deprecated", False)
        )
    pairs = []
    for name in names:
        try:
            value = getattr(struct, name)
        except (AttributeError, RuntimeError):
            continue
        if isinstance(value, set):
            value = tuple(sorted(value))  # enum flags: a set's order changes between sessions
        elif hasattr(value, "__len__") and not isinstance(value, str):
            value = tuple(tuple(v) if hasattr(v, "__len__") else v for v in value)
        pairs.append((name, value))
    return tuple(pairs)


# Plain property names per RNA type: listing them walks every property's definition, which costs more than
# reading the values.
_NAMES: dict[str, tuple[str, ...]] = {}


def _node_tree_values(tree) -> Iterable[object]:
    if tree is None:
        return
    for node in tree.nodes:
        yield node.bl_idname, node.name, tuple(_plain_values(node))
        for socket in node.inputs:
            value = getattr(socket, "default_value", None)
            if value is not None and hasattr(value, "__len__") and not isinstance(value, str):
                value = tuple(value)
            yield socket.identifier, value, socket.is_linked
        image = getattr(node, "image", None)
        if image is not None:
            yield image.name, image.filepath
    for link in tree.links:
        yield link.from_node.name, link.from_socket.identifier, link.to_node.name, link.to_socket.identifier


def scene_fingerprint(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, extra: object) -> str:
    """Hex digest of the frame's inputs as they are now (evaluated at the scene's current frame)."""
    digest = hashlib.sha256()

    def feed(*values: object) -> None:
        digest.update(repr(values).encode())

    depsgraph = view_layer.depsgraph
    feed("extra", extra, scene.frame_current, scene.frame_subframe)
    for struct in (scene.render, scene.cycles, scene.view_settings, scene.display_settings):
        feed(tuple(_plain_values(struct)))
    if scene.world is not None:
        feed("world", tuple(scene.world.color), tuple(_node_tree_values(scene.world.node_tree)))
    camera = scene.camera
    if camera is not None:
        feed("camera", camera.name, tuple(map(tuple, camera.matrix_world)), tuple(_plain_values(camera.data)))
    materials = {}
    for obj in sorted(view_layer.objects, key=lambda o: o.name):
        feed(obj.name, obj.type, obj.hide_render, tuple(map(tuple, obj.matrix_world)))
        if hasattr(obj, "stylepass"):
            feed(tuple(_plain_values(obj.stylepass)))
        if obj.type == "LIGHT":
            feed(tuple(_plain_values(obj.data)))
        if obj.type == "MESH":
            mesh = obj.evaluated_get(depsgraph).data
            coords = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", coords)
            feed(len(mesh.vertices), len(mesh.polygons), hashlib.sha256(coords.tobytes()).hexdigest())
        for slot in getattr(obj, "material_slots", ()):
            if slot.material is not None:
                materials[slot.material.name] = slot.material
    for name in sorted(materials):
        material = materials[name]
        feed("material", name, tuple(material.diffuse_color), tuple(_node_tree_values(material.node_tree)))
    return digest.hexdigest()
