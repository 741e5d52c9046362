# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the animated demo shot. Flicker (warping error) and structure fidelity with temporal coherence
off and on, and frames per minute with the pass render and the engine run one after the other (serial) or
overlapped. Ratios are within this run. Runs inside `./run bench`."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
import blender_harness
from demo_scene import animate_demo_scene, build_demo_scene

addon = blender_harness.MODULE + ".addon"
animation = __import__(addon + ".animation", fromlist=["animation"])
stylise = __import__(addon + ".stylise", fromlist=["stylise"])
flicker = __import__(addon + ".stylepass_core.flicker", fromlist=["flicker"])
output_layout = __import__(addon + ".stylepass_core.output_layout", fromlist=["output_layout"])


def shot(frames: int, size: int):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(size, size)
    animate_demo_scene(scene, frames)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-anim-") + "/"
    scene.stylepass.pass_samples = 8
    return scene


engine_api = __import__(addon + ".stylepass_core.engine_api", fromlist=["engine_api"])


class WaitingEngine(engine_api.Engine):
    """Stands in for an engine that does not compete for this machine's CPU (a GPU, a remote worker): it
    waits a fixed time per frame. It shows what overlapping the pass render with the engine buys there."""

    id = "BENCH_WAITING"
    label = "Waiting engine (benchmark)"
    seconds = 0.4

    def available(self):
        return True, ""

    def styles(self):
        return [("style_00", "Any")]

    def run(self, request, progress=None, abort=None):
        time.sleep(self.seconds)
        return engine_api.StyleResult(request.beauty.copy(), {"engine": self.id})


engine_api.register_engine(WaitingEngine)


def run(scene, temporal: bool, overlap: bool, engine: str = "NEURAL_STYLE") -> float:
    style = stylise.StyleOptions.from_scene(scene)
    style.engine = engine
    style.passes.show_images = False
    anim = animation.AnimationOptions(
        scene.frame_start, scene.frame_end, overwrite=True, temporal=temporal, overlap=overlap
    )
    tick = time.perf_counter()
    for _step in animation.animation_steps(scene, bpy.context.view_layer, style, anim):
        pass
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--anim-size", type=int, default=256)
    args, _ = parser.parse_known_args(sys.argv[1:])
    scene = shot(args.frames, args.anim_size)
    layout = output_layout.SceneLayout(Path(scene.stylepass.output_dir), scene.name)
    frames = range(1, args.frames + 1)
    figures = {}
    for coherent in (False, True):
        run(scene, coherent, overlap=True)
        figures[coherent] = flicker.sequence_figures(layout, frames)
    off, on = figures[False], figures[True]
    print(f"Blender {bpy.app.version_string}: animated demo shot, {args.frames} frames at {args.anim_size}px")
    print(f"{'':24}{'warping error':>15}{'structure fidelity':>20}")
    print(f"{'independent frames':24}{off['warping_error']:15.5f}{off['structure_fidelity']:20.3f}")
    print(f"{'temporal coherence':24}{on['warping_error']:15.5f}{on['structure_fidelity']:20.3f}")
    print(
        f"coherent / independent: warping error {on['warping_error'] / off['warping_error']:.2f} (target <= 0.5), "
        f"structure fidelity {on['structure_fidelity'] / off['structure_fidelity']:.2f} (target >= 0.9)"
    )
    # Throughput: new output folders so nothing is reused; passes are rendered for every frame.
    for engine, label in (
        ("NEURAL_STYLE", "neural style (CPU, shares the 2 cores with Cycles)"),
        (WaitingEngine.id, f"an engine off this CPU ({WaitingEngine.seconds} s/frame)"),
    ):
        timings = {}
        for overlap in (False, True):
            scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-anim-") + "/"
            timings[overlap] = run(scene, True, overlap, engine)
        serial, overlapped = (60.0 * args.frames / timings[k] for k in (False, True))
        print(
            f"frames per minute, {label}: serial {serial:.1f}, overlapped {overlapped:.1f} ({overlapped / serial:.2f}x)"
        )


if __name__ == "__main__":
    main()
