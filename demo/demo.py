# SPDX-License-Identifier: GPL-3.0-or-later
"""The main job, headless: `./run demo` (runs inside `./run py`, so the extension is installed from its zip).

Builds the blocked-out demo scene and writes its control passes under --out.
"""

import argparse
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_scene import build_demo_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(sys.argv[1:])

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(args.size, args.size)
    scene.stylepass.output_dir = str(args.out.resolve()) + "/"
    blend = args.out.resolve() / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    result = bpy.ops.stylepass.render_passes()
    if "FINISHED" not in result:
        sys.exit("render_passes failed")
    print(f"passes written under {args.out.resolve() / scene.name / 'passes'}")
    print(f"scene saved as {blend}")


if __name__ == "__main__":
    main()
