# SPDX-License-Identifier: GPL-3.0-or-later
"""The host side of a real-UI test: a person's keys and mouse, and what `blender_side.py` measures.

Standard library only. `BlenderUI` wraps a started `UISession` whose Blender runs `blender_side.py`:

* `state()` / `wait_state(check)` read the state file the Blender side writes every ~100 ms; every wait
  polls with a timeout, and a failed wait quotes the last state and Blender's log.
* `command(op, **args)` asks the Blender side something (heartbeat gaps in a window, the compositor tree, a
  slow engine) and waits for its reply.
* `search(text)` runs an operator as an artist does: F3, type, Enter. Between keys it waits for the screen
  (Xvfb's frame buffer file, read without touching Blender) to change or to settle, never a fixed sleep.
"""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

from ui_session import UISession, UISessionError

BLENDER_SIDE = Path(__file__).resolve().parent / "blender_side.py"
STATUS_BAR_STRIP = 24  # pixels at the bottom of Blender's main window that hold the status bar


class FrameBuffer:
    """Xvfb's screen as it writes it with `-fbdir` (an XWD file), compared in boxes of whole rows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def grab(self, box: tuple[int, int, int, int] | None = None, step: int = 2) -> bytes:
        """Pixels of `box` (x0, y0, x1, y1; top-left origin; every `step`-th row), or of the whole screen."""
        data = self.path.read_bytes()
        fields = struct.unpack(">25I", data[:100])
        header_size, width, height = fields[0], fields[4], fields[5]
        pixel_bytes, row_bytes, colours = fields[11] // 8, fields[12], fields[19]
        offset = header_size + colours * 12
        x0, y0, x1, y1 = box or (0, 0, width, height)
        x0, x1 = max(0, x0), min(width, x1)
        y0, y1 = max(0, y0), min(height, y1)
        return b"".join(
            data[offset + y * row_bytes + x0 * pixel_bytes : offset + y * row_bytes + x1 * pixel_bytes]
            for y in range(y0, y1, step)
        )

    def wait_change(self, before: bytes, box=None, timeout: float = 15, what: str = "the screen to change"):
        deadline = time.monotonic() + timeout
        while self.grab(box) == before:
            if time.monotonic() > deadline:
                raise UISessionError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.05)

    def wait_drawn(self, box, timeout: float = 60, what: str = "a window to be drawn") -> None:
        """Wait until `box` shows a picture rather than one flat colour (a new window's first draw)."""
        deadline = time.monotonic() + timeout
        while True:
            pixels = self.grab(box, step=8)
            if len({pixels[i : i + 4] for i in range(0, len(pixels), 4 * 7)}) > 32:
                return
            if time.monotonic() > deadline:
                raise UISessionError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.1)

    def wait_settled(self, box=None, quiet: float = 0.4, timeout: float = 20) -> float:
        """Wait until the screen stayed the same for `quiet` seconds; returns the seconds waited."""
        start = time.monotonic()
        last, since = self.grab(box), start
        while time.monotonic() - since < quiet:
            if time.monotonic() - start > timeout:
                raise UISessionError(f"the screen kept changing for {timeout:.0f} s")
            time.sleep(0.05)
            now = self.grab(box)
            if now != last:
                last, since = now, time.monotonic()
        return time.monotonic() - start


