# SPDX-License-Identifier: GPL-3.0-or-later
"""The fast live preset (`engines/diffusion/live.py`): its rules on plain settings, the tiny autoencoder
found by convention, and live requests through a real local worker that stays warm and writes no files.

The rule tests need neither torch nor a model; the engine and worker tests run the session's tiny
random-weight models (conftest) on the CPU.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import scene

from stylepass_core.engine_api import StyleRequest
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora, models
from stylepass_core.engines.diffusion.live import (
    CONSISTENCY_MAX_STEPS,
    LIVE_DENOISE,
    LIVE_MAX_GUIDANCE,
    LIVE_STEPS,
    live_settings,
    model_kind,
)
from stylepass_core.engines.diffusion.settings import TINY_VAE

PREVIEW = (144, 256)  # (H, W): a 16:9 view at the smallest live size, already in multiples of 8
SMALL = (64, 112)  # the same shape, smaller, where the size does not matter (the CPU has 2 cores)


@pytest.fixture(autouse=True)
def no_hub_taesd(monkeypatch):
    """A developer's Hugging Face cache may hold madebyollin/taesd: look for ids that exist nowhere."""
    for family in models.TINY_VAE_HUB_IDS:
        monkeypatch.setitem(models.TINY_VAE_HUB_IDS, family, "stylepass-tests/no-such-taesd")


def _artist(**values) -> DiffusionSettings:
    fields = {
        "model": "sd15/dreamshaper",
        "prompt": "a watercolour castle",
        "steps": 30,
        "guidance": 7.5,
        "denoise": 1.0,
        "scheduler": "dpmpp_2m_karras",
        "controls": (ControlUnit(map="depth", model="cn/depth", weight=0.8, end=0.9),),
    }
    fields.update(values)
    return DiffusionSettings(**fields)


def _changed(before: DiffusionSettings, after: DiffusionSettings) -> set[str]:
    old, new = before.values(), after.values()
    return {name for name in old if old[name] != new[name]}


# ---------------------------------------------------------------------------------------------------------
# Rules (no torch, no model)


def test_ordinary_model_gets_few_steps_img2img_and_the_tiny_vae():
    artist = _artist()
    live = live_settings(artist)
    assert model_kind(artist) == "ordinary"
    assert live.scheduler == "dpmpp_2m_karras" and live.guidance == LIVE_MAX_GUIDANCE
    assert live.denoise == LIVE_DENOISE and live.img2img
    assert int(live.steps * live.denoise) == LIVE_STEPS
    assert live.vae == TINY_VAE
    # Everything else is the artist's: prompt, the same control units, memory settings, device.
    assert _changed(artist, live) == {"steps", "guidance", "denoise", "vae"}
    assert live.controls == artist.controls and live.control_maps() == ("depth",)


def test_the_artists_denoise_below_one_and_low_guidance_are_kept():
    live = live_settings(_artist(denoise=0.45, guidance=3.0))
    assert live.denoise == 0.45 and live.guidance == 3.0 and int(live.steps * 0.45) == LIVE_STEPS


@pytest.mark.parametrize("denoise", [0.05, 0.1, 0.3, 0.4, 0.6, 0.7, 0.75, 0.9, 0.99])
def test_about_four_denoising_steps_whatever_the_denoise(denoise):
    live = live_settings(_artist(denoise=denoise))
    assert int(live.steps * live.denoise) >= LIVE_STEPS
    assert int((live.steps - 1) * live.denoise) < LIVE_STEPS  # the fewest steps that do it


def test_steps_and_denoise_arguments():
    live = live_settings(_artist(), steps=2, denoise=0.5)
    assert live.denoise == 0.5 and live.steps == 4
    assert live_settings(_artist(denoise=0.01, steps=100)).denoise == 0.05  # at least one step must fit
    for bad in ({"steps": 0}, {"steps": 51}, {"steps": 2.0}, {"denoise": 1.0}, {"denoise": 0.0}):
        with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
            live_settings(_artist(), **bad)


