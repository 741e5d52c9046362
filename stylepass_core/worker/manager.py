# SPDX-License-Identifier: GPL-3.0-or-later
"""Start, watch, restart and stop a worker process on this machine, leaving no orphans.

    core_dir = stage_core(private_folder)                          # in Blender: <user folder>/worker-code
    worker = LocalWorker(python_executable, core_dir=core_dir, model_dirs=[...], log_path=log_file)
    result = worker.run("NEURAL_STYLE", request, progress, abort)   # starts it on first use
    worker.stop()                                                  # also registered with atexit

Each start uses a free loopback port and a fresh random token, handed over in the child's environment
(never on the command line). The worker dies with this process in three independent ways (see
`lifeline`): the Linux parent-death signal, end-of-file on a stdin pipe only this process holds, and a
parent-pid watch. A worker that crashed is reaped and replaced on the next call; one that stopped
answering is health-checked and replaced. One manager runs at most one process: a job that needs other
model folders restarts it with those (after the jobs running on it end), so two sets of models are never
loaded at once.

Nothing outlives `stop()` or a failed start: the worker's whole process group is killed (also what it
started), and the manager's threads (`stylepass-worker-spawner`, `stylepass-worker-ready`) end and are
joined.

The worker imports `stylepass_core` from `core_dir`. In Blender the core lives in the extension's
site-packages, beside wheels built for Blender's own Python (onnxruntime, other extensions' numpy): that
folder on a worker's PYTHONPATH would shadow the worker venv's own packages, so `stage_core` copies just the
`stylepass_core` package into a private folder, once per version of its code, and that copy is what goes
on the worker's PYTHONPATH.

Only the standard library, requests and numpy are used (through `client`), so Blender can import this.
"""

import atexit
import hashlib
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine_api import Aborted, Progress, StyleRequest, StyleResult
from .client import WorkerClient, WorkerError, WorkerUnavailable, describe_exit
from .protocol import TOKEN_ENV

log = logging.getLogger("stylepass.worker.manager")

_CORE_PACKAGE = Path(__file__).resolve().parents[1]  # this copy of stylepass_core
_LOG_ROTATE_BYTES = 10 << 20
# Python variables inherited from Blender that would point the worker's interpreter at Blender's files.
_SCRUBBED_ENV = (
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONEXECUTABLE",
    "__PYVENV_LAUNCHER__",
    TOKEN_ENV,
)


class WorkerStartError(WorkerUnavailable):
    """The worker process could not be started; the message quotes the end of its log."""


def _core_files(package: Path) -> list[Path]:
    """The package's files, sorted, without `__pycache__` folders and `*.pyc`."""
    files = (
        path
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.relative_to(package).parts and path.suffix != ".pyc"
    )
    return sorted(files, key=lambda path: path.relative_to(package).as_posix())


