# SPDX-License-Identifier: GPL-3.0-or-later
"""Model references resolve only inside the model folders."""

import pytest

from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora
from stylepass_core.engines.neural_style import NeuralStyleSettings
from stylepass_core.worker.model_paths import (
    MODEL_DIRS_ENV,
    ModelPathError,
    check_model_reference,
    configured_model_dirs,
    find_model,
    resolve_model_path,
    resolve_references,
)


@pytest.fixture
def folders(tmp_path):
    first, second, outside = tmp_path / "first", tmp_path / "second", tmp_path / "outside"
    for folder in (first, second, outside):
        folder.mkdir()
    (first / "sd15").mkdir()
    (first / "sd15" / "model.safetensors").write_bytes(b"w")
    (second / "lora.safetensors").write_bytes(b"w")
    (outside / "secret.safetensors").write_bytes(b"s")
    (first / "escape").symlink_to(outside, target_is_directory=True)
    (first / "to_second").symlink_to(second, target_is_directory=True)
    return first, second, outside


def test_relative_and_absolute_references_inside(folders):
    first, second, _ = folders
    dirs = [first, second]
    assert (
        resolve_model_path("sd15/model.safetensors", dirs) == (first / "sd15" / "model.safetensors").resolve()
    )
    assert (
        resolve_model_path("lora.safetensors", dirs) == (second / "lora.safetensors").resolve()
    )  # second folder
    assert resolve_model_path(str(second / "lora.safetensors"), dirs).parent == second.resolve()
    assert resolve_model_path("sd15", dirs).is_dir()
    # A symlink from one configured folder into another is allowed.
    assert resolve_model_path("to_second/lora.safetensors", dirs) == (second / "lora.safetensors").resolve()


def test_names_not_on_disk_pass_the_check_but_do_not_resolve(folders):
    first, _, _ = folders
    assert find_model("runwayml/stable-diffusion-v1-5", [first]) is None
    check_model_reference("runwayml/stable-diffusion-v1-5", [first])  # a hub id: the engine decides
    with pytest.raises(ModelPathError, match="not found"):
        resolve_model_path("missing.safetensors", [first])


@pytest.mark.parametrize(
    "reference, message",
    [
        ("../outside/secret.safetensors", "'..'"),
        ("sd15/../../outside/secret.safetensors", "'..'"),
        ("sd15\\..\\..\\secret", "'..'"),
        ("escape/secret.safetensors", "symlink"),
        ("~/secret", "'~'"),
        ("file:///etc/passwd", "URL"),
        ("https://example.com/model.safetensors", "URL"),
        ("a\x00b", "control"),
        ("", "non-empty"),
    ],
)
def test_escapes_are_refused(folders, reference, message):
    first, second, _ = folders
    with pytest.raises(ModelPathError, match=message):
        check_model_reference(reference, [first, second])


def test_absolute_paths_outside_are_refused(folders):
    first, _, outside = folders
    for reference in (str(outside / "secret.safetensors"), "/etc/passwd", str(first) + "_sibling/x"):
        with pytest.raises(ModelPathError, match="outside the model folders"):
            check_model_reference(reference, [first])
    with pytest.raises(ModelPathError, match="none configured"):
        check_model_reference("/etc/passwd", [])


def test_configured_dirs_come_from_the_environment(folders, monkeypatch):
    first, second, _ = folders
    monkeypatch.setenv(MODEL_DIRS_ENV, f"{first}:{second}")
    assert configured_model_dirs() == [first, second]
    assert resolve_model_path("lora.safetensors") == (second / "lora.safetensors").resolve()


def test_which_settings_are_model_references():
    """What the worker checks before queueing a job: every field declared `model=True` or `model_part=True`,
    nested ones included; never prompts, choices, numbers or the names of pictures."""
    settings = DiffusionSettings(
        model="sd15/model.safetensors",
        model_config="configs/sd15",
        vae="org/vae",
        prompt="sd15/model.safetensors",  # looks like a path, is a prompt
        negative_prompt="../not/a/path",
        controls=(
            ControlUnit(map="depth", model="cn/depth"),
            ControlUnit(enabled=False, map="normal", model="cn/normal"),
        ),
        loras=(Lora(file="lora.safetensors", weight=0.5),),
        ip_adapter_model="ip",
        ip_adapter_image="Reference Picture",
    )
    assert settings.model_references() == {
        "model": "sd15/model.safetensors",
        "model_config": "configs/sd15",
        "vae": "org/vae",
        "controls.0.model": "cn/depth",
        "controls.1.model": "cn/normal",  # disabled, but sent: checked all the same
        "loras.0.file": "lora.safetensors",
        "ip_adapter_model": "ip",
        "ip_adapter_subfolder": "models",
        "ip_adapter_weight_name": "ip-adapter_sd15.safetensors",
    }
    # Empty references are not references.
    assert set(DiffusionSettings().model_references()) == {"ip_adapter_subfolder", "ip_adapter_weight_name"}
    assert NeuralStyleSettings(style_source="IMAGE", style_image="Painting").model_references() == {}


def test_backslashes_separate_folders_on_every_platform(folders):
    first, second, _ = folders
    inside = (first / "sd15" / "model.safetensors").resolve()
    assert find_model("sd15\\model.safetensors", [first, second]) == inside
    assert find_model(str(first / "sd15" / "model.safetensors").replace("/", "\\"), [first]) == inside
    with pytest.raises(ModelPathError, match="outside the model folders"):
        find_model(str(second / "lora.safetensors").replace("/", "\\"), [first])


def test_resolve_references_maps_what_is_on_disk_and_keeps_hub_ids(folders):
    first, second, _ = folders
    settings = DiffusionSettings(
        model="sd15/model.safetensors",
        vae="org/vae",
        controls=(ControlUnit(map="depth", model="sd15"),),
        loras=(Lora(file="lora.safetensors"),),
    )
    resolved = resolve_references(settings, [first, second])
    assert resolved.model == str((first / "sd15" / "model.safetensors").resolve())
    assert resolved.controls[0].model == str((first / "sd15").resolve())
    assert resolved.loras[0].file == str((second / "lora.safetensors").resolve())
    assert resolved.vae == "org/vae"  # not on disk: a hub id
    assert resolved.ip_adapter_subfolder == "models"  # a part of a model stays relative to it
    with pytest.raises(ModelPathError, match=r"'\.\.'"):
        resolve_references(settings.replace(vae="../x"), [first])