@pytest.mark.parametrize(
    ("values", "kind", "scheduler"),
    [
        ({"model": "SimianLuo/LCM_Dreamshaper_v7"}, "lcm", "lcm"),
        ({"loras": (Lora(file="/m/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors"),)}, "lcm", "lcm"),
        ({"loras": (Lora(file="/m/loras/TCD-SD15-LoRA.safetensors"),)}, "tcd", "tcd"),
        ({"loras": (Lora(file="/m/Hyper-SD15-8steps-lora.safetensors"),)}, "tcd", "tcd"),
        ({"model": "sdxl/sdxl_lightning_4step.safetensors"}, "lightning", "euler_trailing"),
        ({"loras": (Lora(file="/m/sdxl_lightning_4step_lora.safetensors"),)}, "lightning", "euler_trailing"),
        ({"model": "stabilityai/sdxl-turbo"}, "turbo", "euler_a_trailing"),
        # A LoRA of lightning bolts is not SDXL-Lightning; a disabled LCM LoRA does not count.
        ({"loras": (Lora(file="/m/lightning_bolts.safetensors"),)}, "ordinary", "dpmpp_2m_karras"),
        ({"loras": (Lora(file="/m/lcm-lora.safetensors", enabled=False),)}, "ordinary", "dpmpp_2m_karras"),
        # Folders above the last two path parts say nothing about the model.
        ({"model": "/home/lcm/turbo/sd15/dreamshaper"}, "ordinary", "dpmpp_2m_karras"),
    ],
)
def test_kind_from_names(values, kind, scheduler):
    artist = _artist(**values)
    live = live_settings(artist)
    assert model_kind(artist) == kind and live.scheduler == scheduler
    expected_guidance = LIVE_MAX_GUIDANCE if kind == "ordinary" else 1.0  # distilled: no CFG
    assert live.guidance == expected_guidance


def test_a_few_step_scheduler_the_artist_chose_is_kept_with_its_guidance():
    live = live_settings(_artist(scheduler="lcm", guidance=1.5, denoise=0.5))
    assert (live.scheduler, live.guidance, live.denoise, live.steps) == ("lcm", 1.5, 0.5, 8)
    assert live_settings(_artist(scheduler="euler_a_trailing", guidance=0.0)).guidance == 0.0


def test_consistency_schedules_stay_within_50_steps():
    live = live_settings(_artist(scheduler="lcm", denoise=0.05))
    assert live.steps == CONSISTENCY_MAX_STEPS and int(live.steps * live.denoise) >= 1
    assert live_settings(_artist(denoise=0.05)).steps == 80  # an ordinary scheduler has no such limit


