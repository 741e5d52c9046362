# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender properties generated from the core's settings dataclasses, and read back into them.

The dataclasses (`stylepass_core.settings`, each engine's settings) are the one place where a setting's name,
default, range, label and description live; this module turns each field into the matching `bpy.props`
property and turns a property group back into a checked, frozen settings object. A new field appears here
without an edit.
"""

import typing

import bpy
import numpy as np
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from stylepass_core.settings import Settings, SettingsError

from . import versions

_INT_LIMIT = 2**31 - 1

# Generated PropertyGroup classes by settings class, so nested settings are generated (and registered) once.
_GROUPS: dict[type, type] = {}


def _range(spec, kind: type) -> dict:
    limits = {}
    for key in ("min", "max", "soft_min", "soft_max"):
        value = getattr(spec, key)
        if value is not None:
            limits[key] = kind(value)
    if kind is int:  # IntProperty's own limits are 32-bit
        limits.setdefault("min", -_INT_LIMIT)
        limits.setdefault("max", _INT_LIMIT)
    return limits


# Called with no arguments after any generated setting changes, from the panels or from Python. Python-defined
# properties tag no depsgraph update and the message bus does not see them, so the live preview listens here.
changed_listeners: list[typing.Callable[[], None]] = []


def notify_changed(_group, _context) -> None:
    for listener in changed_listeners:
        listener()


def property_for(kind: type, spec, default, icons: dict[str, int] | None = None) -> typing.Any:
    """The `bpy.props` property of one settings field.

    `icons` (choice id -> icon id, e.g. an `ImagePreview.icon_id`) gives an enum's choices pictures; their
    identifiers and numbers stay the same, so the stored value means the same choice with or without them.
    """
    common = {"name": spec.label, "description": spec.description}
    if spec.item is not None:
        return CollectionProperty(type=group_for(spec.item), **common)
    common["update"] = notify_changed
    if spec.image:
        return PointerProperty(type=bpy.types.Image, **common)
    if kind is bool:
        return BoolProperty(default=default, **common)
    if kind is str and spec.choices is not None:
        if icons is None:
            items = [tuple(choice) for choice in spec.choices]
        else:
            # Blender numbers 3-tuples 0, 1, 2...; with an icon the number must be given: the same ones.
            items = [(*choice, icons.get(choice[0], 0), number) for number, choice in enumerate(spec.choices)]
        return EnumProperty(items=items, default=default, **common)
    if kind is str:
        path = spec.subtype in ("FILE_PATH", "DIR_PATH")
        return StringProperty(
            default=default,
            subtype=spec.subtype or "NONE",
            options=versions.PATH_OPTIONS if path else set(),
            **common,
        )
    if kind is int:
        return IntProperty(default=default, subtype=spec.subtype or "NONE", **_range(spec, int), **common)
    if kind is float:
        return FloatProperty(default=default, subtype=spec.subtype or "NONE", **_range(spec, float), **common)
    raise TypeError(f"no Blender property for a {kind!r} setting ({spec.label})")


def annotations(
    *classes: type[Settings], only: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()
) -> dict:
    """Property annotations for the fields of `classes` (`only` those named, none of `skip`).

    Raises:
        TypeError: two classes declare the same field name.
    """
    found: dict[str, typing.Any] = {}
    for cls in classes:
        for name, kind, spec, default in cls.specs():
            if (only is not None and name not in only) or name in skip:
                continue
            if name in found:
                raise TypeError(
                    f"setting {name!r} of {cls.__name__} is declared twice under one property group"
                )
            found[name] = property_for(kind, spec, default)
    return found


def group_for(cls: type[Settings]) -> type:
    """The PropertyGroup class generated for `cls` (made once; register it before the groups that use it).

    Host fields (`EngineSettings.HOST_FIELDS`, e.g. the device) are the add-on preferences', not the scene's.
    """
    skip = getattr(cls, "HOST_FIELDS", ())
    if cls not in _GROUPS:
        _GROUPS[cls] = type(
            f"STYLEPASS_PG_{cls.__name__}",
            (bpy.types.PropertyGroup,),
            {"__doc__": cls.__doc__, "__module__": __name__, "__annotations__": annotations(cls, skip=skip)},
        )
    return _GROUPS[cls]


def set_choice_icons(cls: type[Settings], name: str, icons: dict[str, int] | None) -> None:
    """Give the choices of field `name` of `cls` pictures (`icons`: choice id -> icon id), or none (None).

    The field's property is defined again on its registered group, from the same declaration: identifiers,
    numbers, label, description and default do not change, so files and the settings contract do not see it.
    Static items, not an items callback, so `enum_items` and `default` still list the choices.

    Raises:
        KeyError: `cls` has no enum field `name`.
    """
    found = {field: (kind, spec, default) for field, kind, spec, default in cls.specs()}
    if name not in found or found[name][1].choices is None:
        raise KeyError(f"{cls.__name__} has no choice field {name!r}")
    kind, spec, default = found[name]
    setattr(group_for(cls), name, property_for(kind, spec, default, icons=icons))


def generated_groups() -> list[type]:
    """Every generated PropertyGroup, nested ones first (the order to register them in)."""
    ordered: list[type] = []

    def visit(cls: type) -> None:
        for _, _, spec, _ in cls.specs():
            if spec.item is not None:
                visit(spec.item)
        group = _GROUPS[cls]
        if group not in ordered:
            ordered.append(group)

    for cls in list(_GROUPS):
        visit(cls)
    return ordered


def read(group: bpy.types.bpy_struct, cls: type[Settings], **given) -> Settings:
    """The settings object `cls` with the values of the property group (`given` values win).

    Raises:
        SettingsError: a value out of range (possible from Python) or a rule across fields broken; the message
            names the setting.
    """
    values = {}
    host = getattr(cls, "HOST_FIELDS", ())
    for name, kind, spec, _ in cls.specs():
        if name in given:
            values[name] = given[name]
            continue
        if name in host:
            continue  # not given: the default
        value = getattr(group, name)
        if spec.item is not None:
            value = tuple(read(item, spec.item) for item in value)
        elif spec.image:
            value = value.name_full if value is not None else ""
        elif kind is float:
            # Blender stores floats in 32 bits: 0.6 comes back as 0.6000000238. The shortest decimal that is
            # the same float32 is what the artist typed, so records and defaults compare as written.
            value = float(np.format_float_positional(np.float32(value), unique=True))
        values[name] = value
    try:
        return cls(**values)
    except SettingsError:
        raise
    except (TypeError, ValueError) as error:
        raise SettingsError(f"{cls.__name__}: {error}") from error


def write(group: bpy.types.bpy_struct, settings: Settings) -> None:
    """Set the property group from a settings object (image fields are left alone: they hold datablocks)."""
    for name, _, spec, _ in settings.specs():
        value = getattr(settings, name)
        if spec.image or name in getattr(settings, "HOST_FIELDS", ()):
            continue
        if spec.item is not None:
            collection = getattr(group, name)
            collection.clear()
            for nested in value:
                write(collection.add(), nested)
            continue
        setattr(group, name, value)
