# SPDX-License-Identifier: GPL-3.0-or-later
"""A fingerprint of everything that can change a frame's control passes: unchanged frames are not rendered again.

Hashed: the frame and the pass options; the render settings that shape the pass render (size, pixel aspect,
film, dither, simplify, hair, Freestyle...) and every Cycles setting it does not set itself; colour management
(the beauty goes through the view); the view layer and its collections; every object's render flags,
modifiers, particles, material slots and evaluated geometry; instances; the scene camera's lens; lights;
materials, the world and the node groups they use, with their images' files.

Not hashed: the final output (file path, format, stamp), what the pass render sets itself (engine, samples,
denoising, border, compositing...; see `SET_BY_PASS_RENDER`), viewport and interface state, and runtime
bookkeeping such as `ID.session_uid`, which changes at every load: data-blocks are named by `name_full` and
their library's path, so reopening a file keeps the fingerprint and its passes are reused.

Where unsure it hashes more: a false "changed" costs one render, a false "unchanged" shows a stale image.
"""

import hashlib
import os
from collections.abc import Iterable, Iterator

import bpy
import numpy as np

# What the pass render sets itself (`scene_passes._render_with_overrides`), by RNA type: the artist's values
# cannot change a pass. The render size is set too, but from these settings, so they are hashed.
SET_BY_PASS_RENDER = {
    "RenderSettings": frozenset(
        {
            "engine",
            "use_border",
            "use_compositing",
            "use_sequencer",
            "use_single_layer",
            "use_motion_blur",
            "use_stamp",
            "use_multiview",
        }
    ),
    "CyclesRenderSettings": frozenset(
        {
            "device",
            "samples",
            "use_adaptive_sampling",
            "use_denoising",
            "time_limit",
            "use_layer_samples",
            "filter_width",
        }
    ),
    # The layer's own sample count is ignored (`use_layer_samples`), and the passes are switched on.
    "ViewLayer": frozenset({"samples"}),
    "CyclesRenderLayerSettings": frozenset({"use_denoising"}),
}

# Settings that only name or write the final output, only matter to what the pass render switches off, or
# only change speed, the viewport or the interface: (names, name prefixes) by RNA type.
_NOT_IN_PASSES = {
    "RenderSettings": (
        frozenset(
            {
                # the output file
                "filepath",
                "file_extension",
                "is_movie_format",
                "use_file_extension",
                "use_overwrite",
                "use_placeholder",
                "use_render_cache",
                "save_output",
                "metadata_input",
                "ppm_base",
                "ppm_factor",
                "views_format",
                "use_spherical_stereo",
                # border, compositor and sequencer: off in the pass render
                "border_min_x",
                "border_max_x",
                "border_min_y",
                "border_max_y",
                "use_crop_to_border",
                "sequencer_gl_preview",
                "use_sequencer_override_scene_strip",
                # speed
                "threads",
                "threads_mode",
                "use_persistent_data",
                "use_lock_interface",
                # viewport
                "preview_pixel_size",
                "use_high_quality_normals",
                "has_multiple_engines",
            }
        ),
        ("stamp_", "use_stamp_", "compositor_", "bake_", "use_bake_"),
    ),
    "CyclesRenderSettings": (
        frozenset(
            {
                # off in the pass render: adaptive sampling and denoising
                "adaptive_threshold",
                "adaptive_min_samples",
                "denoiser",
                # speed
                "tile_size",
                "use_auto_tile",
                # viewport
                "ao_bounces",
                "texture_limit",
                "volume_preview_step_rate",
                "bake_type",
            }
        ),
        ("denoising_", "preview_", "use_preview_"),
    ),
    "ViewLayer": (frozenset({"active_aov_index", "active_lightgroup_index"}), ("use_pass_",)),
    "CyclesRenderLayerSettings": (
        frozenset({"pass_debug_sample_count", "pass_render_time"}),
        ("use_pass_", "denoising_"),
    ),
}

