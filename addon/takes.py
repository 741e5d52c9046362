# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes in Blender: the current frame's takes for the panels, and choosing one (main thread).

The takes themselves (numbers, the index, copies, one commit) are `stylepass_core.takes`; this module finds the
scene's takes folder, keeps the panels' reading cheap, and makes the compositor group show a chosen take.
"""

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import bpy

from stylepass_core.errors import StylepassError
from stylepass_core.output_layout import SceneLayout, resolve_output_root
from stylepass_core.takes import Chosen, FrameTakes, TakeEntry

from . import compositor, display_colour, images, ownership


def frame_takes(scene: bpy.types.Scene, frame: int | None = None) -> FrameTakes:
    """The takes of `frame` (the scene's current frame when None) in the scene's output folder."""
    root, _warning = resolve_output_root(scene.stylepass.output_dir, bpy.data.filepath)
    return FrameTakes(SceneLayout(root, scene.name), scene.frame_current if frame is None else frame)


@dataclass(frozen=True)
class Listing:
    """What the panels show of a frame's takes.

    Attributes:
        frame: The frame.
        folder: Its takes folder.
        takes: Newest first.
        current: The take the current files are; None when they are no take (Stylise Animation wrote them).
        has_result: Whether the frame has a current result at all.
    """

    frame: int
    folder: Path
    takes: tuple[TakeEntry, ...]
    current: int | None
    has_result: bool

    def get(self, number: int) -> TakeEntry | None:
        return next((entry for entry in self.takes if entry.number == number), None)


def listing(scene: bpy.types.Scene) -> Listing:
    """The current frame's takes, read again only when a file they come from changed (panels redraw often)."""
    takes = frame_takes(scene)
    stamps = tuple(_stamp(path) for path in (takes.folder, takes.index_path, takes.record_path))
    return _read_listing(str(takes.layout.root), scene.name, takes.frame, stamps)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=8)  # small and bounded: a few scenes and frames, keyed by the files' stamps
def _read_listing(root: str, scene_name: str, frame: int, stamps: tuple) -> Listing:
    takes = FrameTakes(SceneLayout(Path(root), scene_name), frame)
    index = takes.read()
    return Listing(
        frame=frame,
        folder=takes.folder,
        takes=tuple(reversed(index.takes)),
        current=takes.current_number(index),
        has_result=takes.record_path.is_file(),
    )


def choose(scene: bpy.types.Scene, number: int) -> tuple[Chosen, FrameTakes, list[str]]:
    """Make take `number` of the current frame its current result and show it in the compositor group.

    Returns:
        What was chosen (and kept first), the frame's takes, and notes for the artist.

    Raises:
        TakeError: no such take, or its files are missing (the message says which; nothing changed).
        StylepassError: the files could not be written, or the compositor cannot take the group.
    """
    takes = frame_takes(scene)
    try:
        chosen = takes.choose(number)
    except OSError as error:
        raise StylepassError(
            f"Could not make take {number} current in {takes.base}: {error.strerror or error}. "
            "Nothing was changed."
        ) from error
    notes: list[str] = []
    exr = takes.layout.compositor_file(takes.frame)
    if exr.is_file():
        _show(scene, chosen.entry, takes, notes)
    else:
        notes.append(
            f"{chosen.entry.name} has no compositor copy ({exr}), so the compositor still shows what it showed."
        )
    return chosen, takes, notes


def _show(scene: bpy.types.Scene, entry: TakeEntry, takes: FrameTakes, notes: list[str]) -> None:
    """Have the Stylepass images show the frame's new current files, as `stylise.finish` does for a new one."""
    exr = takes.layout.compositor_file(takes.frame)
    image = ownership.find(bpy.data.images, compositor.STYLISED_ROLE)
    in_sequence = (
        image is not None
        and image.source == "SEQUENCE"
        and Path(bpy.path.abspath(image.filepath)).parent == exr.parent
    )
    if in_sequence:
        # The group shows an animation: only this frame's file changed, the sequence stays as it is.
        images.reread(image)
        label = None
    else:
        colour_space = entry.colour_space
        if not _known_colour_space(colour_space):
            colour_space = (
                image.colorspace_settings.name
                if image is not None
                else display_colour.scene_linear_colour_space()
            )
        image = images.show_file(
            compositor.STYLISED_ROLE, compositor.STYLISED_IMAGE, exr, colour_space, notes
        )
        label = entry.name
    names = [group.get("name", "") for group in _record_context(takes.record_path).get("style_groups") or ()]
    layers_file = takes.layout.layers_file(takes.frame)
    layers = None
    # A take made before Stylepass wrote layers files has none: another take's file must not stand in for it.
    if in_sequence or layers_file.relative_to(takes.base).as_posix() in entry.files.values():
        layers = compositor.show_layers(
            layers_file, names, image.colorspace_settings.name, notes, in_sequence
        )
    compositor.install(scene, image, notes=notes, label=label, layers=layers)


def _record_context(path: Path) -> dict:
    """The context of the record at `path` (empty when unreadable)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    context = record.get("context") if isinstance(record, dict) else None
    return context if isinstance(context, dict) else {}


def _known_colour_space(name: str) -> bool:
    spaces = bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"].enum_items
    return bool(name) and name in spaces.keys()
