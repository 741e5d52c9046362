# SPDX-License-Identifier: GPL-3.0-or-later
"""Show display-referred pixels in the compositor exactly as they were made.

Engines return display-referred images (what a screen shows). The compositor works in scene-linear light and
the render's view transform (view, look, exposure, gamma, curves, white balance) turns its result back into
display values. `compositor_target(scene).convert` gives the scene-linear pixels that this view transform turns back into
the engine's pixels: it inverts the view numerically (`stylepass_core.view_inverse`), using Blender itself as
the forward transform, since the inverses in Blender's OCIO config are approximate (AgX) or missing (looks,
exposure, curves). The inverse is cached on disk per colour-management settings and Blender version.

Blender applies the view transform when it saves a float image "as a render" to an integer format, exactly
as it does for F12 output; a throwaway scene carries a copy of the artist's settings for that, so the artist's
scene is never changed.
"""

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from stylepass_core import png, view_inverse
from stylepass_core.errors import StylepassError

from . import ADDON_PACKAGE, runtime

# Scene linear (Rec.709 primaries, D65) -> FilmLight E-Gamut, from the matrices in Blender's config.ocio. AgX
# clips and takes logarithms per channel in E-Gamut, so its inverse is searched there: that reaches saturated
# colours which need light outside Rec.709 (negative scene-linear components).
REC709_TO_E_GAMUT = (
    (0.5594630473, 0.3047758110, 0.1358129414),
    (0.0762332609, 0.7879523952, 0.1357748488),
    (0.0655375095, 0.1645427299, 0.7697415277),
)
# Nodes per axis of the inverse table over the display cube, and samples per axis of the dense forward sampling
# that seeds its search (see `view_inverse.build`).
INVERSE_SIZE = 33
FORWARD_SIZE = 65
# Pixels farther than this from anything the view can show count as "not reproducible" (display units)...
UNREACHABLE_DISTANCE = 1.0 / 255
# ...and a warning is given when more than this share of the image is.
UNREACHABLE_SHARE = 0.005
# The warning's share is measured on at most this many pixels (a regular subsample of the image).
_SHARE_SAMPLES = 1 << 16

_VIEW_FIRST = ("view_transform", "look")
# Derived from temperature and tint, or only describing the display hardware.
_VIEW_SKIP = {"white_balance_whitepoint", "is_hdr", "support_emulation"}
_CURVE_PROPS = (
    "tone",
    "use_clip",
    "clip_min_x",
    "clip_min_y",
    "clip_max_x",
    "clip_max_y",
    "extend",
    "black_level",
    "white_level",
)

# Inverses kept loaded (each ~1 MB) and their per-8-bit-colour tables (memory grows with the colours met, up
# to 128 MB each): the current view and one more, so switching back and forth keeps both warm. Both live in
# `runtime.RUNTIME`, which releases them.
_LOADED_MAX = 8
_BYTE_INVERSES_MAX = 2


class ViewProbeError(StylepassError, RuntimeError):
    """Blender could not run colours through the view transform (the message says why)."""


# Settings -----------------------------------------------------------------------------------------------


def _enum_ids(struct, prop: str) -> set[str]:
    return {item.identifier for item in struct.bl_rna.properties[prop].enum_items}


def scene_linear_colour_space() -> str:
    """The colour-space name to tag scene-linear float images with on this Blender version.

    5.x lists the `scene_linear` role itself, which follows a custom OCIO config; 4.x lists only colour spaces,
    where Blender's own config calls scene linear "Linear Rec.709".
    """
    names = _enum_ids(bpy.types.ColorManagedInputColorspaceSettings, "name")
    for name in ("scene_linear", "Linear Rec.709", "Linear"):
        if name in names:
            return name
    raise ViewProbeError("No scene-linear colour space found in the OCIO configuration.")


