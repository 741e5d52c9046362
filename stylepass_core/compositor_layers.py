# SPDX-License-Identifier: GPL-3.0-or-later
"""Stylised layers for the compositor: each style group's layer and mask, and the line art, in one EXR a frame.

    stylised/layers/0001.exr    view layer "Stylepass", passes:
                                "Line Art" (X): the line-art pass, white lines on black
                                "<group> Layer" (R, G, B): the group's style over the whole frame, scene-linear
                                "<group> Mask" (X): where the stylised frame shows that layer (soft edges)

Blender reads a file whose channels are named `<layer>.<pass>.<channel>` as a multilayer image, and the
compositor's Image node then has one output per pass: the Stylepass node group passes them on as its own
outputs, so an artist can grade one group, re-balance groups or ink over the result in the node graph. The
frame's stylised image is the scene's own layer where no group is, plus each `Layer x Mask`.

One file, not one per group: one Image node and one image sequence serve every group, and a take (`takes.py`)
keeps one more file, not N.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .checks import describe

VIEW_LAYER = "Stylepass"
LINE_ART = "Line Art"


@dataclass(frozen=True)
class LayerPasses:
    """The two passes (and node group outputs) of one style group."""

    group: str
    layer: str
    mask: str


def pass_names(group_names: Sequence[str]) -> list[LayerPasses]:
    """Each group's pass names, in group order: "<name> Layer" and "<name> Mask".

    A dot would split a channel name into layer, pass and channel, so dots become underscores; a name that
    then repeats gets " 2", " 3"... Group names are unique, so the passes always are.
    """
    taken = {LINE_ART}
    out = []
    for group in group_names:
        base = " ".join(str(group).replace(".", "_").split()) or "Group"
        name, number = base, 1
        while f"{name} Layer" in taken or f"{name} Mask" in taken:
            number += 1
            name = f"{base} {number}"
        taken.update((f"{name} Layer", f"{name} Mask"))
        out.append(LayerPasses(group, f"{name} Layer", f"{name} Mask"))
    return out


def channels(
    layers: Sequence[tuple[LayerPasses, np.ndarray, np.ndarray]], line_art: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The EXR channels of a frame's layers file.

    Args:
        layers: Each group's passes, `(H, W, 3)` scene-linear layer and `(H, W)` mask in [0, 1].
        line_art: `(H, W)` line art in [0, 1], or None when the frame has none.

    Raises:
        ValueError: shapes that differ, or no layer and no line art.
    """
    out: dict[str, np.ndarray] = {}
    shape = None if line_art is None else np.shape(line_art)
    if line_art is not None:
        out[f"{VIEW_LAYER}.{LINE_ART}.X"] = np.asarray(line_art, dtype=np.float32)
    for passes, picture, mask in layers:
        picture, mask = np.asarray(picture), np.asarray(mask)
        shape = shape or mask.shape
        if picture.shape != (*shape, 3) or mask.shape != shape:
            raise ValueError(
                f"layer {passes.group!r} must be {(*shape, 3)} with a {shape} mask, got {describe(picture)} and "
                f"{describe(mask)}"
            )
        for index, channel in enumerate("RGB"):
            out[f"{VIEW_LAYER}.{passes.layer}.{channel}"] = picture[..., index]
        out[f"{VIEW_LAYER}.{passes.mask}.X"] = mask.astype(np.float32, copy=False)
    if not out:
        raise ValueError("a layers file needs a layer or the line art")
    return out


def passes_in(names: Iterable[str]) -> set[str]:
    """The pass names of a layers file's channel names (`exr.channel_names`)."""
    prefix = VIEW_LAYER + "."
    return {name[len(prefix) :].rpartition(".")[0] for name in names if name.startswith(prefix)}