class BlenderUI:
    """A running Blender UI with `blender_side.py`: state, commands, keys, screenshots."""

    def __init__(self, session: UISession, shots: Path) -> None:
        self.session = session
        self.shots = shots
        self.screen = FrameBuffer(session.host_path(f"{session.inner_dir}/fb/Xvfb_screen0"))
        self._commands = itertools.count(1)
        self._log_mark = 0

    # -- what the Blender side says ----------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.session.host_path(f"{self.session.inner_dir}/{name}")

    def host_path(self, inner: str) -> Path:
        return self.session.host_path(inner)

    def state(self) -> dict:
        path = self.session.wait_for_file("state.json", timeout=120)
        for _ in range(20):
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):  # replaced while read: read the new one
                time.sleep(0.02)
        raise UISessionError(f"cannot read {path}")

    def wait_state(
        self,
        check: Callable[[dict], object],
        timeout: float,
        what: str,
        fail: Callable[[dict], str | None] | None = None,
    ) -> dict:
        """Poll the state until `check(state)` is truthy; `fail(state)` may end the wait early with a reason."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if check(state):
                return state
            reason = fail(state) if fail else None
            if reason or time.monotonic() > deadline:
                raise UISessionError(
                    f"{reason or f'waited {timeout:.0f} s'} for {what}; last state:\n"
                    f"{json.dumps(_brief(state), indent=1)}\nBlender's log:\n{self.session.tail_log(25)}"
                )
            if not self.session.running():
                raise UISessionError(f"Blender exited while waiting for {what}:\n{self.session.tail_log()}")
            time.sleep(0.05)

    def mark_log(self) -> None:
        """From now on `failure()` reports a Python traceback that Blender prints to its log."""
        self._log_mark = self.session.log_path.stat().st_size

    def failure(self, state: dict) -> str | None:
        """Why waiting on `state` is pointless: the Blender side failed, or Blender printed a traceback."""
        if state["errors"]:
            return f"the Blender side failed: {state['errors'][-1]}"
        with open(self.session.log_path, "rb") as stream:
            stream.seek(self._log_mark)
            if b"Traceback (most recent call last)" in stream.read():
                return "Blender printed a Python traceback"
        return None

    def wait_until(self, moment: float, timeout: float = 30) -> dict:
        """Wait until the Blender side has written a state at or after `moment` (monotonic)."""
        return self.wait_state(lambda s: s["t"] >= moment, timeout, f"a state after t={moment:.2f}")

    def command(self, op: str, timeout: float = 20, **args) -> dict:
        number = next(self._commands)
        reply_path = self.path(f"reply-{number}.json")
        tmp = self.path(f".cmd-{number}.tmp")
        tmp.write_text(json.dumps({"op": op, **args}))
        tmp.rename(self.path(f"cmd-{number}.json"))
        reply = json.loads(self.session.wait_for_file(reply_path.name, timeout).read_text())
        reply_path.unlink()
        if not reply["ok"]:
            raise UISessionError(f"the Blender side failed on {op}:\n{reply['error']}")
        return reply["result"]

    def gaps(self, t0: float, t1: float, overlap: bool = False, inside: bool = False) -> dict:
        """The heartbeat's longest gap beginning in [t0, t1) (with `inside` also ending by t1; with
        `overlap`, any overlapping it); waits until the Blender side has ticked past t1."""
        self.wait_until(t1)
        return self.command("gaps", t0=t0, t1=t1, overlap=overlap, inside=inside)

    # -- a person's hands --------------------------------------------------------------------------------

    def key(self, *combos: str) -> None:
        self.session.key(*combos)

    def mouse_to(self, x: int, y: int) -> None:
        self.session.xdotool("mousemove", str(int(x)), str(int(y)))

    def window_box(self, window: dict) -> tuple[int, int, int, int]:
        """Screen box (x0, y0, x1, y1; top-left origin) of a window from the state's `windows`."""
        (x, y), (width, height) = window["pos"], window["size"]
        top = self.screen_height - (y + height)
        return x, top, x + width, top + height

    @property
    def screen_height(self) -> int:
        return self.session.screen[1]

    def region_centre(self, rect: list[int]) -> tuple[int, int]:
        """Screen point (top-left origin) of the middle of a Blender rect [x, y, w, h] (bottom-left origin)."""
        x, y, width, height = rect
        window_height = self.state()["window"][1]
        return x + width // 2, window_height - (y + height // 2)

    def search(self, text: str, shot: str | None = None) -> float:
        """F3, type `text`, Enter, as an artist runs an operator; returns the monotonic time of Enter."""
        before = self.screen.grab()
        self.key("F3")
        self.screen.wait_change(before, what="the F3 search menu to open")
        self.screen.wait_settled(quiet=0.3)
        self.session.xdotool("type", "--delay", "40", text)
        self.screen.wait_settled(quiet=0.5)  # the result list for the whole text is drawn
        if shot:
            self.shot(shot)
        self.mark_log()
        enter = time.monotonic()
        self.key("Return")
        return enter

    def shot(self, name: str) -> Path:
        """A screenshot from Xvfb's frame buffer (Blender is not paused for it)."""
        return self.session.screenshot(self.shots / f"{name}.png")

    def copy_frame(self) -> str:
        """The screen as it is now, kept for `save_frame` (a file copy: fine inside a measured window)."""
        return self.session.copy_frame()

    def save_frame(self, frame: str, name: str, status_bar: bool = False) -> list[Path]:
        """Save a `copy_frame` copy as `<name>.png`; with `status_bar` also the right half of the main
        window's bottom strip, where the status bar draws Stylepass's progress bar, enlarged twice
        (`<name>-status-bar.png`)."""
        saved = []
        if status_bar:
            width = self.state()["window"][0]
            strip = STATUS_BAR_STRIP
            saved.append(
                self.session.save_frame(
                    self._keep(frame),
                    self.shots / f"{name}-status-bar.png",
                    crop=(width // 2, self.screen_height - strip, width - width // 2, strip),
                    zoom=2,
                )
            )
        saved.insert(0, self.session.save_frame(frame, self.shots / f"{name}.png"))
        return saved

    def _keep(self, frame: str) -> str:
        """A second copy of a `copy_frame` copy (each `save_frame` removes the one it is given)."""
        other = self.session.copy_frame()
        shutil.copyfile(self.host_path(frame), self.host_path(other))
        return other

    # -- processes and files in the chroot ---------------------------------------------------------------

    def pass_children(self) -> list[dict]:
        """Running second Blenders of this session's pass render (`pass_child.py` on their command line, the
        session's folder in their environment), read from the host's /proc (the chroot's /proc is the same;
        other tests on this machine may run their own): pid, state, command line."""
        mine = f"STYLEPASS_UI_DIR={self.session.inner_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if not any(arg.endswith(b"pass_child.py") for arg in argv):
                    continue
                environment = (entry / "environ").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:  # ended while read
                continue
            if mine in environment:
                state = stat.rsplit(")", 1)[1].split()[0]  # R, S, Z (a zombie: ended, not reaped)
                found.append(
                    {
                        "pid": int(entry.name),
                        "state": state,
                        "argv": [a.decode(errors="replace") for a in argv],
                    }
                )
        return found

    def files(self, inner_dir: str) -> dict[str, list]:
        """Every file below a folder inside the chroot: {path relative to it: [size, mtime]}."""
        root = self.host_path(inner_dir)
        return {
            str(path.relative_to(root)): [path.stat().st_size, path.stat().st_mtime]
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    def glob(self, inner_dir: str, pattern: str) -> list[str]:
        """Entries of a folder inside the chroot that match `pattern`, as paths inside the chroot."""
        root = self.host_path(inner_dir)
        return sorted(f"{inner_dir.rstrip('/')}/{path.name}" for path in root.glob(pattern))


def _brief(state: dict) -> dict:
    """The state without its long lists, for error messages."""
    keep = (
        "t", "scene_ready", "errors", "hooks", "modal_operators", "modal_runs", "last_operator", "status",
        "progress",
    )  # fmt: skip
    brief = {key: state.get(key) for key in keep}
    brief["events"] = state.get("events", [])[-6:]
    brief["engine_runs"] = state.get("engine_runs", [])[-3:]
    brief["prepares"] = state.get("prepares", [])[-3:]
    brief["stylised"] = [entry["path"] for entry in state.get("stylised", [])]
    return brief
