# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylepass settings: `scene.stylepass`, `object.stylepass` and the add-on preferences.

Only persistent artist choices live here. Transient job state (progress, running jobs) never goes into Scene
properties: it would be saved into the .blend and undone by Ctrl+Z.
"""

import math
from dataclasses import dataclass

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

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


CONTROL_MAPS = [
    ("depth", "Depth", "Normalised inverse depth from the Depth pass"),
    ("normal", "Normal", "Camera-space normals in normalbae colours"),
    ("lineart", "Line Art", "Geometric outlines and creases"),
    ("segmentation", "Segmentation", "Flat ADE20K colours per object"),
]


class StylepassControl(bpy.types.PropertyGroup):
    """One ControlNet unit of the diffusion engine: which pass drives it, how strongly, and when."""

    enabled: BoolProperty(name="Enabled", description="Use this control", default=True)
    map: EnumProperty(
        name="Pass", description="Which control pass drives this ControlNet", items=CONTROL_MAPS
    )
    model: StringProperty(
        name="ControlNet",
        description="ControlNet model: a model id, a diffusers folder or a .safetensors file",
        default="",
    )
    weight: FloatProperty(
        name="Weight",
        description="How strongly this control steers the image",
        default=1.0,
        min=0.0,
        soft_max=2.0,
    )
    start: FloatProperty(
        name="Start",
        description="Share of the steps before this control starts",
        default=0.0,
        min=0.0,
        max=1.0,
    )
    end: FloatProperty(
        name="End",
        description="Share of the steps after which this control stops",
        default=1.0,
        min=0.0,
        max=1.0,
    )


class StylepassModelFolder(bpy.types.PropertyGroup):
    """A folder the worker may load models from."""

    path: StringProperty(
        name="Folder",
        description="A folder with models (checkpoints, ControlNets, LoRAs)",
        subtype="DIR_PATH",
    )


class StylepassSceneSettings(bpy.types.PropertyGroup):
    """Per-scene Stylepass settings (`scene.stylepass`)."""

    engine: EnumProperty(
        name="Engine",
        description="Which engine turns the control passes into a stylised image",
        items=[
            ("NEURAL_STYLE", "Neural Style", "Fast pretrained style transfer on the CPU, works offline"),
            (
                "DIFFUSION",
                "Diffusion",
                "Stable Diffusion with ControlNets driven by the exact passes, in a worker process "
                "(install it in the preferences, or connect a remote worker)",
            ),
        ],
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
    png_compression: IntProperty(
        name="PNG Compression",
        description=(
            "Compression of the stylised PNGs, as in Output > Compression. Painted textures barely compress: "
            "15% saves about a fifth of the size but writes ~15x slower, so 0 keeps re-runs fastest"
        ),
        default=0,
        min=0,
        max=100,
        subtype="PERCENTAGE",
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

    # Diffusion -------------------------------------------------------------------------------------------
    model: StringProperty(
        name="Model",
        description="Stable Diffusion model: a model id, a diffusers folder or a .safetensors checkpoint",
        default="",
    )
    prompt: StringProperty(name="Prompt", description="What the image should look like", default="")
    negative_prompt: StringProperty(
        name="Negative Prompt",
        description="What the image should not look like",
        default="blurry, low quality",
    )
    seed_locked: BoolProperty(
        name="Lock Seed",
        description="Keep the seed between runs; unlocked, every run picks a new seed and stores it here",
        default=True,
    )
    steps: IntProperty(name="Steps", description="Denoising steps", default=20, min=1, soft_max=60, max=200)
    guidance: FloatProperty(
        name="Guidance",
        description="How closely to follow the prompt (classifier-free guidance)",
        default=7.0,
        min=0.0,
        soft_max=15.0,
    )
    denoise: FloatProperty(
        name="Denoise",
        description="1 = paint from noise (text to image); lower keeps more of the beauty pass (image to image)",
        default=0.75,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    scheduler: EnumProperty(
        name="Scheduler",
        description="Sampling method",
        items=[
            ("euler_a", "Euler a", "Euler ancestral: robust, varied"),
            ("dpmpp_2m_karras", "DPM++ 2M Karras", "Sharp results in fewer steps"),
            ("lcm", "LCM", "Latent consistency: 4-8 steps with an LCM model or LoRA"),
        ],
        default="dpmpp_2m_karras",
    )
    controls: CollectionProperty(type=StylepassControl, name="Controls", description="ControlNet units")
    # Animation -------------------------------------------------------------------------------------------
    temporal_coherence: BoolProperty(
        name="Temporal Coherence",
        description=(
            "Carry each stylised frame into the next along Blender's exact motion vectors, so the style sticks "
            "to surfaces instead of flickering"
        ),
        default=True,
    )
    temporal_weight: FloatProperty(
        name="Coherence",
        description="How much of the previous frame is kept where it is still visible (0 = none, 1 = all)",
        default=0.7,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    keyframe_interval: IntProperty(
        name="Keyframe Interval",
        description="Restart from a fresh stylisation every this many frames (0 = only at cuts), so drift cannot build up",
        default=12,
        min=0,
        soft_max=48,
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
    allow_downloads: BoolProperty(
        name="Allow Model Downloads",
        description="Let the worker download models by id (only when Blender's online access is allowed too)",
        default=False,
    )
    device: EnumProperty(
        name="Device",
        description="Device for the diffusion engine",
        items=[
            ("auto", "Automatic", "CUDA, then Apple Metal, then CPU"),
            ("cuda", "CUDA", "NVIDIA GPU (fp16)"),
            ("mps", "Apple Metal", "Apple silicon GPU"),
            ("cpu", "CPU", "Slow but always there (fp32)"),
        ],
        default="auto",
    )
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
        row.prop(self, "allow_downloads")
        box.label(text="Model Folders")
        for index, item in enumerate(self.model_dirs):
            row = box.row(align=True)
            row.prop(item, "path", text="")
            row.operator("stylepass.model_folder_remove", text="", icon="X").index = index
        box.operator("stylepass.model_folder_add", icon="ADD")
        box.operator("stylepass.release_memory", icon="X")


@dataclass(frozen=True)
class DiffusionPreset:
    label: str
    description: str
    model: str
    scheduler: str
    steps: int
    guidance: float
    controls: tuple[tuple[str, str, float, float], ...]  # (pass, ControlNet, weight, end)


# Model ids as published by their authors; artists can point any field at local files instead.
DIFFUSION_PRESETS = {
    "SD15_DEPTH_LINEART": DiffusionPreset(
        "SD 1.5 + Depth + Line Art",
        "Stable Diffusion 1.5 following the scene's depth and outlines",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "dpmpp_2m_karras",
        20,
        7.0,
        (
            ("depth", "lllyasviel/control_v11f1p_sd15_depth", 1.0, 1.0),
            ("lineart", "lllyasviel/control_v11p_sd15_lineart", 0.8, 0.8),
        ),
    ),
    "SDXL_DEPTH": DiffusionPreset(
        "SDXL + Depth",
        "Stable Diffusion XL following the scene's depth",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "dpmpp_2m_karras",
        25,
        6.0,
        (("depth", "diffusers/controlnet-depth-sdxl-1.0", 0.8, 1.0),),
    ),
    "LCM_PREVIEW": DiffusionPreset(
        "Fast Preview (LCM)",
        "A latent-consistency model: usable previews in 4 steps",
        "SimianLuo/LCM_Dreamshaper_v7",
        "lcm",
        4,
        1.5,
        (("depth", "lllyasviel/control_v11f1p_sd15_depth", 0.8, 1.0),),
    ),
}


def apply_diffusion_preset(settings: "StylepassSceneSettings", key: str) -> None:
    """Set the engine, model, sampler and controls of `settings` to the preset `key` (prompt untouched)."""
    preset = DIFFUSION_PRESETS[key]
    settings.engine = "DIFFUSION"
    settings.model = preset.model
    settings.scheduler = preset.scheduler
    settings.steps = preset.steps
    settings.guidance = preset.guidance
    settings.controls.clear()
    for pass_name, model, weight, end in preset.controls:
        control = settings.controls.add()
        control.map, control.model, control.weight, control.end = pass_name, model, weight, end


def preferences(context: bpy.types.Context | None = None) -> StylepassPreferences | None:
    """The add-on's preferences, or None when the add-on is not registered under its package name."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


classes = (
    StylepassControl,
    StylepassModelFolder,
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
