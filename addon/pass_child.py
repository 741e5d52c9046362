# SPDX-License-Identifier: GPL-3.0-or-later
"""The separate Blender that renders data passes while the artist's Blender stays responsive.

`pass_process` starts it on a copy of the scene:
    blender --background --factory-startup --python pass_child.py -- SCENE.blend [GPU_TYPE]
    python pass_child.py SCENE.blend [GPU_TYPE]          (where Blender is the `bpy` module)
It reads one job per line of JSON on stdin (a `pass_render.RenderJob`, or {"inverse": ...}: a colour view's
inverse for `display_colour`) and answers on stdout with lines that start
with `MARKER`, then JSON: {"ready": ...} once the scene is loaded, {"rendering": true} and {"samples": [done, total]} while a job
renders, then {"done": result} or {"error": message, "cancelled": bool}. An empty line or the end of input
ends it. Blender's own output goes to stdout too, so only marked lines count.

This Blender has no Stylepass installed: it imports `pass_render` from the extension's folder as a private
package name, needing nothing beyond bpy and numpy; only an inverse job also imports the core.
"""

import importlib
import json
import os
import re
import site
import sys
import time
import traceback
import types
from pathlib import Path

import bpy

MARKER = "STYLEPASS-PASS "
_SAMPLE = re.compile(r"Sample (\d+)/(\d+)")
_PACKAGE = "stylepass_pass_child"


def _send(**message) -> None:
    sys.stdout.write(MARKER + json.dumps(message) + "\n")
    sys.stdout.flush()


def _pass_render():
    """`addon.pass_render` loaded from the extension folder this file is in, without running its register."""
    root = Path(__file__).resolve().parents[1]
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [str(root)]
    sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.addon.pass_render")


def _build_inverse(settings: dict, key: str, folder: str) -> None:
    """The colour view's inverse into the artist's cache (`display_colour.build_inverse`). That needs the core,
    which the artist's Blender names in STYLEPASS_CORE_SITE (its site folder)."""
    site.addsitedir(os.environ["STYLEPASS_CORE_SITE"])
    display_colour = importlib.import_module(f"{_PACKAGE}.addon.display_colour")
    display_colour.build_inverse(settings, key, Path(folder))


def _arguments() -> list[str]:
    argv = sys.argv
    return argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]


def _use_gpu(device_type: str) -> None:
    """The artist's GPU choice: a factory-startup Blender has no compute device configured."""
    prefs = bpy.context.preferences.addons["cycles"].preferences
    prefs.compute_device_type = device_type
    prefs.get_devices()
    for device in prefs.devices:
        device.use = device.type == device_type


def _on_stats(stats, *_args) -> None:
    # Cycles reports "... | Sample 3/16" while it renders; the rest are stages (sync, kernels, images).
    text = stats if isinstance(stats, str) else ""
    found = _SAMPLE.search(text)
    if found:
        done, total = int(found.group(1)), max(1, int(found.group(2)))
        _send(samples=[done, total])


def main() -> None:
    arguments = _arguments()
    blend = arguments[0]
    gpu_type = arguments[1] if len(arguments) > 1 else ""
    if hasattr(os, "nice"):
        os.nice(10)  # the artist's Blender keeps priority for drawing and input
    pass_render = _pass_render()
    started = time.perf_counter()
    bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
    if gpu_type:
        _use_gpu(gpu_type)
    bpy.app.handlers.render_stats.append(_on_stats)
    try:
        _send(ready=round(time.perf_counter() - started, 3))
        for line in sys.stdin:
            if not line.strip():
                break
            try:
                payload = json.loads(line)
                if "inverse" in payload:
                    _build_inverse(**payload["inverse"])
                    _send(done={})
                    continue
                job = pass_render.RenderJob.from_plain(payload)
                scene = bpy.data.scenes[job.scene]
                view_layer = scene.view_layers[job.view_layer]
                _send(rendering=True)
                timings: dict = {}
                result = pass_render.render(scene, view_layer, job, timings)
                _send(done={**result, "timings": timings})
            except pass_render.PassRenderError as error:
                _send(error=str(error), cancelled=isinstance(error, pass_render.PassRenderCancelled))
            except Exception as error:  # reported to the artist's Blender, which turns it into a message
                _send(error=f"{type(error).__name__}: {error}\n{traceback.format_exc()}", cancelled=False)

    finally:
        # A handler left registered makes Blender 4.5 (as a module) hang at exit.
        bpy.app.handlers.render_stats.remove(_on_stats)


if __name__ == "__main__":
    main()