def _folder(root: Path, scheduler: dict, unet: dict | None = None, index: str = "StableDiffusionPipeline"):
    (root / "unet").mkdir(parents=True)
    (root / "scheduler").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": index}))
    (root / "unet" / "config.json").write_text(json.dumps(unet or {"cross_attention_dim": 768}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return str(root)


def _scheduler_and_guidance(model: str, **values) -> tuple[str, float]:
    live = live_settings(_artist(model=model, **values))
    return live.scheduler, live.guidance


def test_kind_from_a_local_folders_configs(tmp_path):
    lcm_unet = _folder(tmp_path / "a", {"_class_name": "LCMScheduler"}, {"time_cond_proj_dim": 256})
    # The UNet embeds the guidance: it costs no second pass, so the artist's is kept.
    assert _scheduler_and_guidance(lcm_unet, guidance=8.0) == ("lcm", 8.0)
    lcm = _folder(tmp_path / "b", {"_class_name": "LCMScheduler"})
    assert _scheduler_and_guidance(lcm) == ("lcm", 1.0)
    tcd = _folder(tmp_path / "c", {"_class_name": "TCDScheduler"})
    assert _scheduler_and_guidance(tcd) == ("tcd", 1.0)
    turbo = _folder(
        tmp_path / "d", {"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"}
    )
    assert model_kind(_artist(model=turbo)) == "own" and _scheduler_and_guidance(turbo) == ("model", 1.0)
    # A relative name is the worker's to resolve: not looked up here, even when a folder by that name exists.
    assert model_kind(_artist(model=os.path.relpath(lcm))) == "ordinary"
    plain = _folder(tmp_path / "e", {"_class_name": "PNDMScheduler", "timestep_spacing": "leading"})
    assert model_kind(_artist(model=plain)) == "ordinary"
    lora = Lora(file="/m/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors")
    assert model_kind(_artist(model=plain, loras=(lora,))) == "lcm"  # the LoRA's name still tells


def test_a_vae_the_artist_set_is_kept():
    assert live_settings(_artist(vae="vae/sd-vae-ft-mse")).vae == "vae/sd-vae-ft-mse"
    assert live_settings(_artist(), tiny_vae=False).vae == ""


def test_live_settings_import_neither_torch_nor_bpy():
    code = (
        "import sys; from stylepass_core.engines.diffusion.live import live_settings; "
        "assert 'torch' not in sys.modules and 'bpy' not in sys.modules and 'diffusers' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )


def test_tiny_vae_places_in_order(tmp_path, tiny):
    """vae_tiny/ in the model folder, then taesd beside the model, then taesd in a model folder; only an
    AutoencoderTiny counts, and SDXL looks for taesdxl."""
    model = tmp_path / "models" / "sd15"
    shutil.copytree(tiny.sd15_config, model)
    config = models.pipeline_config(model)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny.tiny_vae, elsewhere / "taesd")
    notes: list[str] = []
    assert models.find_tiny_vae(model, config, [], notes) is None and notes == []
    assert models.find_tiny_vae(model, config, [elsewhere], notes) == (elsewhere / "taesd").resolve()
    shutil.copytree(tiny.cn_depth, model.parent / "taesd")  # a folder of that name that is no autoencoder
    assert models.find_tiny_vae(model, config, [elsewhere], notes) == (elsewhere / "taesd").resolve()
    assert any("is not a tiny autoencoder" in note for note in notes)
    shutil.copytree(tiny.tiny_vae, model / "vae_tiny")
    assert models.find_tiny_vae(model, config, [elsewhere], []) == (model / "vae_tiny").resolve()
    sdxl = models.pipeline_config(tiny.sdxl)
    assert models.find_tiny_vae(tiny.sdxl, sdxl, [elsewhere], []) is None  # taesd is not for SDXL
    shutil.copytree(tiny.tiny_vae, elsewhere / "taesdxl")
    assert models.find_tiny_vae(tiny.sdxl, sdxl, [elsewhere], []) == (elsewhere / "taesdxl").resolve()


# ---------------------------------------------------------------------------------------------------------
# The engine with the tiny models


@pytest.fixture(scope="module")
def live_models(tiny, tmp_path_factory) -> Path:
    """A model folder: `sd15` with its tiny autoencoder in `vae_tiny/`, `bare/sd15` without one anywhere,
    and the depth ControlNet."""
    root = tmp_path_factory.mktemp("live-models")
    shutil.copytree(tiny.sd15, root / "sd15")
    shutil.copytree(tiny.tiny_vae, root / "sd15" / "vae_tiny")
    shutil.copytree(tiny.sd15, root / "bare" / "sd15")
    shutil.copytree(tiny.cn_depth, root / "cn_depth")
    return root


def _live_request(model: Path | str, cn: Path | str, seed: int = 5, size=SMALL, **values) -> StyleRequest:
    beauty, controls = scene(*size)
    artist = DiffusionSettings(
        model=str(model),
        prompt="a red house by a lake",
        controls=(ControlUnit(map="depth", model=str(cn), weight=0.8),),
        **values,
    )
    return StyleRequest(beauty=beauty, settings=live_settings(artist), controls=controls, seed=seed)


@pytest.mark.needs_torch
def test_live_request_decodes_with_the_tiny_autoencoder_and_repeats_exactly(engine, live_models):
    request = _live_request(live_models / "sd15", live_models / "cn_depth", size=PREVIEW)
    first = engine.run(request)
    assert first.image.shape == (*PREVIEW, 3) and first.info["mode"] == "img2img"
    assert first.info["vae"] == "AutoencoderTiny" and first.info["steps_run"] == LIVE_STEPS
    assert f"vae: {(live_models / 'sd15' / 'vae_tiny').resolve()}" in first.info["loaded"]
    assert first.info["size"]["generated"] == list(PREVIEW) and first.info["notes"] == []
    again = engine.run(_live_request(live_models / "sd15", live_models / "cn_depth", size=PREVIEW))
    np.testing.assert_array_equal(again.image, first.image)  # fixed seed: nothing random per call
    assert again.info["loaded"] == [] and again.info["load_counts"] == {"base": 1, "vae": 1, "controlnet": 1}
    assert engine.loaded_models() == [
        f"base: {(live_models / 'sd15').resolve()}",
        f"vae: {(live_models / 'sd15' / 'vae_tiny').resolve()}",
        f"controlnet: {(live_models / 'cn_depth').resolve()}",
    ]
    full = engine.run(
        StyleRequest(
            beauty=request.beauty,
            settings=request.settings.replace(vae=""),
            controls=request.controls,
            seed=request.seed,
        )
    )
    assert full.info["vae"] == "AutoencoderKL" and float(np.abs(full.image - first.image).max()) > 1e-3


@pytest.mark.needs_torch
def test_live_and_final_frames_take_turns_without_reloading(engine, live_models):
    live = _live_request(live_models / "sd15", live_models / "cn_depth")
    final = StyleRequest(
        beauty=live.beauty,
        settings=live.settings.replace(vae="", steps=3, scheduler="euler_a"),
        controls=live.controls,
        seed=5,
    )
    pictures = [engine.run(r) for r in (live, final, live, final)]
    assert [p.info["vae"] for p in pictures] == ["AutoencoderTiny", "AutoencoderKL"] * 2
    np.testing.assert_array_equal(pictures[0].image, pictures[2].image)
    np.testing.assert_array_equal(pictures[1].image, pictures[3].image)
    assert dict(engine.load_counts) == {"base": 1, "vae": 1, "controlnet": 1}


@pytest.mark.needs_torch
def test_without_a_tiny_autoencoder_the_models_own_vae_decodes(engine, live_models, tiny):
    result = engine.run(_live_request(live_models / "bare" / "sd15", live_models / "cn_depth"))
    assert result.info["vae"] == "AutoencoderKL" and engine.load_counts["vae"] == 0
    assert any("has no tiny autoencoder" in note for note in result.info["notes"])
    # The session's SD1.5 folder has a `taesd` folder beside it: the sibling rule finds it.
    beside = engine.run(_live_request(tiny.sd15, tiny.cn_depth))
    assert (
        beside.info["vae"] == "AutoencoderTiny" and f"vae: {tiny.tiny_vae.resolve()}" in beside.info["loaded"]
    )


@pytest.mark.needs_torch
def test_model_folders_hold_a_shared_taesd(engine, live_models, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shutil.copytree(live_models / "sd15" / "vae_tiny", shared / "taesd")
    monkeypatch.setenv("STYLEPASS_MODEL_DIRS", os.pathsep.join([str(live_models), str(shared)]))
    result = engine.run(_live_request(live_models / "bare" / "sd15", live_models / "cn_depth"))
    assert result.info["vae"] == "AutoencoderTiny"
    assert f"vae: {(shared / 'taesd').resolve()}" in result.info["loaded"]


@pytest.mark.needs_torch
def test_odd_preview_sizes_come_back_at_their_size(engine, live_models):
    result = engine.run(_live_request(live_models / "sd15", live_models / "cn_depth", size=(61, 110)))
    assert result.image.shape == (61, 110, 3)
    assert result.info["size"]["generated"] == [64, 112] and "multiples of 8" in result.info["notes"][0]


@pytest.mark.needs_torch
@pytest.mark.parametrize("name", ["lcm-lora-tiny", "tcd-lora-tiny"])
def test_few_step_lora_presets_run(engine, live_models, tiny, tmp_path, name):
    lora = tmp_path / name / "pytorch_lora_weights.safetensors"
    lora.parent.mkdir()
    shutil.copy(tiny.lora, lora)
    request = _live_request(live_models / "sd15", live_models / "cn_depth", loras=(Lora(file=str(lora)),))
    assert request.settings.scheduler == name[:3] and request.settings.guidance == 1.0
    result = engine.run(request)
    assert result.info["steps_run"] == LIVE_STEPS and np.isfinite(result.image).all()
    np.testing.assert_array_equal(engine.run(request).image, result.image)


@pytest.mark.needs_torch
@pytest.mark.parametrize("scheduler", ["euler_trailing", "euler_a_trailing"])
def test_trailing_schedulers_the_artist_chose_run_image_to_image(engine, live_models, scheduler):
    request = _live_request(live_models / "sd15", live_models / "cn_depth", scheduler=scheduler, guidance=0.0)
    assert (request.settings.scheduler, request.settings.guidance) == (scheduler, 0.0)
    result = engine.run(request)
    assert result.info["steps_run"] == LIVE_STEPS and np.isfinite(result.image).all()
    np.testing.assert_array_equal(engine.run(request).image, result.image)


# ---------------------------------------------------------------------------------------------------------
# Through a real local worker


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and modification time (a folder's changes whenever
    something is created in it or removed from it, so a temporary file written and deleted shows too)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.needs_torch
def test_live_requests_through_a_local_worker_stay_warm_and_write_no_files(live_models, tmp_path):
    from stylepass_core.worker.manager import LocalWorker, stage_core

    models_dir = tmp_path / "models"
    shutil.copytree(live_models, models_dir)
    home, temp, logs = tmp_path / "home", tmp_path / "tmp", tmp_path / "logs"
    for folder in (home, temp, logs):
        folder.mkdir()
    env = {
        "HOME": str(home),
        "TMPDIR": str(temp),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    worker = LocalWorker(
        sys.executable,
        env=env,
        model_dirs=[models_dir],
        log_path=logs / "worker.log",
        core_dir=stage_core(tmp_path / "code"),
        startup_timeout=120,
        request_timeout=120,
    )
    try:
        worker.ensure_running()
        before = _files(tmp_path)
        # Names relative to the model folder, as the add-on sends them; the worker resolves them.
        request = _live_request("sd15", "cn_depth", seed=11, size=PREVIEW)
        started = time.perf_counter()
        first = worker.run("DIFFUSION", request)
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = worker.run("DIFFUSION", _live_request("sd15", "cn_depth", seed=11, size=PREVIEW))
        second_seconds = time.perf_counter() - started
        health = worker.client().health()
        after = _files(tmp_path)
    finally:
        worker.stop()

    assert first.image.shape == second.image.shape == (*PREVIEW, 3)
    np.testing.assert_array_equal(second.image, first.image)
    assert first.info["vae"] == "AutoencoderTiny" and len(first.info["loaded"]) == 3
    # Warm: the second call loaded nothing, and the worker has loaded each model once.
    assert second.info["loaded"] == [] and second.info["load_counts"] == {
        "base": 1,
        "vae": 1,
        "controlnet": 1,
    }
    row = next(row for row in health["engines"] if row["id"] == "DIFFUSION")
    assert row["warm"] and f"base: {(models_dir / 'sd15').resolve()}" in row["loaded_models"]
    # No file was written or changed anywhere the worker could write, except its log.
    log = str((logs / "worker.log").relative_to(tmp_path))
    assert {k: v for k, v in after.items() if k != log} == {k: v for k, v in before.items() if k != log}
    print(f"live call 1 (imports + loads): {first_seconds:.2f} s, call 2 (warm): {second_seconds:.2f} s")
