# SPDX-License-Identifier: GPL-3.0-or-later
"""Diffusion engine tests: tiny random-weight models built once per session, loaded through the real code.

Run with the diffusion venv (torch, diffusers); without those packages every test here is skipped. Markers:
`gpu` (needs CUDA) and `real_weights` (needs real model files under $STYLEPASS_REAL_WEIGHTS) are skipped by
default.
"""

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HAVE_TORCH = all(
    __import__("importlib.util").util.find_spec(name) is not None
    for name in ("torch", "diffusers", "transformers")
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped when there is none)")
    config.addinivalue_line("markers", "real_weights: needs real model files under $STYLEPASS_REAL_WEIGHTS")
    config.addinivalue_line("markers", "needs_torch: needs torch and diffusers (the diffusion venv)")
    # diffusers' own deprecations (numpy 2 copy keyword, torch_dtype in its internals) are not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:diffusers")
    config.addinivalue_line("filterwarnings", "ignore::FutureWarning:diffusers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = False
    if HAVE_TORCH and any("gpu" in item.keywords for item in items):
        import torch

        has_cuda = torch.cuda.is_available()
    weights = os.environ.get("STYLEPASS_REAL_WEIGHTS", "")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device here"))
        if "real_weights" in item.keywords and not (weights and Path(weights).is_dir()):
            item.add_marker(
                pytest.mark.skip(reason="real_weights: set STYLEPASS_REAL_WEIGHTS to a model folder")
            )
        if "needs_torch" in item.keywords and not HAVE_TORCH:
            item.add_marker(pytest.mark.skip(reason="needs torch + diffusers: use the engine-diffusion venv"))


@dataclass(frozen=True)
class TinyModels:
    """Paths of the session's tiny models."""

    root: Path
    sd15: Path  # diffusers folder
    sd15_config: Path  # config-only folder (no weights)
    sd15_single: Path  # original-layout single-file checkpoint; its config is in sd15_single's stem folder
    sd15_single_no_config: Path  # a checkpoint with nothing beside it
    cn_depth: Path
    cn_normal: Path
    cn_lineart_single: Path  # a ControlNet as one diffusers-layout .safetensors with config.json beside it
    cn_wrong_family: Path  # a ControlNet made for a UNet with another cross-attention width
    lora: Path
    lora_other: Path
    ip_adapter: Path
    sdxl: Path
    sdxl_cn_depth: Path
    tiny_vae: Path
    pickle_ckpt: Path
    pickle_lora: Path
    pickle_folder: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    if not HAVE_TORCH:
        pytest.skip("needs torch + diffusers: use the engine-diffusion venv")
    import tiny_models as tm
    import torch
    from diffusers import StableDiffusionXLPipeline

    root = tmp_path_factory.mktemp("diffusion-models")
    pipe = tm.save_sd15_folder(root / "sd15")
    shutil.copytree(root / "sd15", root / "sd15-config", ignore=shutil.ignore_patterns("*.safetensors"))
    # A community-style checkpoint with its config folder beside it, named like it.
    (root / "checkpoints").mkdir()
    tm.save_sd15_single_file(root / "checkpoints" / "tiny_sd15.safetensors", pipe)
    shutil.copytree(root / "sd15-config", root / "checkpoints" / "tiny_sd15")
    (root / "lonely").mkdir()
    shutil.copy(root / "checkpoints" / "tiny_sd15.safetensors", root / "lonely" / "lonely.safetensors")

    tm.save_controlnet(root / "cn_depth", pipe.unet, seed=1)
    tm.save_controlnet(root / "cn_normal", pipe.unet, seed=2)
    lineart = tm.controlnet(pipe.unet, seed=3)
    (root / "cn_single").mkdir()
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in lineart.state_dict().items()},
        root / "cn_single" / "lineart.safetensors",
    )
    lineart.save_config(root / "cn_single")
    tm.save_controlnet(root / "cn_wrong", tm.unet(seed=5, cross_attention_dim=64), seed=4)

    (root / "loras").mkdir()
    tm.save_lora(root / "loras" / "tiny_lora.safetensors", pipe.unet, seed=7)
    tm.save_lora(root / "loras" / "other_lora.safetensors", pipe.unet, seed=8)
    tm.save_ip_adapter(root / "ip_adapter", pipe.unet)

    tm.save_sdxl_folder(root / "sdxl")
    sdxl = StableDiffusionXLPipeline.from_pretrained(root / "sdxl", local_files_only=True)
    tm.save_controlnet(root / "sdxl_cn_depth", sdxl.unet, seed=9)
    tm.tiny_autoencoder().save_pretrained(root / "taesd", safe_serialization=True)

    # Pickle files: a .ckpt checkpoint, a .bin LoRA, and a diffusers folder with only .bin weights.
    torch.save(tm.ldm_state_dict(pipe), root / "checkpoints" / "pickled.ckpt")
    shutil.copytree(root / "sd15-config", root / "checkpoints" / "pickled")
    torch.save({"x": torch.zeros(1)}, root / "loras" / "pickled_lora.bin")
    pipe.save_pretrained(root / "sd15_bin", safe_serialization=False)
    return TinyModels(
        root=root,
        sd15=root / "sd15",
        sd15_config=root / "sd15-config",
        sd15_single=root / "checkpoints" / "tiny_sd15.safetensors",
        sd15_single_no_config=root / "lonely" / "lonely.safetensors",
        cn_depth=root / "cn_depth",
        cn_normal=root / "cn_normal",
        cn_lineart_single=root / "cn_single" / "lineart.safetensors",
        cn_wrong_family=root / "cn_wrong",
        lora=root / "loras" / "tiny_lora.safetensors",
        lora_other=root / "loras" / "other_lora.safetensors",
        ip_adapter=root / "ip_adapter",
        sdxl=root / "sdxl",
        sdxl_cn_depth=root / "sdxl_cn_depth",
        tiny_vae=root / "taesd",
        pickle_ckpt=root / "checkpoints" / "pickled.ckpt",
        pickle_lora=root / "loras" / "pickled_lora.bin",
        pickle_folder=root / "sd15_bin",
    )


