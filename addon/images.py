# SPDX-License-Identifier: GPL-3.0-or-later
"""Moving pixels between numpy and Blender Image datablocks (Blender rows are bottom-up; numpy's top-down)."""

from pathlib import Path

import bpy
import numpy as np

from stylepass_core import imageops
from stylepass_core.errors import StylepassError

from . import ownership

IMAGE_PREFIX = "Stylepass "


class ImageError(StylepassError):
    """An image cannot be used; the message names it and says why."""


def image_to_display_rgb(image: bpy.types.Image) -> np.ndarray:
    """An Image datablock as `(H, W, 3)` float32 display-referred sRGB in [0, 1], top row first.

    Byte images come back as stored (sRGB-encoded values); float images hold linear light, which is
    encoded to sRGB so the engine sees the picture as a person does.

    Raises:
        ImageError: the image has no pixels (missing file, never rendered).
    """
    name = image.name
    width, height = image.size
    if width == 0 or height == 0 or not image.has_data:
        # Loading is lazy: asking for the size of a file-backed image may need a first touch of its pixels.
        try:
            image.pixels[0]
        except (IndexError, RuntimeError):
            pass
        width, height = image.size
    if width == 0 or height == 0:
        where = f" (file '{bpy.path.abspath(image.filepath)}')" if image.filepath else ""
        raise ImageError(f"Image '{name}' has no pixels{where}: check that its file exists and can be read.")
    channels = image.channels
    flat = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    pixels = flat.reshape(height, width, channels)[::-1]
    if channels == 1:
        rgb = np.repeat(pixels, 3, axis=2)
    else:
        rgb = pixels[..., :3]
    if image.is_float and image.colorspace_settings.name not in ("Non-Color", "sRGB"):
        rgb = imageops.srgb_encode(rgb)
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)


def show_file(
    role: str, name: str, path: Path, colour_space: str, notes: list[str] | None = None
) -> bpy.types.Image:
    """Show `path` in Stylepass's own Image datablock for `role`, called `name` when that name is free, with
    the given colour space (the file is read on first use). An image of the artist's is never touched.

    An existing datablock only drops its pixels, so Blender reads the new file when something next uses it (a
    render, the Image Editor), as it does for any image in a .blend: `reload()` and setting the colour space
    each read the file at once (~15 ms at 512 px), which the caller would wait for.
    """
    image = ownership.find(bpy.data.images, role)
    if image is None or image.source not in {"FILE", "SEQUENCE"}:
        if image is not None:
            bpy.data.images.remove(image)  # ours (by its marker), in a state we never leave it in
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = name
        ownership.claim(image, role, name, notes)
    else:
        if image.source == "SEQUENCE":
            image.source = "FILE"
        if bpy.path.abspath(image.filepath) != str(path):
            image.filepath = str(path)
        reread(image)
    if image.colorspace_settings.name != colour_space:
        image.colorspace_settings.name = colour_space
    return image


def reread(image: bpy.types.Image) -> None:
    """Have Blender read the image's file (or files) again when it is next used, after they changed on disk."""
    image.buffers_free()
    image.update_tag()  # the compositor and viewers re-evaluate with the new pixels


def show_sequence(
    role: str, name: str, first_file: Path, colour_space: str, notes: list[str] | None = None
) -> bpy.types.Image:
    """`first_file` (e.g. .../0001.exr) in Stylepass's image sequence datablock for `role`, one file per frame."""
    image = show_file(role, name, first_file, colour_space, notes)
    if image.source != "SEQUENCE":
        image.source = "SEQUENCE"
        image.reload()
    return image


def show_pass_files(files: dict[str, list[Path]]) -> None:
    """Each pass PNG as a 'Stylepass <pass>' image for the Image Editor."""
    for name, paths in files.items():
        path = next(p for p in paths if p.suffix == ".png")
        # Maps are data for a network, not pictures to colour-manage; the beauty already is display-referred.
        show_file(f"pass:{name}", IMAGE_PREFIX + name, path, "sRGB" if name == "beauty" else "Non-Color")


