# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: Stylise Frame as the UI runs it (`stylise.FrameJob`) on the demo scene, at 480x270 and 1920x1080.

For a first Stylise Frame (no passes on disk) with the embedded neural-style engine, it reports:
- the longest time Blender's main thread is held by one call of the job (start: the checks and the scene's
  copy; each poll; complete: the passes and the result into Blender), against the same frame stylised in this
  Blender's own process (`stylise.stylise`, which holds the main thread throughout: the baseline);
- the time from the button to the result in Blender, split into the pass render (the second Blender's start
  and load, Cycles, the two saves), the engine, and the rest (checks, control maps, files, the compositor).
Blender's own redraws are not part of a headless run; the real-UI suite measures the UI's heartbeat beside
them (tests/ui). Goals (issue 12): no main-thread call over 100 ms; under 8 s in all at 1920x1080.
Runs inside `./run bench`.
"""

import argparse
import sys
import tempfile
import time

import blender_harness  # tools/ and demo/ are on PYTHONPATH (./run bench)
import bpy
from demo_scene import build_demo_scene

stylise = __import__(blender_harness.MODULE + ".addon.stylise", fromlist=["stylise"])
runtime = __import__(blender_harness.MODULE + ".addon.runtime", fromlist=["runtime"])

SIZES = ((480, 270), (1920, 1080))
POLL_SECONDS = 0.05  # the operator's timer interval


def _fresh_scene(width: int, height: int, samples: int):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(width, height)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-")
    scene.stylepass.neural_style.style_preset = "style_07"
    scene.stylepass.pass_samples = samples
    runtime.RUNTIME.kept_passes.clear()
    return scene


def as_the_ui_runs_it(width: int, height: int, samples: int) -> dict[str, float]:
    scene = _fresh_scene(width, height, samples)
    run_settings = stylise.RunSettings.from_scene(scene)
    tick = time.perf_counter()
    job = stylise.FrameJob(scene, bpy.context.view_layer, run_settings)
    while not job.done:
        job.poll()
        time.sleep(POLL_SECONDS)
    job.poll()
    prepared, frame, _image, _warnings = job.complete(scene)
    total = time.perf_counter() - tick
    passes = prepared.passes.timings
    record_timings = frame.record["timings"]
    # The pass render as the UI waits for it: from the job's start until the control maps begin.
    render = passes["total"] - passes.get("read", 0) - passes.get("conditioning", 0) - passes.get("write", 0)
    return {
        "total": total,
        "render": render,
        "cycles": passes.get("render", 0.0),
        "engine": record_timings["engine"],
        "rest": total - render - record_timings["engine"],
        "longest_call": max(seconds for _, seconds in job.main_thread),
        "start": next(seconds for name, seconds in job.main_thread if name == "start"),
        "complete": next(seconds for name, seconds in job.main_thread if name == "complete"),
    }


def in_this_blender(width: int, height: int, samples: int) -> float:
    """The baseline: the same frame stylised synchronously, all of it on the main thread."""
    scene = _fresh_scene(width, height, samples)
    tick = time.perf_counter()
    stylise.stylise(scene, bpy.context.view_layer, stylise.RunSettings.from_scene(scene))
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=None, help="Beauty Samples (default: the setting's)")
    args, _ = parser.parse_known_args(sys.argv[1:])
    default = bpy.context.scene.stylepass.bl_rna.properties["pass_samples"].default
    in_this_blender(64, 36, 1)  # load the style network once, so no figure below includes it
    print(f"Blender {bpy.app.version_string}: Stylise Frame as the UI runs it, first run (no passes on disk)")
    print(
        f"{'size':>10} {'samples':>8} {'main thread: longest call':>26} {'/ in-process':>13}"
        f" {'button->result s':>17} {'pass render':>12} {'(Cycles)':>9} {'engine':>7} {'rest':>6}"
    )
    # The default Beauty Samples (the neural style engine reads the beauty), and one sample: what any engine
    # gets when nothing reads the beauty (the data passes are exact at one).
    for samples in [args.samples] if args.samples else [default, 1]:
        for width, height in SIZES:
            baseline = in_this_blender(width, height, samples)
            t = as_the_ui_runs_it(width, height, samples)
            print(
                f"{width}x{height:<5} {samples:8d} {1000 * t['longest_call']:23.0f} ms"
                f" {t['longest_call'] / baseline:12.1%} {t['total']:17.2f} {t['render']:12.2f}"
                f" {t['cycles']:9.2f} {t['engine']:7.2f} {t['rest']:6.2f}"
            )
            print(
                f"{'':19} start {1000 * t['start']:.0f} ms, complete {1000 * t['complete']:.0f} ms; the same frame"
                f" stylised in this Blender held its main thread {baseline:.2f} s"
            )


if __name__ == "__main__":
    main()
