# SPDX-License-Identifier: GPL-3.0-or-later
"""Param validation, control-map conventions and prompt chunking: plain numpy, no torch needed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stylepass_core.engines.diffusion import controls, snap_size
from stylepass_core.engines.diffusion.params import CONTROL_MAPS, PARAMS, params_table, parse_params
from stylepass_core.engines.diffusion.prompts import split_tokens

MODEL = {"model": "/models/sd15"}


# ---------------------------------------------------------------------------------------------------------
# params


def test_defaults():
    settings = parse_params(MODEL)
    assert (settings.steps, settings.guidance, settings.denoise, settings.scheduler) == (
        20,
        7.0,
        1.0,
        "euler_a",
    )
    assert (
        not settings.img2img
        and settings.controlnets == ()
        and settings.loras == ()
        and settings.ip_adapter is None
    )
    assert not settings.allow_network and not settings.allow_pickle


def test_structured_keys():
    settings = parse_params(
        {
            **MODEL,
            "controlnet.normal.model": "/cn/normal",
            "controlnet.depth.model": "/cn/depth",
            "controlnet.depth.weight": 0.5,
            "controlnet.depth.end": 0.6,
            "lora.3.file": "/l/a.safetensors",
            "lora.1.file": "/l/b.safetensors",
            "lora.1.weight": -0.5,
            "ip_adapter.model": "/ipa",
            "ip_adapter.scale": 1,
            "denoise": 0.4,
        }
    )
    assert [(u.map, u.weight, u.start, u.end) for u in settings.controlnets] == [
        ("depth", 0.5, 0.0, 0.6),
        ("normal", 1.0, 0.0, 1.0),
    ]  # always in CONTROL_MAPS order
    assert [(lora.slot, lora.weight) for lora in settings.loras] == [(1, -0.5), (3, 1.0)]
    assert settings.ip_adapter.scale == 1.0 and settings.img2img


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "params\\['model'\\] is empty"),
        ({**MODEL, "stepz": 3}, "unknown params \\['stepz'\\]"),
        ({**MODEL, "controlnet.canny.model": "x"}, "control maps are"),
        ({**MODEL, "lora.9.file": "x"}, "LoRA slots are lora.1 ... lora.8"),
        ({**MODEL, "steps": 2.5}, "params\\['steps'\\] must be an int"),
        ({**MODEL, "steps": True}, "must be an int"),
        ({**MODEL, "steps": 0}, "steps.*in \\[1, 150\\]"),
        ({**MODEL, "guidance": "7"}, "must be a float"),
        ({**MODEL, "denoise": 0.0}, "denoise.*\\(0.0, 1.0\\]"),
        ({**MODEL, "denoise": 0.1, "steps": 4}, "raise steps to at least 10"),
        ({**MODEL, "scheduler": "ddim"}, "scheduler.*one of"),
        ({**MODEL, "device": "tpu"}, "device.*one of"),
        ({**MODEL, "cpu_offload": True, "device": "cpu"}, "cpu_offload=True needs a CUDA device"),
        ({**MODEL, "controlnet.depth.weight": 0.5}, "controlnet.depth.model is empty"),
        ({**MODEL, "controlnet.depth.model": "x", "controlnet.depth.weight": 3.0}, "weight.*\\[0.0, 2.0\\]"),
        (
            {
                **MODEL,
                "controlnet.depth.model": "x",
                "controlnet.depth.start": 0.7,
                "controlnet.depth.end": 0.3,
            },
            "start \\(0.7\\) must be below",
        ),
        ({**MODEL, "lora.2.weight": 0.5}, "lora.2.file is empty"),
        ({**MODEL, "lora.1.file": "a", "lora.2.file": "a"}, "more than one"),
        ({**MODEL, "ip_adapter.scale": 0.5}, "ip_adapter.model is empty"),
        ({**MODEL, "ip_adapter.model": "x", "attention_slicing": True}, "cannot be combined"),
        ({**MODEL, "guidance": float("nan")}, "must be a float"),
    ],
)
def test_bad_params_name_the_problem(params, message):
    with pytest.raises(ValueError, match=message):
        parse_params(params)


def test_every_param_is_documented_and_typed():
    for name, (kind, default, text) in PARAMS.items():
        assert kind in {"str", "bool", "int", "float"} and text, name
        if "." not in name and name != "model":
            parse_params({**MODEL, name: default})  # every default passes its own check
    assert "controlnet.<map>.model" in params_table()
    assert all(f"controlnet.{m}.model" in PARAMS for m in CONTROL_MAPS)


def test_package_imports_neither_torch_nor_diffusers():
    addon = Path(__file__).resolve().parents[2] / "addon"
    code = (
        f"import sys; sys.path.insert(0, {str(addon)!r}); "
        "from stylepass_core import engine_api; e = engine_api.available_engines(); "
        "import stylepass_core.engines.diffusion.pipeline, stylepass_core.engines.diffusion.models; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'bpy') if m in sys.modules), "
        "[r[0] for r in e])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] ['DIFFUSION', 'NEURAL_STYLE']"


def test_snap_size():
    assert snap_size(64, 64) == (64, 64)
    assert snap_size(70, 100) == (72, 104)
    assert snap_size(68, 67) == (72, 64)  # halves round up
    assert snap_size(10, 1000) == (64, 1000)


# ---------------------------------------------------------------------------------------------------------
# Control maps


def test_depth_and_lineart_become_equal_grey_channels():
    depth = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    image = controls.control_image("depth", depth, (64, 64))
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], depth)
    np.testing.assert_array_equal(image[..., 1], image[..., 2])
    lines = np.zeros((32, 48, 1), np.float32)
    lines[10, :] = 1.0
    assert controls.control_image("lineart", lines, (32, 48)).max() == 1.0  # white lines stay white


def test_normal_passes_through_and_resizes_smoothly():
    normal = np.full((40, 40, 3), (0.5, 0.5, 1.0), np.float32)
    np.testing.assert_array_equal(controls.control_image("normal", normal, (40, 40)), normal)
    assert controls.control_image("normal", normal, (64, 48)).shape == (64, 48, 3)


def test_segmentation_resizes_without_new_colours():
    seg = np.zeros((30, 30, 3), np.float32)
    seg[:, :15] = np.array((204, 5, 255)) / 255
    seg[:, 15:] = np.array((6, 230, 230)) / 255
    out = controls.control_image("segmentation", seg, (64, 72))
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {tuple(seg[0, 0]), tuple(seg[0, 20])}


@pytest.mark.parametrize(
    ("name", "array", "message"),
    [
        ("depth", np.zeros((8, 8, 3), np.float32), "must have shape \\(H, W\\)"),
        ("normal", np.zeros((8, 8), np.float32), "must have shape \\(H, W, 3\\)"),
        ("depth", np.full((8, 8), 1.5, np.float32), "must be in \\[0, 1\\]"),
        ("depth", np.full((8, 8), np.nan, np.float32), "must be in \\[0, 1\\]"),
        ("canny", np.zeros((8, 8), np.float32), "unknown control map"),
        ("depth", np.zeros((8, 8), bool), "must be numeric"),
    ],
)
def test_bad_control_maps_are_refused_not_clipped(name, array, message):
    with pytest.raises(ValueError, match=message):
        controls.control_image(name, array, (8, 8))


# ---------------------------------------------------------------------------------------------------------
# Prompt chunks


def test_split_tokens_keeps_every_token_and_prefers_commas():
    ids = list(range(1, 200))
    chunks = split_tokens(ids, comma_ids=set())
    assert [len(c) for c in chunks] == [75, 75, 49] and [t for c in chunks for t in c] == ids
    with_comma = list(range(1, 200))
    with_comma[69] = -1  # a comma at position 69: the first chunk ends right after it
    chunks = split_tokens(with_comma, comma_ids={-1})
    assert len(chunks[0]) == 70 and chunks[0][-1] == -1 and [t for c in chunks for t in c] == with_comma
    assert split_tokens([], set()) == [[]]
