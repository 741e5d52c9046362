# SPDX-License-Identifier: GPL-3.0-or-later
"""Ways for a worker to die with the process that started it, so that no worker outlives Blender.

Three independent mechanisms; the manager asks for all that the platform has:

- `die_with_parent_thread()` (Linux): `prctl(PR_SET_PDEATHSIG, SIGKILL)`. The kernel kills the worker the
  moment the *thread* that started it ends, even when the parent is killed with SIGKILL. Set by the worker
  itself after exec (no `preexec_fn`, which is unsafe in a threaded parent such as Blender); the manager
  starts workers from one long-lived thread so that a short-lived job thread ending does not kill them.
- `watch_stdin()`: the parent keeps the write end of the worker's stdin pipe open and never writes; when
  the parent dies, the OS closes it and the worker reads end-of-file. Works on every platform.
- `watch_parent_pid()`: polls whether the parent process still exists (a Windows process handle, or
  the POSIX parent pid changing after re-parenting). A backstop when stdin is not a private pipe.
"""

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("stylepass.worker")

_PR_SET_PDEATHSIG = 1


def die_with_parent_thread(expected_parent: int | None) -> bool:
    """Linux: ask the kernel to SIGKILL this process when its parent thread ends.

    Args:
        expected_parent: The parent's pid; if the parent already died before the call (the worker was
            re-parented), the process exits at once instead of waiting for a signal that will never come.

    Returns:
        True when the death signal is set, False on other platforms or when prctl is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        log.warning("prctl is unavailable (%s); relying on the other parent watches", exc)
        return False
    if expected_parent is not None and os.getppid() != expected_parent:
        log.error("parent %d died before the worker started; exiting", expected_parent)
        os._exit(3)
    return True


def watch_stdin(on_gone: Callable[[str], None]) -> threading.Thread:
    """Call `on_gone` from a daemon thread when stdin reaches end-of-file (the parent closed or died)."""

    def run() -> None:
        # os.read on the descriptor, not sys.stdin: a thread blocked inside a buffered reader holds its
        # lock, and interpreter shutdown then aborts ("could not acquire lock ... at interpreter shutdown").
        try:
            fd = sys.stdin.fileno() if sys.stdin is not None else 0
            while os.read(fd, 4096):  # returns b"" at end-of-file; a parent that writes only delays it
                pass
        except (OSError, ValueError):
            pass
        on_gone("stdin closed: the parent process stopped or died")

    thread = threading.Thread(target=run, name="stylepass-stdin-watch", daemon=True)
    thread.start()
    return thread


def watch_parent_pid(
    parent_pid: int, on_gone: Callable[[str], None], interval: float = 1.0
) -> threading.Thread:
    """Call `on_gone` from a daemon thread once process `parent_pid` no longer exists.

    On POSIX the worker is normally the direct child: a changed `getppid()` means the parent died and the
    worker was re-parented. When it is not the direct child (a launcher in between), `kill(pid, 0)` tells
    whether the pid still exists. On Windows a process handle, opened now, cannot be fooled by pid reuse.
    """
    if os.name == "nt":
        wait = _windows_waiter(parent_pid)
    else:
        direct_child = os.getppid() == parent_pid

        def wait(timeout: float) -> bool:
            threading.Event().wait(timeout)
            if direct_child:
                return os.getppid() != parent_pid
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # exists, owned by someone else
                return False
            return False

    def run() -> None:
        while not wait(interval):
            pass
        on_gone(f"parent process {parent_pid} has gone")

    thread = threading.Thread(target=run, name="stylepass-parent-watch", daemon=True)
    thread.start()
    return thread


def _windows_waiter(parent_pid: int) -> Callable[[float], bool]:
    """A `wait(timeout) -> parent_gone` backed by WaitForSingleObject on a handle opened now."""
    import ctypes
    from ctypes import wintypes

    synchronize, wait_object_0, wait_timeout = 0x00100000, 0x0, 0x102
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    handle = kernel32.OpenProcess(synchronize, False, parent_pid)
    if not handle:
        error_invalid_parameter = 87  # what OpenProcess reports for a pid that does not exist
        if ctypes.get_last_error() == error_invalid_parameter:
            return lambda timeout: True
        log.warning("cannot watch parent process %d (error %d)", parent_pid, ctypes.get_last_error())
        return lambda timeout: threading.Event().wait(timeout)  # never reports gone

    def wait(timeout: float) -> bool:
        result = kernel32.WaitForSingleObject(handle, int(timeout * 1000))
        return result != wait_timeout if result in (wait_object_0, wait_timeout) else True

    return wait
