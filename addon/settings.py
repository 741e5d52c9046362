# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass settings: `scene.stylepass`, `object.stylepass` and the add-on preferences.

Only persistent artist choices live here. Transient job state (progress, running jobs) never goes into Scene
properties: it would be saved into the .blend and undone by Ctrl+Z.
"""

import math

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import ADDON_PACKAGE
from .stylepass_core import conditioning
from .stylepass_core.engines.neural_style import PRESETS

DEFAULT_OUTPUT_DIR = "//stylepass/"

# Blender 4.5 warns about "//" paths unless the property says it understands them; older versions lack the flag.
_BLEND_RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


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
_PRESET_ITEMS = [(preset_id, label, f"Built-in pretrained style {label}") for preset_id, label in PRESETS]


class StylepassSceneSettings(bpy.types.PropertyGroup):
    """Per-scene Stylepass settings (`scene.stylepass`)."""

    engine: EnumProperty(
        name="Engine",
        description="Which engine turns the control passes into a stylised image",
        items=[("NEURAL_STYLE", "Neural Style", "Fast pretrained style transfer on the CPU, works offline")],
        default="NEURAL_STYLE",
    )
    output_dir: StringProperty(
        name="Output Folder",
        description=(
            "Where passes and results are written, as <folder>/<scene>/passes/<pass>/<frame>.png. "
            "'//' is the folder of the .blend file"
        ),
        default=DEFAULT_OUTPUT_DIR,
        subtype="DIR_PATH",
        options=_BLEND_RELATIVE,
    )
    resolution_scale: FloatProperty(
        name="Resolution Scale",
        description="Size of the control passes relative to the scene's output resolution",
        default=100.0,
        min=1.0,
        soft_max=100.0,
        max=400.0,
        subtype="PERCENTAGE",
    )
    pass_samples: IntProperty(
        name="Pass Samples",
        description="Cycles samples for the data-pass render; data passes need few, the beauty pass gets noisier",
        default=16,
        min=1,
        soft_max=256,
        max=4096,
    )
    line_thickness: FloatProperty(
        name="Line Thickness",
        description="Width of the line-art strokes in pixels (anti-aliased, fractional widths allowed)",
        default=1.0,
        min=0.5,
        max=16.0,
        subtype="PIXEL",
    )
    line_depth_threshold: FloatProperty(
        name="Depth Threshold",
        description="Relative depth jump between neighbouring pixels that counts as an outline (0.05 = 5%)",
        default=0.05,
        min=0.001,
        max=1.0,
    )
    line_crease_angle: FloatProperty(
        name="Crease Angle",
        description="Angle between surface normals above which a fold within one object is drawn as a line",
        default=math.radians(40.0),
        min=math.radians(1.0),
        max=math.radians(179.0),
        subtype="ANGLE",
    )
    show_images: BoolProperty(
        name="Show Images",
        description="Load the written passes as 'Stylepass <pass>' images for the Image Editor",
        default=True,
    )

    # Style ----------------------------------------------------------------------------------------------
    style_source: EnumProperty(
        name="Style Source",
        description="Where the look comes from",
        items=[
            ("PRESET", "Preset", "One of the built-in pretrained styles"),
            ("BLEND", "Blend", "A mix of two built-in styles"),
            ("IMAGE", "Image", "Any image (a painting, a photo, concept art) as the style reference"),
        ],
        default="PRESET",
    )
    style_preset: EnumProperty(
        name="Style",
        description="Built-in pretrained style",
        items=_PRESET_ITEMS,
        default=_PRESET_ITEMS[0][0],
    )
    style_blend_preset: EnumProperty(
        name="Blend With",
        description="Second built-in style mixed into the first",
        items=_PRESET_ITEMS,
        default=_PRESET_ITEMS[1][0],
    )
    style_blend_amount: FloatProperty(
        name="Blend Amount",
        description="Share of the second style (0 = only the first, 1 = only the second)",
        default=0.5,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    style_image: PointerProperty(
        name="Style Image",
        description="Image whose look is transferred (used when Style Source is Image)",
        type=bpy.types.Image,
    )
    strength: FloatProperty(
        name="Strength",
        description="How much of the style the engine applies (0 = the plain beauty pass, 1 = fully stylised)",
        default=1.0,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    keep_colours: BoolProperty(
        name="Keep Scene Colours",
        description="Transfer only the style's light and texture (luminance) and keep the scene's own colours",
        default=False,
    )
    detail_scale: FloatProperty(
        name="Detail Scale",
        description=(
            "Resolution the network sees relative to the output: lower gives bigger brush strokes, higher finer "
            "ones, independent of the output size"
        ),
        default=1.0,
        min=0.1,
        soft_max=2.0,
        max=4.0,
    )
    seed: IntProperty(
        name="Seed",
        description="Random seed, recorded with every result so it can be reproduced",
        default=0,
        min=0,
    )
    object_filter: EnumProperty(
        name="Objects",
        description="Which objects get stylised, using each object's 'Stylepass Selection' checkbox",
        items=[
            ("ALL", "All", "Stylise the whole frame"),
            (
                "INCLUDE",
                "Only Selected",
                "Stylise only objects in the Stylepass selection, keep the rest as rendered",
            ),
            (
                "EXCLUDE",
                "All but Selected",
                "Keep objects in the Stylepass selection as rendered, stylise the rest",
            ),
        ],
        default="ALL",
    )


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
    )
    in_selection: BoolProperty(
        name="Stylepass Selection",
        description="Part of the Stylepass selection, used by the scene's Objects setting (only / all but these)",
        default=False,
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

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "render_device")


def preferences(context: bpy.types.Context | None = None) -> StylepassPreferences | None:
    """The add-on's preferences, or None when the add-on is not registered under its package name."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


classes = (StylepassSceneSettings, StylepassObjectSettings, StylepassPreferences)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.Scene.stylepass = PointerProperty(type=StylepassSceneSettings, name="Stylepass")
    bpy.types.Object.stylepass = PointerProperty(type=StylepassObjectSettings, name="Stylepass")


def unregister() -> None:
    del bpy.types.Object.stylepass
    del bpy.types.Scene.stylepass
    _unregister_classes()
