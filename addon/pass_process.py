# SPDX-License-Identifier: GPL-3.0-or-later
"""The pass render in a separate Blender, so the artist's Blender never waits on Cycles.

A Cycles render inside Blender's own process holds the main thread (the UI froze ~10 s at 480x270). Instead,
on the main thread, `PassProcess.start` writes the scene and everything it uses to a temporary .blend (a few
milliseconds for a blocked-out scene) and starts a second Blender on it (`pass_child.py`, at a lower
priority). After that no bpy is needed: `render(job, progress, abort)` may wait on any thread, reports
Cycles' samples as progress, and kills the process at once when `abort` is set (ESC). The second Blender
renders with the same code (`pass_render`) as an in-process render, so the passes are the same.

The scene the copy is made from is never touched: nothing is overridden or restored in the artist's file.
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import bpy

import stylepass_core
from stylepass_core.engine_api import Aborted, NullProgress, Progress
from stylepass_core.errors import StylepassError
from stylepass_core.jobs import SampleClock

from .pass_render import RenderJob

CHILD_SCRIPT = Path(__file__).with_name("pass_child.py")
MARKER = (
    "STYLEPASS-PASS "  # pass_child.MARKER (that module runs Blender when imported, so it is not imported)
)
POLL_SECONDS = 0.02  # how often a waiting thread looks at `abort`
QUIT_SECONDS = 5.0  # a second Blender asked to quit gets this long before it is killed
OUTPUT_LINES_KEPT = 40  # the second Blender's last lines of output, quoted when it fails
PROGRESS_STEPS = 1000
ESTIMATE_SECONDS = 0.25  # between Cycles' rare sample reports, how often the bar moves on by estimate


def _show_samples(progress: Progress, samples: float, total: int) -> None:
    fraction = 0.2 + 0.7 * min(1.0, samples / max(1, total))
    progress.update(
        int(fraction * PROGRESS_STEPS), PROGRESS_STEPS, f"rendering sample {int(samples)} of {total}"
    )


class PassProcessError(StylepassError):
    """The second Blender failed or ended; the message quotes what it said."""


def child_command(blend: Path, gpu_type: str = "") -> list[str]:
    """The command that starts the second Blender: Blender's own executable, or where Blender is the `bpy`
    module (`binary_path` empty) this Python, which imports it."""
    extra = [gpu_type] if gpu_type else []
    binary = bpy.app.binary_path
    if binary and not os.path.basename(binary).lower().startswith("python"):
        # Python drivers evaluate there as they do here: the artist's choice to auto-run scripts carries over.
        trusted = bpy.context.preferences.filepaths.use_scripts_auto_execute
        return [
            binary,
            "--background",
            "--factory-startup",
            "--enable-autoexec" if trusted else "--disable-autoexec",
            "-noaudio",
            "--python-exit-code",
            "1",
            "--python",
            str(CHILD_SCRIPT),
            "--",
            str(blend),
            *extra,
        ]
    return [sys.executable, str(CHILD_SCRIPT), str(blend), *extra]


def write_scene_copy(scene: bpy.types.Scene, folder: Path) -> Path:
    """The scene and every datablock it uses, as a .blend in `folder` (main thread). Paths become absolute so
    textures and libraries resolve from the temporary folder; packed data stays packed."""
    for obj in scene.objects:
        if obj.mode == "EDIT":
            # Edit-mode changes live outside the mesh until flushed, as Blender flushes them for a render.
            obj.update_from_editmode()
    path = folder / "scene.blend"
    bpy.data.libraries.write(str(path), {scene}, path_remap="ABSOLUTE", fake_user=False, compress=False)
    return path


def _gpu_type(device: str) -> str:
    if device != "GPU":
        return ""
    cycles = bpy.context.preferences.addons.get("cycles")
    return cycles.preferences.compute_device_type if cycles is not None else ""


class PassProcess:
    """A second Blender with a copy of one scene, rendering `RenderJob`s one at a time."""

    def __init__(self, process: subprocess.Popen, folder: Path) -> None:
        self._process = process
        self._folder = folder
        self._messages: queue.Queue = queue.Queue()
        self._output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._lock = threading.Lock()
        self._submitted = 0  # jobs handed over
        self._answered = 0  # jobs answered (done or failed)
        # Several threads may wait (an animation's frames planned ahead); each reads the answers in its turn.
        self._turn = threading.Condition()
        self._closing: threading.Thread | None = None
        self._reader = threading.Thread(target=self._read, name="stylepass-pass-output", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, scene: bpy.types.Scene, device: str = "CPU") -> "PassProcess":
        """Copy `scene` and start the second Blender on it (main thread; returns without waiting for it).

        Raises:
            StylepassError: the copy could not be written or Blender could not be started.
        """
        folder = Path(tempfile.mkdtemp(prefix="stylepass-scene-"))
        try:
            blend = write_scene_copy(scene, folder)
            flags = getattr(
                subprocess, "BELOW_NORMAL_PRIORITY_CLASS", 0
            )  # Windows; elsewhere the child nices
            # Where `stylepass_core` is installed, for the jobs that need it (the colour view's inverse).
            env = dict(os.environ, STYLEPASS_CORE_SITE=str(Path(stylepass_core.__file__).parents[1]))
            process = subprocess.Popen(
                child_command(blend, _gpu_type(device)),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                creationflags=flags,
            )
        except (OSError, RuntimeError) as error:
            shutil.rmtree(folder, ignore_errors=True)
            raise StylepassError(f"Could not start Blender for the pass render: {error}") from error
        return cls(process, folder)

    def _read(self) -> None:
        for line in self._process.stdout:
            if line.startswith(MARKER):
                try:
                    self._messages.put(json.loads(line[len(MARKER) :]))
                    continue
                except ValueError:
                    pass
            self._output.append(line.rstrip())
        self._messages.put(None)  # the process ended

    @property
    def idle(self) -> bool:
        """Every job handed over has been answered."""
        return self._answered == self._submitted

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def render(
        self, job: RenderJob, progress: Progress | None = None, abort: threading.Event | None = None
    ) -> dict:
        """Render `job` and wait for it (any thread); see `pass_render.render` for what it returns.

        Progress goes to `progress` as fractions of `PROGRESS_STEPS`. When `abort` is set the process is
        killed (the scene copy and its temporary files with it) and `Aborted` is raised.

        Raises:
            Aborted, PassProcessError (the message says what the second Blender reported).
        """
        return self.wait(self.submit(job), progress, abort)

    def submit(self, job: RenderJob) -> int:
        """Queue `job` without waiting (the second Blender renders jobs in order); returns its ticket for `wait`.

        Raises:
            PassProcessError: the process does not take jobs any more.
        """
        return self._send_job(job.to_plain())

    def _send_job(self, payload: dict) -> int:
        with self._lock:
            try:
                self._process.stdin.write(json.dumps(payload) + "\n")
                self._process.stdin.flush()
            except (OSError, ValueError) as error:
                raise self._failure(f"it did not take the job ({error})") from error
            self._submitted += 1
            return self._submitted

    def submit_inverse(self, target) -> int:
        """Queue the build of a colour view's inverse (`display_colour.TargetPlan`) into its cache folder: the
        probe runs Blender's view transform for 1-4 s, which the artist's Blender would wait on."""
        payload = {"inverse": {"settings": target.settings, "key": target.key, "folder": str(target.folder)}}
        return self._send_job(payload)

    def wait(
        self, ticket: int, progress: Progress | None = None, abort: threading.Event | None = None
    ) -> dict:
        """The result of the job `submit` gave `ticket` (any thread). The second Blender answers in ticket order:
        a thread waiting for a later ticket waits its turn while others read the answers before it.

        Raises:
            Aborted (the process is killed), PassProcessError.
        """
        progress = progress or NullProgress()
        abort = abort or threading.Event()
        with self._turn:
            while ticket != self._answered + 1:
                if ticket <= self._answered or ticket > self._submitted:
                    raise ValueError(f"job {ticket} is not waiting (answered {self._answered})")
                if abort.is_set():
                    self.kill()
                    raise Aborted("pass render cancelled")
                if self._process.poll() is not None:
                    raise self._failure("it ended unexpectedly")
                self._turn.wait(POLL_SECONDS)
        try:
            return self._read_answer(progress, abort)
        finally:
            with self._turn:
                self._turn.notify_all()

    def _read_answer(self, progress: Progress, abort: threading.Event) -> dict:
        clock = SampleClock()
        shown = time.monotonic()
        while True:
            if abort.is_set():
                self.kill()
                raise Aborted("pass render cancelled")
            try:
                message = self._messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                now = time.monotonic()
                samples = clock.estimate(now)
                if samples is not None and now - shown >= ESTIMATE_SECONDS:
                    shown = now
                    _show_samples(progress, samples, clock.total)
                continue
            if message is None:
                raise self._failure("it ended unexpectedly")
            if "ready" in message:
                continue  # the scene copy is loaded; the job's own messages follow
            if "rendering" in message:
                clock.started(time.monotonic())
                progress.update(int(0.1 * PROGRESS_STEPS), PROGRESS_STEPS, "rendering passes")
            elif "samples" in message:
                done, total = message["samples"]
                shown = time.monotonic()
                clock.reported(done, total, shown)
                _show_samples(progress, done, total)
            elif "done" in message or "error" in message:
                self._answered += 1
                if "done" in message:
                    return message["done"]
                if message.get("cancelled"):
                    raise Aborted("pass render cancelled in Blender")
                raise PassProcessError(message["error"])

    def _failure(self, what: str) -> PassProcessError:
        self.kill()
        code = self._process.poll()
        said = "\n".join(self._output) or "(nothing)"
        return PassProcessError(
            f"The Blender rendering the passes failed: {what} (exit code {code}). Its last output:\n{said}"
        )

    def kill(self) -> None:
        """Stop the process now and remove the scene copy."""
        if self.alive:
            self._process.kill()
        self._process.wait()
        self._cleanup()

    def close(self, wait: bool = False) -> None:
        """Ask the process to end after its current job and remove the scene copy once it has; never blocks
        unless `wait` (a process that has not ended after `QUIT_SECONDS` is killed)."""
        if self._closing is None:
            try:
                self._process.stdin.write("\n")
                self._process.stdin.flush()
            except (OSError, ValueError):
                pass  # it has ended already
            self._closing = threading.Thread(target=self._finish, name="stylepass-pass-quit", daemon=True)
            self._closing.start()
        if wait:
            self._closing.join()

    def _finish(self) -> None:
        try:
            self._process.wait(QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self._process.stdin.close()  # stdout is the reader thread's: it ends there at the end of output
        except (OSError, ValueError):
            pass
        shutil.rmtree(self._folder, ignore_errors=True)
