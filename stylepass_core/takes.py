# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes: every stylisation of a frame kept, numbered, one of them the frame's current result.

    stylised/0001.png, 0001.json, compositor/0001.exr,   the current result (what the compositor shows)
        layers/0001.exr
    stylised/takes/0001/003.png, 003.json, 003.exr,      take 3 of frame 1: copies of the files it wrote
        003.layers.exr
    stylised/takes/0001/takes.json                       the index: which take is which, and the current one

A Stylise Frame writes its take's copies and the new index in the same commit as the current files
(`take.Take`: all land or none), so a failure while writing leaves every earlier take and the index as they
were. Numbers are never reused, even after a take was deleted by hand. Copies, not hard links: a program that
saves over the current file in place (Blender's Image > Save does) must not change a take.

Choosing a take copies its files back over the current ones, again in one commit. The current result is
whatever the current record says (`"take": 3` in `0001.json`); a result that is not a take (Stylise Animation
writes none) is kept as a new take before a chosen one replaces it, so nothing is ever lost.

The index is a convenience written beside the files: when it is missing or unreadable, the takes are found
again from their files and records.

Locks: a frame's takes lock (numbering, the index) is taken before the commit lock of the stylised folder
(`TAKE_LOCK_NAME`, held by `Take.commit`), never the other way round, so nothing waits on itself.
"""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .engines.diffusion.settings import DiffusionSettings
from .engines.neural_style import NeuralStyleSettings
from .errors import StylepassError
from .output_layout import SceneLayout, write_json
from .settings import EngineSettings, SettingsError, from_plain
from .take import FrameLock, Take

INDEX_NAME = "takes.json"
INDEX_FORMAT = 1
TAKE_LOCK_NAME = ".stylepass-take.lock"  # the stylised folder's commit lock (`stylise_job.stylise_frame`)
_TAKES_LOCK_NAME = ".stylepass-takes.lock"  # one frame's numbering and index
# "003.png", "003.layers.exr": the take's number, then the kind of file (`_kinds`).
_TAKE_FILE = re.compile(r"^(\d{3,})\.([A-Za-z0-9]+(?:\.[A-Za-z0-9]+)?)$")
_PROMPT_CHARS = 32  # of a prompt in a take's name; the whole prompt is in its record

FROM_STYLISE_FRAME = "Stylise Frame"
FROM_ANIMATION = "Stylise Animation"
FROM_UNKNOWN = "kept before choosing another take"
RECOVERED = "found on disk"


class TakeError(StylepassError):
    """A take cannot be chosen (unknown number, files missing); the message says which. Nothing changed."""


@dataclass(frozen=True)
class TakeEntry:
    """One take of a frame, as the index records it.

    Attributes:
        number: 1, 2, 3... per frame, never reused.
        name: What the artist sees: "Take 3 · Style 7 · seed 42".
        time: When it was made, ISO 8601 in UTC.
        engine: The engine id ("NEURAL_STYLE").
        style: The look in a few words: a preset's name, a style image's name, a prompt's start.
        seed: The request's seed (None when unknown).
        strength: Stylepass's mix with the render (None when unknown).
        source: What made it (`FROM_STYLISE_FRAME`, `FROM_ANIMATION`...).
        files: Each file of the take (in the frame's takes folder) -> the current file it becomes when
            chosen, relative to the stylised folder: {"003.png": "0001.png", "003.exr": "compositor/0001.exr"}.
        colour_space: The colour space of its compositor copy ("" when unknown).
    """

    number: int
    name: str
    time: str
    engine: str
    style: str
    seed: int | None = None
    strength: float | None = None
    source: str = FROM_STYLISE_FRAME
    files: dict[str, str] = field(default_factory=dict)
    colour_space: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "time": self.time,
            "engine": self.engine,
            "style": self.style,
            "seed": self.seed,
            "strength": self.strength,
            "source": self.source,
            "files": dict(self.files),
            "colour_space": self.colour_space,
        }

    @classmethod
    def from_json(cls, data: Any) -> "TakeEntry":
        """Raises ValueError when `data` is not an entry `to_json` wrote."""
        if not isinstance(data, dict):
            raise ValueError(f"a take entry is an object, got {type(data).__name__}")
        number, files = data.get("number"), data.get("files")
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError(f"take number must be an int >= 1, got {number!r}")
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError(f"take {number}: files must map names to names, got {files!r}")
        for name, relative in files.items():
            # Plain names in the takes folder, and places inside the stylised folder: nothing else is written.
            if not _TAKE_FILE.match(name) or relative.startswith("/") or ".." in relative.split("/"):
                raise ValueError(f"take {number}: file {name!r} -> {relative!r} is not a take's file")
        seed, strength = data.get("seed"), data.get("strength")
        return cls(
            number=number,
            name=str(data.get("name") or f"Take {number}"),
            time=str(data.get("time") or ""),
            engine=str(data.get("engine") or ""),
            style=str(data.get("style") or ""),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            strength=float(strength) if isinstance(strength, (int, float)) else None,
            source=str(data.get("source") or FROM_STYLISE_FRAME),
            files=dict(files),
            colour_space=str(data.get("colour_space") or ""),
        )


@dataclass(frozen=True)
class TakeIndex:
    """A frame's takes (in number order), the next number to give, and the take the index last made current.

    Which take *is* current is what the current record says (`FrameTakes.current_number`): Stylise Animation
    replaces the current files without touching the index.
    """

    frame: int
    next_number: int = 1
    current: int | None = None
    takes: tuple[TakeEntry, ...] = ()

    def get(self, number: int) -> TakeEntry | None:
        return next((entry for entry in self.takes if entry.number == number), None)

    def with_take(self, entry: TakeEntry) -> "TakeIndex":
        """This index with `entry` added (or replacing the entry of its number), made current."""
        takes = sorted([t for t in self.takes if t.number != entry.number] + [entry], key=lambda t: t.number)
        return replace(
            self,
            takes=tuple(takes),
            current=entry.number,
            next_number=max(self.next_number, entry.number + 1),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "frame": self.frame,
            "next_number": self.next_number,
            "current": self.current,
            "takes": [entry.to_json() for entry in self.takes],
        }


@dataclass(frozen=True)
class Chosen:
    """What `FrameTakes.choose` did: the take now current, and the result it kept first (or None)."""

    entry: TakeEntry
    kept: TakeEntry | None = None


class FrameTakes:
    """The takes of one frame under one output layout (see the module docstring)."""

    def __init__(self, layout: SceneLayout, frame: int) -> None:
        self.layout = layout
        self.frame = frame
        self.base = layout.stylised_dir
        self.folder = layout.takes_dir(frame)
        self.index_path = self.folder / INDEX_NAME
        self.record_path = layout.stylised_file(frame, "json")
        self.commit_lock = self.base / TAKE_LOCK_NAME
        self._lock_path = self.folder / _TAKES_LOCK_NAME

    # -- Reading ------------------------------------------------------------------------------------------

    def read(self) -> TakeIndex:
        """The index, with takes whose files are on disk but missing from it found again from their records.

        Never raises for a missing or unreadable index: the files are what counts.
        """
        data = _read_json(self.index_path)
        takes: dict[int, TakeEntry] = {}
        next_number, current = 1, None
        if isinstance(data, dict):
            for item in data.get("takes") or ():
                try:
                    entry = TakeEntry.from_json(item)
                except ValueError:
                    continue  # a broken entry is found again from its files below
                takes[entry.number] = entry
            if isinstance(data.get("next_number"), int):
                next_number = data["next_number"]
            if isinstance(data.get("current"), int):
                current = data["current"]
        on_disk = self._files_on_disk()
        for number, names in on_disk.items():
            if number not in takes:
                takes[number] = self._recovered(number, names)
        highest = max([*takes, *on_disk], default=0)
        return TakeIndex(
            frame=self.frame,
            next_number=max(next_number, highest + 1, 1),
            current=current,
            takes=tuple(takes[number] for number in sorted(takes)),
        )

    def current_number(self, index: TakeIndex | None = None) -> int | None:
        """The take the current files are, by the current record's `"take"`; None when they are no take."""
        index = index if index is not None else self.read()
        record = _read_json(self.record_path)
        number = record.get("take") if isinstance(record, dict) else None
        return number if isinstance(number, int) and index.get(number) is not None else None

    def missing_files(self, entry: TakeEntry) -> list[str]:
        """The files of `entry` that are not on disk (all of them when it lists none)."""
        if not entry.files:
            return [f"{entry.number:03d}.*"]
        return [name for name in entry.files if not (self.folder / name).is_file()]

    # -- A new take (`stylise_job.stylise_frame`) --------------------------------------------------------

    def reserve(self) -> int:
        """A new take number, stored at once so that no other run gets it (a failed run leaves a gap)."""
        with FrameLock(self._lock_path):
            index = self.read()
            number = index.next_number
            write_json(self.index_path, replace(index, next_number=number + 1).to_json())
        return number

    def commit(
        self,
        take: Take,
        number: int,
        record: dict,
        placed: dict[Path, Path],
        source: str = FROM_STYLISE_FRAME,
    ) -> TakeEntry:
        """Add copies of the placed files as take `number` and the updated index to `take`, then commit it.

        Args:
            take: The commit of the current files, every file written but not yet committed.
            number: From `reserve`.
            record: The record written as the current one (it names the take: `record["take"] == number`).
            placed: Each current file of `take` -> the temporary file written for it.
            source: What made the take.

        Raises:
            OSError: a copy could not be written; nothing is committed (`take` discards it all).
            ValueError: two placed files share a suffix, or one lies outside the stylised folder.
        """
        # 1. Copies beside the takes, written before the lock: only the index needs it
        files: dict[str, str] = {}
        for final, temp in placed.items():
            name = self._take_name(number, Path(final))
            if name in files:
                raise ValueError(
                    f"two files of take {number} would both be kept as {name!r}: {sorted(placed)}"
                )
            files[name] = _relative(Path(final), self.base)
            _copy(temp, take.place(self.folder / name))
        entry = entry_from_record(number, record, files, source)
        # 2. The index and every file land in one commit, under the frame's takes lock
        with FrameLock(self._lock_path):
            index = self.read().with_take(entry)
            write_json(take.place(self.index_path), index.to_json())  # placed last: renamed last
            take.commit()
        return entry

    # -- Choosing -----------------------------------------------------------------------------------------

    def choose(self, number: int) -> Chosen:
        """Make take `number` the current result: its files replace the current ones, in one commit.

        A current result that is no take yet (Stylise Animation wrote it) is first kept as a new take in the
        same commit. No take is ever removed.

        Raises:
            TakeError: the frame has no take `number`, or some of its files are missing (nothing changed).
            TakeBusy: another run kept the folder locked.
            OSError: a copy could not be written (nothing changed).
        """
        with FrameLock(self._lock_path):
            # 1. Check inputs
            index = self.read()
            entry = index.get(number)
            if entry is None:
                known = ", ".join(str(t.number) for t in index.takes) or "none"
                raise TakeError(f"Frame {self.frame} has no take {number} (its takes: {known}).")
            missing = self.missing_files(entry)
            if missing:
                raise TakeError(
                    f"{entry.name} of frame {self.frame} is missing {', '.join(missing)} in {self.folder}, so "
                    "it cannot be chosen; nothing was changed."
                )
            # 2. Keep the current result if it is no take, then copy the chosen take over it
            kept = None
            with Take(self.commit_lock) as take:
                if self.current_number(index) is None:
                    kept = self._keep_current(take, index.next_number, entry)
                    if kept is not None:
                        index = index.with_take(kept)
                for name, relative in entry.files.items():
                    _copy(self.folder / name, take.place(self.base / relative))
                index = replace(index, current=number)
                write_json(take.place(self.index_path), index.to_json())
                take.commit()
        return Chosen(entry, kept)

    # -- Helpers ------------------------------------------------------------------------------------------

    def _keep_current(self, take: Take, number: int, chosen: TakeEntry) -> TakeEntry | None:
        """Place copies of the current files `chosen` would replace as take `number`; None when there are none."""
        files = {}
        for relative in chosen.files.values():
            current = self.base / relative
            if current.is_file():
                name = self._take_name(number, current)
                files[name] = relative
                _copy(current, take.place(self.folder / name))
        if not files:
            return None
        record = _read_json(self.record_path)
        record = record if isinstance(record, dict) else {}
        animation = "animation" in (record.get("context") or {})
        return entry_from_record(number, record, files, FROM_ANIMATION if animation else FROM_UNKNOWN)

    def _files_on_disk(self) -> dict[int, list[str]]:
        try:
            names = os.listdir(self.folder)
        except OSError:
            return {}
        found: dict[int, list[str]] = {}
        for name in names:
            match = _TAKE_FILE.match(name)
            if match:
                found.setdefault(int(match.group(1)), []).append(name)
        return found

    def _kinds(self) -> dict[str, Path]:
        """Each kind of file a take keeps -> the frame's current file of that kind."""
        return {
            "png": self.layout.stylised_file(self.frame),
            "json": self.record_path,
            "exr": self.layout.compositor_file(self.frame),
            "layers.exr": self.layout.layers_file(self.frame),
        }

    def _take_name(self, number: int, current: Path) -> str:
        """The name of the take's copy of `current`: "003.png", "003.layers.exr"."""
        kind = next((kind for kind, path in self._kinds().items() if path == current), current.suffix[1:])
        return f"{number:03d}.{kind}"

    def _recovered(self, number: int, names: list[str]) -> TakeEntry:
        """An entry for files found without one, named from their record, placed where the layout puts them."""
        current = self._kinds()
        files = {
            name: _relative(current[name.split(".", 1)[1].lower()], self.base)
            for name in sorted(names)
            if name.split(".", 1)[1].lower() in current
        }
        record = _read_json(self.folder / f"{number:03d}.json")
        try:
            stamp = min((self.folder / name).stat().st_mtime for name in names)
        except OSError:  # removed meanwhile
            stamp = None
        return entry_from_record(
            number, record if isinstance(record, dict) else {}, files, RECOVERED, when=stamp
        )


# The look in a few words -----------------------------------------------------------------------------------


def entry_from_record(
    number: int, record: dict, files: dict[str, str], source: str, when: float | None = None
) -> TakeEntry:
    """The index entry of take `number` whose record (as `stylise_job.stylise_frame` writes it) is `record`.

    Args:
        when: Seconds since the epoch the take was made; now when None.
    """
    request = record.get("request") if isinstance(record.get("request"), dict) else {}
    frame = record.get("frame") if isinstance(record.get("frame"), dict) else {}
    context = record.get("context") if isinstance(record.get("context"), dict) else {}
    seed = request.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    strength = frame.get("strength")
    strength = float(strength) if isinstance(strength, (int, float)) else None
    settings = _settings(request.get("settings"))
    style = style_label(settings, context.get("images") or {}) if settings is not None else "unknown style"
    groups = context.get("style_groups")
    if isinstance(groups, list) and groups:
        style += f" + {len(groups)} style group{'s' if len(groups) > 1 else ''}"
    parts = [f"Take {number}", style]
    if seed is not None and (settings is None or type(settings).USES_SEED):
        parts.append(f"seed {seed}")
    if strength is not None and strength != 1.0:
        parts.append(f"strength {strength:.2f}")
    if source not in (FROM_STYLISE_FRAME, RECOVERED):
        parts.append(f"from {source}" if source == FROM_ANIMATION else "kept")
    stamp = time.gmtime(time.time() if when is None else when)
    return TakeEntry(
        number=number,
        name=" · ".join(parts),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        engine=str(record.get("engine") or (settings.ENGINE if settings is not None else "")),
        style=style,
        seed=seed,
        strength=strength,
        source=source,
        files=dict(files),
        colour_space=str(context.get("compositor_colour_space") or ""),
    )


def style_label(settings: EngineSettings, image_names: dict[str, str] | None = None) -> str:
    """The look of `settings` in a few words: a preset's name, a style image's name, a prompt's start.

    Args:
        image_names: Names of the pictures the request used, by settings field ("style_image": "Painting").
    """
    label = _STYLE_LABELS.get(type(settings))
    return label(settings, image_names or {}) if label is not None else type(settings).LABEL


def _choice_label(settings: EngineSettings, name: str) -> str:
    value = getattr(settings, name)
    for field_name, _, spec, _ in settings.specs():
        if field_name == name and spec.choices:
            return next((choice[1] for choice in spec.choices if choice[0] == value), str(value))
    return str(value)


def _neural_style_label(settings: NeuralStyleSettings, image_names: dict[str, str]) -> str:
    if settings.style_source == "IMAGE":
        return image_names.get("style_image") or "Style Image"
    first = _choice_label(settings, "style_preset")
    if settings.style_source == "BLEND":
        second = _choice_label(settings, "style_blend_preset")
        return f"{first} + {second} {settings.style_blend_amount:.0%}"
    return first


def _diffusion_label(settings: DiffusionSettings, image_names: dict[str, str]) -> str:
    prompt = " ".join(settings.prompt.split())
    if len(prompt) > _PROMPT_CHARS:
        prompt = prompt[: _PROMPT_CHARS - 1].rstrip() + "…"
    preset = _choice_label(settings, "style_preset") if settings.style_preset != "none" else ""
    return ": ".join(part for part in (preset, prompt) if part) or "no prompt"


# Keyed by settings class, never by engine id: the class is the engine's one contract.
_STYLE_LABELS = {NeuralStyleSettings: _neural_style_label, DiffusionSettings: _diffusion_label}


def _settings(plain: Any) -> EngineSettings | None:
    try:
        return from_plain(plain)
    except (SettingsError, TypeError, ValueError, KeyError):
        return None  # an engine this Stylepass does not know, or a record from a newer one


# Files ----------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not inside the stylised folder {base}") from None


def _copy(source: Path, target: Path) -> None:
    """Copy `source` to the new file `target` and make sure its bytes reach the disk (as every result does)."""
    shutil.copyfile(source, target)  # in-kernel copy where the system has one
    handle = os.open(target, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