def _image_editors(window_manager: bpy.types.WindowManager):
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                yield area


def show_result_soon(image: bpy.types.Image) -> None:
    """`show_result` from a timer, once the calling operator has returned to Blender's event loop."""
    name = image.name_full

    def show() -> None:
        window_manager = bpy.context.window_manager
        shown = bpy.data.images.get(name)
        if shown is None or not window_manager.windows:
            return None
        window = window_manager.windows[0]
        with bpy.context.temp_override(window=window, screen=window.screen):
            show_result(bpy.context, shown)
        return None  # once

    bpy.app.timers.register(show, first_interval=0.0)


def show_result(context: bpy.types.Context, image: bpy.types.Image) -> bool:
    """Show `image` where the artist will see it, as F12 shows a render: in an Image Editor already open in any
    window, else in the render view Blender opens for F12 (a new window, or as the preferences say).
    Returns whether an editor shows it."""
    window_manager = context.window_manager
    areas = list(_image_editors(window_manager))
    if not areas and context.window is not None:
        # The render view is the artist's own choice of where results appear (Preferences > Interface).
        with context.temp_override(window=context.window):
            bpy.ops.render.view_show("INVOKE_DEFAULT")
        areas = list(_image_editors(window_manager))
    return show_in_open_editors(window_manager, image, areas)


def show_in_open_editors(window_manager: bpy.types.WindowManager, image: bpy.types.Image, areas=None) -> bool:
    """Show `image` in the first Image Editor open in any window; returns whether one was open."""
    areas = list(_image_editors(window_manager)) if areas is None else areas
    for area in areas[:1]:
        area.spaces.active.image = image
        area.tag_redraw()
    return bool(areas)


PREVIEW_ROLE = "step preview"
PREVIEW_IMAGE = "Stylepass Step Preview"


def show_latest_step_preview(window_manager: bpy.types.WindowManager, events) -> bool:
    """The newest step preview among a job's progress `events` (a ComfyUI server sends them), if any."""
    previews = [event.preview for event in events if getattr(event, "preview", None) is not None]
    if not previews:
        return False
    return show_step_preview(window_manager, *previews[-1], Path(bpy.app.tempdir))


def show_step_preview(window_manager: bpy.types.WindowManager, data: bytes, kind: str, folder: Path) -> bool:
    """An engine's step preview (JPEG or PNG bytes) in Stylepass's own image, shown by an Image Editor that is
    already open and shows nothing, Stylepass's result or this preview (never the artist's own pictures; no
    window is opened for it). Returns whether one shows it."""
    from .compositor import STYLISED_ROLE  # here: the compositor module imports this one

    path = Path(folder) / f"stylepass-step-preview.{'png' if kind == 'png' else 'jpg'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    image = show_file(PREVIEW_ROLE, PREVIEW_IMAGE, path, "sRGB")
    areas = [
        area
        for area in _image_editors(window_manager)
        if area.spaces.active.image is None
        or ownership.is_ours(area.spaces.active.image, STYLISED_ROLE)
        or area.spaces.active.image == image
    ]
    return show_in_open_editors(window_manager, image, areas)


def end_step_previews(window_manager: bpy.types.WindowManager) -> None:
    """Once a job ends (done, cancelled or failed): an editor still showing a step preview shows Stylepass's
    result again, so a cancelled run's last step is never taken for a result."""
    from .compositor import STYLISED_ROLE  # here: the compositor module imports this one

    preview = ownership.find(bpy.data.images, PREVIEW_ROLE)
    if preview is None:
        return
    result = ownership.find(bpy.data.images, STYLISED_ROLE)
    for area in _image_editors(window_manager):
        if area.spaces.active.image == preview:
            area.spaces.active.image = result
            area.tag_redraw()
