# SPDX-License-Identifier: GPL-3.0-or-later
"""Style groups on known geometry: which group an object belongs to, the layer of every pixel, soft edges
between groups that touch on one surface and hard ones at depth discontinuities, and the composite."""

import numpy as np
import pytest

from stylepass_core import style_groups
from stylepass_core.engines.neural_style import NeuralStyleSettings

INK = NeuralStyleSettings(style_preset="style_01")
WASH = NeuralStyleSettings(style_preset="style_02")


def group(name, *objects, settings=INK):
    return style_groups.StyleGroup(name, frozenset(objects), settings)


def scene():
    """A wall (index 1, depth 6) with two boxes side by side touching on one plane (2 and 3, depth 3) and a
    sphere in front of the wall (4, depth 2); background 0 (infinite depth) along the top rows."""
    index = np.ones((40, 60), dtype=np.int32)
    depth = np.full((40, 60), 6.0, dtype=np.float32)
    index[:5] = 0
    depth[:5] = np.inf
    index[10:30, 10:25], index[10:30, 25:40] = 2, 3
    depth[10:30, 10:40] = 3.0
    index[12:22, 45:55] = 4
    depth[12:22, 45:55] = 2.0
    return index, depth


def test_an_object_in_two_groups_belongs_to_the_first_and_is_named():
    groups = [group("Ink", "Box", "Sphere"), group("Wash", "Sphere", "Wall", settings=WASH)]
    assignment, warnings = style_groups.assign([(1, "Wall"), (2, "Box"), (4, "Sphere")], groups)
    assert assignment == {1: 1, 2: 0, 4: 0}
    assert warnings == ["'Sphere' is in style groups 'Ink' and 'Wash': the first wins"]


def test_bad_groups_are_refused_or_reported():
    with pytest.raises(ValueError, match="style group 'Empty' has no objects"):
        style_groups.assign([(1, "Wall")], [group("Empty")])
    with pytest.raises(ValueError, match="names must be unique, found 'Ink'"):
        style_groups.assign([(1, "Wall")], [group("Ink", "Wall"), group("Ink", "Box")])
    _assignment, warnings = style_groups.assign([(1, "Wall")], [group("Gone", "Deleted Object")])
    assert warnings == ["no object of style group 'Gone' is in the frame, so its style is not used"]
    with pytest.raises(ValueError, match="a style group needs a name"):
        group(" ", "Wall")
    with pytest.raises(ValueError, match="strength must be"):
        style_groups.StyleGroup("Ink", frozenset({"Wall"}), INK, strength=2.0)


def test_layer_map_gives_every_pixel_its_group_and_the_rest_the_scene():
    index, _depth = scene()
    layer = style_groups.layer_map(index, {2: 0, 3: 1})
    assert (layer[index == 2] == 1).all() and (layer[index == 3] == 2).all()
    assert (layer[(index != 2) & (index != 3)] == 0).all()


def test_soft_edge_between_touching_groups_hard_edge_at_depth_steps():
    index, depth = scene()
    layer = style_groups.layer_map(index, {2: 0, 3: 1, 4: 0})
    weights = style_groups.layer_weights(layer, 2, depth, radius=3)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-6)
    row = 20
    # The boxes touch at column 25 on one plane: a ramp three pixels each side, symmetric.
    ramp = weights[1, row, 20:31]
    assert (
        ramp[0] == 1.0
        and ramp[-1] == 0.0
        and 0.4 < weights[1, row, 24] < 1.0
        and 0.0 < weights[1, row, 25] < 0.6
    )
    assert (weights[1, row, 28:40] == 0).all() and (weights[2, row, 10:22] == 0).all()
    # Nothing of a group crosses a depth step: the boxes' and the sphere's outlines against the wall are hard.
    box_edge = weights[:, row, 7:13]
    assert set(np.unique(box_edge)) <= {0.0, 1.0}
    sphere = weights[1][index == 4]
    assert (sphere == 1.0).all() and (weights[1][(index == 1)] == 0.0).all()
    # Nothing beyond three pixels outside a mask.
    outside = np.ones_like(layer, dtype=bool)
    outside[10 - 3 : 30 + 3, 10 - 3 : 25 + 3] = False
    assert (weights[1][outside & (index != 4)] == 0).all()


def test_composite_takes_each_groups_pixels_from_its_own_picture():
    index, depth = scene()
    layer = style_groups.layer_map(index, {2: 0, 3: 1})
    weights = style_groups.layer_weights(layer, 2, depth)
    pictures = [np.full((40, 60, 3), value, np.float32) for value in (0.1, 0.5, 0.9)]
    out = style_groups.composite(pictures, weights)
    inner_box = np.zeros_like(layer, dtype=bool)
    inner_box[14:26, 14:21] = True
    assert (
        np.allclose(out[inner_box], 0.5) and np.allclose(out[index == 4], 0.1) and np.allclose(out[:5], 0.1)
    )
    with pytest.raises(ValueError, match="weights must be"):
        style_groups.composite(pictures[:2], weights)


def test_grouped_finish_mixes_each_layer_with_its_own_settings_then_composites():
    """The frame writer's mix for a frame with groups: the scene's Finish on the frame's picture, each group's
    on its own picture (here a group at half Strength), composited by the layers at the picture's size."""
    from stylepass_core.settings import FrameSettings
    from stylepass_core.stylise_job import Finish

    index, depth = scene()
    beauty = np.zeros((40, 60, 3), np.float32)
    layer = style_groups.layer_map(index, {2: 0})
    half = Finish(FrameSettings(strength=0.5), beauty)
    grouped = style_groups.GroupedFinish(
        Finish(FrameSettings(), beauty), ((np.full((40, 60, 3), 0.8, np.float32), half),), layer, depth
    )
    out = grouped.apply(np.full((40, 60, 3), 0.2, np.float32))
    assert np.allclose(out[14:26, 14:21], 0.4) and np.allclose(out[index == 1], 0.2)
    assert grouped.frame == FrameSettings() and grouped.selection == ()
    # Passes at half the output size (Pass Scale 50%): the layers are resampled to the picture.
    big = style_groups.GroupedFinish(
        Finish(FrameSettings(), beauty), ((np.full((80, 120, 3), 0.8, np.float32), half),), layer, depth
    )
    doubled = big.apply(np.full((80, 120, 3), 0.2, np.float32))
    assert np.allclose(doubled[30:50, 30:40], 0.4) and np.allclose(doubled[60:, :10], 0.2)
