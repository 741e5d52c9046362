# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the neural-style engine per frame at 512 and 1024, and the stylise operator's own overhead.

Overhead = the operator's total minus the pass render and the engine: checks, reading settings, building the
request, writing files, the compositor image and group. Reported as a share of the engine time measured in
the same call (target: under 5%), in two cases:

- "same": the artist re-runs an unchanged scene and style (passes reused, the result's colours all met before);
- "new colours": each run changes Strength, so the result has colours the compositor's colour table has not
  met yet and must interpolate (see `view_inverse.ByteInverse`).

The overhead is split into `prepare` (checks, the scene fingerprint that finds the reusable passes, request), `post` (on the engine thread after
the engine: the PNG and its record on one thread while the compositor's EXR is made on another) and `finish`
(the Image datablock and the group). "files alone" is the time to write the three files the operator must
leave (the PNG, its record, the compositor's EXR) and nothing else, as a share of the engine time: a floor
under the overhead on this machine. Runs inside `./run bench`.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import blender_harness  # tools/ and demo/ are on PYTHONPATH (./run bench)
import bpy
import numpy as np
from demo_scene import build_demo_scene

from stylepass_core import exr, png
from stylepass_core.output_layout import write_json

stylise = __import__(blender_harness.MODULE + ".addon.stylise", fromlist=["stylise"])


def measure(size: int, repeats: int, new_colours: bool) -> dict[str, float]:
    """Medians over `repeats` calls of the parts of one stylise, in seconds, and the overhead share."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(size, size)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-")
    scene.stylepass.neural_style.style_preset = "style_07"
    options = stylise.RunSettings.from_scene(scene)
    options = replace(options, passes=options.passes.replace(show_images=False))
    stylise.stylise(scene, bpy.context.view_layer, options)  # warm: model loaded, passes on disk
    samples: dict[str, list[float]] = {}
    for index in range(repeats):
        if new_colours:
            options = stylise.with_frame(options, strength=round(0.95 - 0.4 * index / max(1, repeats - 1), 4))
        tick = time.perf_counter()
        result = stylise.stylise(scene, bpy.context.view_layer, options)
        total = time.perf_counter() - tick
        t = result.timings
        # Reused passes were not rendered: finding and loading them is the add-on's own work.
        render = 0.0 if result.passes.reused else result.passes.timings.get("total", 0.0)
        sample = {
            "engine": t["engine"],
            "render": render,
            "prepare": t["prepare"] - render,
            "post": t["run"] - t["engine"],
            "finish": t["finish"],
        }
        sample["overhead"] = total - render - sample["engine"]
        sample["share"] = sample["overhead"] / sample["engine"]
        sample["files"] = files_alone(result, Path(scene.stylepass.output_dir))
        for key, value in sample.items():
            samples.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def files_alone(result, folder: Path) -> float:
    """Seconds to write just the operator's three files for this result (PNG, record, half-float EXR) one
    after another, with no colour work: a floor under the overhead on this machine's disk and memory."""
    image = png.to_uint8(result.frame.image)
    linear = image.astype(np.float16)
    tick = time.perf_counter()
    png.write_png(folder / "floor.png", image, compress_level=0)
    write_json(folder / "floor.json", result.frame.record)
    exr.write_exr(folder / "floor.exr", {c: linear[..., i] for i, c in enumerate("RGB")}, half=True)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args, _ = parser.parse_known_args(sys.argv[1:])
    print(
        f"Blender {bpy.app.version_string}: stylise (neural style preset, passes reused), "
        f"median of {args.repeats}, milliseconds"
    )
    print(
        f"{'size':>10} {'case':>12} {'engine':>8} {'prepare':>8} {'post':>6} {'finish':>7} "
        f"{'overhead':>9} {'/ engine':>9} {'files alone':>12}"
    )
    for size in (512, 1024):
        for new_colours in (False, True):
            t = measure(size, args.repeats, new_colours)
            case = "new colours" if new_colours else "same"
            print(
                f"{size}x{size:<5} {case:>12} {t['engine'] * 1e3:8.1f} {t['prepare'] * 1e3:8.1f} "
                f"{t['post'] * 1e3:6.1f} {t['finish'] * 1e3:7.1f} {t['overhead'] * 1e3:9.1f} {t['share']:9.1%} {t['files'] / t['engine']:12.1%}"
            )


if __name__ == "__main__":
    main()