# Bookkeeping every data-block has, not content: `session_uid` changes at every load, `users` and `tag` with
# whatever else is open, and the name is hashed as the block's identity.
_ID_BOOKKEEPING = frozenset(
    {
        "session_uid",
        "users",
        "use_fake_user",
        "use_extra_user",
        "tag",
        "is_evaluated",
        "is_runtime_data",
        "is_missing",
        "is_library_indirect",
        "is_editable",
        "is_embedded_data",
        "is_linked_packed",
        "id_type",
        "name",
        "name_full",
        "original",
        "library_weak_reference",
        "override_library",
        "preview",
        "asset_data",
        "animation_data",  # its effect is hashed: the evaluated values at this frame
    }
)

_OBJECT_UI = frozenset(
    {
        "active_material_index",
        "active_selection_set",
        "active_shape_key_index",
        "bound_box",
        "dimensions",
        "display_bounds_type",
        "display_type",
        "empty_display_size",
        "empty_display_type",
        "empty_image_depth",
        "empty_image_offset",
        "empty_image_side",
        "show_empty_image_only_axis_aligned",
        "show_empty_image_orthographic",
        "show_empty_image_perspective",
        "use_empty_image_alpha",
        "hide_select",
        "hide_viewport",
        "hide_probe_plane",
        "hide_probe_sphere",
        "hide_probe_volume",
        "lock_location",
        "lock_rotation",
        "lock_rotation_w",
        "lock_rotations_4d",
        "lock_scale",
        "mode",
        "pass_index",  # set by the pass render
        "show_all_edges",
        "show_axis",
        "show_bounds",
        "show_in_front",
        "show_name",
        "show_texture_space",
        "show_transparent",
        "show_wire",
        "show_instancer_for_viewport",
        "use_mesh_mirror_x",
        "use_mesh_mirror_y",
        "use_mesh_mirror_z",
        "use_dynamic_topology_sculpting",
        "use_shape_key_edit_mode",
        "is_from_instancer",
        "is_from_set",
        "is_instancer",
        # structs hashed on their own below, or not render data
        "data",
        "material_slots",
        "modifiers",
        "particle_systems",
        "constraints",
        "vertex_groups",
        "selection_sets",
        "shader_effects",
        "motion_path",
        "animation_visualization",
        "pose",
        "image_user",
        "display",
        "field",
        "collision",
        "soft_body",
        "rigid_body",
        "rigid_body_constraint",
        "lineart",
        "active_material",
        "active_shape_key",
    }
)
_MODIFIER_UI = frozenset(
    {"execution_time", "is_active", "show_in_editmode", "show_on_cage", "persistent_uid"}
)
# Interface state on any struct: folded panels and sub-panels.
_UI_PREFIXES = ("show_expanded", "open_", "ui_")
_CAMERA_UI = frozenset(
    {
        "display_size",
        "passepartout_alpha",
        "composition_guide_color",
        "lens_unit",
        "background_images",
        "stereo",  # the pass render is mono
    }
)
_MATERIAL_UI = frozenset(
    {
        "paint_active_slot",
        "paint_clone_slot",
        "preview_render_type",
        "use_preview_world",
        "texture_paint_images",
        "texture_paint_slots",
    }
)
_NODE_UI = frozenset(
    {
        "location",
        "location_absolute",
        "width",
        "height",
        "dimensions",  # set when the node editor draws
        "select",
        "hide",
        "show_options",
        "show_preview",
        "show_texture",
        "label",
        "color",
        "color_tag",
        "use_custom_color",
        "warning_propagation",
        "panel_states",
        "parent",
        "inputs",
        "outputs",
        "internal_links",
    }
)

# Attribute data type -> (the per-element property `foreach_get` reads, numbers per element, dtype).
_ATTRIBUTE_LAYOUT = {
    "FLOAT": ("value", 1, np.float32),
    "INT": ("value", 1, np.int32),
    "INT8": ("value", 1, np.int32),
    "BOOLEAN": ("value", 1, bool),
    "FLOAT_VECTOR": ("vector", 3, np.float32),
    "FLOAT2": ("vector", 2, np.float32),
    "FLOAT4": ("vector", 4, np.float32),
    "FLOAT_COLOR": ("color", 4, np.float32),
    "BYTE_COLOR": ("color", 4, np.float32),
    "QUATERNION": ("value", 4, np.float32),
    "FLOAT4X4": ("value", 16, np.float32),
    "INT16_2D": ("value", 2, np.int32),
    "INT32_2D": ("value", 2, np.int32),
}

