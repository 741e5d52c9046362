# SPDX-License-Identifier: GPL-3.0-or-later
"""The settings contract: one frozen dataclass per engine, checked, and a plain-data round trip with a schema."""

import dataclasses
import json

import pytest

from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora
from stylepass_core.engines.diffusion.presets import PRESETS, apply_preset
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.errors import StylepassError
from stylepass_core.settings import (
    SCENE_GROUPS,
    EngineSettings,
    FrameSettings,
    Settings,
    SettingsError,
    engine_settings,
    from_plain,
    settings_class,
    spec_of,
)


def _all_settings_classes() -> list[type[Settings]]:
    found: list[type[Settings]] = [*SCENE_GROUPS, *engine_settings()]
    for cls in list(found):
        found += [spec.item for _, _, spec, _ in cls.specs() if spec.item is not None]
    return found


@pytest.mark.parametrize("cls", _all_settings_classes(), ids=lambda cls: cls.__name__)
def test_every_field_is_declared_once_with_label_description_and_a_valid_default(cls):
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    for field in dataclasses.fields(cls):
        spec = spec_of(field)  # KeyError: a field declared without setting()
        assert spec.label and spec.description.strip(), field.name
    cls()  # the defaults pass the checks


def test_defaults_have_one_source():
    # Denoise drifted between four places (0.75 in the panel, 1.0 in the engine and the animation fallback).
    assert DiffusionSettings().denoise == 0.75
    assert DiffusionSettings().steps == 20
    assert FrameSettings().strength == 1.0


def test_settings_are_frozen_and_checked():
    settings = DiffusionSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 3
    for bad in (
        {"steps": 0},
        {"steps": 2.5},
        {"guidance": float("nan")},
        {"scheduler": "ddim"},
        {"denoise": 1.5},
    ):
        with pytest.raises(SettingsError) as error:
            DiffusionSettings(**bad)
        name, value = next(iter(bad.items()))
        assert name in str(error.value) and (repr(value) in str(error.value) or "nan" in str(error.value))
    with pytest.raises(SettingsError, match="True or False"):
        FrameSettings(keep_colours=1)
    assert issubclass(SettingsError, StylepassError) and issubclass(SettingsError, ValueError)


def test_rules_across_fields():
    with pytest.raises(SettingsError, match="start"):
        ControlUnit(start=0.6, end=0.5)
    with pytest.raises(SettingsError, match="two enabled controls"):
        DiffusionSettings(controls=(ControlUnit(model="a"), ControlUnit(model="b")))
    # A disabled duplicate is fine: only enabled units run.
    DiffusionSettings(controls=(ControlUnit(model="a"), ControlUnit(model="b", enabled=False)))
    with pytest.raises(SettingsError, match="no ControlNet"):
        DiffusionSettings(controls=(ControlUnit(),))
    with pytest.raises(SettingsError, match="listed twice"):
        DiffusionSettings(loras=(Lora(file="x.safetensors"), Lora(file="x.safetensors", weight=0.5)))
    with pytest.raises(SettingsError, match="CUDA"):
        DiffusionSettings(cpu_offload=True, device="cpu")
    with pytest.raises(SettingsError, match="no denoising step"):
        DiffusionSettings(steps=2, denoise=0.3)
    with pytest.raises(SettingsError, match="IP-Adapter"):
        DiffusionSettings(ip_adapter_model="h94/IP-Adapter", attention_slicing=True)


@pytest.mark.parametrize("cls", engine_settings(), ids=lambda cls: cls.ENGINE)
def test_plain_round_trip_through_json(cls):
    settings = cls()
    if cls is DiffusionSettings:
        settings = settings.replace(
            model="m", controls=(ControlUnit(map="normal", model="n", weight=0.5),), loras=(Lora(file="l"),)
        )
    plain = json.loads(json.dumps(settings.to_plain()))
    assert plain["engine"] == cls.ENGINE and plain["schema"] == cls.SCHEMA
    assert from_plain(plain) == settings


def test_from_plain_refuses_clearly():
    plain = DiffusionSettings(model="m").to_plain()
    with pytest.raises(SettingsError, match="schema 2 is not understood"):
        from_plain({**plain, "schema": 2})
    with pytest.raises(SettingsError, match="unknown engine 'NOPE'"):
        from_plain({**plain, "engine": "NOPE"})
    with pytest.raises(SettingsError, match=r"unknown DiffusionSettings settings \['colour'\]"):
        from_plain({**plain, "values": {**plain["values"], "colour": 1}})
    with pytest.raises(SettingsError, match="engine, schema, values"):
        from_plain({"engine": "DIFFUSION"})
    # Fields left out take their defaults (a script may send only what it sets).
    assert from_plain({**plain, "values": {"model": "m"}}) == DiffusionSettings(model="m")


