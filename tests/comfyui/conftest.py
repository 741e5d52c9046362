# SPDX-License-Identifier: GPL-3.0-or-later
"""A real ComfyUI server for the ComfyUI engine's tests (`tools/comfyui_server.py`), once per session.

`STYLEPASS_COMFYUI=0` skips every test that uses the `comfyui` fixture. Nothing here imports torch or ComfyUI:
the tests run under any venv with pytest (the Blender 4.5 one: `$(./run venv 4.5)/bin/python -m pytest
tests/comfyui`). Timings that tests put in `ComfyUIServer.timings` are printed in pytest's summary.
"""

import os
from collections.abc import Iterator

import comfyui_server
import pytest
from comfyui_server import ComfyUIServer

TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def comfyui(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ComfyUIServer]:
    """A real ComfyUI on loopback (CPU) with the test models, for the whole session."""
    if os.environ.get("STYLEPASS_COMFYUI") == "0":
        pytest.skip("STYLEPASS_COMFYUI=0: the real ComfyUI server is switched off")
    try:
        context = comfyui_server.running(tmp_path_factory.mktemp("comfyui"))
        server = context.__enter__()
    except comfyui_server.SetupError as error:
        pytest.fail(str(error))
    request.config.stash[TIMINGS] = server.timings
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.write_sep("-", "ComfyUI timings (seconds)")
        for name, seconds in timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}")
