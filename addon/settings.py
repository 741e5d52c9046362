# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass settings: `scene.stylepass`, `object.stylepass` and the add-on preferences.

Only persistent artist choices live here. Transient job state (progress, running jobs) never goes into Scene
properties: it would be saved into the .blend and undone by Ctrl+Z.
"""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from stylepass_core import conditioning
from stylepass_core.engines.comfyui import ComfyUISettings
from stylepass_core.engines.diffusion import DiffusionSettings
from stylepass_core.engines.diffusion.presets import apply_preset
from stylepass_core.settings import SCENE_GROUPS, EngineSettings, FrameSettings, engine_settings

from . import ADDON_PACKAGE, properties


def _semantic_items() -> list[tuple[str, str, str]]:
    items = [("NONE", "None", "No semantic class: the object gets its own flat colour")]
    for name in conditioning.SEMANTIC_CLASSES:
        if name == "NONE":
            continue
        items.append(
            (name.upper(), name.title(), f"ADE20K class '{name}' (the colour segmentation ControlNets know)")
        )
    return items


# Enum items must stay referenced from Python while Blender uses them.
_SEMANTIC_ITEMS = _semantic_items()


class StylepassModelFolder(bpy.types.PropertyGroup):
    """A folder the worker may load models from."""

    path: StringProperty(
        name="Folder",
        description="A folder with models (checkpoints, ControlNets, LoRAs)",
        subtype="DIR_PATH",
    )


class StylepassGroupObject(bpy.types.PropertyGroup):
    """One object named in a style group."""

    object: PointerProperty(
        type=bpy.types.Object,
        name="Object",
        description="An object whose pixels get this group's style",
        update=properties.notify_changed,
    )


def _engine_pointers() -> dict:
    """One pointer per engine to its generated settings group (the scene's, and each style group's own)."""
    return {
        cls.PROPERTY: PointerProperty(
            type=properties.group_for(cls), name=cls.LABEL, description=cls.DESCRIPTION
        )
        for cls in engine_settings()
    }


def _style_group_annotations() -> dict:
    """A style group: its members and its own settings of every engine (the same generated groups as the
    scene's), plus its own Strength and Keep Scene Colours."""
    found = {
        "objects": CollectionProperty(type=StylepassGroupObject, name="Objects"),
        "object_index": IntProperty(name="Active Object", default=0, min=0),
        "collection": PointerProperty(
            type=bpy.types.Collection,
            name="Collection",
            description="Every object in this collection (and its child collections) is in the group",
            update=properties.notify_changed,
        ),
        "semantic_class": EnumProperty(
            name="Semantic Class",
            description="Every object of this semantic class (Object Properties > Stylepass) is in the group",
            items=_SEMANTIC_ITEMS,
            default="NONE",
            update=properties.notify_changed,
        ),
    }
    found.update(properties.annotations(FrameSettings, only=("strength", "keep_colours")))
    found.update(_engine_pointers())
    return found


def _property_group(name: str, doc: str, annotations: dict) -> type:
    """A PropertyGroup class made from generated annotations."""
    return type(
        name,
        (bpy.types.PropertyGroup,),
        {"__doc__": doc, "__module__": __name__, "__annotations__": annotations},
    )


StylepassStyleGroup = _property_group(
    "StylepassStyleGroup",
    "A style group (`scene.stylepass.style_groups`): objects that get their own style",
    _style_group_annotations(),
)


def _engine_items() -> list[tuple[str, str, str]]:
    return [(cls.ENGINE, cls.LABEL, cls.DESCRIPTION) for cls in engine_settings()]


def _scene_annotations() -> dict:
    """`scene.stylepass`: the engine, the shared groups' fields side by side, one pointer per engine."""
    items = _engine_items()
    found = {
        "engine": EnumProperty(
            name="Engine",
            description="Which engine turns the control passes into a stylised image",
            items=items,
            default=items[0][0],
            update=properties.notify_changed,
        )
    }
    found.update(properties.annotations(*SCENE_GROUPS))
    found.update(_engine_pointers())
    found["style_groups"] = CollectionProperty(type=StylepassStyleGroup, name="Style Groups")
    found["style_group_index"] = IntProperty(name="Active Style Group", default=0, min=0)
    return found


StylepassSceneSettings = _property_group(
    "StylepassSceneSettings",
    "Per-scene Stylepass settings (`scene.stylepass`), generated from the core's settings classes",
    _scene_annotations(),
)


def engine_group(
    settings: bpy.types.bpy_struct, cls: type[EngineSettings] | None = None
) -> bpy.types.bpy_struct:
    """The property group of the chosen engine (or of `cls`) under `scene.stylepass`."""
    return getattr(settings, (cls or chosen_engine(settings)).PROPERTY)


def chosen_engine(settings: bpy.types.bpy_struct) -> type[EngineSettings]:
    """The settings class of `scene.stylepass.engine`."""
    return {cls.ENGINE: cls for cls in engine_settings()}[settings.engine]


class StylepassObjectSettings(bpy.types.PropertyGroup):
    """Per-object Stylepass settings (`object.stylepass`)."""

    semantic_class: EnumProperty(
        name="Semantic Class",
        description=(
            "What this object is, for the segmentation pass: a class gives the ADE20K colour segmentation "
            "ControlNets were trained on; None gives a unique flat colour"
        ),
        items=_SEMANTIC_ITEMS,
        default="NONE",
        update=properties.notify_changed,
    )
    in_selection: BoolProperty(
        name="Stylepass Selection",
        description="Part of the Stylepass selection, used by the scene's Objects setting (only / all but these)",
        default=False,
        update=properties.notify_changed,
    )


class StylepassPreferences(bpy.types.AddonPreferences):
    """Add-on preferences (Edit > Preferences > Add-ons > Stylepass)."""

    bl_idname = ADDON_PACKAGE

    render_device: EnumProperty(
        name="Pass Render Device",
        description="Device Cycles uses for the data-pass render (GPU needs a compute device set in Preferences)",
        items=[
            ("CPU", "CPU", "Always works; data passes need few samples"),
            ("GPU", "GPU", "Faster on big frames when a GPU compute device is configured"),
        ],
        default="CPU",
    )
    engine_location: EnumProperty(
        name="Diffusion Engine",
        description="Where the diffusion engine runs",
        items=[
            ("MANAGED", "Managed Local Worker", "A Python environment Stylepass installs in its user folder"),
            ("PYTHON", "Existing Python", "An interpreter you installed torch and diffusers into"),
            ("REMOTE", "Remote Worker", "A Stylepass worker on another machine, by URL and token"),
        ],
        default="MANAGED",
    )
    python_path: StringProperty(
        name="Python", description="Interpreter with torch and diffusers for the worker", subtype="FILE_PATH"
    )
    remote_url: StringProperty(
        name="Worker URL", description="Address of a remote worker, e.g. https://gpu-box:8765", default=""
    )
    remote_token: StringProperty(
        name="Token", description="The token the remote worker was started with", subtype="PASSWORD"
    )
    model_dirs: CollectionProperty(type=StylepassModelFolder, name="Model Folders")
    torch_index_url: StringProperty(
        name="Torch Package Index",
        description=(
            "Optional extra package index for the torch build, e.g. PyTorch's own index for CUDA on Windows "
            "(see the install selector on PyTorch's website); empty uses the default index"
        ),
        default="",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "render_device")
        box = layout.box()
        box.label(
            text="Diffusion engine (optional: the built-in Neural Style needs none of this)", icon="INFO"
        )
        box.prop(self, "engine_location")
        if self.engine_location == "MANAGED":
            row = box.row(align=True)
            row.operator("stylepass.install_engine", icon="IMPORT")
            row.operator("stylepass.open_engine_log", text="", icon="TEXT")
            box.prop(self, "torch_index_url")
        elif self.engine_location == "PYTHON":
            box.prop(self, "python_path")
        else:
            box.prop(self, "remote_url")
            box.prop(self, "remote_token")
        box.prop(self, "device")
        row = box.row()
        row.active = bpy.app.online_access
        row.prop(self, "allow_network")
        box.label(text="Model Folders")
        for index, item in enumerate(self.model_dirs):
            row = box.row(align=True)
            row.prop(item, "path", text="")
            row.operator("stylepass.model_folder_remove", text="", icon="X").index = index
        box.operator("stylepass.model_folder_add", icon="ADD")
        box.operator("stylepass.release_memory", icon="X")

        box = layout.box()
        box.label(text="ComfyUI engine: a server you run, with its own models", icon="NODETREE")
        for name in ComfyUISettings.HOST_FIELDS:
            box.prop(self, name)


# The diffusion engine's machine-level settings (device, downloads) live here, generated like the scene's.
StylepassPreferences.__annotations__.update(
    properties.annotations(DiffusionSettings, only=DiffusionSettings.HOST_FIELDS)
)
StylepassPreferences.__annotations__.update(
    properties.annotations(ComfyUISettings, only=ComfyUISettings.HOST_FIELDS)
)


def apply_diffusion_preset(settings: bpy.types.bpy_struct, key: str) -> None:
    """Choose the diffusion engine and set its model, sampler and controls to the preset `key` (prompt kept)."""
    group = engine_group(settings, DiffusionSettings)
    properties.write(group, apply_preset(properties.read(group, DiffusionSettings), key))
    settings.engine = DiffusionSettings.ENGINE


def preferences(context: bpy.types.Context | None = None) -> StylepassPreferences | None:
    """The add-on's preferences, or None when the add-on is not registered under its package name."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


classes = (
    StylepassModelFolder,
    *properties.generated_groups(),
    StylepassGroupObject,
    StylepassStyleGroup,
    StylepassSceneSettings,
    StylepassObjectSettings,
    StylepassPreferences,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.stylepass = PointerProperty(type=StylepassSceneSettings, name="Stylepass")
    bpy.types.Object.stylepass = PointerProperty(type=StylepassObjectSettings, name="Stylepass")


def unregister() -> None:
    del bpy.types.Object.stylepass
    del bpy.types.Scene.stylepass
    _unregister_classes()
