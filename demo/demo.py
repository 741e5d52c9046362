# SPDX-License-Identifier: GPL-3.0-or-later
"""The main job, headless: `./run demo` (runs inside `./run py`, so the extension is installed from its zip).

Blocked-out scene -> control passes -> neural style (a preset, then a style image) -> stylised image ->
Stylepass compositor group -> F12 render of the composite, all under --out, plus a contact sheet.
"""

import argparse
import shutil
import sys
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blender_harness
from demo_scene import build_demo_scene

core = blender_harness.MODULE + ".addon.stylepass_core"
png = __import__(core + ".png", fromlist=["png"])
contact = __import__(core + ".contact_sheet", fromlist=["contact_sheet"])


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
    scene.stylepass.style_source = "PRESET"
    scene.stylepass.style_preset = "style_07"
    if "FINISHED" not in bpy.ops.stylepass.stylise():
        sys.exit("stylise (preset) failed")
    shutil.copyfile(stylised, out / "stylised_preset.png")

    # 3. Any image as the style
    png.write_png(out / "style_reference.png", painted_style())
    scene.stylepass.style_source = "IMAGE"
    scene.stylepass.style_image = bpy.data.images.load(str(out / "style_reference.png"))
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
        ("style preset 7", png.read_png(out / "stylised_preset.png")),
        ("style reference", png.read_png(out / "style_reference.png")),
        ("style image result", png.read_png(out / "stylised_image.png")),
        ("F12 composite", png.read_png(out / "composite.png")),
    ]
    png.write_png(out / "contact_sheet.png", contact.contact_sheet(tiles, columns=5, tile_width=256))
    print(f"passes:        {passes}")
    print(f"stylised:      {out / 'stylised_preset.png'}, {out / 'stylised_image.png'}")
    print(f"composite:     {out / 'composite.png'} (F12 through the Stylepass compositor group)")
    print(f"contact sheet: {out / 'contact_sheet.png'}")
    print(f"scene:         {out / 'demo.blend'}")


if __name__ == "__main__":
    main()