# Object types whose evaluated geometry `Object.to_mesh` gives (meshes read their evaluated data directly).
_TO_MESH_TYPES = {"CURVE", "SURFACE", "FONT", "META"}


def identity(block: bpy.types.ID | None) -> tuple | None:
    """A data-block's name that survives saving and reopening: its type, full name and library file."""
    if block is None:
        return None
    library = block.library
    return block.id_type, block.name_full, library.filepath if library is not None else None


_SCALARS = (str, int, float, bool, type(None))


def _hashable(value: object) -> object:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, set):
        return tuple(sorted(value))  # enum flags: a set's order changes between sessions
    if hasattr(value, "__len__"):
        return tuple(_hashable(item) for item in value)
    return repr(value)


# Property (name, type) pairs per RNA type: listing them walks every property's definition, which costs more
# than reading the values.
_PROPERTIES: dict[str, tuple[tuple[str, str], ...]] = {}


def _properties(struct) -> tuple[tuple[str, str], ...]:
    rna = struct.bl_rna
    found = _PROPERTIES.get(rna.identifier)
    if found is None:
        is_id = isinstance(struct, bpy.types.ID)
        ignored, prefixes = _NOT_IN_PASSES.get(rna.identifier, (frozenset(), ()))
        ignored = ignored | SET_BY_PASS_RENDER.get(rna.identifier, frozenset())
        found = _PROPERTIES[rna.identifier] = tuple(
            (prop.identifier, prop.type)
            for prop in rna.properties
            if prop.identifier != "rna_type"
            and not prop.identifier.startswith("bl_")
            and not getattr(prop, "is_deprecated", False)
            and not (is_id and prop.identifier in _ID_BOOKKEEPING)
            and prop.identifier not in ignored
            and not prop.identifier.startswith(prefixes + _UI_PREFIXES)
        )
    return found


def struct_values(struct, depth: int = 0, skip: frozenset[str] = frozenset()) -> tuple:
    """A struct's settings as hashable (name, value) pairs, without what cannot change a pass.

    Plain values always; data-blocks it points to by `identity`; nested structs and collections of them
    `depth` levels deep.
    """
    if struct is None:
        return ()
    pairs = []
    for name, kind in _properties(struct):
        if name in skip:
            continue
        try:
            value = getattr(struct, name)
        except (AttributeError, RuntimeError, TypeError):
            continue
        if kind == "POINTER":
            if value is None or isinstance(value, bpy.types.ID):
                pairs.append((name, identity(value)))
            elif depth > 0:
                pairs.append((name, struct_values(value, depth - 1)))
        elif kind == "COLLECTION":
            if depth > 0:
                items = tuple(
                    identity(item) if isinstance(item, bpy.types.ID) else struct_values(item, depth - 1)
                    for item in value
                )
                pairs.append((name, items))
        else:
            pairs.append((name, _hashable(value)))
    return tuple(pairs)


def _image_values(image: bpy.types.Image | None) -> tuple | None:
    """An image by what it shows: its source, colour space and its file's size and time (not its pixels)."""
    if image is None:
        return None
    stamp = None
    if image.packed_file is not None:
        stamp = ("packed", image.packed_file.size)
    elif image.source in {"FILE", "SEQUENCE", "MOVIE", "TILED"} and image.filepath:
        try:
            stat = os.stat(bpy.path.abspath(image.filepath, library=image.library))
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = "missing"
    return (
        identity(image),
        image.filepath,
        image.source,
        image.colorspace_settings.name,
        image.alpha_mode,
        image.use_generated_float,
        image.generated_type,
        tuple(image.generated_color),
        image.generated_width,
        image.generated_height,
        stamp,
    )


