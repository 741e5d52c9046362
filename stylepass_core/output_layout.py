# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Stylepass writes things: one predictable layout, shared by the add-on, the worker and scripts.

<output>/<scene>/passes/<pass>/<frame:04d>.png   (+ .exr for raw depth, normal and vector data)
<output>/<scene>/passes/<frame:04d>.json         camera, resolution and settings of that frame
<output>/<scene>/stylised/<frame:04d>.png        (+ .json with everything needed to reproduce it)
<output>/<scene>/stylised/compositor/<frame:04d>.exr   the same frame as the compositor shows it
<output>/<scene>/stylised/takes/<frame:04d>/     every take of the frame, numbered, and takes.json (`takes.py`)

A pass PNG is also the one source of what an engine sees: `encode_pass` gives the samples a pass's PNG stores
and `decode_pass` the array every reader gets from them, so a fresh render hands on exactly what a reload
from disk gives (`stored_pass`), and the same seed reproduces the same picture from the record.
"""

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .atomic_file import write_blocks
from .errors import StylepassError

PASS_NAMES = ("beauty", "depth", "normal", "lineart", "segmentation", "object_index", "vector")
# Passes that also get their unclamped numbers as EXR, for tools that need metric data.
RAW_PASSES = ("depth", "normal", "vector")
# Bits per sample of each pass's PNG: 16 where 8 would band (inverse depth) or cannot count (object indices).
PASS_BIT_DEPTHS = {name: 8 for name in PASS_NAMES} | {"depth": 16, "object_index": 16}
# Passes stored and read back as one grey channel `(H, W)`; the others are RGB `(H, W, 3)`.
GREY_PASSES = ("depth", "lineart", "object_index")

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


class OutputError(StylepassError, ValueError):
    """The output folder cannot be used; the message says which folder and why."""


def safe_name(name: str) -> str:
    """A scene or object name made safe as one folder name on every platform (slashes, colons... -> '_')."""
    cleaned = _UNSAFE.sub("_", name).strip(" .")
    return cleaned or "_"


def resolve_output_root(raw: str, blend_filepath: str) -> tuple[Path, str | None]:
    """Turn the output-folder setting into an absolute folder.

    Args:
        raw: the setting as typed; `//` at the start means "the folder of the .blend file".
        blend_filepath: the saved .blend's path, or "" for an unsaved file.

    Returns:
        The folder, and a warning when a relative path had to fall back to the temp folder because the
        file is unsaved (the artist should know their passes are not next to their work).
    """
    raw = raw.strip() or "//stylepass/"
    if raw.startswith("//"):
        if not blend_filepath:
            # One folder per Blender process: two unsaved sessions at once never write over each other.
            folder = Path(tempfile.gettempdir()) / f"stylepass-{os.getpid()}" / raw[2:]
            return folder, (
                f"The .blend file is not saved, so '{raw}' has no folder to be relative to: "
                f"writing to {folder} instead. Save the file to keep passes next to it."
            )
        return Path(os.path.dirname(blend_filepath)) / raw[2:], None
    return Path(os.path.expanduser(raw)), None


# Folders a probe file was written in during this session: later checks ask the OS for permission only
# (a probe costs ~0.5 ms, paid on every re-run). Permission changes are still seen; a full disk then shows
# as the failing write itself, which leaves earlier files whole (every write replaces its file atomically).
_PROBED: set[str] = set()


def ensure_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there, or raise OutputError."""
    key = os.path.abspath(folder)
    try:
        if key in _PROBED and os.path.isdir(key) and os.access(key, os.W_OK | os.X_OK):
            return
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".stylepass-probe-"):
            pass
        _PROBED.add(key)
    except OSError as error:
        raise OutputError(
            f"Cannot write to the output folder '{folder}': {error.strerror or error}. "
            "Choose another Output Folder in the Stylepass panel."
        ) from error


class SceneLayout:
    """Paths for one scene under one output root."""

    def __init__(self, root: Path, scene_name: str) -> None:
        self.root = Path(root)
        self.scene_dir = self.root / safe_name(scene_name)
        self.passes_dir = self.scene_dir / "passes"
        self.stylised_dir = self.scene_dir / "stylised"

    def pass_file(self, pass_name: str, frame: int, ext: str = "png") -> Path:
        if pass_name not in PASS_NAMES:
            raise ValueError(f"unknown pass {pass_name!r}; expected one of {PASS_NAMES}")
        return self.passes_dir / pass_name / f"{frame:04d}.{ext}"

    def pass_json(self, frame: int) -> Path:
        return self.passes_dir / f"{frame:04d}.json"

    def stylised_file(self, frame: int, ext: str = "png") -> Path:
        return self.stylised_dir / f"{frame:04d}.{ext}"

    def compositor_file(self, frame: int) -> Path:
        """The stylised frame as the compositor shows it: scene-linear pixels in an EXR."""
        return self.stylised_dir / "compositor" / f"{frame:04d}.exr"

    def layers_file(self, frame: int) -> Path:
        """The frame's compositor layers: each style group's stylised layer and mask, and the line art, as the
        passes of one multilayer EXR (`stylepass_core.compositor_layers`)."""
        return self.stylised_dir / "layers" / f"{frame:04d}.exr"

    def takes_dir(self, frame: int) -> Path:
        """Every take of the frame (numbered copies of its files) and their index (see `takes.py`)."""
        return self.stylised_dir / "takes" / f"{frame:04d}"


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves a half-written record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_blocks(path, [text.encode("utf-8")])


