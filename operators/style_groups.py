# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups: add one (from the selected objects, starting from the scene's look), remove one, and add or
remove objects. Thin: the groups are plain properties (`addon/settings.py`), read by `addon/style_groups.py`."""

import bpy

from stylepass_core.settings import SettingsError, engine_settings

from ..addon import properties


def _unique_name(groups, base: str = "Group") -> str:
    taken = {group.name for group in groups}
    number = 1
    while f"{base} {number}" in taken:
        number += 1
    return f"{base} {number}"


def _copy_engine_settings(source, target) -> None:
    """The scene's settings of every engine into a new group, image fields included, so a group starts
    from the scene's look; a value the scene holds out of range leaves the group's default."""
    for cls in engine_settings():
        scene_group, group = getattr(source, cls.PROPERTY), getattr(target, cls.PROPERTY)
        try:
            properties.write(group, properties.read(scene_group, cls))
        except SettingsError:
            continue
        for name, _, spec, _ in cls.specs():
            if spec.image:
                setattr(group, name, getattr(scene_group, name))


def _selected(context: bpy.types.Context) -> list[bpy.types.Object]:
    return list(getattr(context, "selected_objects", None) or [])


def _active_group(context: bpy.types.Context):
    settings = context.scene.stylepass
    if 0 <= settings.style_group_index < len(settings.style_groups):
        return settings.style_groups[settings.style_group_index]
    return None


def _remove_active(context: bpy.types.Context, holder, collection: str, index: str) -> None:
    """Remove the active item of a list (`holder.collection` at `holder.index`); the next one becomes active."""
    items = getattr(holder, collection)
    items.remove(getattr(holder, index))
    setattr(holder, index, max(0, min(getattr(holder, index), len(items) - 1)))
    properties.notify_changed(None, context)


class STYLEPASS_OT_style_group_add(bpy.types.Operator):
    """Add a style group with the selected objects in it; it starts from the scene's style"""

    bl_idname = "stylepass.style_group_add"
    bl_label = "Add Style Group"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.stylepass
        group = settings.style_groups.add()
        group.name = _unique_name(settings.style_groups)
        _copy_engine_settings(settings, group)
        group.strength, group.keep_colours = settings.strength, settings.keep_colours
        for obj in _selected(context):
            group.objects.add().object = obj
        settings.style_group_index = len(settings.style_groups) - 1
        properties.notify_changed(None, context)
        return {"FINISHED"}


class STYLEPASS_OT_style_group_remove(bpy.types.Operator):
    """Remove the active style group (its objects take the scene's style again)"""

    bl_idname = "stylepass.style_group_remove"
    bl_label = "Remove Style Group"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _active_group(context) is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        _remove_active(context, context.scene.stylepass, "style_groups", "style_group_index")
        return {"FINISHED"}


class STYLEPASS_OT_style_group_assign(bpy.types.Operator):
    """Add the selected objects to the active style group (objects already in it are left as they are)"""

    bl_idname = "stylepass.style_group_assign"
    bl_label = "Add Selected Objects"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _active_group(context) is not None and bool(_selected(context))

    def execute(self, context: bpy.types.Context) -> set[str]:
        group = _active_group(context)
        present = {entry.object for entry in group.objects}
        for obj in _selected(context):
            if obj not in present:
                group.objects.add().object = obj
        properties.notify_changed(None, context)
        return {"FINISHED"}


class STYLEPASS_OT_style_group_unassign(bpy.types.Operator):
    """Take the active object entry out of the active style group"""

    bl_idname = "stylepass.style_group_unassign"
    bl_label = "Remove Object"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        group = _active_group(context)
        return group is not None and 0 <= group.object_index < len(group.objects)

    def execute(self, context: bpy.types.Context) -> set[str]:
        _remove_active(context, _active_group(context), "objects", "object_index")
        return {"FINISHED"}


classes = (
    STYLEPASS_OT_style_group_add,
    STYLEPASS_OT_style_group_remove,
    STYLEPASS_OT_style_group_assign,
    STYLEPASS_OT_style_group_unassign,
)
