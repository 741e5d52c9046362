# SPDX-License-Identifier: GPL-3.0-or-later
"""Passes -> engine -> image on disk: one stylised frame, with a record that can reproduce it.

bpy-free, so the same function serves the add-on (on a thread), a worker process and scripts.
"""

import hashlib
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import imageops, png
from .engine_api import NullProgress, Progress, StyleRequest, StyleResult, get_engine
from .output_layout import write_json
from .settings import FrameSettings
from .take import Take
from .takes import TAKE_LOCK_NAME, FrameTakes, TakeEntry

# Runs an engine somewhere (in this process, in a worker): (engine id, request, progress, abort) -> result.
EngineRunner = Callable[[str, StyleRequest, Progress, "threading.Event | None"], StyleResult]


def run_in_process(
    engine_id: str, request: StyleRequest, progress: Progress, abort: threading.Event | None
) -> StyleResult:
    """The engine in this process (engines that need no worker, like the embedded neural style)."""
    return get_engine(engine_id).run(request, progress, abort)


# 2: the request header holds the engine's settings object; "frame" holds Stylepass's own mix settings.
RECORD_FORMAT = 2


@dataclass(frozen=True, eq=False)
class Finish:
    """Stylepass's mix of the engine's picture with the render: Strength, Keep Scene Colours and the object
    selection. The frame writer applies it after the engine, in Blender's process, whichever engine ran
    (so it never crosses the worker).

    Attributes:
        frame: The shared frame settings.
        beauty: `(H, W, 3)` float32 in [0, 1], the render at the pass size.
        object_index: `(H, W)` int32 object indices, needed when `frame.object_filter` is not "ALL".
        selection: Object indices in the Stylepass selection.
    """

    frame: FrameSettings
    beauty: np.ndarray
    object_index: np.ndarray | None = None
    selection: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.frame.object_filter != "ALL" and self.object_index is None:
            raise ValueError(f"object_filter {self.frame.object_filter!r} needs the object_index pass")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The engine's `(H, W, 3)` picture mixed with the render; returned unchanged when nothing mixes."""
        frame = self.frame
        size = image.shape[:2]
        alpha = None
        if frame.object_filter != "ALL" and (frame.object_filter == "INCLUDE" or self.selection):
            include = self.selection if frame.object_filter == "INCLUDE" else ()
            exclude = self.selection if frame.object_filter == "EXCLUDE" else ()
            index = imageops.resize_nearest(self.object_index, size)
            alpha = imageops.selection_alpha(index, include, exclude)
            if alpha is None:  # "Only Selected" with nothing selected: selection_alpha reads () as everything
                alpha = np.zeros(size, np.float32)
        if frame.strength == 1.0 and not frame.keep_colours and alpha is None:
            return image
        beauty = self.beauty if self.beauty.shape[:2] == size else imageops.resize(self.beauty, size)
        return imageops.finish_with_beauty(
            image, beauty, keep_colours=frame.keep_colours, strength=frame.strength, alpha=alpha
        )


@dataclass
class StylisedFrame:
    image: np.ndarray
    png_path: Path
    json_path: Path
    record: dict
    alongside: object = None  # what `stylise_frame`'s `alongside` returned
    take: TakeEntry | None = None  # the numbered take kept beside the files (`stylise_frame`'s `takes`)