def _node_tree_values(tree, seen: set[int]) -> Iterator[object]:
    """Every node's settings and socket values, the links, and the groups and images used, once each."""
    if tree is None or tree.as_pointer() in seen:
        return
    seen.add(tree.as_pointer())
    yield "tree", identity(tree)
    for node in sorted(tree.nodes, key=lambda n: n.name):
        # Depth 3 reaches colour ramps' stops and curve nodes' points.
        yield node.bl_idname, node.name, struct_values(node, 3, _NODE_UI)
        # Unlinked inputs' values, and outputs' for nodes that keep their value there (RGB, Value).
        for kind, sockets in (("in", node.inputs), ("out", node.outputs)):
            for socket in sockets:
                value = getattr(socket, "default_value", None)
                yield kind, socket.identifier, _hashable(value), socket.is_linked
        image = getattr(node, "image", None)
        if isinstance(image, bpy.types.Image):
            yield "image", _image_values(image)
        group = getattr(node, "node_tree", None)
        if isinstance(group, bpy.types.NodeTree):
            yield from _node_tree_values(group, seen)
    for link in tree.links:
        yield (
            link.from_node.name,
            link.from_socket.identifier,
            link.to_node.name,
            link.to_socket.identifier,
            link.is_muted,
        )


def _attributes_digest(digest, attributes) -> None:
    for attribute in sorted(attributes, key=lambda a: a.name):
        digest.update(
            repr((attribute.name, attribute.domain, attribute.data_type, len(attribute.data))).encode()
        )
        layout = _ATTRIBUTE_LAYOUT.get(attribute.data_type)
        if layout is None or not len(attribute.data):
            continue  # strings, and types newer than this list: their name, type and size are hashed
        key, width, dtype = layout
        values = np.empty(len(attribute.data) * width, dtype=dtype)
        try:
            attribute.data.foreach_get(key, values)
        except (AttributeError, RuntimeError, TypeError):
            continue
        digest.update(values.tobytes())


def _mesh_digest(mesh: bpy.types.Mesh) -> str:
    """Topology, every attribute (positions, UVs, smooth flags, material indices...), custom normals and
    materials of an evaluated mesh."""
    digest = hashlib.blake2b(digest_size=20)
    counts = (len(mesh.vertices), len(mesh.edges), len(mesh.loops), len(mesh.polygons))
    digest.update(repr(counts).encode())
    starts = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("loop_start", starts)
    digest.update(starts.tobytes())
    _attributes_digest(digest, mesh.attributes)
    if getattr(mesh, "has_custom_normals", False):
        normals = np.empty(len(mesh.loops) * 3, dtype=np.float32)
        mesh.corner_normals.foreach_get("vector", normals)
        digest.update(normals.tobytes())
    digest.update(repr(tuple(identity(material) for material in mesh.materials)).encode())
    texspace = tuple(_hashable(getattr(mesh, name, None)) for name in ("texspace_location", "texspace_size"))
    digest.update(repr(texspace).encode())
    return digest.hexdigest()


def _geometry(evaluated: bpy.types.Object, meshes: dict[int, str]) -> object:
    """What an object's data puts into a render: evaluated geometry as a digest, or the data's settings.

    Args:
        meshes: digests of the meshes seen so far in this fingerprint, by address: objects that share an
            unmodified mesh share its evaluated copy too, and it is read once.
    """
    data = evaluated.data
    if data is None:
        return None
    if evaluated.type == "MESH":
        key = data.as_pointer()
        if key not in meshes:
            meshes[key] = _mesh_digest(data)
        return meshes[key]
    if evaluated.type in _TO_MESH_TYPES:
        try:
            mesh = evaluated.to_mesh()
        except RuntimeError:
            mesh = None
        try:
            return (_mesh_digest(mesh) if mesh is not None else None), struct_values(data, 0)
        finally:
            evaluated.to_mesh_clear()
    if evaluated.type in {"CURVES", "POINTCLOUD"}:
        digest = hashlib.blake2b(digest_size=20)
        _attributes_digest(digest, data.attributes)
        materials = tuple(identity(material) for material in data.materials)
        return digest.hexdigest(), materials, struct_values(data, 0)
    if evaluated.type == "VOLUME":
        return struct_values(data, 1)
    if evaluated.type == "LIGHT":
        return struct_values(data, 1)
    return None


def _collections(layer_collection) -> Iterator[tuple]:
    collection = layer_collection.collection
    yield (
        identity(collection),
        layer_collection.exclude,
        layer_collection.holdout,
        layer_collection.indirect_only,
        collection.hide_render,
        tuple(collection.instance_offset),
    )
    for child in layer_collection.children:
        yield from _collections(child)


def _materials_of(obj, evaluated) -> Iterable[bpy.types.Material]:
    for slot in obj.material_slots:
        if slot.material is not None:
            yield slot.material
    for material in getattr(evaluated.data, "materials", ()) or ():
        if material is not None:
            yield material


