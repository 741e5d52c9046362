# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings checks, control-map conventions and prompt chunking: plain numpy, no torch needed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stylepass_core.engine_api import StyleRequest
from stylepass_core.engines.diffusion import (
    CONTROL_MAPS,
    STYLE_PRESETS,
    ControlUnit,
    DiffusionEngine,
    DiffusionSettings,
    Lora,
    controls,
    snap_size,
)
from stylepass_core.engines.diffusion.prompts import split_tokens
from stylepass_core.engines.diffusion.settings import MAX_LORAS, IpAdapter
from stylepass_core.settings import SettingsError
from stylepass_core.settings import from_plain as settings_from_plain

MODEL = {"model": "/models/sd15"}


# ---------------------------------------------------------------------------------------------------------
# Settings


def test_defaults():
    settings = DiffusionSettings(**MODEL)
    assert (settings.steps, settings.guidance, settings.denoise, settings.scheduler) == (
        20,
        7.0,
        0.75,
        "dpmpp_2m_karras",
    )
    assert settings.img2img and settings.style_preset == "none"
    assert settings.controlnets == () and settings.active_loras == () and settings.ip_adapter is None
    assert not settings.allow_network and not settings.allow_pickle
    assert settings.control_maps() == () and settings.required_images() == {}
    assert settings.not_ready() == ""
    assert DiffusionSettings.HOST_FIELDS == ("device", "allow_network")  # kept in the preferences


def test_without_a_model_the_engine_says_what_to_set():
    assert "needs a model" in DiffusionSettings().not_ready()
    assert "needs a model" in DiffusionSettings(model="   ").not_ready()
    request = StyleRequest(beauty=np.zeros((8, 8, 3), np.float32), settings=DiffusionSettings())
    with pytest.raises(ValueError, match="The diffusion engine needs a model: set Model"):
        DiffusionEngine().run(request)  # refused before torch is even looked for


def test_nested_settings():
    settings = DiffusionSettings(
        **MODEL,
        controls=(
            ControlUnit(map="normal", model="/cn/normal"),
            ControlUnit(enabled=False, map="lineart", model=""),  # off: needs no model
            ControlUnit(map="depth", model="/cn/depth", weight=0.5, end=0.6),
        ),
        loras=(
            Lora(file="/l/a.safetensors"),
            Lora(enabled=False, file=""),
            Lora(file="/l/b.safetensors", weight=-0.5),
        ),
        ip_adapter_model=" /ipa ",
        ip_adapter_scale=1,
        denoise=0.4,
    )
    assert [(u.map, u.weight, u.start, u.end) for u in settings.controlnets] == [
        ("normal", 1.0, 0.0, 1.0),
        ("depth", 0.5, 0.0, 0.6),
    ]  # the enabled units, in the order listed
    assert settings.control_maps() == ("normal", "depth")
    assert [(lora.file, lora.weight) for lora in settings.active_loras] == [
        ("/l/a.safetensors", 1.0),
        ("/l/b.safetensors", -0.5),
    ]
    assert settings.ip_adapter == IpAdapter("/ipa", "models", "ip-adapter_sd15.safetensors", 1.0)
    assert isinstance(settings.ip_adapter_scale, float) and settings.img2img
    assert settings.required_images() == {"ip_adapter_image": "an IP-Adapter is set"}


