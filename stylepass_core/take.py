# SPDX-License-Identifier: GPL-3.0-or-later
"""A take: the files of one stylised frame (the PNG, its record, the compositor's copy) written as a whole.

Every file is first written to a temporary file beside its place; only when all of them are complete are they
renamed into place, one after another, while the frame's lock is held. So a failure while writing (a full
disk, a read-only folder) leaves the previous take exactly as it was, and two runs on one frame at once (a
script and the button, or two Blenders) never mix their files: each take lands whole, the later one last.

    with Take(lock_path) as take:
        write_png(take.place(png_path), ...)
        write_json(take.place(json_path), ...)
        take.commit()          # without commit, leaving the block discards every temporary file
"""

import os
import secrets
import time
from pathlib import Path

from .errors import StylepassError

LOCK_WAIT_SECONDS = 60.0  # a commit is a few renames; waiting longer means the other writer is stuck


class TakeBusy(StylepassError):
    """Another run kept the frame's lock for longer than `LOCK_WAIT_SECONDS`."""


class Take:
    """Files written together; see the module docstring."""

    def __init__(self, lock_path: str | os.PathLike) -> None:
        self.lock_path = Path(lock_path)
        self._placed: list[tuple[Path, Path]] = []
        self._committed = False

    def place(self, path: str | os.PathLike) -> Path:
        """A temporary path beside `path` to write the file to; `commit` renames it over `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.take")
        self._placed.append((temp, path))
        return temp

    def commit(self) -> None:
        """Rename every placed file into place, under the frame's lock.

        Raises:
            FileNotFoundError: a placed file was never written (nothing is renamed then).
            TakeBusy: the lock stayed taken for `LOCK_WAIT_SECONDS`.
        """
        missing = [str(final) for temp, final in self._placed if not temp.is_file()]
        if missing:
            raise FileNotFoundError(f"take incomplete, not written: {missing}")
        with FrameLock(self.lock_path):
            for temp, final in self._placed:
                os.replace(temp, final)
        self._committed = True

    def discard(self) -> None:
        for temp, _ in self._placed:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
        self._placed.clear()

    def __enter__(self) -> "Take":
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:
            self.discard()


class FrameLock:
    """An exclusive lock on a lock file, across threads and processes (flock on POSIX, msvcrt on Windows).

    Both belong to an open file, so two threads of one Blender conflict as two Blenders do, and the lock ends
    with the process: a crash leaves no stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None

    def __enter__(self) -> "FrameLock":
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+b")
        try:
            while not _try_lock(self._handle):
                if time.monotonic() > deadline:
                    raise TakeBusy(
                        f"another run holds {self.path} for more than {LOCK_WAIT_SECONDS:.0f} s: is another "
                        "Blender stylising the same frame into this folder?"
                    )
                time.sleep(0.02)
        except BaseException:
            self._handle.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            _unlock(self._handle)
        finally:
            self._handle.close()


try:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _try_lock(handle) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
