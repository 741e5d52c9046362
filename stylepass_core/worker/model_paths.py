# SPDX-License-Identifier: GPL-3.0-or-later
"""Model references resolved only inside the configured model folders.

A client never names a file on the worker's disk directly: it gives a *model reference* (a settings field
marked `model=True`, such as `DiffusionSettings.model`), which is either a path relative to one of the model folders
(`"sd15/dreamshaper.safetensors"`, `"my-controlnet"`), an absolute path that lies inside one of them, or a
name that is not on disk at all (a hub id such as `"org/model"`, which the engine may download when allowed).

Refused, with a `ModelPathError` naming the folders: `..` components, `~`, URLs, NUL or control
characters, drive-relative Windows paths, absolute paths outside every folder, and anything whose real
path (symlinks followed) leaves the folders. A symlink from one configured folder into another is fine.

Both `/` and `\\` separate folders in a reference on every platform (a Windows Blender may talk to a Linux
worker), and a Windows drive path (`C:\\models\\x`) sent to a POSIX worker is refused with a message saying
to name the model relative to the worker's folders.

The worker resolves every reference it finds in its folders to that real path before it queues a job
(`resolve_references`), so engines get paths, never names relative to their working folder. It also stores
its folders in the `STYLEPASS_MODEL_DIRS` environment variable (joined with `os.pathsep`) at start, so
engines can call `resolve_model_path(ref)` / `find_model(ref)` without arguments. Only the standard library
is used, so any engine can import this module.
"""

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..settings import Settings

S = TypeVar("S", bound="Settings")

MODEL_DIRS_ENV = "STYLEPASS_MODEL_DIRS"

_MAX_REFERENCE = 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[\\/]+")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class ModelPathError(ValueError):
    """A model reference is refused or not found; the message quotes it and lists the model folders."""


def configured_model_dirs() -> list[Path]:
    """The model folders this process was configured with (`STYLEPASS_MODEL_DIRS`), in priority order."""
    value = os.environ.get(MODEL_DIRS_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part]


def find_model(reference: str, model_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Path | None:
    """The real path of a model file or folder inside the model folders, or None when it is not on disk.

    Args:
        reference: A relative path (tried in each folder in order), or an absolute path inside a folder.
        model_dirs: The folders; None uses `configured_model_dirs()`.

    Returns:
        The resolved path (symlinks followed), or None when a relative reference exists in no folder
        (it may be a hub id).

    Raises:
        ModelPathError: the reference is malformed, escapes the folders, or is absolute and outside them.
    """
    roots = _roots(model_dirs)
    candidate = _check_syntax(reference, roots)
    if candidate.is_absolute():
        real = candidate.resolve()
        if not _inside_any(real, roots):
            raise ModelPathError(
                f"model path {reference!r} is outside the model folders {_names(roots)}; "
                "put the model in one of them or add its folder in the preferences"
            )
        return real if real.exists() else None
    for root in roots:
        joined = root / candidate
        if not joined.exists() and not joined.is_symlink():
            continue
        real = joined.resolve()
        if not _inside_any(real, roots):
            raise ModelPathError(
                f"model reference {reference!r} leads outside the model folders {_names(roots)} "
                f"(through a symlink to {real}); add that folder as a model folder to allow it"
            )
        if real.exists():
            return real
    return None


def resolve_model_path(reference: str, model_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Path:
    """Like `find_model`, but a reference that is not on disk is an error too.

    Raises:
        ModelPathError: malformed, escaping, or not found (the message lists the folders searched).
    """
    found = find_model(reference, model_dirs)
    if found is None:
        roots = _roots(model_dirs)
        raise ModelPathError(f"model {reference!r} was not found in the model folders {_names(roots)}")
    return found


def check_model_reference(reference: str, model_dirs: Sequence[str | os.PathLike[str]] | None = None) -> None:
    """Refuse a reference that would leave the model folders; names that are not on disk pass (hub ids).

    Raises:
        ModelPathError: see `find_model`.
    """
    find_model(reference, model_dirs)


def resolve_references(settings: S, model_dirs: Sequence[str | os.PathLike[str]] | None = None) -> S:
    """`settings` with every model reference found in the model folders replaced by its real path.

    Fields marked `model=True` (nested ones too) are mapped; a reference that is not on disk stays as it is
    (a hub id for the engine to look up). Parts of a model (`model_part=True`: a subfolder, a weight file)
    are left alone: they are relative to their model by design.

    Raises:
        ModelPathError: a reference is malformed or escapes the folders (see `find_model`).
    """

    def resolve(reference: str) -> str:
        found = find_model(reference, model_dirs)
        return str(found) if found is not None else reference

    return settings.map_models(resolve)


def _roots(model_dirs: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    dirs = configured_model_dirs() if model_dirs is None else [Path(d) for d in model_dirs]
    # Resolved once, so that a folder that is itself a symlink compares by its real location.
    return [d.expanduser().resolve() for d in dirs]


def _check_syntax(reference: object, roots: list[Path]) -> Path:
    if not isinstance(reference, str) or not reference.strip():
        raise _refused(f"a model reference must be a non-empty string, got {reference!r:.80}", roots)
    if len(reference) > _MAX_REFERENCE:
        raise _refused(
            f"model reference is {len(reference)} characters long; the limit is {_MAX_REFERENCE}", roots
        )
    if _CONTROL_CHARS.search(reference):
        raise _refused(f"model reference {reference!r:.80} contains control characters", roots)
    if "://" in reference or reference.startswith("file:"):
        raise _refused(
            f"model reference {reference!r} is a URL; give a name or a path in the model folders", roots
        )
    if reference.startswith("~"):
        raise _refused(
            f"model reference {reference!r} starts with '~'; give a full path or a relative name", roots
        )
    # Both separators count on every platform: a reference written on Windows must not escape on Linux.
    if ".." in _SEPARATORS.split(reference):
        raise _refused(
            f"model reference {reference!r} contains '..'; references may not leave the model folders", roots
        )
    if os.sep == "/":
        if _WINDOWS_DRIVE.match(reference):
            raise _refused(
                f"model reference {reference!r} is a Windows path, and this worker runs on {sys.platform}; "
                "name the model relative to the worker's model folders",
                roots,
            )
        reference = reference.replace("\\", "/")
    path = Path(reference)
    if not path.is_absolute() and (path.drive or path.root):
        raise _refused(
            f"model reference {reference!r} is relative to a drive or root; give a full path", roots
        )
    return path


def _inside_any(real: Path, roots: list[Path]) -> bool:
    target = os.path.normcase(str(real))
    for root in roots:
        base = os.path.normcase(str(root))
        try:
            if os.path.commonpath([target, base]) == base:
                return True
        except ValueError:  # different drives on Windows
            continue
    return False


def _refused(message: str, roots: list[Path]) -> ModelPathError:
    return ModelPathError(f"{message} (model folders: {_names(roots)})")


def _names(roots: list[Path]) -> str:
    return "[" + ", ".join(str(r) for r in roots) + "]" if roots else "[] (none configured)"
