# SPDX-License-Identifier: GPL-3.0-or-later
"""Worker tests import the core as a top-level package (the repo root is on sys.path through tests/pytest.ini)
and share a worker per module; the helpers live in `worker_helpers` (not here, so that `tests/unit`'s conftest
cannot shadow them). pytest puts this folder on sys.path, which makes `worker_helpers` importable.
"""

import secrets
from pathlib import Path

import pytest
from worker_helpers import RunningWorker, start_worker


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder with a file, a sub-folder, a symlink escaping it and a secret outside it."""
    root = tmp_path_factory.mktemp("models")
    (root / "sd15").mkdir()
    (root / "sd15" / "tiny.safetensors").write_bytes(b"weights")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.safetensors").write_bytes(b"secret")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def worker(model_dir) -> RunningWorker:
    """One worker shared by a module's tests (each test uses its own jobs)."""
    running = start_worker("--model-dir", str(model_dir), token=secrets.token_urlsafe(16))
    yield running
    running.kill()
