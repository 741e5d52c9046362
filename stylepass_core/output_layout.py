# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Stylepass writes things: one predictable layout, shared by the add-on, the worker and scripts.

<output>/<scene>/passes/<pass>/<frame:04d>.png   (+ .exr for raw depth, normal and vector data)
<output>/<scene>/passes/<frame:04d>.json         camera, resolution and settings of that frame
<output>/<scene>/stylised/<frame:04d>.png        (+ .json with everything needed to reproduce it)
"""

import json
import os
import re
import tempfile
from pathlib import Path

from .atomic_file import write_blocks
from .errors import StylepassError

PASS_NAMES = ("beauty", "depth", "normal", "lineart", "segmentation", "object_index", "vector")
# Passes that also get their unclamped numbers as EXR, for tools that need metric data.
RAW_PASSES = ("depth", "normal", "vector")

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
            folder = Path(tempfile.gettempdir()) / "stylepass"
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


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves a half-written record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_blocks(path, [text.encode("utf-8")])
