# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings saved by Stylepass 0.1 (every setting directly under `scene.stylepass`) moved to where they live now.

Blender keeps the values of properties that no longer exist as raw ID properties in the group, so a file saved
with 0.1 still holds them: `migrate(scene)` moves each into the engine's group (`scene.stylepass.neural_style`,
`scene.stylepass.diffusion`) once, and deletes the old raw value. Runs on file load and on register.
"""

import bpy

from stylepass_core.engines.diffusion import DiffusionSettings
from stylepass_core.engines.neural_style import NeuralStyleSettings

from . import ownership

# Old name under scene.stylepass -> the settings class whose group holds it now (same name there).
MOVED = {
    **{name: NeuralStyleSettings for name in (
        "style_source", "style_preset", "style_blend_preset", "style_blend_amount", "style_image", "detail_scale"
    )},
    **{name: DiffusionSettings for name in (
        "model", "prompt", "negative_prompt", "steps", "guidance", "denoise", "scheduler", "controls"
    )},
}  # fmt: skip


def migrate(scene: bpy.types.Scene) -> list[str]:
    """Move 0.1 settings of `scene` to their new place; returns the names moved (empty when nothing was old)."""
    group = scene.stylepass
    moved = []
    for name, cls in MOVED.items():
        if name not in group.keys():
            continue
        old = group[name]
        target = getattr(group, cls.PROPERTY)
        if name == "controls":
            collection = target.controls
            collection.clear()
            for item in old:
                new = collection.add()
                for key in item.keys():
                    new[key] = item[key]
        elif isinstance(old, bpy.types.ID):
            setattr(target, name, old)
        else:
            # Enums are stored as their item's number, in the same item order as 0.1: copy the raw value.
            target[name] = old
        del group[name]
        moved.append(name)
    return moved


def claim_old_datablocks() -> None:
    """Mark the datablocks 0.1 created (it recognised them by name only) as Stylepass's own, where the file
    itself proves it: the group carries 0.1's layout key, the images show files in a Stylepass output folder."""
    for group in bpy.data.node_groups:
        if (
            group.library is None
            and "stylepass_layout" in group.keys()
            and ownership.ROLE_KEY not in group.keys()
        ):
            group[ownership.ROLE_KEY] = "group"
    for image in bpy.data.images:
        if image.library is None and ownership.ROLE_KEY not in image.keys():
            path = image.filepath.replace("\\", "/")
            if image.name == "Stylepass stylised" and "/stylised/compositor/" in path:
                image[ownership.ROLE_KEY] = "stylised"
            elif image.name.startswith("Stylepass ") and f"/passes/{image.name[10:]}/" in path:
                image[ownership.ROLE_KEY] = f"pass:{image.name[10:]}"


def migrate_all() -> list[str]:
    """`migrate` every scene of the open file; a note in the console names what moved."""
    claim_old_datablocks()
    moved = []
    for scene in bpy.data.scenes:
        names = migrate(scene)
        if names:
            moved.append(scene.name)
            print(f"Stylepass: scene '{scene.name}' had settings of Stylepass 0.1; moved {', '.join(names)}")
    return moved


@bpy.app.handlers.persistent
def on_load(_dummy=None) -> None:
    migrate_all()


def register() -> None:
    bpy.app.handlers.load_post.append(on_load)
    # A file already open when the add-on is enabled is migrated too (not while Blender restricts data access).
    if isinstance(bpy.data, bpy.types.BlendData):
        migrate_all()


def unregister() -> None:
    if on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load)