def stage_core(dest: str | os.PathLike[str], package: str | os.PathLike[str] = _CORE_PACKAGE) -> Path:
    """Copy the `stylepass_core` package into `<dest>/<content hash>/stylepass_core`, once.

    The copy is content-addressed (a hash of every file's path and bytes), so a new version of the code
    gets a folder of its own and a worker still running the old one is not pulled from under it. It is made
    in a temporary folder inside `dest` and renamed into place, so no worker ever sees half a copy, even
    with two Blender sessions staging at once. `__pycache__` and `*.pyc` are left behind.

    Args:
        dest: A folder only this user writes to (Blender's per-user extension folder): whatever lies under
            it is run by the worker.
        package: The package folder to copy; default: the `stylepass_core` this module belongs to.

    Returns:
        The folder to put on the worker's PYTHONPATH: it holds `stylepass_core` and nothing else.
    """
    package = Path(package)
    files = _core_files(package)
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(package).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(relative), relative, len(data)) + data)
    staged = Path(dest) / digest.hexdigest()[:16]
    if (staged / "stylepass_core" / "__init__.py").is_file():
        return staged
    staged.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".staging-", dir=staged.parent))
    try:
        shutil.copytree(
            package, partial / "stylepass_core", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        try:
            os.rename(partial, staged)
        except OSError:
            if not (staged / "stylepass_core" / "__init__.py").is_file():
                raise  # not another process that got there first
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return staged


def _default_core_dir() -> Path:
    """The folder holding this `stylepass_core` when it is a source checkout (not inside a site-packages)."""
    parent = _CORE_PACKAGE.parent
    if parent.name in ("site-packages", "dist-packages"):
        raise ValueError(
            f"stylepass_core is installed in {parent}, which must not go on a worker's PYTHONPATH (its other "
            "packages would shadow the worker's own): pass core_dir=stage_core(<a folder of this user's>)"
        )
    return parent


class LocalWorker:
    """One worker process on this machine, started on demand.

    Args:
        python_executable: The interpreter with the engines' dependencies (a venv's python, or Blender's).
        pythonpath: More folders to put on the worker's PYTHONPATH, after `core_dir`.
        core_dir: The folder holding the `stylepass_core` package the worker runs: first on its PYTHONPATH
            and its working folder. In Blender, a copy made by `stage_core`. None: the folder holding this
            `stylepass_core` when that is a source checkout (a ValueError when it is a site-packages).
        env: Extra environment variables for the worker (e.g. `CUDA_VISIBLE_DEVICES`, `HF_HOME`).
        model_dirs: Folders model references may point into (a job may ask for others: see `run`).
        log_path: The worker's stderr (appended to, rotated at 10 MB); None uses the temp folder.
        engine_modules: Modules the worker imports to register extra engines.
        extra_args: More command-line arguments for the worker (e.g. `["--max-upload-mb", "2048"]`).
        startup_timeout: Seconds the worker has to start listening (imports included).
        request_timeout: Seconds the client waits for any single answer.
        stop_timeout: Seconds `stop` waits at each step (shutdown request, terminate, kill).
        precision: The client's wire precision: None (exact on loopback), `"exact"` or `"auto"`.
    """

    def __init__(
        self,
        python_executable: str | os.PathLike[str],
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        model_dirs: Sequence[str | os.PathLike[str]] = (),
        log_path: str | os.PathLike[str] | None = None,
        *,
        core_dir: str | os.PathLike[str] | None = None,
        engine_modules: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
        request_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        precision: str | None = None,
    ) -> None:
        if not str(python_executable):
            raise ValueError("python_executable must name an interpreter")
        for name, value in (
            ("startup_timeout", startup_timeout),
            ("request_timeout", request_timeout),
            ("stop_timeout", stop_timeout),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        self.python_executable = str(python_executable)
        self.core_dir = Path(core_dir) if core_dir is not None else _default_core_dir()
        if not (self.core_dir / "stylepass_core" / "__init__.py").is_file():
            raise ValueError(f"core_dir must hold the stylepass_core package, got {str(self.core_dir)!r}")
        paths = [str(self.core_dir)]
        paths += [str(Path(p)) for p in pythonpath if str(Path(p)) not in paths]
        self.pythonpath = tuple(paths)
        """The worker's PYTHONPATH: `core_dir` first."""
        self.env = dict(env or {})
        self.model_dirs = tuple(str(Path(d)) for d in model_dirs)
        if log_path is None:
            log_path = Path(tempfile.gettempdir()) / f"stylepass-worker-{os.getpid()}.log"
        self.log_path = Path(log_path)
        self.engine_modules = tuple(engine_modules)
        self.extra_args = tuple(extra_args)
        self.startup_timeout = float(startup_timeout)
        self.request_timeout = float(request_timeout)
        self.stop_timeout = float(stop_timeout)
        self.precision = precision
        self.last_exit_code: int | None = None
        """Exit code of the previous worker process, once one has ended."""
        self.starts = 0
        """How many worker processes this manager has started."""
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)  # notified when a job running through `run` ends
        self._running_jobs = 0
        self._proc: subprocess.Popen | None = None
        self._ready_reader: _ReadyReader | None = None
        self._client: WorkerClient | None = None
        self._spawner = _SpawnThread()
        self._atexit_registered = False

    # -- public ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running worker's pid, or None."""
        proc = self._proc
        return proc.pid if proc is not None and _exit_code(proc) is None else None

    @property
    def url(self) -> str | None:
        """The running worker's base URL, or None."""
        return self._client.base_url if self._client is not None and self.pid is not None else None

    @property
    def state(self) -> str:
        """For the UI: `"running"`, `"not started"`, or `"stopped (exit code -9, killed by SIGKILL)"`."""
        if self.pid is not None:
            return "running"
        proc = self._proc
        code = _exit_code(proc) if proc is not None else None
        code = code if code is not None else self.last_exit_code
        return "not started" if code is None else f"stopped ({describe_exit(code)})"

    def ensure_running(
        self,
        model_dirs: Sequence[str | os.PathLike[str]] | None = None,
        abort: threading.Event | None = None,
    ) -> WorkerClient:
        """The client of a live worker: starts one if none runs, replaces one that died or stopped answering.

        Args:
            model_dirs: The model folders the worker must have; None: the current ones. When they differ
                from the running worker's, it is stopped (once the jobs running on it through `run` have
                ended) and started again with these, so two sets of models are never loaded at once.
            abort: Ends the wait for other jobs (raises `Aborted`).

        Raises:
            WorkerStartError: the worker could not start; the message quotes its log.
            Aborted: `abort` was set while waiting for other jobs to end.
        """
        with self._lock:
            self._use_model_dirs(model_dirs, abort)
            proc, client = self._proc, self._client
            if proc is not None and client is not None:
                code = _exit_code(proc)
                if code is None and not client.unreachable:
                    return client
                if code is None:
                    try:  # it failed a request: is it wedged or was that a blip?
                        client.health()  # HEALTH_TIMEOUT, at most the request timeout
                        return client
                    except WorkerError as error:
                        log.warning("worker %d stopped answering (%s); replacing it", proc.pid, error)
                        self._end_process(graceful=False)
                else:
                    log.warning(
                        "worker %d had stopped (%s); starting a new one", proc.pid, describe_exit(code)
                    )
                    self._end_process(graceful=False)
            self._start()
            assert self._client is not None
            return self._client

    def client(self) -> WorkerClient:
        """Same as `ensure_running()`."""
        return self.ensure_running()

    def run(
        self,
        engine_id: str,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
        timeout: float | None = None,
        *,
        model_dirs: Sequence[str | os.PathLike[str]] | None = None,
    ) -> StyleResult:
        """Run a job on the worker (started if needed); see `WorkerClient.run`.

        Args:
            model_dirs: The model folders this job needs; None: the manager's. Other folders than the
                running worker's restart it with these once the jobs running on it have ended.
        """
        with self._lock:
            client = self.ensure_running(model_dirs, abort)
            self._running_jobs += 1
        try:
            return client.run(engine_id, request, progress, abort, timeout=timeout)
        finally:
            with self._lock:
                self._running_jobs -= 1
                self._idle.notify_all()

    def release(self) -> dict[str, Any] | None:
        """Free the worker's models if it runs (the process stays up); None when no worker runs."""
        with self._lock:
            if self.pid is None or self._client is None:
                return None
            client = self._client
        return client.release()

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the worker: ask it to shut down, close its stdin, then terminate, then kill (its whole
        process group). The manager's threads end too, also after a start that failed.

        Returns:
            Its exit code, or None when no worker was running.
        """
        with self._lock:
            code = self._end_process(graceful=True, timeout=timeout)
            self._spawner.close(self.stop_timeout if timeout is None else timeout)
            if self._atexit_registered:
                atexit.unregister(self._stop_at_exit)
                self._atexit_registered = False
            return code

    def __enter__(self) -> "LocalWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _use_model_dirs(
        self, model_dirs: Sequence[str | os.PathLike[str]] | None, abort: threading.Event | None
    ) -> None:
        """Make `model_dirs` the folders of the next process, ending the current one when they differ.
        Caller holds the lock."""
        if model_dirs is None:
            return
        wanted = tuple(str(Path(d)) for d in model_dirs)
        if wanted == self.model_dirs:
            return
        # Jobs on the current worker need its folders: let them end first (the lock is released meanwhile).
        while self._running_jobs and self._proc is not None and wanted != self.model_dirs:
            if abort is not None and abort.is_set():
                raise Aborted("stylisation aborted")
            self._idle.wait(0.1)
        if wanted == self.model_dirs:  # another job switched to these folders while this one waited
            return
        if self._proc is not None:
            log.info("model folders changed to %s; restarting the worker with them", list(wanted))
            self._end_process(graceful=True)
        self.model_dirs = wanted

    # -- starting -------------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        command = [
            self.python_executable,
            "-m",
            "stylepass_core.worker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        command += ["--parent-pid", str(os.getpid()), "--exit-on-stdin-eof"]
        if sys.platform.startswith("linux"):
            command.append("--die-with-parent")
        for folder in self.model_dirs:
            command += ["--model-dir", folder]
        for module in self.engine_modules:
            command += ["--engine-module", module]
        return command + list(self.extra_args)

    def _child_env(self, token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(self.env)
        extra_path = self.env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *filter(None, extra_path.split(os.pathsep))])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the extension folder may be read-only
        env[TOKEN_ENV] = token
        return env

    def _start(self) -> None:
        # 1. Launch
        token = secrets.token_urlsafe(32)
        command = self._command()
        log_file = self._open_log(command)
        popen_args: dict[str, Any] = {
            "stdin": subprocess.PIPE,  # never written: its end-of-file tells the worker we are gone
            "stdout": subprocess.PIPE,  # one line: where it listens
            "stderr": log_file,
            "env": self._child_env(token),
            # `-m` puts the working folder on sys.path: make it our own code, not wherever Blender was started.
            "cwd": str(self.core_dir),
            "close_fds": True,
        }
        if os.name == "nt":
            popen_args["creationflags"] = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            popen_args["start_new_session"] = True  # Ctrl+C in Blender's terminal is not meant for the worker
        try:
            proc = self._spawner.call(lambda: subprocess.Popen(command, **popen_args))
        except OSError as exc:
            self._spawner.close(self.stop_timeout)  # nothing was started: no thread may stay behind
            raise WorkerStartError(
                f"the Stylepass worker could not be started with {self.python_executable!r}: {exc}; "
                "check the Python interpreter in the add-on preferences"
            ) from None
        finally:
            log_file.close()
        self.starts += 1
        self._proc = proc

        # 2. Wait for the "listening" line
        self._ready_reader = _ReadyReader(proc)
        try:
            ready = self._ready_reader.wait(self.startup_timeout)
        except WorkerStartError as error:
            self._end_process(graceful=False)
            self._spawner.close(self.stop_timeout)
            raise WorkerStartError(f"{error}{self._log_tail()}") from None

        # 3. Connect and check health
        client = WorkerClient(
            f"http://127.0.0.1:{int(ready['port'])}",
            token,
            self.request_timeout,
            precision=self.precision,
            exit_status=_exit_status_of(proc),
            restart_hint="it will be restarted on the next job",
        )
        try:
            client.health(timeout=self.request_timeout)  # our own fresh process: slow is not dead
        except WorkerError as error:
            client.close()
            self._end_process(graceful=False)
            self._spawner.close(self.stop_timeout)
            raise WorkerStartError(
                f"the Stylepass worker started but failed its health check: {error}{self._log_tail()}"
            ) from None
        self._client = client
        if not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        log.info("worker %d listening on %s", proc.pid, client.base_url)

    def _open_log(self, command: list[str]) -> Any:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        except OSError:
            pass
        log_file = open(self.log_path, "ab")  # handed to the child as stderr, closed after Popen
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"\n=== {stamp} starting Stylepass worker: {' '.join(command)}\n".encode())
        log_file.flush()
        return log_file

    def _log_tail(self, lines: int = 12) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return f" (no log at {self.log_path})"
        tail = text.rsplit("\n=== ", 1)[-1].strip().splitlines()[-lines:]
        return f"; the end of its log {self.log_path}:\n" + "\n".join(tail)

    # -- stopping -------------------------------------------------------------------------------------

    def _end_process(self, graceful: bool, timeout: float | None = None) -> int | None:
        """Stop the current process (if still running), reap it, and forget it. Caller holds the lock."""
        proc, client, reader = self._proc, self._client, self._ready_reader
        self._proc = self._client = self._ready_reader = None
        if proc is None:
            return None
        wait = self.stop_timeout if timeout is None else timeout
        # 1. Ask politely (the running job is aborted, the process exits 0)
        if graceful and client is not None and _exit_code(proc) is None:
            try:
                client.shutdown()
            except WorkerError:
                pass
            _wait_exit(proc, wait)
        # 2. End-of-file on stdin: the worker exits even if its HTTP side is stuck
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if graceful and _exit_code(proc) is None:
            _wait_exit(proc, wait)
        # 3. Terminate (a crashed or wedged worker holds nothing worth a grace period)
        if graceful and _exit_code(proc) is None:
            _terminate(proc)
            _wait_exit(proc, wait)
        # 4. Kill its process group: the worker if still running, and whatever it started and left behind
        # (which may hold the output pipe the ready reader waits on). Only then is it reaped: until then its
        # pid, and with it the group id, cannot be given to another process.
        _kill_group(proc)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            log.error("worker %d did not die after SIGKILL within %.0f s", proc.pid, wait)
        if reader is not None:
            reader.join(wait)
        if proc.stdout is not None and (reader is None or not reader.alive):
            proc.stdout.close()  # closing under a reader still blocked in a read would wait for that read
        if client is not None:
            client.close()
        self.last_exit_code = proc.returncode
        return proc.returncode

    def _stop_at_exit(self) -> None:
        self._atexit_registered = False  # running inside atexit: nothing to unregister
        try:
            self.stop(timeout=2.0)
        except Exception as exc:  # at interpreter exit nothing can be reported any more; just log
            log.warning("stopping the worker at exit failed: %s", exc)


class _SpawnThread:
    """Runs `Popen` on one long-lived thread.

    Linux delivers PR_SET_PDEATHSIG when the *thread* that forked the child ends, not the process. Blender
    may start the worker from a job thread that ends a second later; forking from this thread, which lives
    until `stop()`, ties the worker's life to this process instead.
    """

    def __init__(self) -> None:
        self._calls: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def call(self, function: Callable[[], Any]) -> Any:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="stylepass-worker-spawner", daemon=True)
            self._thread.start()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._calls.put((function, box, done))
        if not done.wait(60.0):
            raise OSError("starting the worker process took over 60 s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def close(self, timeout: float = 5.0) -> None:
        """End the thread (it is started again by the next `call`) and wait up to `timeout` s for it."""
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._calls.put(None)
            thread.join(timeout)
            if thread.is_alive():
                log.error("the worker spawner thread did not end within %.0f s", timeout)

    def _serve(self) -> None:
        while True:  # one item per start; ends on close()
            item = self._calls.get()
            if item is None:
                return
            function, box, done = item
            try:
                box["value"] = function()
            except BaseException as exc:  # handed back to the caller's thread
                box["error"] = exc
            finally:
                done.set()


class _ReadyReader:
    """Reads the worker's `{"event": "listening", ...}` line on a thread of its own (`stylepass-worker-ready`).

    The thread ends at that line, at end-of-file, or after 200 lines (stray prints from imports are skipped);
    `LocalWorker._end_process` joins it once the process group is dead, so nothing is left reading.
    """

    _EXITED_GRACE = 1.0  # seconds the output may stay open after the process exited (held by a child)

    def __init__(self, proc: subprocess.Popen) -> None:
        self._proc = proc
        self._lines: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="stylepass-worker-ready", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the worker's output is still open after it ended (held by another process)")

    def wait(self, timeout: float) -> dict[str, Any]:
        """The ready line; raises WorkerStartError when the process exits or `timeout` s pass first."""
        import json

        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                # A child of the worker may hold its output open after the worker itself exited.
                if _exit_code(self._proc) is None:
                    continue
                exited_at = exited_at if exited_at is not None else time.monotonic()
                if time.monotonic() - exited_at < self._EXITED_GRACE:
                    continue
                line = b""
            if not line:
                code = _wait_exit(self._proc, 2.0)
                how = describe_exit(code) if code is not None else "closed its output"
                raise WorkerStartError(f"the Stylepass worker exited while starting ({how})")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(message, dict)
                and message.get("event") == "listening"
                and isinstance(message.get("port"), int)
            ):
                return message
        raise WorkerStartError(f"the Stylepass worker did not start listening within {timeout:.0f} s")

    def _read(self) -> None:
        try:
            for _ in range(200):
                line = self._proc.stdout.readline(1 << 16)
                self._lines.put(line)
                if not line or b'"listening"' in line:
                    return
        except (OSError, ValueError):  # the pipe was closed under it
            self._lines.put(b"")


# On Linux a process's exit is seen without reaping it (waitid WNOWAIT): until `_end_process` reaps the
# worker, its pid stays reserved, so killing its process group can never hit a group that reused the number.
_PEEK_EXIT = sys.platform.startswith("linux") and hasattr(os, "waitid")


def _exit_code(proc: subprocess.Popen) -> int | None:
    """`proc`'s exit code once it has ended (negative: killed by that signal), else None. Never reaps it on
    Linux (see `_PEEK_EXIT`); elsewhere this is `proc.poll()`."""
    if proc.returncode is not None or not _PEEK_EXIT:
        return proc.poll()
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere
        return proc.poll()
    if info is None:
        return None
    return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    """Wait up to `timeout` s for `proc` to end (without reaping it on Linux); its exit code, or None."""
    deadline = time.monotonic() + timeout
    while True:
        code = _exit_code(proc)
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.02)


def _terminate(proc: subprocess.Popen) -> None:
    """Ask the worker alone to end (SIGTERM on POSIX)."""
    if os.name == "nt":
        proc.terminate()
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)  # not Popen.terminate: it reaps a worker that has just ended
    except ProcessLookupError:
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and, on POSIX, its process group (it leads one: `start_new_session`), so what it
    started dies with it. Only while the worker is not yet reaped: a reaped pid may name another group."""
    if os.name == "nt" or proc.returncode is not None:
        if proc.poll() is None:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_status_of(proc: subprocess.Popen) -> Callable[[], int | None]:
    """For the client's error messages: the exit code once `proc` has died (given a second to be reaped)."""

    def status() -> int | None:
        return _wait_exit(proc, 1.0)

    return status
