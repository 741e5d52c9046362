# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking to a ComfyUI server: what it has, pictures up, a workflow queued and followed, the picture back.

    object_info()        GET  /object_info          node types, and the models and samplers it lists
    upload_image(rgb)    POST /upload/image         a pass as PNG, named by its content hash: sent once
    queue(graph)         POST /prompt               with this client's id; 400 carries node_errors
    follow(prompt_id)    WS   /ws?clientId=...      progress, step previews, the end, errors
    image(prompt_id)     GET  /history/<id>, /view  the output picture
    cancel(prompt_id)    POST /queue (delete) and /interrupt
    free()               POST /free                 unload models and free memory on the server

Every failure becomes a `ComfyUIError` whose message names the cause an artist can act on: the server not
running, a refusal (403: ComfyUI checks that Host and Origin match its own address), a missing node or model,
the server's own validation errors, a timeout, a picture that never arrives.
"""

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ... import png
from ...engine_api import Aborted, check_abort
from ...errors import StylepassError
from ...worker.protocol import is_loopback
from .websocket import BINARY, TEXT, WebSocket, WebSocketError

_UPLOAD_PREFIX = "stylepass-"
_PREVIEW_IMAGE = 1  # first word of a binary websocket message carrying a step preview
_IMAGE_TYPES = {1: "jpeg", 2: "png"}


class ComfyUIError(StylepassError):
    """The server could not do what was asked; the message says why, in the artist's terms."""


