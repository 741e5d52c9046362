# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the animated demo shot. Flicker (warping error) and structure fidelity with temporal coherence
off and on, and frames per minute with the pass render and the engine run one after the other (serial) or
overlapped. Ratios are within this run. Runs inside `./run bench`."""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import blender_harness  # tools/ and demo/ are on PYTHONPATH (./run bench)
import bpy
import flicker
from demo_scene import animate_demo_scene, build_demo_scene

from stylepass_core import engine_api, output_layout
from stylepass_core.frame_steps import run_to_end
from stylepass_core.settings import CoherenceSettings, EngineSettings

addon = blender_harness.MODULE + ".addon"
animation = __import__(addon + ".animation", fromlist=["animation"])
stylise = __import__(addon + ".stylise", fromlist=["stylise"])


def shot(frames: int, size: int):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(size, size)
    animate_demo_scene(scene, frames)
    scene.stylepass.output_dir = tempfile.mkdtemp(prefix="stylepass-bench-anim-") + "/"
    scene.stylepass.pass_samples = 8
    return scene


@dataclass(frozen=True)
class WaitingSettings(EngineSettings):
    """The waiting engine has nothing to set."""

    ENGINE = "BENCH_WAITING"
    LABEL = "Waiting engine (benchmark)"
    DESCRIPTION = "Waits a fixed time per frame"
    PROPERTY = "bench_waiting"


class WaitingEngine(engine_api.Engine):
    """Stands in for an engine that does not compete for this machine's CPU (a GPU, a remote worker): it
    waits a fixed time per frame. It shows what overlapping the pass render with the engine buys there."""

    id = WaitingSettings.ENGINE
    label = WaitingSettings.LABEL
    settings_type = WaitingSettings
    seconds = 0.4

    def available(self):
        return True, ""

    def run(self, request, progress=None, abort=None):
        time.sleep(self.seconds)
        return engine_api.StyleResult(request.beauty.copy(), {"engine": self.id})


engine_api.register_engine(WaitingEngine)


def run(scene, temporal: bool, overlap: bool, engine: EngineSettings | None = None) -> float:
    run_settings = stylise.RunSettings.from_scene(scene)
    run_settings = replace(
        run_settings,
        engine=engine if engine is not None else run_settings.engine,
        passes=run_settings.passes.replace(show_images=False),
    )
    anim = animation.AnimationOptions(
        scene.frame_start,
        scene.frame_end,
        overwrite=True,
        coherence=CoherenceSettings(temporal_coherence=temporal),
        overlap=overlap,
    )
    tick = time.perf_counter()
    run_to_end(animation.animation_steps(scene, bpy.context.view_layer, run_settings, anim))
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
        (None, "neural style (CPU, shares the 2 cores with Cycles)"),
        (WaitingSettings(), f"an engine off this CPU ({WaitingEngine.seconds} s/frame)"),
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
