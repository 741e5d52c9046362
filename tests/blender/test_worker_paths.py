# SPDX-License-Identifier: GPL-3.0-or-later
"""Model references as Blender sends them to a worker: a remote one may run another system, so paths travel
with forward slashes (the worker also treats a backslash as a separator: tests/worker)."""

import os

import pytest
from conftest import addon_module

stylise = addon_module("addon.stylise")


@pytest.mark.parametrize(
    "value, remote, expected",
    [
        ("sd15\\dreamshaper.safetensors", True, "sd15/dreamshaper.safetensors"),  # written on Windows
        ("sd15/dreamshaper.safetensors", True, "sd15/dreamshaper.safetensors"),
        ("org/model", True, "org/model"),  # a hub id passes unchanged
        ("  org/model  ", False, "org/model"),
    ],
)
def test_model_references_for_a_worker(value, remote, expected):
    assert stylise._model_reference(value, remote) == expected


def test_an_existing_path_is_sent_absolute_and_with_forward_slashes_to_a_remote(tmp_path):
    model = tmp_path / "models" / "x.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"w")
    sent = stylise._model_reference(str(model), True)
    assert sent == os.path.normpath(str(model)).replace("\\", "/") and "\\" not in sent