class ComfyClient:
    """One ComfyUI server, as one client (its own client id, so the websocket carries only our messages).

    Args:
        server: "http://host:port" (a path prefix for a proxy is kept).
        headers: extra headers for every request (a proxy's Authorization).
        timeout: seconds for one HTTP request (connecting and reading).
        compress_level: zlib level of the uploaded passes; None: 0 for a server on this machine (its bytes
            cost nothing, compressing a 512 px beauty costs ~8 ms), else 1.
    """

    def __init__(
        self,
        server: str,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        compress_level: int | None = None,
    ):
        import requests  # Blender's Python has it; imported here so the core imports without it

        parts = urlsplit(server.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ComfyUIError(
                f"The ComfyUI server address {server!r} is not an http:// or https:// address."
            )
        self.base = server.strip().rstrip("/")
        self.timeout = timeout
        loopback = is_loopback(parts.hostname)
        self.compress_level = compress_level if compress_level is not None else (0 if loopback else 1)
        # The server sends a prompt's messages to the one websocket of the client id it was queued with, and a
        # second socket with that id replaces the first: so each prompt gets an id of its own, and several
        # frames may run at once through one client (an animation's frames planned ahead).
        self._client_ids: dict[str, str] = {}  # prompt id -> the client id it was queued with
        self._requests = requests
        self._session = requests.Session()
        self._session.headers.update(headers or {})
        self._object_info: dict[str, Any] | None = None
        self._uploaded: set[str] = set()  # names known to be in the server's input folder
        self._lock = threading.Lock()
        self.sent_bytes = 0  # picture bytes uploaded, and those an earlier upload spared
        self.spared_bytes = 0

    # -- What the server has ------------------------------------------------------------------------------

    def object_info(self, refresh: bool = False) -> dict[str, Any]:
        """Every node type with its inputs (and the names of models and samplers the server lists)."""
        if self._object_info is None or refresh:
            self._object_info = self._json("GET", "/object_info")
        return self._object_info

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    # -- Pictures up --------------------------------------------------------------------------------------

    def upload_image(self, image: np.ndarray) -> str:
        """Upload `(H, W, 3)` float pixels in [0, 1] (or uint8) as PNG; returns the name to use in a workflow.

        The name is the content's hash, so a pass that did not change (a still scene, a second run) is not sent
        again: the server is asked first whether it has the file.
        """
        data = png.encode_png(np.asarray(image), compress_level=self.compress_level)
        name = f"{_UPLOAD_PREFIX}{hashlib.sha256(data).hexdigest()[:24]}.png"
        with self._lock:
            known = name in self._uploaded
        if known or self._has_input(name):
            with self._lock:
                self.spared_bytes += len(data)
        else:
            answer = self._call(
                "POST",
                "/upload/image",
                files={"image": (name, data, "image/png")},
                data={"overwrite": "true", "type": "input"},
            )
            stored = answer.json().get("name", name) if answer.content else name
            if stored != name:
                raise ComfyUIError(f"The ComfyUI server stored the upload {name} as {stored}.")
            with self._lock:
                self.sent_bytes += len(data)
        with self._lock:
            self._uploaded.add(name)
        return name

    def _has_input(self, name: str) -> bool:
        try:
            answer = self._session.head(
                f"{self.base}/view", params={"filename": name, "type": "input"}, timeout=self.timeout
            )
        except self._requests.RequestException:
            return False
        return answer.status_code == 200

    # -- A workflow ---------------------------------------------------------------------------------------

    def queue(self, graph: dict[str, Any]) -> str:
        """Queue `graph` (API format); returns its prompt id.

        Raises:
            ComfyUIError: the server refused it; its validation errors are named node by node.
        """
        client_id = uuid.uuid4().hex
        answer = self._call("POST", "/prompt", json={"prompt": graph, "client_id": client_id}, ok=(200, 400))
        body = _body(answer)
        if answer.status_code == 400 or "prompt_id" not in body:
            raise ComfyUIError(describe_refusal(body, graph))
        prompt_id = str(body["prompt_id"])
        with self._lock:
            self._client_ids[prompt_id] = client_id
        return prompt_id

    def follow(
        self,
        prompt_id: str,
        progress: Callable[[int, int, str], None] | None = None,
        preview: Callable[[bytes, str], None] | None = None,
        abort: threading.Event | None = None,
        deadline: float | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> dict[str, float]:
        """Wait for `prompt_id` to finish, reporting its steps (and step previews when the server sends them).

        `outputs`, when given, collects what each output node said it wrote ("executed"), which spares
        `image` asking the history for it.

        Returns:
            When (`time.monotonic`) the server said it started the prompt ("started", absent when it ended
            before the socket opened) and when it said it was done ("finished").

        Raises:
            Aborted: `abort` was set; the prompt was taken off the queue or interrupted.
            ComfyUIError: it failed on the server (the node and error named), was interrupted there, or
                `deadline` (time.monotonic) passed.
        """
        with self._lock:
            client_id = self._client_ids.pop(prompt_id, None) or uuid.uuid4().hex
        url = "ws" + self.base[4:] + f"/ws?clientId={client_id}"
        try:
            socket = WebSocket(url, dict(self._session.headers), timeout=self.timeout)
        except WebSocketError as error:
            raise ComfyUIError(f"Cannot follow the ComfyUI server's progress: {error}") from error
        times: dict[str, float] = {}
        with socket:
            # The prompt may have ended before the socket opened: the history says so.
            if self._finished(prompt_id):
                times["finished"] = time.monotonic()
                return times
            # Aborted comes from the check below or from the caller's own progress or preview (a Progress
            # raises it from `update` once its job is cancelled): either way the server must stop the prompt.
            try:
                while True:
                    check_abort(abort)
                    if deadline is not None and time.monotonic() > deadline:
                        self.cancel(prompt_id)
                        raise ComfyUIError(
                            "The ComfyUI server did not finish the picture in time (Timeout in the preferences); "
                            "it was taken off its queue."
                        )
                    try:
                        message = socket.receive(0.25)
                    except WebSocketError as error:
                        if self._finished(prompt_id):
                            times["finished"] = time.monotonic()
                            return times
                        raise ComfyUIError(f"The connection to the ComfyUI server broke: {error}") from error
                    if message is None:
                        continue
                    kind, payload = message
                    if kind == BINARY:
                        if preview is not None and len(payload) > 8:
                            event, image_type = (
                                int.from_bytes(payload[:4], "big"),
                                int.from_bytes(payload[4:8], "big"),
                            )
                            if event == _PREVIEW_IMAGE:
                                preview(payload[8:], _IMAGE_TYPES.get(image_type, "jpeg"))
                        continue
                    if kind != TEXT:
                        continue
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        continue
                    data = event.get("data") or {}
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    kind = event.get("type")
                    if kind == "execution_start" and data.get("prompt_id") == prompt_id:
                        times["started"] = time.monotonic()
                    elif kind == "progress" and progress is not None:
                        progress(int(data.get("value", 0)), int(data.get("max", 1)), "")
                    elif kind == "executed" and outputs is not None and data.get("prompt_id") == prompt_id:
                        outputs[str(data.get("node"))] = data.get("output") or {}
                    elif kind in ("executing", "execution_success") and data.get("prompt_id") == prompt_id:
                        if kind == "execution_success" or data.get("node") is None:
                            times["finished"] = time.monotonic()
                            return times
                    elif kind == "execution_error":
                        raise ComfyUIError(
                            f"The ComfyUI server failed in node #{data.get('node_id')} ({data.get('node_type')}): "
                            f"{data.get('exception_message', '').strip() or data.get('exception_type')}"
                        )
                    elif kind == "execution_interrupted":
                        raise ComfyUIError("The run was interrupted on the ComfyUI server.")
            except Aborted:
                self.cancel(prompt_id)
                raise

    def _finished(self, prompt_id: str) -> bool:
        entry = self._json("GET", f"/history/{prompt_id}").get(prompt_id)
        return bool(entry) and bool((entry.get("status") or {}).get("completed", entry.get("outputs")))

    def image(
        self, prompt_id: str, outputs: dict[str, Any] | None = None, timings: dict[str, float] | None = None
    ) -> np.ndarray:
        """The first picture the prompt output, `(H, W, 3)` float32 in [0, 1]; from `outputs` (`follow`'s)
        when they name one, else from the server's history. `timings["server_view"]` gets how long the
        server took to start answering `/view`: its own housekeeping after a run (a garbage collection of a
        CPU server's model memory can hold it for a tenth of a second) is the server's time, not Stylepass's.

        Raises:
            ComfyUIError: the history has no picture for it (the message says what it has).
        """
        if not any(output.get("images") for output in (outputs or {}).values()):
            outputs = self._history_outputs(prompt_id)
        for output in outputs.values():
            for picture in output.get("images") or ():
                answer = self._call(
                    "GET",
                    "/view",
                    params={
                        "filename": picture["filename"],
                        "subfolder": picture.get("subfolder", ""),
                        "type": picture.get("type", "output"),
                    },
                )
                if timings is not None:
                    timings["server_view"] = answer.elapsed.total_seconds()
                try:
                    pixels = png.read_png_float(answer.content)
                except ValueError as error:
                    raise ComfyUIError(
                        f"The ComfyUI server sent a picture that is not a PNG: {error}"
                    ) from error
                return np.ascontiguousarray(pixels[..., :3], dtype=np.float32)
        raise ComfyUIError("The workflow finished on the ComfyUI server without a picture (no image output).")

    def _history_outputs(self, prompt_id: str) -> dict[str, Any]:
        entry = self._json("GET", f"/history/{prompt_id}").get(prompt_id)
        if not entry:
            raise ComfyUIError("The ComfyUI server has no record of the run: its result never arrived.")
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            messages = [m for m in status.get("messages") or () if m and m[0] == "execution_error"]
            detail = messages[0][1].get("exception_message", "") if messages else ""
            raise ComfyUIError(f"The ComfyUI server failed the run: {detail.strip() or 'see its log'}")
        return entry.get("outputs") or {}

    def cancel(self, prompt_id: str) -> None:
        """Take `prompt_id` off the queue, and interrupt it if it is running (best effort)."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {})):
            try:
                self._session.post(f"{self.base}{path}", json=body, timeout=self.timeout)
            except self._requests.RequestException:
                pass

    def free(self) -> None:
        """Unload the server's models and free its memory (Release Memory)."""
        self._call("POST", "/free", json={"unload_models": True, "free_memory": True})

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        body = _body(self._call(method, path, **kwargs))
        if not isinstance(body, dict):
            raise ComfyUIError(
                f"The ComfyUI server answered {path} with something that is not a JSON object."
            )
        return body

    def _call(self, method: str, path: str, ok=(200,), **kwargs):
        try:
            answer = self._session.request(method, f"{self.base}{path}", timeout=self.timeout, **kwargs)
        except self._requests.ConnectionError as error:
            raise ComfyUIError(
                f"Cannot reach the ComfyUI server at {self.base}: is it running, and is the address right? "
                f"({_reason(error)})"
            ) from error
        except self._requests.Timeout as error:
            raise ComfyUIError(
                f"The ComfyUI server at {self.base} did not answer {path} within {self.timeout:.0f} s."
            ) from error
        except self._requests.RequestException as error:
            raise ComfyUIError(f"Talking to the ComfyUI server at {self.base} failed: {error}") from error
        if answer.status_code == 403:
            raise ComfyUIError(
                f"The ComfyUI server at {self.base} refused the request (403 Forbidden). ComfyUI refuses requests "
                "whose Host or Origin does not match its own address: use the address it prints at start-up "
                "(or start it with --enable-cors-header); a proxy may need its token under Headers."
            )
        if answer.status_code == 401:
            raise ComfyUIError(
                f"The server at {self.base} wants a login (401): put its token under Headers in the preferences."
            )
        if answer.status_code not in ok:
            raise ComfyUIError(
                f"The ComfyUI server answered {method} {path} with {answer.status_code} "
                f"{answer.reason}: {answer.text[:300].strip()}"
            )
        return answer


def describe_refusal(body: Any, graph: dict[str, Any]) -> str:
    """The server's reasons for refusing a workflow (`/prompt` answered 400), node by node."""
    if not isinstance(body, dict):
        return "The ComfyUI server refused the workflow."
    error = body.get("error") or {}
    lines = []
    for key, found in (body.get("node_errors") or {}).items():
        title = ((graph.get(key) or {}).get("_meta") or {}).get("title") or found.get("class_type", "")
        for item in found.get("errors") or ():
            detail = item.get("details") or item.get("message") or ""
            lines.append(f"#{key} '{title}': {detail}".strip())
    message = error.get("message") if isinstance(error, dict) else str(error)
    head = f"The ComfyUI server refused the workflow: {message or 'invalid prompt'}"
    return head + (": " + "; ".join(lines) if lines else ".")


def _body(answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return {}


def _reason(error: Exception) -> str:
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if known in text:
            return known.lower()
    return text[:200]