def _output_colour_settings(scene: bpy.types.Scene):
    """(display settings, view settings) that an F12 render's saved file goes through."""
    image_settings = scene.render.image_settings
    if getattr(image_settings, "color_management", "FOLLOW_SCENE") == "OVERRIDE":
        return image_settings.display_settings, image_settings.view_settings
    return scene.display_settings, scene.view_settings


def _plain_props(struct, first: tuple[str, ...] = (), skip: set[str] = frozenset()) -> dict:
    """The writable plain (non-pointer) RNA properties of `struct`, `first` ones first, as JSON-able values."""
    names = [p.identifier for p in struct.bl_rna.properties]
    ordered = [n for n in first if n in names] + [n for n in names if n not in first]
    values = {}
    for name in ordered:
        prop = struct.bl_rna.properties[name]
        if name in skip or name == "rna_type" or prop.is_readonly or prop.type in {"POINTER", "COLLECTION"}:
            continue
        values[name] = _as_json(getattr(struct, name))
    return values


def _curve_mapping_state(curve_mapping) -> dict | None:
    if curve_mapping is None:
        return None
    state = {
        name: _as_json(getattr(curve_mapping, name)) for name in _CURVE_PROPS if hasattr(curve_mapping, name)
    }
    state["curves"] = [
        [[*point.location, point.handle_type] for point in curve.points] for curve in curve_mapping.curves
    ]
    return state


def _as_json(value):
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value


def colour_settings(scene: bpy.types.Scene) -> dict:
    """Everything that shapes the view transform of the scene's rendered output, as plain values.

    The display, the view settings (view, look, exposure, gamma, white balance...) and, when curves are on,
    their points. Used to copy the settings onto the probe scene and as the cache key.
    """
    display, view = _output_colour_settings(scene)
    settings = {
        "display": _plain_props(display, first=("display_device",)),
        "view": _plain_props(view, first=_VIEW_FIRST, skip=_VIEW_SKIP),
    }
    if view.use_curve_mapping:
        settings["curves"] = _curve_mapping_state(view.curve_mapping)
    return settings


def _apply_settings(settings: dict, display, view) -> None:
    for name, value in settings["display"].items():
        setattr(display, name, value)
    for name, value in settings["view"].items():
        setattr(view, name, value)
    curves = settings.get("curves")
    if curves is not None and view.curve_mapping is not None:
        target = view.curve_mapping
        for name in _CURVE_PROPS:
            if name in curves:
                setattr(target, name, curves[name])
        for points, curve in zip(curves["curves"], target.curves, strict=True):
            while len(curve.points) > max(len(points), 2):
                curve.points.remove(curve.points[-1])
            while len(curve.points) < len(points):
                curve.points.new(0.5, 0.5)
            for (x, y, handle), point in zip(points, curve.points, strict=False):
                point.location = (x, y)
                point.handle_type = handle
        target.update()


def _is_agx(settings: dict) -> bool:
    return "AgX" in str(settings["view"].get("view_transform", ""))


# The forward transform, run by Blender -------------------------------------------------------------------