def test_engine_ids_come_from_the_registry():
    # The built-in engines in menu order (test suites collected in the same run may register more).
    built_in = {"NEURAL_STYLE", "DIFFUSION", "COMFYUI"}
    assert [cls.ENGINE for cls in engine_settings() if cls.ENGINE in built_in] == [
        "NEURAL_STYLE",
        "DIFFUSION",
        "COMFYUI",
    ]
    assert settings_class("DIFFUSION") is DiffusionSettings
    assert all(issubclass(cls, EngineSettings) for cls in engine_settings())


def test_detail_scale_is_neural_style_only():
    # It was sent to the diffusion engine and silently set its generation size.
    names = {name for name, *_ in DiffusionSettings.specs()}
    assert "detail_scale" not in names
    assert "detail_scale" in {name for name, *_ in NeuralStyleSettings.specs()}


def test_diffusion_presets_are_reachable_settings():
    style = dict((name, spec) for name, _, spec, _ in DiffusionSettings.specs())["style_preset"]
    assert {choice[0] for choice in style.choices} >= {"none", "watercolour", "ink"}
    for key in PRESETS:
        applied = apply_preset(DiffusionSettings(prompt="keep me"), key)
        assert applied.model and applied.controls and applied.prompt == "keep me"


def test_capabilities_instead_of_engine_ids():
    assert DiffusionSettings.NEEDS_WORKER and not NeuralStyleSettings.NEEDS_WORKER
    diffusion = DiffusionSettings(model="m", steps=20, denoise=0.8)
    assert diffusion.continuation(0.45).denoise == 0.45
    assert diffusion.replace(denoise=0.3).continuation(0.45).denoise == 0.3  # never more than its own
    assert (
        DiffusionSettings(model="m", steps=4, denoise=1.0).continuation(0.1).denoise > 0.25
    )  # one step kept
    assert NeuralStyleSettings().continuation(0.45) is None
    assert NeuralStyleSettings(style_source="IMAGE").required_images() == {
        "style_image": "Style Source is Image"
    }
    assert DiffusionSettings(ip_adapter_model="h").required_images() == {
        "ip_adapter_image": "an IP-Adapter is set"
    }
    assert DiffusionSettings().not_ready() and not DiffusionSettings(model="m").not_ready()
    assert DiffusionSettings(
        controls=(ControlUnit(map="lineart", model="x"), ControlUnit(map="depth", model="y", enabled=False))
    ).control_maps() == ("lineart",)


def test_model_references_and_their_mapping():
    settings = DiffusionSettings(
        model="rel/model", vae="", controls=(ControlUnit(model="cn"),), loras=(Lora(file="lora.safetensors"),)
    )
    refs = settings.model_references()
    assert (
        refs["model"] == "rel/model"
        and refs["controls.0.model"] == "cn"
        and refs["loras.0.file"] == "lora.safetensors"
    )
    assert "vae" not in refs  # empty references are not references
    mapped = settings.map_models(lambda value: "/abs/" + value)
    assert mapped.model == "/abs/rel/model" and mapped.controls[0].model == "/abs/cn" and mapped.vae == ""
    assert mapped.ip_adapter_subfolder == "models"  # parts of a model path are never resolved on their own


def test_the_beauty_is_needed_only_when_something_reads_it():
    assert NeuralStyleSettings().uses_beauty()
    assert not DiffusionSettings(model="m", denoise=1.0).uses_beauty()  # text to image
    assert DiffusionSettings(model="m", denoise=0.5).uses_beauty()  # image to image
    assert not FrameSettings().mixes_beauty()
    assert FrameSettings(strength=0.5).mixes_beauty()
    assert FrameSettings(keep_colours=True).mixes_beauty()
    assert FrameSettings(object_filter="EXCLUDE").mixes_beauty()


def test_live_settings_are_the_engines_own_or_its_fast_preset():
    from stylepass_core.engines.diffusion.live import live_settings
    from stylepass_core.engines.diffusion.settings import DiffusionSettings
    from stylepass_core.engines.neural_style import NeuralStyleSettings

    neural = NeuralStyleSettings()
    assert neural.live() is neural  # fast already: the preview runs exactly the final's settings
    artist = DiffusionSettings(model="some/model", steps=30, denoise=1.0)
    assert artist.live() == live_settings(artist) and artist.live().steps < artist.steps
