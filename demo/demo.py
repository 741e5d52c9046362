# SPDX-License-Identifier: GPL-3.0-or-later
"""The main job, headless: `./run demo` (runs inside `./run py`, so the extension is installed from its zip).

Blocked-out scene -> control passes -> neural style (a preset, then a style image) -> stylised image ->
Stylepass compositor group -> F12 render of the composite, all under --out, plus a contact sheet.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import bpy
import numpy as np
from contact_sheet import contact_sheet  # demo/ is on PYTHONPATH (./run demo)
from demo_scene import animate_demo_scene, build_demo_scene
from flicker import sequence_figures
from gif import write_gif

from stylepass_core import output_layout as layout_module
from stylepass_core import png
from stylepass_core.engines.neural_style import PRESETS


def painted_style(size: int = 384) -> np.ndarray:
    """A swirling, high-contrast 'painting' made here (no downloads): the style reference for the demo."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.arctan2(y - 0.55, x - 0.45) + 9.0 * np.hypot(x - 0.45, y - 0.55)
    waves = 0.5 + 0.5 * np.sin(14.0 * angle + 6.0 * np.sin(7.0 * y))
    stars = (np.sin(40 * x) * np.sin(37 * y) > 0.93).astype(np.float32)
    night = np.stack([0.1 + 0.2 * waves, 0.2 + 0.3 * waves, 0.45 + 0.5 * waves], axis=-1)
    gold = np.array([0.98, 0.85, 0.3], dtype=np.float32)
    return np.clip(night * (1 - stars[..., None]) + gold * stars[..., None], 0.0, 1.0)


def f12(scene: bpy.types.Scene, path: Path) -> None:
    scene.render.filepath = str(path)
    scene.render.use_file_extension = False
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    bpy.ops.render.render(write_still=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=24, help="length of the animated shot")
    parser.add_argument("--anim-size", type=int, default=256, help="frame size of the animated shot")
    args = parser.parse_args(sys.argv[1:])
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # 1. The artist's blocked-out scene, saved so passes land next to it
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = build_demo_scene(args.size, args.size)
    scene.stylepass.output_dir = "//"
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))
    stylised = out / scene.name / "stylised" / "0001.png"

    # 2. A built-in style
    scene.stylepass.neural_style.style_source = "PRESET"
    scene.stylepass.neural_style.style_preset = "style_07"
    if "FINISHED" not in bpy.ops.stylepass.stylise():
        sys.exit("stylise (preset) failed")
    shutil.copyfile(stylised, out / "stylised_preset.png")

    # 3. Any image as the style
    png.write_png(out / "style_reference.png", painted_style())
    scene.stylepass.neural_style.style_source = "IMAGE"
    scene.stylepass.neural_style.style_image = bpy.data.images.load(str(out / "style_reference.png"))
    if "FINISHED" not in bpy.ops.stylepass.stylise():
        sys.exit("stylise (style image) failed")
    shutil.copyfile(stylised, out / "stylised_image.png")

    # 4. An ordinary F12 render now shows the composite
    f12(scene, out / "composite.png")
    bpy.ops.wm.save_mainfile()

    # 5. One picture to look at
    passes = out / scene.name / "passes"
    tiles = [
        (name.replace("_", " "), png.read_png(passes / name / "0001.png"))
        for name in ("beauty", "depth", "normal", "lineart", "segmentation")
    ]
    tiles += [
        (f"style: {dict(PRESETS)['style_07'].lower()}", png.read_png(out / "stylised_preset.png")),
        ("style reference", png.read_png(out / "style_reference.png")),
        ("style image result", png.read_png(out / "stylised_image.png")),
        ("F12 composite", png.read_png(out / "composite.png")),
    ]
    png.write_png(out / "contact_sheet.png", contact_sheet(tiles, columns=5, tile_width=256))
    # 6. A short animated shot, stylised independently and with temporal coherence
    figures = animate(scene, out, args.frames, args.anim_size)
    print(f"passes:        {passes}")
    print(f"stylised:      {out / 'stylised_preset.png'}, {out / 'stylised_image.png'}")
    print(f"composite:     {out / 'composite.png'} (F12 through the Stylepass compositor group)")
    print(f"contact sheet: {out / 'contact_sheet.png'}")
    print(f"scene:         {out / 'demo.blend'}")
    print(
        f"animation:     {out / 'animation' / 'stylised.gif'} and its frames in {out / 'animation' / 'frames'}"
    )
    for name, key in (("independent frames", False), ("temporal coherence", True)):
        print(
            f"  {name:<19} warping error {figures[key]['warping_error']:.5f}, "
            f"structure fidelity {figures[key]['structure_fidelity']:.3f}"
        )
    ratio = figures[True]["warping_error"] / figures[False]["warping_error"]
    print(f"  temporal coherence leaves {ratio:.0%} of the independent frames' warping error")


def animate(scene: bpy.types.Scene, out: Path, frames: int, size: int) -> dict:
    """Stylise the animated shot twice (coherence off, then on) and write the coherent frames, a GIF of both
    side by side (independent frames left, keyframe fusion right) and the figures."""
    animate_demo_scene(scene, frames)
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.stylepass.neural_style.style_source = "PRESET"
    scene.stylepass.output_dir = "//animation/"
    scene.stylepass.pass_samples = 8
    layout = layout_module.SceneLayout(out / "animation", scene.name)
    figures, pictures = {}, {}
    for coherent in (False, True):
        scene.stylepass.temporal_coherence = coherent
        if "FINISHED" not in bpy.ops.stylepass.stylise_animation(overwrite=True):
            sys.exit("stylise_animation failed")
        figures[coherent] = sequence_figures(layout, range(1, frames + 1))
        pictures[coherent] = [
            png.read_png_float(layout.stylised_file(f))[..., :3] for f in range(1, frames + 1)
        ]
    bpy.ops.wm.save_mainfile()
    final = out / "animation" / "frames"
    final.mkdir(parents=True, exist_ok=True)
    for frame in range(1, frames + 1):
        shutil.copyfile(layout.stylised_file(frame), final / f"{frame:04d}.png")
    gap = np.ones((size, 4, 3), dtype=np.float32)
    side_by_side = [
        np.concatenate([a, gap, b], axis=1) for a, b in zip(pictures[False], pictures[True], strict=True)
    ]
    write_gif(out / "animation" / "stylised.gif", side_by_side, fps=12)
    (out / "animation" / "figures.json").write_text(
        json.dumps({str(k): v for k, v in figures.items()}, indent=2)
    )
    return figures


if __name__ == "__main__":
    main()
