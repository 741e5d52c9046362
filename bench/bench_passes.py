# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: control passes of the demo scene at 512x512 and 1920x1080 (runs inside `./run bench`).

Reports, per megapixel: the Cycles data-pass render, getting the passes into numpy (EXR + beauty PNG save,
EXR read), computing every conditioning map, and writing the files; then the share of everything beyond the
render itself relative to the render, measured in the same run (target: under 10%).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import blender_harness  # tools/ and demo/ are on PYTHONPATH (./run bench)
import bpy
from demo_scene import build_demo_scene

scene_passes = __import__(f"{blender_harness.MODULE}.addon.scene_passes", fromlist=["scene_passes"])

SIZES = ((512, 512), (1920, 1080))


def measure(width: int, height: int, repeats: int, samples: int) -> dict[str, float]:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(width, height)
    out = Path(tempfile.mkdtemp(prefix="stylepass-bench-"))
    options = scene_passes.PassOptions(output_dir=str(out), pass_samples=samples, show_images=False)
    best: dict[str, float] = {}
    for _ in range(repeats):
        timings = scene_passes.render_passes(scene, bpy.context.view_layer, options).timings
        for key, value in timings.items():
            best[key] = min(best.get(key, value), value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16)
    args, _ = parser.parse_known_args(sys.argv[1:])
    print(f"Blender {bpy.app.version_string}: control passes, best of {args.repeats}, {args.samples} samples")
    header = f"{'size':>10} {'render s/MP':>12} {'to numpy s/MP':>14} {'maps s/MP':>10} {'write s/MP':>11}"
    print(header + f" {'beyond render / render':>24}")
    for width, height in SIZES:
        t = measure(width, height, args.repeats, args.samples)
        mp = width * height / 1e6
        to_numpy = t["save_exr"] + t["save_beauty"] + t["read"]
        beyond = t["total"] - t["render"]
        print(
            f"{width}x{height:<5} {t['render'] / mp:12.3f} {to_numpy / mp:14.3f} {t['conditioning'] / mp:10.3f}"
            f" {t['write'] / mp:11.3f} {beyond / t['render']:23.1%}"
        )


if __name__ == "__main__":
    main()