class BlenderViewTransform:
    """`forward(linear (N, 3)) -> display (N, 3)` through Blender's own colour management.

    Use as a context manager: it creates a throwaway scene carrying a copy of the colour settings and removes
    it (and every image it made) on exit. Each call writes one float image as a 16-bit PNG with
    `Image.save_render`, which applies the view transform exactly as F12 output does, and reads it back.
    """

    # Width of the probe image (the batch fills as many rows as it needs).
    WIDTH = 1024

    def __init__(self, settings: dict):
        self.settings = settings
        self.scene = None
        self.folder = None
        self.colour_space = scene_linear_colour_space()

    def __enter__(self):
        self.folder = tempfile.TemporaryDirectory(prefix="stylepass-view-")
        self.scene = bpy.data.scenes.new("Stylepass view probe")
        try:
            _apply_settings(self.settings, self.scene.display_settings, self.scene.view_settings)
            image_settings = self.scene.render.image_settings
            if hasattr(image_settings, "media_type"):
                image_settings.media_type = "IMAGE"  # 5.x: before file_format
            image_settings.file_format = "PNG"
            image_settings.color_mode = "RGB"
            image_settings.color_depth = "16"
            image_settings.compression = 0
            image_settings.color_management = "FOLLOW_SCENE"
            self.scene.render.dither_intensity = 0.0
        except (TypeError, ValueError, AttributeError, RuntimeError) as error:
            self.__exit__(None, None, None)
            raise ViewProbeError(f"Could not copy the colour settings to a probe scene: {error}") from error
        return self

    def __exit__(self, *exc):
        if self.scene is not None:
            bpy.data.scenes.remove(self.scene)
            self.scene = None
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None
        return False

    def __call__(self, linear: np.ndarray) -> np.ndarray:
        if self.scene is None:
            raise ViewProbeError("BlenderViewTransform must be used inside a 'with' block")
        linear = np.asarray(linear, dtype=np.float32).reshape(-1, 3)
        count = len(linear)
        width = min(self.WIDTH, max(count, 1))
        height = max(math.ceil(count / width), 1)
        rgba = np.ones((height * width, 4), dtype=np.float32)
        rgba[:count, :3] = linear
        image = bpy.data.images.new("Stylepass view probe", width, height, alpha=True, float_buffer=True)
        path = os.path.join(self.folder.name, "probe.png")
        try:
            image.colorspace_settings.name = self.colour_space
            image.pixels.foreach_set(rgba.ravel())
            image.save_render(path, scene=self.scene)
        finally:
            bpy.data.images.remove(image)
        stored = png.read_png(path)
        if stored.shape[:2] != (height, width) or stored.dtype != np.uint16:
            raise ViewProbeError(f"Blender saved a {stored.shape} {stored.dtype} PNG, expected 16-bit RGB")
        # PNG rows run top-down, Blender's bottom-up.
        display = stored[::-1, :, :3].reshape(-1, 3)[:count]
        return display.astype(np.float32) / np.float32(65535)


# The inverse --------------------------------------------------------------------------------------------