def test_plain_round_trip_and_refusals():
    settings = DiffusionSettings(
        **MODEL,
        prompt="a house",
        controls=(ControlUnit(map="depth", model="/cn/depth", start=0.1),),
        loras=(Lora(file="/l/a.safetensors", weight=0.25),),
    )
    plain = json.loads(json.dumps(settings.to_plain()))
    assert plain["engine"] == "DIFFUSION" and plain["schema"] == DiffusionSettings.SCHEMA
    assert plain["values"]["controls"] == [
        {"enabled": True, "map": "depth", "model": "/cn/depth", "weight": 1.0, "start": 0.1, "end": 1.0}
    ]
    assert settings_from_plain(plain) == settings
    # Values a record or an older client left out take their defaults.
    partial = {"engine": "DIFFUSION", "schema": 1, "values": {**MODEL, "controls": [{"model": "/cn"}]}}
    assert settings_from_plain(partial).controls == (ControlUnit(model="/cn"),)
    with pytest.raises(SettingsError, match="schema 99 is not understood here"):
        settings_from_plain({**plain, "schema": 99})
    with pytest.raises(SettingsError, match=r"unknown DiffusionSettings settings \['strength'\]"):
        settings_from_plain({**plain, "values": {**plain["values"], "strength": 0.5}})
    with pytest.raises(SettingsError, match=r"unknown ControlUnit settings \['conditioning_scale'\]"):
        DiffusionSettings.from_values({"controls": [{"conditioning_scale": 1.0}]})
    with pytest.raises(SettingsError, match="unknown engine 'DIFFUSION_XL'"):
        settings_from_plain({**plain, "engine": "DIFFUSION_XL"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 2.5}, "DiffusionSettings.steps must be an integer, got 2.5"),
        ({"steps": True}, "must be an integer"),
        ({"steps": 0}, r"steps must be in \[1, 150\], got 0"),
        ({"guidance": "7"}, "guidance must be a number, got '7'"),
        ({"guidance": float("nan")}, "must be finite"),
        ({"denoise": 0.0}, r"denoise must be in \[0.01, 1.0\], got 0.0"),
        ({"denoise": 0.1, "steps": 4}, "raise steps to at least 10"),
        ({"scheduler": "ddim"}, "scheduler must be one of .*got 'ddim'"),
        ({"style_preset": "cubism"}, "style_preset must be one of .*got 'cubism'"),
        ({"device": "tpu"}, "device must be one of"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"cpu_offload": True, "device": "cpu"}, "CPU Offload needs a CUDA device, but the device is 'cpu'"),
        ({"controls": [{"map": "depth"}]}, "must be a tuple of ControlUnit"),
        ({"controls": (ControlUnit(map="depth"),)}, "the depth control has no ControlNet model"),
        (
            {"controls": (ControlUnit(map="depth", model="a"), ControlUnit(map="depth", model="b"))},
            "two enabled controls use the depth pass",
        ),
        ({"loras": (Lora(weight=0.5),)}, "an enabled LoRA has no file"),
        ({"loras": (Lora(file="a"), Lora(file="a"))}, "LoRA 'a' is listed twice"),
        ({"loras": tuple(Lora(file=str(n)) for n in range(MAX_LORAS + 1))}, "9 LoRAs are enabled; at most 8"),
        ({"ip_adapter_model": "x", "attention_slicing": True}, "cannot be combined with an IP-Adapter"),
        ({"ip_adapter_scale": 2.5}, r"ip_adapter_scale must be in \[0.0, 2.0\]"),
    ],
)
def test_bad_settings_name_the_problem(values, message):
    with pytest.raises(SettingsError, match=message):
        DiffusionSettings(**MODEL, **values)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ControlUnit(map="canny"), "ControlUnit.map must be one of .*got 'canny'"),
        (lambda: ControlUnit(weight=3.0), r"ControlUnit.weight must be in \[0.0, 2.0\], got 3.0"),
        (lambda: ControlUnit(start=0.7, end=0.3), "the depth control starts at 0.7 but ends at 0.3"),
        (lambda: ControlUnit(start=0.5, end=0.5), "start < end"),
        (lambda: Lora(weight=5), r"Lora.weight must be in \[-4.0, 4.0\], got 5"),
    ],
)
def test_bad_units_name_the_problem(build, message):
    with pytest.raises(SettingsError, match=message):
        build()


def test_settings_errors_are_value_errors_for_the_engine_contract():
    with pytest.raises(ValueError):
        DiffusionSettings(steps=0)


def test_every_setting_is_documented_and_its_default_valid():
    DiffusionSettings()  # every default passes its own checks
    for cls in (DiffusionSettings, ControlUnit, Lora):
        for name, _, spec, default in cls.specs():
            assert spec.label and spec.description, f"{cls.__name__}.{name}"
            if spec.choices is not None:
                assert default in {choice[0] for choice in spec.choices}, name
    specs = {name: spec for name, _, spec, _ in DiffusionSettings.specs()}
    # The prompt presets are the Style choices; the control passes are the unit's Pass choices.
    assert [choice[0] for choice in specs["style_preset"].choices] == list(STYLE_PRESETS)
    unit_specs = {name: spec for name, _, spec, _ in ControlUnit.specs()}
    assert [choice[0] for choice in unit_specs["map"].choices] == list(CONTROL_MAPS)
    assert set(CONTROL_MAPS) == set(controls.CONVENTIONS)
    assert specs["ip_adapter_image"].image


def test_continuation_repaints_at_most_the_coherence_share_but_at_least_a_step():
    settings = DiffusionSettings(**MODEL, steps=20, denoise=0.75)
    assert settings.continuation(0.45).denoise == 0.45
    assert DiffusionSettings(**MODEL, denoise=0.3).continuation(0.45).denoise == 0.3
    short = DiffusionSettings(**MODEL, steps=2, denoise=1.0).continuation(0.1)
    assert int(short.steps * short.denoise) == 1  # a valid image-to-image run of one step


def test_package_imports_neither_torch_nor_diffusers():
    root = Path(__file__).resolve().parents[2]  # holds stylepass_core
    code = (
        "import sys; from stylepass_core import engine_api; e = engine_api.available_engines(); "
        "import stylepass_core.engines.diffusion.pipeline, stylepass_core.engines.diffusion.models; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'bpy') if m in sys.modules), "
        "[r[0] for r in e])"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "[] ['COMFYUI', 'DIFFUSION', 'NEURAL_STYLE']"


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
