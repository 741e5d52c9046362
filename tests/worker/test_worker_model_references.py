# SPDX-License-Identifier: GPL-3.0-or-later
"""Model references reach the engine as the real paths they name in the worker's model folders.

The worker's README promised names relative to `--model-dir`; the worker checked them but handed the engine
the bare name, which the diffusion engine then looked for relative to its working folder ("does not exist").
A test engine records what it was handed.
"""

import os

import pytest
from engines_for_tests import ExtraModel, StepsSettings
from worker_helpers import make_request

from stylepass_core.worker.client import WorkerClient, WorkerRejected


@pytest.fixture
def client(worker):
    with WorkerClient(worker.url, worker.token, timeout=10) as client:
        yield client


def _received(client, settings: StepsSettings) -> dict[str, str]:
    job_id = client.submit("TEST_STEPS", make_request(settings=settings))
    client.wait(job_id, timeout=10)
    return client.result(job_id).info["received_models"]


def test_names_in_a_model_folder_reach_the_engine_as_their_paths(client, model_dir):
    settings = StepsSettings(
        steps=0,
        model="sd15/tiny.safetensors",
        extras=(ExtraModel(model="sd15"), ExtraModel(model="org/hub-model")),
    )
    assert _received(client, settings) == {
        "model": str((model_dir / "sd15" / "tiny.safetensors").resolve()),
        "extras.0.model": str((model_dir / "sd15").resolve()),  # nested references too
        "extras.1.model": "org/hub-model",  # not on disk: a hub id, left to the engine
    }


def test_an_absolute_path_inside_a_model_folder_is_handed_on_resolved(client, model_dir):
    inside = model_dir / "sd15" / "tiny.safetensors"
    assert _received(client, StepsSettings(steps=0, model=str(inside))) == {"model": str(inside.resolve())}


@pytest.mark.parametrize("separator", ["\\", "/"])
def test_references_written_with_either_separator_resolve(client, model_dir, separator):
    """A Windows Blender may write `sd15\\tiny.safetensors` (or a whole path with backslashes) to a Linux
    worker: both separators count on every platform."""
    expected = str((model_dir / "sd15" / "tiny.safetensors").resolve())
    relative = separator.join(["sd15", "tiny.safetensors"])
    absolute = str(model_dir / "sd15" / "tiny.safetensors").replace("/", separator)
    assert _received(client, StepsSettings(steps=0, model=relative)) == {"model": expected}
    assert _received(client, StepsSettings(steps=0, model=absolute)) == {"model": expected}


@pytest.mark.skipif(os.sep != "/", reason="a drive path is a path on Windows")
@pytest.mark.parametrize("reference", ["C:\\models\\x.safetensors", "D:/models/x.safetensors"])
def test_a_windows_drive_path_is_refused_by_a_posix_worker_with_what_to_do(client, reference):
    with pytest.raises(WorkerRejected) as error:
        client.submit("TEST_STEPS", make_request(settings=StepsSettings(model=reference)))
    assert error.value.status == 400 and error.value.kind == "model_path"
    assert "Windows path" in str(error.value) and "relative to the worker's model folders" in str(error.value)
