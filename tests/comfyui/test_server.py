# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke tests of the `comfyui` fixture: a real server, real loaders, real workflows over its HTTP API.

API-format workflows go in through `POST /prompt`; the test polls `GET /history/<id>` (no websocket client in
the test venv) and fetches the image through `GET /view`. 64x64, 2 steps: seconds per workflow are recorded in
`comfyui.timings` and printed in pytest's summary.
"""

import ast
import io
import time
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

WORKFLOW_TIMEOUT = 600  # seconds; a busy 2-core machine takes ~5-15 s per workflow
CLIENT_ID = uuid.uuid4().hex
SAVE_NODE = "9"
CLIP_KEYS_SD15_LACKS = {"clip_l.logit_scale", "clip_l.transformer.text_projection.weight"}


def text_to_image(models, lora_strength: float = 1.0, control: tuple[str, str] | None = None) -> dict:
    """An API-format workflow: checkpoint, LoRA, two prompts, 64x64 latent, 2 Euler steps, decode, save.

    Args:
        models: The fixture's `ComfyUIModels`.
        lora_strength: The LoRA's strength on both the UNet and the text encoder (0 leaves them unchanged).
        control: `(controlnet name, uploaded image name)`: adds LoadImage, ControlNetLoader and
            ControlNetApplyAdvanced (strength 1 over all steps) between the prompts and the sampler.
    """
    positive, negative = ["3", 0], ["4", 0]
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": models.checkpoint}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "lora_name": models.lora,
                "strength_model": lora_strength,
                "strength_clip": lora_strength,
            },
        },
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a watercolour house"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    if control is not None:
        controlnet, image = control
        workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
        workflow["11"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}}
        workflow["12"] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {
                "positive": positive,
                "negative": negative,
                "control_net": ["11", 0],
                "image": ["10", 0],
                "strength": 1.0,
                "start_percent": 0.0,
                "end_percent": 1.0,
            },
        }
        positive, negative = ["12", 0], ["12", 1]
    workflow["7"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["2", 0],
            "positive": positive,
            "negative": negative,
            "latent_image": ["5", 0],
            "seed": 7,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    }
    workflow["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}}
    workflow[SAVE_NODE] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "stylepass-smoke"},
    }
    return workflow


def history(comfyui, prompt_id: str) -> dict | None:
    """The prompt's history entry: None until it has finished (successfully or not)."""
    return requests.get(f"{comfyui.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)


def log_tail(comfyui) -> str:
    return comfyui.log_text()[-4000:]


def run_workflow(comfyui, workflow: dict, name: str) -> np.ndarray:
    """Queue `workflow`, poll its history until done, fetch the saved image; record the seconds as `name`.

    Returns:
        The image, (H, W, 3) uint8.
    """
    started = time.perf_counter()
    response = requests.post(
        comfyui.url + "/prompt", json={"prompt": workflow, "client_id": CLIENT_ID}, timeout=30
    )
    assert response.status_code == 200, f"/prompt refused the workflow: {response.text}"
    prompt_id = response.json()["prompt_id"]
    deadline = time.monotonic() + WORKFLOW_TIMEOUT
    while (entry := history(comfyui, prompt_id)) is None:
        assert time.monotonic() < deadline, (
            f"{name}: no result after {WORKFLOW_TIMEOUT} s\n{log_tail(comfyui)}"
        )
        time.sleep(0.2)
    status = entry["status"]
    assert status["status_str"] == "success", f"{name} failed: {status['messages']}\n{log_tail(comfyui)}"
    (saved,) = entry["outputs"][SAVE_NODE]["images"]
    response = requests.get(comfyui.url + "/view", params=saved, timeout=30)
    response.raise_for_status()
    comfyui.timings[name] = time.perf_counter() - started
    assert (comfyui.output_dir / saved["subfolder"] / saved["filename"]).is_file()
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.fixture(scope="module")
def with_lora(comfyui) -> np.ndarray:
    """The plain workflow with the LoRA at strength 1; the first one loads the checkpoint (cold)."""
    return run_workflow(comfyui, text_to_image(comfyui.models), "text to image + LoRA (cold)")


def test_object_info_lists_the_test_models_under_their_loaders(comfyui):
    info = requests.get(comfyui.url + "/object_info", timeout=30).json()

    def options(node: str, name: str) -> list[str]:
        return info[node]["input"]["required"][name][0]

    assert comfyui.models.checkpoint in options("CheckpointLoaderSimple", "ckpt_name")
    assert comfyui.models.controlnet_depth in options("ControlNetLoader", "control_net_name")
    assert comfyui.models.controlnet_lineart in options("ControlNetLoader", "control_net_name")
    assert comfyui.models.lora in options("LoraLoader", "lora_name")
    # Every node loaded, also those whose modules import torchvision (the stand-in lets them).
    assert {"StableCascade_StageC_VAEEncode", "UpscaleModelLoader"} <= info.keys()
    assert "Cannot import" not in comfyui.log_text()


def test_text_to_image_with_lora_comes_back_through_history_and_view(comfyui, with_lora):
    assert with_lora.shape == (64, 64, 3)
    assert with_lora.std() > 1.0, "a flat image: the random model produced nothing"
    # Every weight was loaded: ComfyUI loads non-strictly and only logs what it left out.
    log = comfyui.log_text()
    for complaint in ("unet missing", "unet unexpected", "Missing VAE keys", "lora key not loaded"):
        assert complaint not in log, f"ComfyUI logged {complaint!r}:\n{log_tail(comfyui)}"
    # SD 1.5 checkpoints (ComfyUI's own CheckpointSave too) have no CLIP projection nor logit scale: ComfyUI
    # names them and keeps its defaults (an identity projection). Anything else missing is ours.
    for line in log.splitlines():
        if line.startswith("clip missing:"):
            missing = set(ast.literal_eval(line.removeprefix("clip missing:").strip()))
            assert missing <= CLIP_KEYS_SD15_LACKS, f"the checkpoint's text encoder lacks {missing}"


def test_lora_changes_the_result(comfyui, with_lora):
    without = run_workflow(
        comfyui, text_to_image(comfyui.models, lora_strength=0.0), "text to image, LoRA at 0"
    )
    difference = mean_difference(with_lora, without)
    print(f"LoRA 1 vs 0: mean |difference| {difference:.1f} of 255")
    assert difference > 2.0


def test_controlnets_fed_by_an_uploaded_image_change_the_result(comfyui, with_lora):
    # 1. Upload a control image (a bright disc on black), as a client would.
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((xx - 24) ** 2 + (yy - 32) ** 2 < 18**2).astype(np.uint8) * 255
    png = io.BytesIO()
    Image.fromarray(np.stack([disc] * 3, axis=-1)).save(png, format="PNG")
    response = requests.post(
        comfyui.url + "/upload/image",
        files={"image": ("stylepass-control.png", png.getvalue(), "image/png")},
        data={"overwrite": "true"},
        timeout=30,
    )
    response.raise_for_status()
    uploaded = response.json()
    assert (comfyui.input_dir / uploaded["subfolder"] / uploaded["name"]).is_file()

    # 2. Each ControlNet steers the result, and differently from the other.
    models = comfyui.models
    depth = run_workflow(
        comfyui,
        text_to_image(models, control=(models.controlnet_depth, uploaded["name"])),
        "+ depth ControlNet",
    )
    lineart = run_workflow(
        comfyui,
        text_to_image(models, control=(models.controlnet_lineart, uploaded["name"])),
        "+ lineart ControlNet",
    )
    print(
        f"mean |difference| of 255: depth vs none {mean_difference(depth, with_lora):.1f}, "
        f"lineart vs depth {mean_difference(lineart, depth):.1f}"
    )
    assert mean_difference(depth, with_lora) > 2.0
    assert mean_difference(lineart, depth) > 2.0
    assert "missing controlnet keys" not in comfyui.log_text()
