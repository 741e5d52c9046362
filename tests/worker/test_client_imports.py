# SPDX-License-Identifier: GPL-3.0-or-later
"""The Blender side of the worker (client, manager) must import neither torch, diffusers nor onnxruntime.

Checked in a fresh interpreter that imports both modules and decodes a result frame, because this test
process may already hold modules other tests imported.
"""

import json
import subprocess
import sys

from worker_helpers import worker_env

FORBIDDEN = ["bpy", "torch", "diffusers", "transformers", "onnxruntime", "accelerate", "safetensors", "PIL"]

_PROBE = """
import json, sys
import numpy as np
from stylepass_core.engine_api import StyleResult
from stylepass_core.worker import client, manager, protocol
frame = protocol.encode_result("0" * 32, StyleResult(np.zeros((4, 4, 3), np.float32)), {})
result, _ = protocol.decode_result(*protocol.decode_frame(frame.to_bytes()))
print(json.dumps(sorted(sys.modules)))
"""


def test_client_and_manager_import_no_engine_libraries():
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=worker_env(),
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    loaded = {name.partition(".")[0] for name in json.loads(probe.stdout.strip().splitlines()[-1])}
    assert sorted(loaded & set(FORBIDDEN)) == []
    assert "requests" in loaded
    # Nor the server or the engines: the client only speaks the protocol.
    modules = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    assert "stylepass_core.worker.server" not in modules and "stylepass_core.engines" not in modules
