# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: style groups (issue 15) with neural style. A frame of the demo scene stylised with 1 to 4 styles
(the scene's and up to 3 groups: buildings, ground, figure and sphere) against the engine run once on the same
frame: the goal is N styles in at most N engine runs + 5%. Medians; ratios within this run. Runs inside
`./run bench`."""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import blender_harness  # tools/ and demo/ are on PYTHONPATH (./run bench)
import bpy
from demo_scene import build_demo_scene

from stylepass_core import engine_api

stylise = __import__(blender_harness.MODULE + ".addon.stylise", fromlist=["stylise"])

GROUPS = (
    ("Buildings", "style_03", lambda o: o.name.startswith("Building")),
    ("Ground", "style_05", lambda o: o.name == "Ground"),
    ("Characters", "style_01", lambda o: o.name in ("Figure", "Sphere")),
)
GOAL_MARGIN = 0.05


def frame_seconds(scene, repeats: int) -> tuple[float, float]:
    """Median seconds of the frame's styles (every group's engine run, the scene's, and the masked composite)
    and of one plain engine run on the same request; files are left out of both."""
    options = stylise.RunSettings.from_scene(scene)
    options = replace(options, passes=options.passes.replace(show_images=False))
    prepared = stylise.prepare(scene, bpy.context.view_layer, options)
    engine = engine_api.get_engine(prepared.request.engine)
    engine.run(prepared.request)  # warm: the model is loaded
    grouped, plain = [], []
    for _ in range(repeats):
        tick = time.perf_counter()
        finish = stylise.grouped_finish(prepared, None, None)
        finish.apply(
            prepared.runner(prepared.request.engine, prepared.request, engine_api.NullProgress(), None).image
        )
        grouped.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        engine.run(prepared.request)
        plain.append(time.perf_counter() - tick)
    return statistics.median(grouped), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args, _ = parser.parse_known_args(sys.argv[1:])
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(args.size, args.size)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-groups-") + "/"
    scene.stylepass.neural_style.style_preset = "style_07"
    print(
        f"Blender {bpy.app.version_string}: style groups, neural style, {args.size}x{args.size}, median of {args.repeats}"
    )
    print(f"{'styles':>7} {'stylise (engine part)':>22} {'one engine run':>15} {'ratio':>7} {'goal':>7}")
    for count in range(len(GROUPS) + 1):
        scene.stylepass.style_groups.clear()
        for name, preset, member in GROUPS[:count]:
            group = scene.stylepass.style_groups.add()
            group.name = name
            group.neural_style.style_preset = preset
            for obj in scene.objects:
                if member(obj):
                    group.objects.add().object = obj
        grouped, plain = frame_seconds(scene, args.repeats)
        styles = count + 1
        ratio = grouped / plain
        goal = styles * (1 + GOAL_MARGIN)
        verdict = "PASS" if ratio <= goal else "MISS"
        print(
            f"{styles:>7} {grouped * 1e3:20.0f} ms {plain * 1e3:13.0f} ms {ratio:7.2f} {goal:>6.2f}x {verdict}"
        )


if __name__ == "__main__":
    main()
