# SPDX-License-Identifier: GPL-3.0-or-later
"""Flicker and structure figures of a stylised sequence on disk (demo, benchmark, tests).

* Warping error (Lai et al., ECCV 2018) with Blender's exact Vector pass as the flow and occlusions masked
  by the forward/backward check and the depth test: lower is steadier.
* Structure fidelity: correlation of the stylised frame's edges with the frame's line-art pass, averaged
  over the frames: a frozen image that no longer follows the geometry scores low.
"""

from collections.abc import Sequence

import numpy as np

from . import exr, png, temporal
from .output_layout import SceneLayout


def _pass_exr(layout: SceneLayout, name: str, frame: int) -> dict[str, np.ndarray]:
    return exr.read_exr(layout.pass_file(name, frame, "exr"))


def sequence_figures(layout: SceneLayout, frames: Sequence[int], stylised_dir=None) -> dict[str, float]:
    """`{"warping_error", "structure_fidelity"}` of the stylised frames under `layout` (or `stylised_dir`).

    Frames must be consecutive (each frame's Vector pass points at the one before).
    """
    folder = stylised_dir or layout.stylised_dir
    images, vectors, masks, fidelity = [], [None], [None], []
    previous = None
    for frame in frames:
        image = png.read_png_float(folder / f"{frame:04d}.png")[..., :3]
        images.append(image)
        raw = _pass_exr(layout, "vector", frame)
        vec = np.stack([raw[c] for c in "XYZW"], axis=-1)
        depth = _pass_exr(layout, "depth", frame)["Z"]
        if vec.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"frame {frame}: passes are {vec.shape[1]}x{vec.shape[0]} but the stylised image is "
                f"{image.shape[1]}x{image.shape[0]}; measure at a resolution scale of 100%"
            )
        if previous is not None:
            vectors.append(vec)
            masks.append(temporal.occlusion_mask(vec, previous[0], depth, previous[1]))
        previous = (vec, depth)
        lineart = png.read_png_float(layout.pass_file("lineart", frame))[..., 0]
        fidelity.append(temporal.structure_fidelity(image, lineart))
    return {
        "warping_error": temporal.warping_error(images, vectors, masks),
        "structure_fidelity": float(np.mean(fidelity)),
    }
