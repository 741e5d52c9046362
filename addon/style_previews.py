# SPDX-License-Identifier: GPL-3.0-or-later
"""The style browser: a thumbnail of every built-in neural style, as Blender previews on the preset menus.

Each thumbnail is that style's network run on one reference render (`assets/style_reference.png`, the demo
scene's beauty at 256 px: Cycles, 64 samples, denoised, AgX), shrunk to Blender's preview size. They are made
once and kept as PNGs in the extension's user folder, under a key of the model file, the reference and the
recipe, so a new model makes new ones. Making (about a second) or reading them runs on a thread that touches
numpy, onnxruntime and files, never bpy; a timer on the main thread polls it and moves the pixels into the
preview collection. Until then, and wherever the engine is missing, the panel draws the plain menu.
"""

import hashlib
import json
import shutil
import threading
from pathlib import Path

import bpy
import bpy.utils.previews
import numpy as np

from stylepass_core import imageops, png
from stylepass_core.atomic_file import replace_file
from stylepass_core.engine_api import Aborted, EngineUnavailable, StyleRequest, check_abort
from stylepass_core.engines.neural_style import MODEL_FILES, PRESETS, NeuralStyleEngine, NeuralStyleSettings

from . import properties, runtime

THUMBNAIL_SIZE = 128  # px per side: Blender's own preview size
ICON_SIZE = 32  # px per side of the small icon a menu draws beside a style's name
REFERENCE = Path(__file__).resolve().parent / "assets" / "style_reference.png"
# The neural-style fields whose choices are the built-in styles, and so get their thumbnails as icons.
PREVIEW_FIELDS = ("style_preset", "style_blend_preset")
# Bump when the way a thumbnail is made changes (size, resize, detail scale): the cache key changes with it.
_RECIPE = "1"
_INDEX = "index.json"  # written last: a folder without it is incomplete and made again
_POLL_SECONDS = 0.25
_THREADS = 2  # onnxruntime threads for the thumbnails: they run beside an artist's Blender, not instead of it
_JOIN_SECONDS = 5.0  # longest a thumbnail run takes to notice an abort (one 256 px network pass is ~50 ms)


def cache_root() -> Path:
    """Where thumbnails are kept: `style_previews` in the extension's user folder (main thread: uses bpy)."""
    return runtime.user_folder() / "style_previews"


