# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the neural-style engine per frame at 512 and 1024, and the stylise operator's own overhead.

Overhead = the operator's total minus the pass render and the engine: checks, reading settings, building the
request, writing files, the compositor image and group. Reported as a share of the engine time measured in
the same run (target: under 5%). Runs inside `./run bench`.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
import blender_harness
from demo_scene import build_demo_scene

stylise = __import__(blender_harness.MODULE + ".addon.stylise", fromlist=["stylise"])


def measure(size: int, repeats: int) -> dict[str, float]:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(size, size)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-")
    scene.stylepass.style_preset = "style_07"
    options = stylise.StyleOptions.from_scene(scene)
    options.passes.show_images = False
    stylise.stylise(scene, bpy.context.view_layer, options)  # warm: model loaded, passes on disk
    best: dict[str, float] = {}
    for _ in range(repeats):
        tick = time.perf_counter()
        result = stylise.stylise(scene, bpy.context.view_layer, options)
        total = time.perf_counter() - tick
        passes = result.passes.timings.get("total", 0.0)
        sample = {"total": total, "engine": result.timings["engine"], "passes": passes}
        sample["overhead"] = total - passes - sample["engine"]
        for key, value in sample.items():
            best[key] = min(best.get(key, value), value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args, _ = parser.parse_known_args(sys.argv[1:])
    print(
        f"Blender {bpy.app.version_string}: stylise (neural style preset, passes reused), best of {args.repeats}"
    )
    print(f"{'size':>10} {'engine s':>9} {'passes s':>9} {'overhead s':>11} {'overhead / engine':>18}")
    for size in (512, 1024):
        t = measure(size, args.repeats)
        print(
            f"{size}x{size:<5} {t['engine']:9.3f} {t['passes']:9.3f} {t['overhead']:11.3f} {t['overhead'] / t['engine']:17.1%}"
        )


if __name__ == "__main__":
    main()
