# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI engine against the real server (the `comfyui` fixture): a still with two ControlNets, image to
image and a LoRA; uploads sent once per content; cancel mid-run; the artist's own workflow; and every failure
named for what it is, with nothing left queued on the server."""

import http.server
import json
import socket
import threading
import time

import numpy as np
import pytest
import requests

from stylepass_core.engine_api import Aborted, StyleRequest
from stylepass_core.engines.comfyui import ComfyUIEngine, ComfyUIError, ComfyUISettings
from stylepass_core.engines.comfyui.workflow import WorkflowError
from stylepass_core.engines.diffusion.settings import ControlUnit, Lora

SIZE = 64


def _passes(seed: int = 0) -> dict[str, np.ndarray]:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    rng = np.random.default_rng(seed)
    beauty = np.stack([rows, cols, 0.5 + 0.3 * rng.random((SIZE, SIZE))], axis=-1).astype(np.float32)
    depth = (1.0 - rows).astype(np.float32)
    lineart = ((np.abs(rows - cols) < 0.04) | (np.abs(rows - 0.5) < 0.02)).astype(np.float32)
    normal = np.dstack([0.5 + 0.2 * cols, 0.5 + 0.2 * rows, np.ones_like(rows)]).astype(np.float32)
    segmentation = np.where((rows > 0.5)[..., None], [0.47, 0.47, 0.47], [0.71, 0.86, 0.9]).astype(np.float32)
    return {
        "beauty": beauty,
        "depth": depth,
        "lineart": lineart,
        "normal": normal,
        "segmentation": segmentation,
    }


def _settings(comfyui, **changes) -> ComfyUISettings:
    models = comfyui.models
    values = dict(
        comfyui_server=comfyui.url,
        checkpoint=models.checkpoint,
        prompt="a stone hut",
        steps=2,
        denoise=1.0,
        guidance=5.0,
    )
    values.update(changes)
    return ComfyUISettings(**values)


def _request(settings: ComfyUISettings, seed: int = 3, passes=None) -> StyleRequest:
    passes = passes or _passes()
    controls = {name: passes[name] for name in settings.control_maps()}
    return StyleRequest(beauty=passes["beauty"], settings=settings, controls=controls, seed=seed)


def _full(comfyui, **changes) -> ComfyUISettings:
    """Two ControlNets, image to image and a LoRA."""
    models = comfyui.models
    return _settings(
        comfyui,
        denoise=0.99,  # image to image: 2 x 0.99 leaves one step
        controls=(
            ControlUnit(map="depth", model=models.controlnet_depth, weight=1.0),
            ControlUnit(map="lineart", model=models.controlnet_lineart, weight=0.8, end=0.9),
        ),
        loras=(Lora(file=models.lora, weight=1.0),),
        **changes,
    )


def _queue_is_empty(comfyui, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        queue = requests.get(f"{comfyui.url}/queue", timeout=10).json()
        if not queue["queue_running"] and not queue["queue_pending"]:
            return True
        time.sleep(0.2)
    return False


def _timed(comfyui, name, run):
    started = time.perf_counter()
    result = run()
    comfyui.timings[name] = time.perf_counter() - started
    return result


def test_a_still_with_two_controlnets_image_to_image_and_a_lora(comfyui):
    engine = ComfyUIEngine()
    steps = []

    class Progress:
        def update(self, done, total, message=""):
            steps.append(message)

    result = _timed(comfyui, "engine: still, 2 ControlNets + img2img + LoRA", lambda: engine.run(
        _request(_full(comfyui)), Progress()
    ))  # fmt: skip
    assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.float32
    assert result.info["workflow"] == "built" and result.info["mode"] == "img2img"
    assert sorted(result.info["uploads"]["names"]) == ["beauty", "depth", "lineart"]
    assert any(message.startswith("ComfyUI: step") for message in steps), steps
    # The steering is real: without the LoRA and the ControlNets the same seed gives another picture.
    plain = engine.run(_request(_settings(comfyui, denoise=0.99)))
    assert np.abs(plain.image - result.image).mean() > 0.02
    # Same seed, same settings: the same picture.
    again = engine.run(_request(_full(comfyui)))
    np.testing.assert_allclose(again.image, result.image, atol=2 / 255)


def test_an_unchanged_pass_is_not_sent_again_even_by_a_new_client(comfyui):
    first = ComfyUIEngine().run(_request(_full(comfyui), passes=_passes(seed=11)))
    uploads = first.info["uploads"]
    assert uploads["sent_bytes"] > 0  # a beauty no run had before (the control passes may be known already)
    # A new engine (a new Blender session) asks the server first, and sends nothing.
    second = ComfyUIEngine().run(_request(_full(comfyui), passes=_passes(seed=11)))
    assert second.info["uploads"]["sent_bytes"] == 0
    assert second.info["uploads"]["spared_bytes"] == uploads["sent_bytes"] + uploads["spared_bytes"]
    assert second.info["uploads"]["names"] == uploads["names"]


def test_frames_run_at_once_through_one_engine_each_get_their_own_picture(comfyui):
    """An animation runs frames planned ahead at once through its one engine: each prompt is followed on a
    socket of its own (the server sends a prompt's messages to one socket per client id), so neither waits
    for messages the other's socket took."""
    engine = ComfyUIEngine()
    settings = _settings(comfyui, comfyui_timeout=120.0)
    outcomes: dict[int, object] = {}

    def one(seed: int) -> None:
        try:
            outcomes[seed] = engine.run(_request(settings, seed=seed))
        except Exception as error:  # checked below
            outcomes[seed] = error

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (21, 22)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(200)
    assert all(not isinstance(o, Exception) for o in outcomes.values()), outcomes
    assert outcomes[21].info["prompt_id"] != outcomes[22].info["prompt_id"]
    assert outcomes[21].info["steps"]["done"] == outcomes[22].info["steps"]["done"] == 2
    assert float(np.abs(outcomes[21].image - outcomes[22].image).max()) > 1e-3  # two seeds, two pictures


@pytest.mark.parametrize("noticed_by", ["abort event", "progress"])
def test_cancel_mid_run_stops_the_server_and_leaves_nothing_queued(comfyui, noticed_by):
    """Either way a cancel reaches the engine, the server stops: the abort event seen between two messages, or
    the caller's progress raising `Aborted` from `update` (Blender's job progress does, once ESC set its
    event: that way once skipped the interrupt, and the server ran all 60 steps)."""
    abort = threading.Event()

    class Progress:
        def update(self, done, total, message=""):
            if message.startswith("ComfyUI: step"):
                abort.set()  # ESC as soon as the server denoises
                if noticed_by == "progress":
                    raise Aborted("cancelled")

    engine = ComfyUIEngine()
    started = time.perf_counter()
    with pytest.raises(Aborted):
        engine.run(_request(_settings(comfyui, steps=60)), Progress(), abort)
    assert time.perf_counter() - started < 50, "60 steps ran to the end: the cancel did not reach the server"
    assert _queue_is_empty(comfyui)
    # The server is fine afterwards.
    assert engine.run(_request(_settings(comfyui))).image.shape == (SIZE, SIZE, 3)


def _own_workflow(comfyui) -> dict:
    models = comfyui.models
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": models.checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]},
              "_meta": {"title": "Stylepass Prompt"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]},
              "_meta": {"title": "Stylepass Negative Prompt"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": ""}, "_meta": {"title": "Stylepass Depth"}},
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": models.controlnet_depth}},
        "6": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["5", 0], "image": ["4", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "_meta": {"title": "Stylepass Seed"}, "inputs": {
            "model": ["1", 0], "seed": 0, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["6", 1], "latent_image": ["7", 0],
            "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "mine"}},
    }  # fmt: skip


def test_the_artists_own_workflow_gets_the_passes_prompt_and_seed(comfyui, tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_own_workflow(comfyui)))
    before = path.read_bytes()
    engine = ComfyUIEngine()
    result = engine.run(_request(_settings(comfyui, workflow=str(path)), seed=5))
    assert result.info["workflow"] == "own"
    assert result.info["workflow_inputs"] == ["depth", "prompt", "negative_prompt", "seed"]
    assert result.image.shape == (SIZE, SIZE, 3) and path.read_bytes() == before
    other_seed = engine.run(_request(_settings(comfyui, workflow=str(path)), seed=6))
    assert np.abs(other_seed.image - result.image).mean() > 0.01, "the seed did not reach the KSampler"


def test_what_the_server_lacks_is_named_before_anything_is_queued(comfyui, tmp_path):
    engine = ComfyUIEngine()
    with pytest.raises(
        WorkflowError, match=r"'missing\.safetensors' is not on the ComfyUI server for ckpt_name"
    ):
        engine.run(_request(_settings(comfyui, checkpoint="missing.safetensors")))
    own = _own_workflow(comfyui)
    own["11"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["9", 0]}}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(own))
    with pytest.raises(WorkflowError, match="server has no 'FancyUpscaler' node"):
        engine.run(_request(_settings(comfyui, workflow=str(path))))
    assert _queue_is_empty(comfyui, 1.0)