def encode_pass(name: str, array: np.ndarray) -> np.ndarray:
    """The samples the PNG of pass `name` stores for `array` (write them with `png.write_png` as they are).

    Args:
        name: one of `PASS_NAMES`.
        array: `(H, W)` for grey passes, `(H, W, 3)` (or more channels, the first three kept) for the others:
            floats in [0, 1] (clipped, then rounded to the nearest level); integers for `object_index`
            (0-65535) and integer samples of the pass's bit depth, which are kept as they are.

    Returns:
        uint8 or uint16 samples (`PASS_BIT_DEPTHS[name]`), `(H, W)` or `(H, W, 3)`.

    Raises:
        ValueError: unknown pass, wrong shape, NaN, or integers that do not fit the pass's samples.
    """
    bits = _bit_depth(name)
    array = np.asarray(array)
    if name in GREY_PASSES:
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"pass {name!r} is one channel: expected (H, W), got shape {array.shape}")
    else:
        if array.ndim != 3 or array.shape[2] < 3:
            raise ValueError(f"pass {name!r} is RGB: expected (H, W, 3), got shape {array.shape}")
        array = array[..., :3]
    kind = np.uint8 if bits == 8 else np.uint16
    if array.dtype.kind in "iub":
        if name != "object_index" and array.dtype != kind:
            raise ValueError(
                f"pass {name!r} takes floats in [0, 1] or {np.dtype(kind)} samples, got {array.dtype}"
            )
        top = np.iinfo(kind).max
        if array.size and (int(array.min()) < 0 or int(array.max()) > top):
            raise ValueError(
                f"pass {name!r} holds {bits}-bit samples: values must be 0-{top}, "
                f"got {array.min()}-{array.max()}"
            )
        return array.astype(kind, copy=False)
    if array.dtype.kind != "f":
        raise ValueError(f"pass {name!r} must be a real array, got dtype {array.dtype}")
    if np.isnan(array).any():
        raise ValueError(f"pass {name!r} contains NaN; replace it before storing the pass")
    # The rounding png.write_png applies to floats, in float32: files stay byte-identical to earlier ones.
    scaled = np.clip(array.astype(np.float32), 0.0, 1.0)
    scaled *= np.float32(np.iinfo(kind).max)
    scaled += np.float32(0.5)
    return scaled.astype(kind)


def decode_pass(name: str, samples: np.ndarray) -> np.ndarray:
    """The array every reader of pass `name` gets from its PNG samples (as `png.read_png` returns them).

    Returns:
        `object_index`: `(H, W)` int32 indices. Other grey passes: `(H, W)` float32 in [0, 1]; RGB passes:
        `(H, W, 3)` float32 in [0, 1]; each value exactly `sample / (2**bits - 1)`.

    Raises:
        ValueError: unknown pass, or samples of another bit depth or shape.
    """
    kind = np.uint8 if _bit_depth(name) == 8 else np.uint16
    samples = np.asarray(samples)
    if samples.dtype != kind:
        raise ValueError(f"pass {name!r} is stored as {np.dtype(kind)}, got {samples.dtype}")
    if samples.ndim == 3:
        samples = samples[..., 0] if name in GREY_PASSES else samples[..., :3]
    if samples.ndim != (2 if name in GREY_PASSES else 3) or (samples.ndim == 3 and samples.shape[2] != 3):
        raise ValueError(f"pass {name!r}: unexpected sample shape {samples.shape}")
    if name == "object_index":
        return samples.astype(np.int32)
    return samples.astype(np.float32) / np.float32(np.iinfo(kind).max)


def stored_pass(name: str, array: np.ndarray) -> np.ndarray:
    """`array` as reading back the pass's PNG gives it: what an engine must be handed, fresh or reloaded."""
    return decode_pass(name, encode_pass(name, array))


def _bit_depth(name: str) -> int:
    if name not in PASS_BIT_DEPTHS:
        raise ValueError(f"unknown pass {name!r}; expected one of {PASS_NAMES}")
    return PASS_BIT_DEPTHS[name]
