# SPDX-License-Identifier: GPL-3.0-or-later
"""Model references resolve only inside the model folders."""

import pytest
from stylepass_core.worker.model_paths import (
    MODEL_DIRS_ENV,
    ModelPathError,
    check_model_reference,
    configured_model_dirs,
    find_model,
    is_model_param,
    resolve_model_path,
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


@pytest.mark.parametrize(
    "name, checked",
    [
        ("model", True),
        ("model_config", True),
        ("vae", True),
        ("controlnet.depth.model", True),
        ("lora.0.file", True),
        ("ip_adapter.model", True),
        ("ip_adapter.subfolder", True),
        ("ip_adapter.weight_name", True),
        ("prompt", False),
        ("negative_prompt", False),
        ("scheduler", False),
        ("controlnet.depth.weight", False),
        ("steps", False),
    ],
)
def test_which_params_are_model_references(name, checked):
    assert is_model_param(name) is checked
