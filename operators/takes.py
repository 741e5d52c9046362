# SPDX-License-Identifier: GPL-3.0-or-later
"""Choose Take: make an earlier stylisation of the current frame its result again (every take is kept)."""

import bpy
from bpy.props import IntProperty

from ..addon import takes
from .modal import Status, reported


class STYLEPASS_OT_choose_take(bpy.types.Operator):
    """Make this take the current frame's result: its files replace the current ones and the compositor group
    shows it. Every take is kept, so an earlier one can be chosen again (Undo does not bring files back)"""

    bl_idname = "stylepass.choose_take"
    bl_label = "Choose Take"
    bl_options = {"REGISTER", "UNDO"}

    take: IntProperty(
        name="Take",
        description="Number of the take of the current frame to make its result",
        default=1,
        min=1,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    @classmethod
    def description(cls, context: bpy.types.Context, properties) -> str:
        entry = takes.listing(context.scene).get(properties.take) if context.scene is not None else None
        if entry is None:
            return cls.__doc__
        made = entry.time.replace("T", " ").removesuffix("Z") + " UTC" if entry.time else "at an unknown time"
        return f"Make {entry.name} the frame's result ({entry.source}, {made}). Every take is kept"

    def execute(self, context: bpy.types.Context) -> Status:
        return reported(self, lambda: self._choose(context))

    def _choose(self, context: bpy.types.Context) -> Status:
        chosen, frame_takes, notes = takes.choose(context.scene, self.take)
        for note in notes:
            self.report({"WARNING"}, note)
        if chosen.kept is not None:
            self.report(
                {"INFO"},
                f"Stylepass: the frame's previous result was no take yet, so it was kept as {chosen.kept.name}",
            )
        self.report(
            {"INFO"},
            f"Stylepass: frame {frame_takes.frame} now shows {chosen.entry.name}; every take stays in "
            f"{frame_takes.folder}",
        )
        return {"FINISHED"}


classes = (STYLEPASS_OT_choose_take,)