def cache_key(model: Path, reference: Path) -> str:
    """A name for one set of thumbnails: a hash of the model file, the reference image and the recipe."""
    digest = hashlib.sha256()
    for part in (model.read_bytes(), reference.read_bytes(), f"{_RECIPE}:{THUMBNAIL_SIZE}".encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def thumbnails(
    cache_dir: Path,
    reference: Path = REFERENCE,
    engine: NeuralStyleEngine | None = None,
    abort: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """Every built-in style's thumbnail, read from `cache_dir` or made there first. Never touches bpy.

    Args:
        cache_dir: Folder holding one subfolder per cache key; created when needed.
        reference: The RGB(A) PNG each style is run on.
        engine: The engine to run; None makes a private one (its sessions are freed with it).
        abort: Set to stop between two styles (raises `Aborted`).

    Returns:
        Preset id -> `(THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3)` float32 in [0, 1], in `PRESETS` order, as stored.

    Raises:
        EngineUnavailable: onnxruntime or the model files are missing (the message says what to install).
        Aborted: `abort` was set.
        OSError: the cache folder cannot be written.
    """
    # 1. The cache folder of this model and reference
    engine = engine if engine is not None else NeuralStyleEngine(threads=_THREADS)
    ok, reason = engine.available()
    if not ok:
        raise EngineUnavailable(engine.id, reason)
    model = engine.models_dir() / MODEL_FILES["multistyle26"]
    folder = Path(cache_dir) / cache_key(model, Path(reference))
    cached = _read_cached(folder)
    if cached is not None:
        return cached

    # 2. Run every style on the reference at its own size, then shrink: finer strokes than at 128 px
    image = png.read_png_float(reference)[..., :3]
    made = {}
    for preset_id, _ in PRESETS:
        check_abort(abort)
        request = StyleRequest(beauty=image, settings=NeuralStyleSettings(style_preset=preset_id))
        stylised = engine.run(request, abort=abort).image
        made[preset_id] = np.clip(imageops.resize(stylised, (THUMBNAIL_SIZE, THUMBNAIL_SIZE)), 0.0, 1.0)

    # 3. Store every picture, then the index that says the set is whole (two Blenders may race: both whole)
    folder.mkdir(parents=True, exist_ok=True)
    for preset_id, picture in made.items():
        png.write_png(folder / f"{preset_id}.png", picture)
    index = {"recipe": _RECIPE, "size": THUMBNAIL_SIZE, "model": str(model), "presets": list(made)}
    replace_file(folder / _INDEX, lambda handle: handle.write(json.dumps(index, indent=1).encode()))
    _forget_other_sets(folder)
    stored = _read_cached(folder)
    if stored is None:
        raise OSError(f"the style thumbnails written to {folder} cannot be read back")
    return stored


def _read_cached(folder: Path) -> dict[str, np.ndarray] | None:
    """The thumbnails of a whole cached set, or None when the set is missing, incomplete or unreadable."""
    try:
        index = json.loads((folder / _INDEX).read_text())
        if index.get("presets") != [preset_id for preset_id, _ in PRESETS]:
            return None
        pictures = {preset_id: png.read_png_float(folder / f"{preset_id}.png") for preset_id, _ in PRESETS}
    except (OSError, ValueError, AttributeError):
        return None
    if any(p.shape != (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3) for p in pictures.values()):
        return None
    return pictures


def _forget_other_sets(keep: Path) -> None:
    """Remove the thumbnail sets of older models or recipes beside `keep` (only folders with our index)."""
    for folder in keep.parent.iterdir():
        if folder != keep and folder.is_dir() and (folder / _INDEX).is_file():
            shutil.rmtree(folder, ignore_errors=True)


def _blender_pixels(picture: np.ndarray) -> np.ndarray:
    """`(H, W, 3)` top row first -> the flat RGBA float32 Blender's previews hold, bottom row first."""
    alpha = np.ones((*picture.shape[:2], 1), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate([picture[::-1], alpha], axis=-1), dtype=np.float32).ravel()


class StylePreviews:
    """Owns the style thumbnails: the preview collection, the thread making them and the timer loading them.

    `register()` gives the preset menus one preview each as icon (empty until loaded) and, with a UI, starts
    the thread; `ready` says the pictures are loaded, so the panel can offer them; `release()` stops the
    thread and the timer and frees the previews.
    """

    def __init__(self) -> None:
        self._collection = None
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        # Set by the thread, read on the main thread once it has ended.
        self._outcome: dict[str, np.ndarray] | Exception | None = None
        self._timer = self.poll  # one bound method: bpy.app.timers knows a timer by its function object
        self.ready = False
        self.problem = ""  # why there are no thumbnails, when making them failed

    def register(self) -> None:
        """Create the empty previews, put them on the preset menus, and start making the pictures.

        In background mode nothing is started: no one sees the pictures (scripts and tests call `start`).
        """
        self._collection = bpy.utils.previews.new()
        icons = {preset_id: self._collection.new(preset_id).icon_id for preset_id, _ in PRESETS}
        for name in PREVIEW_FIELDS:
            properties.set_choice_icons(NeuralStyleSettings, name, icons)
        if not bpy.app.background:
            self.start()

    def start(self, cache_dir: Path | None = None, reference: Path = REFERENCE) -> None:
        """Read or make the thumbnails on a thread; `poll` (a timer) loads them. Does nothing while running.

        Args:
            cache_dir: Where the sets are kept; None is `cache_root()`.
            reference: The image each style is run on.
        """
        if self._collection is None:
            raise RuntimeError("StylePreviews.start() before register()")
        if self._thread is not None:
            return
        folder = Path(cache_dir) if cache_dir is not None else cache_root()
        self._abort.clear()
        self.problem = ""
        self._thread = threading.Thread(
            target=self._work, args=(folder, Path(reference)), name="Stylepass style previews", daemon=True
        )
        self._thread.start()
        if not bpy.app.timers.is_registered(self._timer):
            # Persistent: opening a file while the thread runs must not drop the pictures.
            bpy.app.timers.register(self._timer, first_interval=_POLL_SECONDS, persistent=True)

    def _work(self, folder: Path, reference: Path) -> None:
        """The thread: numpy, onnxruntime and files only."""
        try:
            self._outcome = thumbnails(folder, reference, abort=self._abort)
        except Aborted:
            self._outcome = None
        except Exception as error:  # a thread's error has no caller: whatever it is, `poll` reports it
            self._outcome = error

    def poll(self) -> float | None:
        """Main thread: once the thread has ended, load its pictures into the previews.

        Returns:
            Seconds until the next poll while the thread runs, else None (a timer then stops).
        """
        if self._thread is None:
            return None
        if self._thread.is_alive():
            return _POLL_SECONDS
        self._thread = None
        outcome, self._outcome = self._outcome, None
        if isinstance(outcome, Exception):
            self.problem = f"Style thumbnails unavailable: {outcome}"
            print(f"Stylepass: {self.problem}")
        elif outcome is not None and self._collection is not None:
            self._load(outcome)
        return None

    def _load(self, pictures: dict[str, np.ndarray]) -> None:
        for preset_id, picture in pictures.items():
            preview = self._collection[preset_id]
            preview.image_size = picture.shape[1], picture.shape[0]
            preview.image_pixels_float.foreach_set(_blender_pixels(picture))
            preview.icon_size = ICON_SIZE, ICON_SIZE
            preview.icon_pixels_float.foreach_set(_blender_pixels(imageops.resize(picture, (ICON_SIZE,) * 2)))
        self.ready = True
        window_manager = bpy.context.window_manager
        for window in window_manager.windows if window_manager is not None else ():
            for area in window.screen.areas:
                if area.type in {"PROPERTIES", "VIEW_3D"}:
                    area.tag_redraw()

    def preview(self, preset_id: str) -> bpy.types.ImagePreview | None:
        """The preview of one style (empty until `ready`), or None when not registered."""
        return self._collection.get(preset_id) if self._collection is not None else None

    def release(self) -> None:
        """Stop the thread and the timer, take the icons off the menus and free the previews."""
        self._abort.set()
        if self._thread is not None:
            self._thread.join(_JOIN_SECONDS)  # a daemon: one that does not stop in time cannot hold Blender
            self._thread = None
        self._outcome = None
        if bpy.app.timers.is_registered(self._timer):
            bpy.app.timers.unregister(self._timer)
        if self._collection is not None:
            for name in PREVIEW_FIELDS:
                properties.set_choice_icons(NeuralStyleSettings, name, None)
            bpy.utils.previews.remove(self._collection)
            self._collection = None
        self.ready = False
        self.problem = ""


PREVIEWS = StylePreviews()


def register() -> None:
    PREVIEWS.register()


def unregister() -> None:
    PREVIEWS.release()
