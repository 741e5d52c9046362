# SPDX-License-Identifier: GPL-3.0-or-later
"""The scene's style groups (`scene.stylepass.style_groups`) read into the core's `StyleGroup`s.

A group's members are its listed objects, every object of its collection (children included) and every object
of its semantic class; its settings are its own settings of the scene's engine, read through the same generated
property groups and checks as the scene's. The core (`stylepass_core.style_groups`) decides which group each
rendered object is in and composites the layers.
"""

from dataclasses import dataclass

import bpy

from stylepass_core.errors import StylepassError
from stylepass_core.settings import EngineSettings, SettingsError
from stylepass_core.style_groups import StyleGroup

from . import properties


@dataclass(frozen=True, eq=False)
class SceneGroup:
    """A style group as read from the scene, with the Blender images its settings' image fields point at."""

    group: StyleGroup
    images: dict[str, bpy.types.Image]


def members(scene: bpy.types.Scene, item) -> frozenset[str]:
    """The names of a group's objects: listed ones, its collection's, its semantic class's."""
    names = {entry.object.name for entry in item.objects if entry.object is not None}
    if item.collection is not None:
        names |= {obj.name for obj in item.collection.all_objects}
    if item.semantic_class != "NONE":
        names |= {obj.name for obj in scene.objects if obj.stylepass.semantic_class == item.semantic_class}
    return frozenset(names)


def read_groups(
    scene: bpy.types.Scene, engine_cls: type[EngineSettings], host: dict
) -> tuple[SceneGroup, ...]:
    """Every style group of the scene, for the scene's engine (`host`: the machine's engine values).

    Raises:
        SettingsError: a group's value out of range or its rules broken (the message names the group).
        StylepassError: a group without a name or without members.
    """
    groups = []
    for item in scene.stylepass.style_groups:
        settings_group = getattr(item, engine_cls.PROPERTY)
        try:
            settings = properties.read(settings_group, engine_cls, **host)
        except SettingsError as error:
            raise SettingsError(f"Style group '{item.name}': {error}") from error
        images = {
            name: getattr(settings_group, name)
            for name, _, spec, _ in engine_cls.specs()
            if spec.image and getattr(settings_group, name) is not None
        }
        try:
            group = StyleGroup(
                item.name,
                members(scene, item),
                settings,
                strength=item.strength,
                keep_colours=item.keep_colours,
            )
        except ValueError as error:
            raise StylepassError(f"Style group '{item.name}': {error}") from error
        if not group.objects:
            # A deleted object leaves its row behind, empty: say so, the artist may not know why it is empty.
            gone = sum(entry.object is None for entry in item.objects)
            why = f" (its {'object was' if gone == 1 else f'{gone} objects were'} deleted)" if gone else ""
            raise StylepassError(
                f"Style group '{item.name}' has no objects{why}: add objects, a collection or a semantic class "
                "to it, or remove it."
            )
        groups.append(SceneGroup(group, images))
    return tuple(groups)
