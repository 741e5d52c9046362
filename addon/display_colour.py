# SPDX-License-Identifier: GPL-3.0-or-later
"""Show display-referred pixels in the compositor exactly as they were made.

Engines return display-referred images (what a screen shows). The compositor works in scene-linear light and
the render's view transform turns its result back into display values. Tagging the stylised image with the
colour space of the scene's own view (for sRGB: "sRGB" for Standard, "Filmic sRGB", "AgX Base sRGB") makes
Blender apply that view's inverse on load, so the view transform at the end gives the original pixels back.
"""

import bpy


def _colour_spaces() -> set[str]:
    image_settings = bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"]
    return {item.identifier for item in image_settings.enum_items}


def view_colour_space(scene: bpy.types.Scene) -> tuple[str, list[str]]:
    """The image colour space that round-trips through the scene's view transform, and warnings.

    Returns:
        (colour space name, warnings): warnings say when the match cannot be exact (a look, exposure, gamma
        or curves on top of the view, or a view with no inverse such as False Color).
    """
    display = scene.display_settings.display_device
    view_settings = scene.view_settings
    view = view_settings.view_transform
    spaces = _colour_spaces()
    candidates = [f"{view} Base {display}", f"{view} {display}", view]
    if view == "Standard":
        candidates.insert(0, display)
    if view == "Raw":
        candidates.insert(0, "Non-Color")
    warnings = []
    name = next((c for c in candidates if c in spaces), None)
    if name is None:
        name = "sRGB"
        warnings.append(
            f"View '{view}' on display '{display}' has no invertible colour space: the stylised image will look "
            "different in the compositor than in the engine. Use Standard, Filmic or AgX."
        )
    extras = []
    if view_settings.look not in ("None", "", f"{view} - Base Contrast"):
        extras.append(f"look '{view_settings.look}'")
    if abs(view_settings.exposure) > 1e-6:
        extras.append(f"exposure {view_settings.exposure:g}")
    if abs(view_settings.gamma - 1.0) > 1e-6:
        extras.append(f"gamma {view_settings.gamma:g}")
    if view_settings.use_curve_mapping:
        extras.append("curves")
    if extras:
        warnings.append(
            "Colour management adds "
            + ", ".join(extras)
            + " on top of the view transform, so Factor 1 shows "
            "the stylised image with that grade applied."
        )
    return name, warnings
