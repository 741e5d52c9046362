# SPDX-License-Identifier: GPL-3.0-or-later
"""Which datablocks are Stylepass's own: recognised by a stored marker, never by their name alone.

The artist may own an image or a node group that happens to carry the name Stylepass would give its own;
Stylepass never renames, rewrites or re-points such a datablock. Every datablock Stylepass creates gets the
ID property `stylepass_role` naming what it is for ("stylised", "group", "pass:depth"...); the next run finds
it by that role, whatever it is called now, and a new one whose name was taken gets another name (Blender's
".001") and a note that says so.
"""

import bpy

ROLE_KEY = "stylepass_role"


def find(collection: bpy.types.bpy_prop_collection, role: str):
    """Stylepass's local datablock with `role` in `collection` (e.g. `bpy.data.images`), or None."""
    for block in collection:
        if block.library is None and block.get(ROLE_KEY) == role:
            return block
    return None


def claim(block, role: str, wanted_name: str, notes: list[str] | None = None):
    """Mark a datablock Stylepass just created as its own; note when `wanted_name` was taken by another one."""
    block[ROLE_KEY] = role
    if block.name != wanted_name and notes is not None:
        notes.append(
            f"'{wanted_name}' is the name of a datablock Stylepass did not create, so Stylepass left it alone "
            f"and named its own '{block.name}'."
        )
    return block


def is_ours(block, role: str) -> bool:
    return block is not None and block.library is None and block.get(ROLE_KEY) == role