def scene_fingerprint(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, extra: object) -> str:
    """Hex digest of the frame's inputs as they are now (evaluated at the scene's current frame).

    Args:
        extra: anything else the passes depend on (the pass options); hashed by its repr.
    """
    digest = hashlib.sha256()

    def feed(*values: object) -> None:
        digest.update(repr(values).encode())

    depsgraph = view_layer.depsgraph
    trees: set[int] = set()
    meshes: dict[int, str] = {}

    # 1. The frame, the options, render, Cycles and colour management
    feed("extra", extra, scene.frame_current, scene.frame_subframe)
    feed("scene", identity(scene), identity(scene.camera), identity(scene.background_set))
    feed("render", struct_values(scene.render))
    feed("cycles", struct_values(getattr(scene, "cycles", None)))
    feed("curves", struct_values(getattr(scene, "cycles_curves", None)))
    # Depth 3 reaches the view's curve mapping points.
    feed("view", struct_values(scene.view_settings, 3), struct_values(scene.display_settings, 1))

    # 2. The view layer: its settings, overrides and collections (excluded, holdout, indirect only)
    feed("view_layer", struct_values(view_layer), struct_values(getattr(view_layer, "cycles", None)))
    feed("collections", tuple(_collections(view_layer.layer_collection)))
    if scene.render.use_freestyle and view_layer.use_freestyle:
        settings = view_layer.freestyle_settings
        feed("freestyle", struct_values(settings, 2))
        for lineset in settings.linesets:
            feed("linestyle", struct_values(lineset.linestyle, 2))
    materials: dict[tuple, bpy.types.Material] = {}
    override = getattr(view_layer, "material_override", None)
    if override is not None:
        materials[identity(override)] = override
    world = getattr(view_layer, "world_override", None) or scene.world

    # 3. Objects: render flags, modifiers, particles, materials, evaluated transform and geometry
    for obj in sorted(view_layer.objects, key=lambda o: o.name_full):
        evaluated = obj.evaluated_get(depsgraph)
        feed("object", identity(obj), identity(obj.data), tuple(map(tuple, evaluated.matrix_world)))
        feed(struct_values(obj, 1, _OBJECT_UI))
        feed(tuple(identity(collection) for collection in obj.users_collection))
        # The original's: a render-only setting (render levels) does not update the evaluated copy.
        feed(tuple(struct_values(modifier, 1, _MODIFIER_UI) for modifier in obj.modifiers))
        for system in obj.particle_systems:
            feed("particles", struct_values(system), struct_values(system.settings, 1))
        feed(tuple((identity(slot.material), slot.link) for slot in obj.material_slots))
        for material in _materials_of(obj, evaluated):
            materials[identity(material)] = material
        feed("data", _geometry(evaluated, meshes))
        if obj.type == "LIGHT":
            feed(tuple(_node_tree_values(obj.data.node_tree, trees)))
        elif obj == scene.camera and obj.type == "CAMERA":
            feed("camera", struct_values(obj.data, 2, _CAMERA_UI))

    # 4. Instances (collection instances, particles, geometry-node instances)
    geometries: dict[int, object] = {}
    for instance in depsgraph.object_instances:
        if not instance.is_instance:
            continue
        obj = instance.object
        key = obj.data.as_pointer() if obj.data is not None else id(obj)
        if key not in geometries:
            geometries[key] = _geometry(obj, meshes)
            for material in _materials_of(obj.original, obj):
                materials[identity(material)] = material
        parent = instance.parent
        feed(
            "instance",
            identity(parent.original if parent is not None else None),
            identity(obj.original),
            tuple(instance.persistent_id),
            tuple(map(tuple, instance.matrix_world)),
            geometries[key],
        )

    # 5. Materials and the world, with their node trees, node groups and images
    for key in sorted(materials, key=repr):
        material = materials[key]
        feed("material", key, struct_values(material, 1, _MATERIAL_UI))
        feed(tuple(_node_tree_values(material.node_tree, trees)))
    if world is not None:
        feed("world", identity(world), struct_values(world, 1))
        feed(tuple(_node_tree_values(world.node_tree, trees)))
    return digest.hexdigest()