def scene(height: int = 64, width: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A small synthetic frame and its four control maps in the conditioning conventions."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = yy / height, xx / width
    disc = ((x - 0.5) ** 2 + (y - 0.55) ** 2) < 0.09
    beauty = np.stack([0.3 + 0.5 * x, 0.4 + 0.3 * y, 0.8 - 0.4 * y], axis=-1)
    beauty[disc] = (0.9, 0.3, 0.2)
    depth = np.where(disc, 1.0 - 0.5 * y, 0.2 * (1.0 - y)).astype(np.float32)
    normal = np.full((height, width, 3), (0.5, 0.5, 1.0), np.float32)
    normal[disc, 0] = np.clip(0.5 - (x[disc] - 0.5), 0, 1)
    lineart = np.zeros((height, width), np.float32)
    edge = disc ^ np.roll(disc, 1, axis=0)
    lineart[edge] = 1.0
    segmentation = np.zeros((height, width, 3), np.float32)
    segmentation[disc] = np.array((204, 5, 255)) / 255.0
    segmentation[~disc] = np.array((6, 230, 230)) / 255.0
    controls = {"depth": depth, "normal": normal, "lineart": lineart, "segmentation": segmentation}
    return np.clip(beauty, 0, 1).astype(np.float32), controls


@pytest.fixture
def make_request(tiny: TinyModels):
    """`make_request(seed=0, size=(64, 64), request_fields=None, **values)` -> a StyleRequest on the tiny SD1.5
    folder, 2 steps; `values` are `DiffusionSettings` fields (None drops one back to its default).

    Text to image with Euler a unless `values` say otherwise (the settings' own defaults are image to image
    with DPM++ 2M Karras): the tests compare against that plain run.
    """
    from stylepass_core.engine_api import StyleRequest
    from stylepass_core.engines.diffusion import DiffusionSettings

    def make(seed: int = 0, size: tuple[int, int] = (64, 64), request_fields: dict | None = None, **values):
        beauty, controls = scene(*size)
        fields = {
            "model": str(tiny.sd15),
            "prompt": "a red house by a lake",
            "steps": 2,
            "guidance": 5.0,
            "denoise": 1.0,
            "scheduler": "euler_a",
        }
        fields.update(values)
        settings = DiffusionSettings(**{k: v for k, v in fields.items() if v is not None})
        return StyleRequest(
            beauty=beauty, settings=settings, controls=controls, seed=seed, **(request_fields or {})
        )

    return make


@pytest.fixture
def engine():
    from stylepass_core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine()
    yield engine
    engine.release()


class AbortAfter:
    """A Progress that sets the abort event once `steps` denoising steps are reported."""

    def __init__(self, steps: int) -> None:
        self.abort = threading.Event()
        self.steps = steps
        self.messages: list[str] = []

    def update(self, done: int, total: int, message: str = "") -> None:
        self.messages.append(message)
        if message.startswith("Denoising step") and int(message.split()[2].split("/")[0]) >= self.steps:
            self.abort.set()