def cache_folder() -> Path:
    """Where inverses are kept between sessions: the extension's user folder, else the temp folder."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path="view_inverse", create=True))
    except (ValueError, RuntimeError, KeyError):
        # Not installed as an extension (e.g. run from a source folder).
        folder = Path(tempfile.gettempdir()) / "stylepass-view-inverse"
        folder.mkdir(exist_ok=True)
        return folder


def inverse_key(settings: dict) -> str:
    return view_inverse.cache_key(
        {
            "settings": settings,
            "blender": bpy.app.version_string,
            "ocio": os.environ.get("OCIO", ""),
            "size": INVERSE_SIZE,
            "forward_size": FORWARD_SIZE,
            "working": "E-Gamut" if _is_agx(settings) else "scene",
        }
    )


def inverse_view(scene: bpy.types.Scene, *, rebuild: bool = False) -> view_inverse.InverseView:
    """The inverse of the view transform of the scene's output, from memory, the disk cache or a new build.

    A build takes 1-2 s (2 CPU cores) and runs ~3 M colours through Blender in ~50 batches; the result is saved
    in `cache_folder()`, so a later session loads it in milliseconds.

    Raises:
        ViewProbeError: Blender could not run the probe.
    """
    settings = colour_settings(scene)
    return _inverse(settings, inverse_key(settings), rebuild)


def _inverse(settings: dict, key: str, rebuild: bool) -> view_inverse.InverseView:
    folder = cache_folder()
    if not rebuild:
        found = _known_inverse(key, folder)
        if found is not None:
            return found
    return build_inverse(settings, key, folder)


def _known_inverse(key: str, folder: Path) -> view_inverse.InverseView | None:
    """The inverse from memory or the disk cache (any thread: no bpy), or None."""
    found = runtime.RUNTIME.inverse_views.get(key) or view_inverse.InverseView.load(folder, key)
    if found is not None:
        _remember(key, found)
    return found


def build_inverse(settings: dict, key: str, folder: Path) -> view_inverse.InverseView:
    """Run the view through Blender and invert it, then keep it in `folder` (1-4 s; main thread). The second
    Blender (`pass_child`) runs this too, so that the artist's Blender never waits on it.

    Raises:
        ViewProbeError: Blender could not run the probe.
    """
    with BlenderViewTransform(settings) as forward:
        built = view_inverse.build(
            forward,
            size=INVERSE_SIZE,
            forward_size=FORWARD_SIZE,
            to_working=np.array(REC709_TO_E_GAMUT) if _is_agx(settings) else None,
        )
    try:
        built.save(folder, key)
    except OSError:
        pass  # A read-only cache only costs a rebuild next session.
    _remember(key, built)
    return built


def _remember(key: str, inverse: view_inverse.InverseView) -> None:
    loaded = runtime.RUNTIME.inverse_views
    loaded.pop(key, None)
    loaded[key] = inverse
    while len(loaded) > _LOADED_MAX:
        loaded.pop(next(iter(loaded)))


@dataclass
class CompositorTarget:
    """How display-referred pixels become the compositor's image under one scene's output colour settings.

    Made on the main thread (it reads the scene and may run Blender to build the inverse); `convert` touches no
    bpy, so the engine thread can run it while the PNG is being written.
    """

    colour_space: str
    view: str
    warnings: list[str]
    inverse: view_inverse.InverseView | None  # None: the pixels are shown unconverted
    byte_inverse: view_inverse.ByteInverse | None

    def convert(self, display_rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Pixels for the stylised Image datablock, so that the render shows `display_rgb` exactly.

        Float input is first rounded to the 8-bit levels the stylised PNG stores: the compositor then shows
        the PNG on disk, level for level.

        Args:
            display_rgb: `(H, W, 3)` float in [0, 1] or uint8, display-referred, top row first.

        Returns:
            (pixels, warnings): `(H, W, 3)` scene-linear pixels, float16 (a half-float EXR holds them exactly)
            or float32 for a view that needs values beyond the float16 range (an extreme exposure); and
            warnings for the artist when the render cannot match (colours the view cannot produce).

        Raises:
            ValueError: not `(H, W, 3)` float or uint8, or NaN or infinity in it.
        """
        display_rgb = np.asarray(display_rgb)
        if display_rgb.ndim != 3 or display_rgb.shape[2] != 3 or display_rgb.dtype.kind not in "fu":
            raise ValueError(
                f"display_rgb must be (H, W, 3) float in [0, 1] or uint8, got {display_rgb.shape} "
                f"{display_rgb.dtype}"
            )
        if display_rgb.dtype.kind == "f" and not np.isfinite(display_rgb).all():
            raise ValueError("display_rgb contains NaN or infinity")
        rgb8 = png.to_uint8(display_rgb)
        warnings = list(self.warnings)
        if self.inverse is None:
            return rgb8.astype(np.float16) / np.float16(255), warnings
        # The share of unreachable colours is measured on a regular subsample: the worst node a pixel is
        # interpolated from, an upper bound that also covers the band next to colours the view cannot
        # produce, where interpolation misses too.
        stride = max(1, math.isqrt(rgb8.shape[0] * rgb8.shape[1] // _SHARE_SAMPLES))
        if self.byte_inverse is not None:
            pixels, levels_off = self.byte_inverse.lookup(rgb8, stride)
            distance = levels_off / np.float32(255)
        else:
            display = rgb8.astype(np.float32) / np.float32(255)
            pixels = self.inverse.apply(display)
            distance = None
        report = self.inverse.report
        if report is not None and report.unreachable == 0:
            # The view reaches every colour (Standard, most grades): nothing can be out of reach.
            return pixels, warnings
        if distance is None:
            distance = self.inverse.distance_at(display[::stride, ::stride], worst=True)
        share = float(np.mean(distance > UNREACHABLE_DISTANCE)) if distance.size else 0.0
        if share > UNREACHABLE_SHARE:
            worst = float(distance.max()) * 100
            warnings.append(
                f"The scene's '{self.view}' colour view cannot show {share:.0%} of the stylised picture's "
                f"colours (mostly very saturated ones), so in the final render those look a little duller "
                f"(by up to {worst:.0f}% of full brightness). For an exact match set Render Properties > Colour "
                "Management > View Transform to Standard."
            )
        return pixels, warnings


@dataclass
class TargetPlan:
    """What `CompositorTarget` needs from the scene (read on the main thread), so that the target itself can be
    made on any thread once its inverse exists (`resolve`). `settings` is None when no inverse is needed."""

    colour_space: str
    view: str
    warnings: list[str]
    settings: dict | None
    key: str
    folder: Path

    @property
    def needs_inverse(self) -> bool:
        """Whether the inverse must still be built (by `build_inverse`, here or in the second Blender)."""
        if self.settings is None or self.key in runtime.RUNTIME.inverse_views:
            return False
        return not view_inverse.InverseView.exists(self.folder, self.key)

    def resolve(self) -> CompositorTarget:
        """The target (any thread; no bpy).

        Raises:
            ViewProbeError: the inverse is neither in memory nor in the cache.
        """
        if self.settings is None:
            return CompositorTarget(self.colour_space, self.view, self.warnings, None, None)
        inverse = _known_inverse(self.key, self.folder)
        if inverse is None:
            raise ViewProbeError(f"the inverse of the '{self.view}' view was not built")
        return CompositorTarget(
            self.colour_space, self.view, self.warnings, inverse, _byte_inverse(self.key, inverse)
        )


def plan_target(scene: bpy.types.Scene) -> TargetPlan:
    """The scene's output colour settings and what the stylised image needs for them (main thread; fast)."""
    display, view = _output_colour_settings(scene)
    warnings = []
    if scene.render.image_settings.color_management == "OVERRIDE":
        warnings.append(
            "The output overrides the scene's colour management: the stylised image matches the saved file, "
            "not the render window."
        )
    if view.view_transform == "False Color":
        warnings.append(
            "The False Color view shows exposure bands, not colours: the stylised image cannot appear as made. "
            "Use Standard, Filmic or AgX."
        )
        space = _display_colour_space(display.display_device)
        return TargetPlan(space, view.view_transform, warnings, None, "", cache_folder())
    settings = colour_settings(scene)
    return TargetPlan(
        scene_linear_colour_space(),
        view.view_transform,
        warnings,
        settings,
        inverse_key(settings),
        cache_folder(),
    )


def compositor_target(scene: bpy.types.Scene) -> CompositorTarget:
    """The `CompositorTarget` for the scene's output colour settings, building the inverse here when it is new
    (main thread; the scene is not changed).

    Raises:
        ViewProbeError: Blender could not run the view transform to build its inverse.
    """
    plan = plan_target(scene)
    if plan.needs_inverse:
        build_inverse(plan.settings, plan.key, plan.folder)
    return plan.resolve()


def _byte_inverse(key: str, inverse: view_inverse.InverseView) -> view_inverse.ByteInverse | None:
    """The per-colour table of `inverse`, kept between runs; None for a view beyond the float16 range (an
    extreme exposure), which then interpolates every pixel."""
    tables = runtime.RUNTIME.colour_tables
    if key in tables:
        table = tables.pop(key)
        stale = table is not None and table.inverse is not inverse  # the inverse was rebuilt since
    else:
        table, stale = None, True
    if stale:
        table = view_inverse.ByteInverse(inverse) if view_inverse.ByteInverse.fits(inverse) else None
    tables[key] = table  # last = most recently used
    while len(tables) > _BYTE_INVERSES_MAX:
        tables.pop(next(iter(tables)))
    return table


def _display_colour_space(display_device: str) -> str:
    """The colour space of a display device itself (its 'Standard' view), for pixels shown unconverted."""
    spaces = _enum_ids(bpy.types.ColorManagedInputColorspaceSettings, "name")
    return display_device if display_device in spaces else "sRGB"
