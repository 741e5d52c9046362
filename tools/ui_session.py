# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a real Blender UI inside a Debian chroot (`tools/ui_chroot.sh`) under Xvfb and drive it as a person does.

Standard library only; runs on the host as root. Typical use::

    with UISession(chroot) as ui:
        print(ui.install_extension(zip_path).output)   # `blender --command extension install-file`
        ui.start(script=Path("probe.py"))               # blender --factory-startup --python probe.py
        ui.wait_ready()
        ui.screenshot(Path("/tmp/shot.png"))
        ui.xdotool("mousemove", "960", "500")
        ui.key("n")                                     # F-keys too: ui.key("F3")
    # leaving the block quits Blender, stops Xvfb and unmounts /proc, /sys and /dev, also on an error or Ctrl+C

Everything Blender writes goes to a throwaway HOME in the chroot's /tmp, so no real config is touched. The
session also passes Blender a small boot script (before the caller's) that writes `ready` once the event loop
runs and quits Blender when the host asks, so `stop()` ends it the way a person would rather than by a signal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCREEN = (1920, 1080)
EXTENSION_REPO = "user_default"
# xdotool sends a function key named by its keysym (`key F3`) with Alt held here (Blender sees Alt+F3), because
# the X keymap also puts F1-F12 on an Alt level; a bare number is sent as that keycode, with no modifier.
FUNCTION_KEYCODES = {f"F{n}": str(66 + n) for n in range(1, 11)} | {"F11": "95", "F12": "96"}

# Runs inside Blender before the caller's script. Timers fire only once the UI's event loop runs, so the
# first call proves the window is up; later calls watch for the host's quit request.
BOOT_SCRIPT = """\
import os, sys, json, bpy

_dir = os.environ["STYLEPASS_UI_DIR"]


def _write(name, text):
    tmp = os.path.join(_dir, name + ".tmp")
    with open(tmp, "w") as stream:
        stream.write(text)
    os.replace(tmp, os.path.join(_dir, name))


def _tick():
    if not os.path.exists(os.path.join(_dir, "ready")):
        _write("ready", json.dumps({
            "blender": bpy.app.version_string,
            "python": sys.version.split()[0],
            "addons": sorted(bpy.context.preferences.addons.keys()),
        }))
    if os.path.exists(os.path.join(_dir, "quit")):
        bpy.ops.wm.quit_blender()
        return None
    return 0.2


bpy.app.timers.register(_tick, first_interval=0.5, persistent=True)
"""


@dataclass
class Result:
    """A finished command inside the chroot: its exit code and its stdout and stderr together."""

    returncode: int
    output: str
    seconds: float


class UISessionError(RuntimeError):
    """The UI session could not do what was asked (Blender died, a wait timed out, a tool failed)."""


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first."""
    prefix = str(root).rstrip("/")
    found = []
    with open("/proc/mounts") as stream:
        for line in stream:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    """Unmount everything below root; a busy mount is detached lazily so the chroot never stays mounted."""
    for point in _mounts_under(root):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(root)
    if left:
        raise UISessionError(f"still mounted after unmounting: {left}")


def _free_display(chroot: Path, start: int = 99) -> int:
    """An X display number free on the host and in the chroot (X's abstract socket is shared by both)."""
    with open("/proc/net/unix") as stream:
        sockets = stream.read()
    for number in range(start, start + 100):
        taken = (
            f"/tmp/.X11-unix/X{number}" in sockets
            or Path(f"/tmp/.X{number}-lock").exists()
            or (chroot / f"tmp/.X{number}-lock").exists()
        )
        if not taken:
            return number
    raise UISessionError(f"no free X display in :{start}..:{start + 99}")


class UISession:
    """One Blender UI session in a chroot: mounts, throwaway HOME, Xvfb + Blender, xdotool and screenshots.

    Args:
        chroot: the folder `tools/ui_chroot.sh SUITE` printed.
        screen: Xvfb's screen size; Blender's window is opened to fill it.
    """

    def __init__(self, chroot: Path, screen: tuple[int, int] = SCREEN) -> None:
        self.chroot = Path(chroot).resolve()
        if not (self.chroot / ".complete").exists():
            raise UISessionError(f"{self.chroot} is not a complete chroot from tools/ui_chroot.sh")
        self.screen = screen
        self.display: int | None = None
        self.process: subprocess.Popen | None = None
        self._lock = None
        self._inner: str | None = None  # the session folder as seen inside the chroot, e.g. /tmp/ui-abc
        self._log = None
        self._shots = 0

    # -- paths -------------------------------------------------------------------------------------------

    @property
    def inner_dir(self) -> str:
        if self._inner is None:
            raise UISessionError("the session is not open: use `with UISession(...) as ui:`")
        return self._inner

    def host_path(self, inner: str) -> Path:
        """The host path of a path inside the chroot."""
        return self.chroot / inner.lstrip("/")

    @property
    def log_path(self) -> Path:
        """Blender's and Xvfb's stdout and stderr of the UI run."""
        return self.host_path(f"{self.inner_dir}/blender.log")

    def copy_in(self, source: Path, name: str | None = None) -> str:
        """Copy a host file into the session folder; returns its path inside the chroot."""
        inner = f"{self.inner_dir}/{name or Path(source).name}"
        shutil.copy2(source, self.host_path(inner))
        return inner

    # -- lifetime ----------------------------------------------------------------------------------------

    def __enter__(self) -> UISession:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Take the chroot's lock, mount /proc, /sys and /dev, and make the session folder and HOME."""
        self._lock = open(self.chroot / ".session.lock", "w")  # held for the session, closed in close()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        # Under the lock, anything still mounted was left by a session that was killed: start clean.
        unmount_all(self.chroot)
        self._mount(["-t", "proc", "proc"], "proc")
        # rbind brings /dev/pts and /dev/shm along; rslave keeps mounts made here from reaching the host.
        for name in ("sys", "dev"):
            self._mount(["--rbind", f"/{name}"], name)
            subprocess.run(["mount", "--make-rslave", str(self.chroot / name)], check=True)
        inner_tmp = Path(tempfile.mkdtemp(prefix="ui-", dir=self.chroot / "tmp"))
        inner_tmp.chmod(0o755)
        self._inner = f"/tmp/{inner_tmp.name}"
        for sub in ("home", "run", "tmp", "fb"):
            self.host_path(f"{self._inner}/{sub}").mkdir(mode=0o700)
        self.host_path(f"{self._inner}/boot.py").write_text(BOOT_SCRIPT)

    def _mount(self, args: list[str], name: str) -> None:
        target = self.chroot / name
        if not os.path.ismount(target):
            subprocess.run(["mount", *args, str(target)], check=True)

    def close(self) -> None:
        """Stop Blender and Xvfb, unmount, remove the session folder. Safe to call twice."""
        try:
            self.stop()
        finally:
            try:
                # Only the lock's holder owns the mounts: another session may be using this chroot.
                if self._lock is not None:
                    unmount_all(self.chroot)
            finally:
                if self._inner is not None:
                    shutil.rmtree(self.host_path(self._inner), ignore_errors=True)
                    self._inner = None
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None

    # -- commands inside the chroot ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of every command in the chroot: nothing from the host, a throwaway HOME."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": f"{self.inner_dir}/home",
            "XDG_RUNTIME_DIR": f"{self.inner_dir}/run",
            # Blender's temporary files (quit.blend, autosaves) stay in the session folder too.
            "TMPDIR": f"{self.inner_dir}/tmp",
            "LANG": "C.UTF-8",
            "STYLEPASS_UI_DIR": self.inner_dir,
            # xvfb-run writes the server's cookie here (`-f`); xdotool and import need it to connect.
            "XAUTHORITY": f"{self.inner_dir}/Xauthority",
        }
        if self.display is not None:
            env["DISPLAY"] = f":{self.display}"
        return env

    def _argv(self, argv: list[str], extra_env: dict[str, str] | None = None) -> list[str]:
        env = {**self.env(), **(extra_env or {})}
        return ["chroot", str(self.chroot), "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]

    def run(self, argv: list[str], timeout: float = 300, check: bool = False) -> Result:
        """Run a command inside the chroot with the session's environment."""
        start = time.monotonic()
        proc = subprocess.run(
            self._argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
        result = Result(proc.returncode, proc.stdout, time.monotonic() - start)
        if check and proc.returncode != 0:
            raise UISessionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}")
        return result

    def blender_version(self) -> str:
        """Debian's package version of the chroot's Blender, as recorded by ui_chroot.sh."""
        return (self.chroot / ".blender-version").read_text().strip()

    def install_extension(self, zip_path: Path, timeout: float = 600) -> Result:
        """Install and enable an extension zip offline, as an artist's "Install from Disk" does."""
        inner = self.copy_in(zip_path)
        return self.run(
            ["blender", "--command", "extension", "install-file", "-r", EXTENSION_REPO, "-e", inner],
            timeout=timeout,
        )

    # -- the UI ------------------------------------------------------------------------------------------

    def start(
        self,
        script: Path | None = None,
        blend: Path | None = None,
        args: list[str] | None = None,
        factory_startup: bool = False,
    ) -> None:
        """Start Xvfb and Blender's UI, its window filling the screen, in the background.

        The HOME is new, so Blender starts with factory settings plus what `install_extension` installed.
        `--factory-startup` would also skip the saved preferences and so leave installed extensions disabled.
        """
        if self.process is not None:
            raise UISessionError("Blender is already running in this session")
        self.display = _free_display(self.chroot)
        width, height = self.screen
        command = ["blender", "--window-geometry", "0", "0", str(width), str(height)]
        if factory_startup:
            command.append("--factory-startup")
        if blend is not None:
            command.append(self.copy_in(blend))
        command += ["--python", f"{self.inner_dir}/boot.py"]
        if script is not None:
            command += ["--python", self.copy_in(script)]
        command += args or []
        server = f"-screen 0 {width}x{height}x24 -fbdir {self.inner_dir}/fb -nolisten tcp"
        # xvfb-run sets DISPLAY itself; ours is for xdotool and import, which run beside it.
        xvfb = ["xvfb-run", "-n", str(self.display), "-f", f"{self.inner_dir}/Xauthority", "-s", server]
        argv = self._argv([*xvfb, *command])
        self._log = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_file(self, name: str, timeout: float = 120) -> Path:
        """Wait until the session folder holds `name` (written by a Blender-side script); fail if Blender dies."""
        path = self.host_path(f"{self.inner_dir}/{name}")
        deadline = time.monotonic() + timeout
        while not path.exists():
            if not self.running():
                code = None if self.process is None else self.process.returncode
                raise UISessionError(
                    f"Blender exited ({code}) before writing {name}; log:\n{self.tail_log()}"
                )
            if time.monotonic() > deadline:
                raise UISessionError(f"no {name} after {timeout:.0f} s; log:\n{self.tail_log()}")
            time.sleep(0.1)
        return path

    def wait_ready(self, timeout: float = 120) -> dict:
        """Wait until Blender's event loop runs; returns what the boot script saw (versions, enabled add-ons)."""
        return json.loads(self.wait_for_file("ready", timeout).read_text())

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, UISessionError):
            return "(no log)"

    def xdotool(self, *args: str) -> str:
        """Run xdotool against the session's display, e.g. `xdotool("key", "n")`."""
        if not self.running():
            raise UISessionError(f"Blender is not running; log:\n{self.tail_log()}")
        return self.run(["xdotool", *args], timeout=30, check=True).output

    def key(self, *combos: str) -> None:
        """Press keys as a person does, e.g. `key("n")`, `key("shift+a")`, `key("F3")` (see FUNCTION_KEYCODES)."""
        for combo in combos:
            parts = combo.split("+")
            parts[-1] = FUNCTION_KEYCODES.get(parts[-1], parts[-1])
            self.xdotool("key", "+".join(parts))

    def screenshot(
        self, out: Path, method: str = "fbdir", crop: tuple[int, int, int, int] | None = None, zoom: int = 1
    ) -> Path:
        """Save the whole screen (or `crop`: x, y, width, height from the top left, enlarged `zoom` times) as
        a PNG on the host.

        `fbdir` copies Xvfb's frame buffer file (Blender is not touched); `import` asks the X server through
        ImageMagick's `import -window root`, which freezes Blender 100-200 ms per shot.
        """
        if method == "fbdir":
            return self.save_frame(self.copy_frame(), out, crop=crop, zoom=zoom)
        if method != "import":
            raise ValueError(f"screenshot method must be 'fbdir' or 'import', not {method!r}")
        self._shots += 1
        inner_png = f"{self.inner_dir}/shot-{self._shots}.png"
        self.run(["import", "-window", "root", f"png:{inner_png}"], timeout=60, check=True)
        return self._convert(inner_png, inner_png, out, crop, zoom)

    def copy_frame(self) -> str:
        """Copy Xvfb's frame buffer as it is now (one file copy on the host: neither Blender nor the X server
        is involved, so it may be taken inside a measured window); returns the copy's path inside the chroot
        for `save_frame`."""
        self._shots += 1
        snapshot = f"{self.inner_dir}/shot-{self._shots}.xwd"
        shutil.copyfile(self.host_path(f"{self.inner_dir}/fb/Xvfb_screen0"), self.host_path(snapshot))
        return snapshot

    def save_frame(
        self, snapshot: str, out: Path, crop: tuple[int, int, int, int] | None = None, zoom: int = 1
    ) -> Path:
        """A `copy_frame` copy as a PNG on the host (ImageMagick inside the chroot; takes CPU, so outside a
        measured window), optionally cropped and enlarged; the copy is removed."""
        try:
            return self._convert(f"xwd:{snapshot}", snapshot.removesuffix(".xwd") + ".png", out, crop, zoom)
        finally:
            self.host_path(snapshot).unlink(missing_ok=True)

    def _convert(
        self, source: str, inner_png: str, out: Path, crop: tuple[int, int, int, int] | None, zoom: int
    ) -> Path:
        argv = ["convert", source]
        if crop is not None:
            x, y, width, height = crop
            argv += ["-crop", f"{width}x{height}+{x}+{y}", "+repage"]
        if zoom != 1:
            argv += ["-filter", "point", "-resize", f"{100 * zoom}%"]
        self.run([*argv, f"png:{inner_png}"], timeout=60, check=True)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.host_path(inner_png), out)
        return out

    def stop(self, timeout: float = 30) -> int | None:
        """Ask Blender to quit (through the boot script), then end the whole process group if it lingers."""
        if self.process is None:
            return None
        try:
            if self.running() and self._inner is not None:
                self.host_path(f"{self._inner}/quit").touch()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout)
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(wait)
            # Xvfb and Blender share the group of xvfb-run: make sure nothing of it is left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            self.process = None
            self.display = None