def test_the_servers_own_validation_errors_are_named_node_by_node(comfyui, tmp_path):
    own = _own_workflow(comfyui)
    own["8"]["inputs"]["steps"] = 0  # ComfyUI's KSampler needs at least one step
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(own))
    with pytest.raises(ComfyUIError, match=r"refused the workflow.*#8 'Stylepass Seed'.*steps"):
        ComfyUIEngine().run(_request(_settings(comfyui, workflow=str(path))))


def test_a_run_that_takes_too_long_is_stopped_and_taken_off_the_queue(comfyui):
    with pytest.raises(ComfyUIError, match="did not finish the picture in time"):
        ComfyUIEngine().run(_request(_settings(comfyui, steps=150, comfyui_timeout=5.0)))
    assert _queue_is_empty(comfyui)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_not_running_is_named(comfyui):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ComfyUIError, match=rf"Cannot reach the ComfyUI server at {url}: is it running"):
        ComfyUIEngine().run(_request(_settings(comfyui, comfyui_server=url)))


def test_a_refusal_explains_comfyuis_host_and_origin_check(comfyui):
    # Newer ComfyUI versions answer 403 when Host and Origin disagree (the packaged one predates that check):
    # a loopback server that refuses as they do stands for it.
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ComfyUIError, match=r"403 Forbidden.*Host or Origin"):
            ComfyUIEngine().run(_request(_settings(comfyui, comfyui_server=url)))
    finally:
        server.shutdown()


