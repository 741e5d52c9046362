# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI engine: the passes up to the artist's ComfyUI server, the picture back.

    StyleRequest -> upload beauty and control passes (once per content) -> workflow (built, or the artist's
    filled in) -> checked against /object_info -> /prompt -> websocket progress -> /history + /view -> image

It runs in Blender's own process on the frame's thread (the work happens on the server), and keeps one client
per server address so uploads are remembered between frames.
"""

import importlib.util
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ... import imageops
from ...engine_api import (
    Engine,
    NullProgress,
    Progress,
    StyleRequest,
    StyleResult,
    check_abort,
    register_engine,
)
from ..diffusion.controls import CONVENTIONS, control_image
from ..diffusion.engine import snap_size
from . import workflow
from .client import ComfyClient, ComfyUIError
from .settings import ComfyUISettings, parse_headers


@register_engine
class ComfyUIEngine(Engine):
    id = "COMFYUI"
    label = "ComfyUI"
    settings_type = ComfyUISettings

    def __init__(self) -> None:
        self._clients: dict[tuple[str, tuple], ComfyClient] = {}
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("requests") is None:
            return False, "the 'requests' package is missing from this Python"
        return True, ""

    def client(self, settings: ComfyUISettings) -> ComfyClient:
        """The client of the settings' server (one per address and headers, kept between frames)."""
        headers = parse_headers(settings.comfyui_headers)
        key = (settings.comfyui_server.strip().rstrip("/"), tuple(sorted(headers.items())))
        with self._lock:
            if key not in self._clients:
                self._clients[key] = ComfyClient(settings.comfyui_server, headers)
            return self._clients[key]

    def release(self) -> None:
        """Release Memory: the server unloads its models (the server keeps running)."""
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            try:
                client.free()
            except ComfyUIError:
                pass  # a server that is gone holds nothing

    def run(
        self,
        request: StyleRequest,
        progress: Progress | None = None,
        abort: threading.Event | None = None,
    ) -> StyleResult:
        """One picture from the server; see `Engine.run` (`request.settings` is a `ComfyUISettings`).

        Raises:
            ValueError: an invalid request.
            ComfyUIError: the server is unreachable, refused, lacks a node or model, failed or timed out (the
                message says which); nothing was written.
            Aborted: `abort` was set (the prompt was taken off the server's queue or interrupted).
        """
        started = time.perf_counter()
        progress = progress if progress is not None else NullProgress()
        timings: dict[str, float] = {}

        # 1. Check inputs
        request.validate()
        settings: ComfyUISettings = request.settings
        problem = settings.not_ready()
        if problem:
            raise ValueError(problem)
        own = workflow.load(settings.workflow) if settings.workflow.strip() else None
        out_h, out_w = request.output_size
        gen_h, gen_w = snap_size(out_h, out_w)
        client = self.client(settings)
        progress.update(0, 1, "Asking the ComfyUI server what it has")
        object_info = client.object_info()
        check_abort(abort)

        # 2. The passes up (each only once per content)
        tick = time.perf_counter()
        sent_before, spared_before = client.sent_bytes, client.spared_bytes
        pictures = {}
        if settings.uses_beauty():
            pictures["beauty"] = imageops.resize(request.beauty, (gen_h, gen_w))
        for name in settings.control_maps():
            if name in request.controls and name in CONVENTIONS:
                pictures[name] = control_image(name, request.controls[name], (gen_h, gen_w))
        progress.update(0, 1, f"Sending the passes ({', '.join(pictures)})")
        names = _upload_all(client, pictures, abort)
        timings["upload"] = time.perf_counter() - tick

        # 3. The workflow, checked against what the server has
        prompt, negative = settings.styled_prompts()
        inputs = workflow.Inputs(names, prompt, negative, int(request.seed), gen_w, gen_h)
        if own is None:
            graph, used = workflow.build(settings, inputs), []
        else:
            graph, used = workflow.fill(own, inputs)
        try:
            workflow.check(graph, object_info, set(names.values()))
        except workflow.WorkflowError:
            # A model added on the server since the list was read: read it again before refusing.
            workflow.check(graph, client.object_info(refresh=True), set(names.values()))

        # 4. Queue, follow, fetch
        tick = time.perf_counter()
        prompt_id = client.queue(graph)
        timings["queue"] = time.perf_counter() - tick
        # Until its first step the server loads models and encodes: say so, not the last upload's words.
        progress.update(0, settings.steps + 1, "ComfyUI: waiting for the server (loading models)")
        steps = {"done": 0, "total": settings.steps}

        def on_step(value: int, maximum: int, _message: str) -> None:
            steps.update(done=value, total=maximum)
            progress.update(value, maximum + 1, f"ComfyUI: step {value}/{maximum}")

        queued = time.monotonic()
        # Step previews go to a progress that can show them (`jobs.QueueProgress.preview`).
        preview = getattr(progress, "preview", None)
        outputs: dict[str, Any] = {}
        times = client.follow(
            prompt_id, on_step, preview, abort, deadline=queued + settings.comfyui_timeout, outputs=outputs
        )
        # The server's own work, from its "started" to its "done" (what a faster server would shorten), and
        # the wait for other prompts ahead of ours in its queue.
        started_there = times.get("started", queued)
        timings["server_queue"] = started_there - queued
        timings["server_execution"] = times["finished"] - started_there
        tick = time.perf_counter()
        image = client.image(prompt_id, outputs, timings)
        timings["fetch"] = time.perf_counter() - tick

        # 5. Back to the output size
        if image.shape[:2] != (out_h, out_w):
            image = imageops.resize(image, (out_h, out_w))
        timings["total"] = time.perf_counter() - started
        info: dict[str, Any] = {
            "engine": self.id,
            "server": client.base,
            "prompt_id": prompt_id,
            "workflow": "own" if own is not None else "built",
            "workflow_inputs": used,
            "mode": "img2img" if settings.img2img and own is None else "txt2img" if own is None else "own",
            "seed": int(request.seed),
            "size": {"output": [out_h, out_w], "generated": [gen_h, gen_w]},
            "uploads": {
                "sent_bytes": client.sent_bytes - sent_before,
                "spared_bytes": client.spared_bytes - spared_before,
                "names": names,
            },
            "steps": steps,
            "timings": timings,
        }
        progress.update(1, 1, "Done")
        return StyleResult(np.clip(image, 0.0, 1.0).astype(np.float32, copy=False), info)


def _upload_all(client: ComfyClient, pictures: dict[str, np.ndarray], abort) -> dict[str, str]:
    """Each pass encoded and sent at once on its own thread (zlib and the socket release the GIL, so two
    passes take about the time of one on two cores); returns their names on the server."""
    if len(pictures) < 2:
        names = {name: client.upload_image(picture) for name, picture in pictures.items()}
    else:
        with ThreadPoolExecutor(
            max_workers=min(4, len(pictures)), thread_name_prefix="comfyui-upload"
        ) as pool:
            sent = {name: pool.submit(client.upload_image, picture) for name, picture in pictures.items()}
            names = {name: future.result() for name, future in sent.items()}
    check_abort(abort)
    return names
