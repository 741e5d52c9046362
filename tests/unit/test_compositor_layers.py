# SPDX-License-Identifier: GPL-3.0-or-later
"""The compositor's layers file: pass names Blender splits correctly, and the channels it holds."""

import numpy as np
import pytest

from stylepass_core import compositor_layers, exr
from stylepass_core.compositor_layers import LayerPasses


def test_pass_names_are_unique_and_hold_no_dot():
    names = compositor_layers.pass_names(["Ink", "Sky.001", "Sky_001", "Line Art", "  two  words "])
    assert [(p.layer, p.mask) for p in names] == [
        ("Ink Layer", "Ink Mask"),
        ("Sky_001 Layer", "Sky_001 Mask"),
        ("Sky_001 2 Layer", "Sky_001 2 Mask"),  # the same name once the dot is gone
        ("Line Art Layer", "Line Art Mask"),  # never the line art's own pass
        ("two words Layer", "two words Mask"),
    ]
    assert [p.group for p in names][1] == "Sky.001"


def test_the_file_holds_each_layer_mask_and_the_line_art(tmp_path):
    rng = np.random.default_rng(1)
    ink = LayerPasses("Ink", "Ink Layer", "Ink Mask")
    picture, mask, lines = rng.random((5, 7, 3)), rng.random((5, 7)), (rng.random((5, 7)) > 0.8) * 1.0
    path = tmp_path / "0001.exr"
    exr.write_exr(path, compositor_layers.channels([(ink, picture, mask)], lines), half=True)
    names = exr.channel_names(path)
    assert compositor_layers.passes_in(names) == {"Ink Layer", "Ink Mask", "Line Art"}
    passes = exr.group_passes(exr.read_exr(path), compositor_layers.VIEW_LAYER)
    np.testing.assert_array_equal(passes["Ink Layer"], picture.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(passes["Ink Mask"][..., 0], mask.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(passes["Line Art"][..., 0], lines)


def test_bad_layers_are_refused():
    ink = LayerPasses("Ink", "Ink Layer", "Ink Mask")
    with pytest.raises(ValueError, match="layer 'Ink' must be"):
        compositor_layers.channels([(ink, np.zeros((4, 4, 3)), np.zeros((5, 4)))], None)
    with pytest.raises(ValueError, match="needs a layer or the line art"):
        compositor_layers.channels([], None)