def test_release_memory_asks_the_server_to_unload_and_the_next_run_loads_again(comfyui):
    engine = ComfyUIEngine()
    engine.run(_request(_settings(comfyui)))
    engine.client(_settings(comfyui)).free()  # POST /free: raises ComfyUIError unless the server agreed
    engine.release()  # Release Memory: the same for every server this engine talked to
    assert engine.run(_request(_settings(comfyui))).image.shape == (SIZE, SIZE, 3)
    # A server that is gone holds nothing: releasing then is quiet.
    gone = ComfyUIEngine()
    gone.client(_settings(comfyui, comfyui_server=f"http://127.0.0.1:{_free_port()}"))
    gone.release()


def test_step_previews_reach_a_progress_that_can_show_them(comfyui):
    # The fixture's server runs with --preview-method latent2rgb: a picture of each step on the websocket.
    previews, updates = [], []

    class Progress:
        def update(self, done, total, message=""):
            updates.append(message)

        def preview(self, data, kind):
            previews.append((data, kind))

    ComfyUIEngine().run(_request(_settings(comfyui, steps=3)), Progress())
    assert previews, f"no step preview arrived (progress said {updates})"
    data, kind = previews[-1]
    assert (kind, data[:2]) == ("jpeg", b"\xff\xd8") or (kind, data[:4]) == ("png", b"\x89PNG"), (
        kind,
        data[:8],
    )