def array_digest(array: np.ndarray | None) -> str | None:
    """A short content hash of an array (shape, dtype and bytes), to tell which picture (style image) was used."""
    if array is None:
        return None
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def stylise_frame(
    request: StyleRequest,
    png_path: Path,
    json_path: Path,
    finish: Finish | None = None,
    context: dict | None = None,
    progress: Progress | None = None,
    abort: threading.Event | None = None,
    runner: EngineRunner = run_in_process,
    postprocess: Callable[[np.ndarray], tuple[np.ndarray, dict]] | None = None,
    alongside: Callable[[np.ndarray, Callable[[Path], Path]], object] | None = None,
    png_level: int = 1,
    takes: FrameTakes | None = None,
) -> StylisedFrame:
    """Run the request's engine and write the image and its record.

    Args:
        request: the request; its arrays are (H, W, C) float32, top row first.
        png_path: where the display-referred result goes (8-bit RGB PNG, written atomically).
        json_path: where the record goes: the request's header (the engine's settings, seed, sizes), the
            frame settings, the engine's info (models, versions), timings and `context` (scene, frame, the pass
            record it came from...).
        finish: Stylepass's mix with the render, applied to the engine's picture; None keeps it as it is.
        context: extra JSON-able facts to record.
        runner: where the engine runs: this process (default) or a worker (`LocalWorker.run`,
            `WorkerClient.run`).
        postprocess: turns the engine's image into the one written (temporal blending), returning the image
            and facts for the record (stored under "postprocess").
        alongside: more work on the final image (the compositor's copy), run on this thread while another
            writes the PNG and the record. It gets the `(H, W, 3)` uint8 levels the PNG stores and `place`:
            `place(path)` gives the temporary path to write a file of the take to (see `take.Take`). Its return
            value is `StylisedFrame.alongside`. If it raises, nothing of the take is written.
        png_level: zlib level of the PNG (0 stores it uncompressed).
        takes: the frame's takes: the files are also kept there as a new numbered take, and the record says
            which (`record["take"]`). None keeps no take (the frames of an animation).

    The PNG, the record, what `alongside` places and the kept take with its index are one commit
    (`take.Take`): all land or none does, and two runs on one frame at once never mix their files.

    Raises:
        EngineUnavailable: the engine cannot run here (the message says what to install).
        Aborted: `abort` was set; nothing was written.
        ValueError: the request is invalid.
        OSError: a file could not be written; the previous take is unchanged.
    """
    progress = progress or NullProgress()
    engine_id = request.engine
    # 1. Run (engines check the request before any work), then mix with the render
    tick = time.perf_counter()
    result = runner(engine_id, request, progress, abort)
    engine_seconds = time.perf_counter() - tick
    image, post_record = result.image, None
    if finish is not None:
        image = finish.apply(image)
    if postprocess is not None:
        image, post_record = postprocess(image)

    # 2. Write the image, then its record (which names a file that exists). With `alongside` they are written
    # on a second thread while it runs: zlib, numpy and file writes release the GIL.
    tick = time.perf_counter()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    levels = png.to_uint8(image)
    record = {
        "format": RECORD_FORMAT,
        "engine": engine_id,
        "request": request.header(),  # the engine validated it
        "frame": finish.frame.values() if finish is not None else None,
        "selection": list(finish.selection) if finish is not None else [],
        "image_digests": {},
        "result": result.info,
        "image": png_path.name,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "context": context or {},
        "postprocess": post_record,
        "timings": {"engine": engine_seconds},
    }

    number = None
    if takes is not None:
        number = record["take"] = takes.reserve()

    with Take(json_path.parent / TAKE_LOCK_NAME) as take:  # one lock per folder: commits take ms
        placed: dict[Path, Path] = {}  # each file of the commit -> its temporary file, for the kept take

        def place(path: Path) -> Path:
            placed[Path(path)] = temp = take.place(path)
            return temp

        def write_files() -> None:
            record["image_digests"] = {name: array_digest(image) for name, image in request.images.items()}
            png.write_png(place(png_path), levels, compress_level=png_level)
            record["timings"]["write"] = time.perf_counter() - tick
            write_json(place(json_path), record)

        side = None
        if alongside is None:
            write_files()
        else:
            writer = _Writer(write_files)
            try:
                side = alongside(levels, place)
            finally:
                writer.join()
        kept = None
        if takes is None:
            take.commit()
        else:
            kept = takes.commit(take, number, record, placed)
    return StylisedFrame(image, png_path, json_path, record, side, kept)


class _Writer(threading.Thread):
    """Runs `write()` on its own thread; `join` re-raises what it raised."""

    def __init__(self, write: Callable[[], None]):
        super().__init__(name="stylepass-writer", daemon=True)
        self.write, self.error = write, None
        self.start()

    def run(self) -> None:
        try:
            self.write()
        except BaseException as error:  # re-raised on the caller's thread
            self.error = error

    def join(self, timeout=None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error
