# SPDX-License-Identifier: GPL-3.0-or-later
"""A take lands whole or not at all, and one writer at a time holds a folder's lock."""

import subprocess
import sys
import textwrap

import pytest

from stylepass_core import take as take_module
from stylepass_core.take import Take, TakeBusy


def test_commit_renames_every_placed_file_and_discard_leaves_nothing(tmp_path):
    with Take(tmp_path / ".lock") as take:
        take.place(tmp_path / "a.png").write_bytes(b"a")
        take.place(tmp_path / "sub" / "b.json").write_bytes(b"b")
        assert not (tmp_path / "a.png").exists()  # nothing lands before the commit
        take.commit()
    assert (tmp_path / "a.png").read_bytes() == b"a" and (tmp_path / "sub" / "b.json").read_bytes() == b"b"
    with Take(tmp_path / ".lock") as take:
        take.place(tmp_path / "a.png").write_bytes(b"new")
    assert (tmp_path / "a.png").read_bytes() == b"a"  # left without commit: discarded
    assert not list(tmp_path.rglob("*.take"))


def test_a_file_never_written_stops_the_commit_before_any_rename(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    with Take(tmp_path / ".lock") as take:
        take.place(tmp_path / "a.png").write_bytes(b"new")
        take.place(tmp_path / "b.json")  # its writer failed before creating it
        with pytest.raises(FileNotFoundError, match=r"b\.json"):
            take.commit()
    assert (tmp_path / "a.png").read_bytes() == b"old"


def test_another_process_holding_the_lock_is_waited_for_then_reported(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")  # the holder below locks the POSIX way
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, sys, time
                handle = open({str(lock)!r}, "a+b")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                print("held", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(take_module, "LOCK_WAIT_SECONDS", 0.2)
        with Take(lock) as take:
            take.place(tmp_path / "a.png").write_bytes(b"a")
            with pytest.raises(TakeBusy, match="another Blender"):
                take.commit()
        assert not (tmp_path / "a.png").exists()
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
    with Take(lock) as take:  # the lock ended with its holder
        take.place(tmp_path / "a.png").write_bytes(b"a")
        take.commit()
    assert (tmp_path / "a.png").read_bytes() == b"a"
