# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine end to end on tiny random-weight models, loaded through the real loading code.

Random weights make meaningless pictures, so the tests compare pixels between runs: the same inputs must give
the same pixels, and every setting under test must change them (or, when it is switched off again, restore
them exactly). 64x64 frames and 2 steps keep each run to a fraction of a second on a 2-core CPU.
"""

import json

import numpy as np
import pytest
from conftest import AbortAfter
from stylepass_core import engine_api
from stylepass_core.engine_api import Aborted, StyleRequest

pytestmark = pytest.mark.needs_torch


def _differ(a: np.ndarray, b: np.ndarray, at_least: float = 1e-3) -> bool:
    return float(np.abs(a - b).max()) > at_least


def _check_result(result, shape=(64, 64, 3)) -> None:
    result.validate()
    assert result.image.shape == shape and result.image.dtype == np.float32
    assert np.isfinite(result.image).all() and 0.0 <= result.image.min() and result.image.max() <= 1.0
    json.dumps(result.info, allow_nan=False)


# ---------------------------------------------------------------------------------------------------------
# Registration


def test_registered_and_available():
    engine = engine_api.get_engine("DIFFUSION")
    assert engine.available() == (True, "")
    assert ("none", "Prompt only") in engine.styles()


# ---------------------------------------------------------------------------------------------------------
# Modes and sources


def test_txt2img_from_diffusers_folder(engine, make_request, tiny):
    result = engine.run(make_request())
    _check_result(result)
    assert result.info["mode"] == "txt2img"
    assert result.info["loaded"] == [f"base: {tiny.sd15.resolve()}"]
    assert result.info["steps_run"] == 2
    assert result.info["device"]["device"] == "cpu" and result.info["device"]["dtype"] == "float32"
    assert result.image.std() > 0.01  # not a flat image


def test_single_file_checkpoint_with_local_config_matches_folder(engine, make_request, tiny):
    folder = engine.run(make_request()).image
    beside = engine.run(make_request(model=str(tiny.sd15_single))).image
    explicit = engine.run(
        make_request(model=str(tiny.sd15_single_no_config), model_config=str(tiny.sd15_config))
    )
    # Same weights through diffusers' original-layout conversion: the very same pixels.
    np.testing.assert_allclose(beside, folder, atol=1e-5)
    np.testing.assert_allclose(explicit.image, folder, atol=1e-5)


def test_single_file_config_root_by_family(make_request, tiny, tmp_path):
    from stylepass_core.engines.diffusion import DiffusionEngine

    (tmp_path / "sd15").symlink_to(tiny.sd15_config, target_is_directory=True)
    engine = DiffusionEngine(config_root=tmp_path)
    _check_result(engine.run(make_request(model=str(tiny.sd15_single_no_config))))


def test_img2img_follows_the_beauty(engine, make_request):
    txt = engine.run(make_request()).image
    request = make_request(denoise=0.5, steps=4)
    img = engine.run(request)
    _check_result(img)
    assert img.info["mode"] == "img2img" and img.info["steps_run"] == 2
    assert _differ(img.image, txt)
    darker = make_request(denoise=0.5, steps=4)
    darker.beauty = (darker.beauty * 0.3).astype(np.float32)
    assert _differ(engine.run(darker).image, img.image), "img2img ignored the beauty"


def test_two_controlnets_at_once_with_different_weights(engine, make_request, tiny):
    plain = engine.run(make_request()).image
    both = {"controlnet.depth.model": str(tiny.cn_depth), "controlnet.normal.model": str(tiny.cn_normal)}
    a = engine.run(make_request(**both, **{"controlnet.depth.weight": 1.0, "controlnet.normal.weight": 0.3}))
    b = engine.run(make_request(**both, **{"controlnet.depth.weight": 0.3, "controlnet.normal.weight": 1.0}))
    _check_result(a)
    assert [u["map"] for u in a.info["controlnets"]] == ["depth", "normal"]
    assert [u["weight"] for u in a.info["controlnets"]] == [1.0, 0.3]
    assert _differ(a.image, plain) and _differ(b.image, plain) and _differ(a.image, b.image)
    # Weight 0 on every unit adds exactly nothing: the wiring is per unit, not a global switch.
    off = engine.run(
        make_request(**both, **{"controlnet.depth.weight": 0.0, "controlnet.normal.weight": 0.0})
    )
    np.testing.assert_allclose(off.image, plain, atol=1e-5)
    # A unit's start/end window matters too.
    late = engine.run(make_request(**both, **{"controlnet.depth.start": 0.5, "controlnet.normal.start": 0.5}))
    assert _differ(late.image, engine.run(make_request(**both)).image)


def test_controlnet_img2img_and_single_file_controlnet(engine, make_request, tiny):
    params = {"controlnet.lineart.model": str(tiny.cn_lineart_single), "denoise": 0.5, "steps": 4}
    result = engine.run(make_request(**params))
    _check_result(result)
    assert result.info["mode"] == "img2img"
    assert _differ(result.image, engine.run(make_request(denoise=0.5, steps=4)).image)


def test_segmentation_unit(engine, make_request, tiny):
    result = engine.run(make_request(**{"controlnet.segmentation.model": str(tiny.cn_depth)}))
    assert result.info["controlnets"][0]["convention"] == "ADE20K palette colours"


def test_lora_load_unload_and_reweight_without_reloading_the_base(engine, make_request, tiny):
    plain = engine.run(make_request()).image
    with_lora = engine.run(make_request(**{"lora.1.file": str(tiny.lora)}))
    assert with_lora.info["loaded"] == [f"lora: {tiny.lora.resolve()}"]
    assert _differ(with_lora.image, plain)
    half = engine.run(make_request(**{"lora.1.file": str(tiny.lora), "lora.1.weight": 0.5}))
    assert half.info["loaded"] == [] and _differ(half.image, with_lora.image)
    swapped = engine.run(make_request(**{"lora.1.file": str(tiny.lora_other)}))
    assert swapped.info["loaded"] == [f"lora: {tiny.lora_other.resolve()}"]
    assert _differ(swapped.image, with_lora.image)
    unloaded = engine.run(make_request())
    np.testing.assert_allclose(unloaded.image, plain, atol=1e-5)
    assert engine.load_counts["base"] == 1 and engine.load_counts["lora"] == 2


def test_same_seed_same_pixels_different_seed_different(engine, make_request):
    first = engine.run(make_request(seed=3)).image
    again = engine.run(make_request(seed=3)).image
    other = engine.run(make_request(seed=4)).image
    np.testing.assert_array_equal(first, again)
    assert _differ(first, other)
    # A fresh engine (cold load) gives the same pixels too.
    from stylepass_core.engines.diffusion import DiffusionEngine

    np.testing.assert_array_equal(DiffusionEngine().run(make_request(seed=3)).image, first)


@pytest.mark.parametrize("scheduler", ["dpmpp_2m_karras", "lcm", "model"])
def test_schedulers(engine, make_request, scheduler):
    reference = engine.run(make_request()).image  # euler_a
    result = engine.run(make_request(scheduler=scheduler))
    _check_result(result)
    assert _differ(result.image, reference)


def test_abort_mid_run_then_a_good_run(engine, make_request, tiny):
    params = {"steps": 4, "controlnet.depth.model": str(tiny.cn_depth)}
    reference = engine.run(make_request(**params)).image
    progress = AbortAfter(steps=2)
    with pytest.raises(Aborted):
        engine.run(make_request(**params), progress=progress, abort=progress.abort)
    assert "Denoising step 2/4" in progress.messages and "Denoising step 3/4" not in progress.messages
    after = engine.run(make_request(**params))
    np.testing.assert_array_equal(after.image, reference)
    assert after.info["loaded"] == []


def test_progress_reports_every_step(engine, make_request):
    seen = []

    class Recorder:
        def update(self, done, total, message=""):
            seen.append((done, total, message))

    engine.run(make_request(steps=3), progress=Recorder())
    steps = [m for _, _, m in seen if m.startswith("Denoising step")]
    assert steps == ["Denoising step 1/3", "Denoising step 2/3", "Denoising step 3/3"]
    assert all(0 <= done <= total for done, total, _ in seen)


def test_warm_second_call_loads_nothing(engine, make_request, tiny, monkeypatch):
    import diffusers
    import transformers

    params = {"controlnet.depth.model": str(tiny.cn_depth), "lora.1.file": str(tiny.lora)}
    first = engine.run(make_request(**params))
    assert len(first.info["loaded"]) == 3
    counts = dict(engine.load_counts)

    calls = []
    for cls in (diffusers.ModelMixin, diffusers.DiffusionPipeline, transformers.PreTrainedModel):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            calls.append(klass.__name__)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    second = engine.run(make_request(**params, prompt="another prompt", seed=9, steps=3))
    assert second.info["loaded"] == [] and calls == [] and dict(engine.load_counts) == counts

    # Changing only the ControlNet set loads only the new ControlNet.
    third = engine.run(make_request(**params, **{"controlnet.normal.model": str(tiny.cn_normal)}))
    assert third.info["loaded"] == [f"controlnet: {tiny.cn_normal.resolve()}"]
    assert calls == ["ControlNetModel"]
    assert engine.load_counts["base"] == 1 and engine.load_counts["controlnet"] == 2


def test_release_then_reload(engine, make_request):
    first = engine.run(make_request()).image
    engine.release()
    again = engine.run(make_request())
    assert again.info["loaded"] and engine.load_counts["base"] == 2
    np.testing.assert_array_equal(again.image, first)


def test_long_prompt_is_chunked_not_cut(engine, make_request):
    words = ", ".join(f"detail{i} stone wall" for i in range(30))  # far over 75 tokens
    long = engine.run(make_request(prompt=words))
    _check_result(long)
    assert long.info["prompt_tokens"] > 150 and long.info["prompt_chunks"] >= 3
    from stylepass_core.engines.diffusion import prompts

    # The tail of the prompt changes the picture, so it was not dropped.
    head = words[: len(words) // 3]
    assert _differ(engine.run(make_request(prompt=head)).image, long.image)
    too_long = " ".join(["word"] * (prompts.MAX_CHUNKS * prompts.CHUNK_TOKENS + 10))
    with pytest.raises(ValueError, match="shorten it"):
        engine.run(make_request(prompt=too_long))


def test_long_negative_prompt_pads_the_short_prompt(engine, make_request):
    result = engine.run(make_request(prompt="a house", negative_prompt=" ".join(["blurry"] * 20)))
    assert result.info["prompt_chunks"] == 2


def test_size_snapped_to_multiples_of_8_with_a_note(engine, make_request):
    request = make_request(size=(70, 100))
    result = engine.run(request)
    _check_result(result, shape=(70, 100, 3))
    assert result.info["size"] == {"output": [70, 100], "generated": [72, 104]}
    assert any("multiples of 8" in note for note in result.info["notes"])


def test_detail_scale_sets_the_generation_size(engine, make_request):
    result = engine.run(make_request(size=(64, 64), request_fields={"detail_scale": 1.5}))
    assert result.info["size"]["generated"] == [96, 96] and result.image.shape == (64, 64, 3)


def test_strength_and_selection_compose_like_neural_style(engine, make_request):
    request = make_request(request_fields={"strength": 0.0})
    np.testing.assert_allclose(engine.run(request).image, request.beauty, atol=1e-6)
    index = np.zeros((64, 64), np.int32)
    index[:, 32:] = 1
    selected = make_request(request_fields={"object_index": index, "exclude_objects": (1,)})
    image = engine.run(selected).image
    np.testing.assert_allclose(image[:, 34:], selected.beauty[:, 34:], atol=1e-6)


def test_style_preset_changes_the_prompt(engine, make_request):
    plain = engine.run(make_request()).image
    styled = engine.run(make_request(request_fields={"style": "watercolour"}))
    assert _differ(styled.image, plain)


def test_tiny_autoencoder_as_vae(engine, make_request, tiny):
    result = engine.run(make_request(vae=str(tiny.tiny_vae)))
    _check_result(result)
    assert result.info["vae"] == "AutoencoderTiny" and engine.load_counts["vae"] == 1
    back = engine.run(make_request())
    assert back.info["vae"] == "AutoencoderKL" and back.info["loaded"] == []
    with_controlnet = engine.run(
        make_request(vae=str(tiny.tiny_vae), **{"controlnet.depth.model": str(tiny.cn_depth)})
    )
    assert with_controlnet.info["vae"] == "AutoencoderTiny"


def test_memory_savers_keep_the_pixels(engine, make_request, tiny):
    params = {"controlnet.depth.model": str(tiny.cn_depth)}
    reference = engine.run(make_request(**params)).image
    saved = engine.run(make_request(**params, attention_slicing=True, vae_tiling=True)).image
    np.testing.assert_allclose(saved, reference, atol=1e-4)
    np.testing.assert_allclose(engine.run(make_request(**params)).image, reference, atol=1e-5)


def test_ip_adapter_style_image_then_unload(engine, make_request, tiny):
    """IP-Adapter on tiny random weights in the h94 layout (real IP-Adapter files are not reachable here)."""
    plain = engine.run(make_request()).image
    style = np.random.default_rng(0).random((48, 40, 3)).astype(np.float32)
    params = {
        "ip_adapter.model": str(tiny.ip_adapter),
        "ip_adapter.weight_name": "ip-adapter_tiny.safetensors",
    }
    steered = engine.run(
        make_request(**params, **{"ip_adapter.scale": 1.0}, request_fields={"style_image": style})
    )
    _check_result(steered)
    assert any(item.startswith("ip_adapter:") for item in steered.info["loaded"])
    assert _differ(steered.image, plain)
    np.testing.assert_allclose(engine.run(make_request()).image, plain, atol=1e-5)


def test_sdxl_txt2img_and_controlnet(engine, tiny):
    from conftest import scene

    beauty, controls = scene()
    base = {"model": str(tiny.sdxl), "prompt": "a castle", "steps": 2, "guidance": 5.0}
    plain = engine.run(StyleRequest(beauty=beauty, controls=controls, params=base))
    _check_result(plain)
    steered = engine.run(
        StyleRequest(
            beauty=beauty,
            controls=controls,
            params={**base, "controlnet.depth.model": str(tiny.sdxl_cn_depth)},
        )
    )
    assert _differ(steered.image, plain.image)
    long = engine.run(
        StyleRequest(beauty=beauty, controls=controls, params={**base, "prompt": "tower " * 30})
    )
    assert long.info["prompt_tokens"] > 75 and long.info["prompt_chunks"] >= 2
    img = engine.run(
        StyleRequest(beauty=beauty, controls=controls, params={**base, "denoise": 0.5, "steps": 4})
    )
    _check_result(img)


# ---------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming what to change


def test_pickle_files_refused(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"pickle.*allow_pickle=True"):
        engine.run(make_request(model=str(tiny.pickle_ckpt)))
    with pytest.raises(ValueError, match=r"pickle.*allow_pickle=True"):
        engine.run(make_request(model=str(tiny.pickle_folder)))
    with pytest.raises(ValueError, match=r"pickle.*allow_pickle=True"):
        engine.run(make_request(**{"lora.1.file": str(tiny.pickle_lora)}))
    assert engine.load_counts["lora"] == 0


def test_pickle_opt_in_loads_with_a_warning(engine, make_request, tiny):
    reference = engine.run(make_request()).image
    with pytest.warns(UserWarning, match="pickle"):
        result = engine.run(make_request(model=str(tiny.pickle_ckpt), allow_pickle=True))
    assert any("allow_pickle" in note for note in result.info["notes"])
    np.testing.assert_allclose(result.image, reference, atol=1e-5)


def test_unknown_model_id_offline(engine, make_request):
    with pytest.raises(ValueError, match=r"not in the Hugging Face cache.*allow_network=True"):
        engine.run(make_request(model="nobody-here/no-such-model"))


def test_folder_that_is_not_a_pipeline(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"not a diffusers pipeline.*model_index.json"):
        engine.run(make_request(model=str(tiny.cn_depth)))
    with pytest.raises(ValueError, match="does not exist"):
        engine.run(make_request(model=str(tiny.root / "missing")))


def test_checkpoint_without_config(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"needs a diffusers config folder.*model_config"):
        engine.run(make_request(model=str(tiny.sd15_single_no_config)))


def test_wrong_family_controlnet(engine, make_request, tiny):
    with pytest.raises(
        ValueError,
        match=r"ControlNet .* is SD1\.5-class \(custom\) \(cross-attention 64\).*cross_attention_dim",
    ):
        engine.run(make_request(**{"controlnet.depth.model": str(tiny.cn_wrong_family)}))
    with pytest.raises(ValueError, match=r"SDXL-class.*choose a depth ControlNet made for SD1.5-class"):
        engine.run(make_request(**{"controlnet.depth.model": str(tiny.sdxl_cn_depth)}))
    assert engine.load_counts["controlnet"] == 0  # refused from configs, before any weights were read


def test_checkpoint_config_of_another_family(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"SD1.5-class .* but its config folder .* SDXL-class"):
        engine.run(make_request(model=str(tiny.sd15_single_no_config), model_config=str(tiny.sdxl)))


def test_missing_control_map_and_style_image_without_ip_adapter(engine, make_request, tiny):
    request = make_request(**{"controlnet.depth.model": str(tiny.cn_depth)})
    del request.controls["depth"]
    with pytest.raises(ValueError, match="no 'depth' control map"):
        engine.run(request)
    style = np.zeros((40, 40, 3), np.float32)
    with pytest.raises(ValueError, match="IP-Adapter"):
        engine.run(make_request(request_fields={"style_image": style}))


def test_out_of_memory_names_what_to_change(engine, make_request, monkeypatch):
    from stylepass_core.engines.diffusion import OutOfMemory
    from stylepass_core.engines.diffusion.pipeline import ModelCache

    engine.run(make_request())

    def exhausted(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ModelCache, "generate", exhausted)
    with pytest.raises(OutOfMemory, match=r"lower the resolution.*attention_slicing=True"):
        engine.run(make_request())
    monkeypatch.undo()
    assert engine.run(make_request()).info["loaded"] == []


# ---------------------------------------------------------------------------------------------------------
# Need a GPU or real weights: skipped by default (see conftest)


@pytest.mark.gpu
def test_cuda_float16_auto(make_request, tiny):
    from stylepass_core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine()
    params = {"controlnet.depth.model": str(tiny.cn_depth), "lora.1.file": str(tiny.lora)}
    result = engine.run(make_request(**params))
    assert result.info["device"] == {"device": "cuda", "dtype": "float16", "reason": "auto: CUDA"}
    _check_result(result)
    offloaded = engine.run(make_request(**params, cpu_offload=True, attention_slicing=True, vae_tiling=True))
    _check_result(offloaded)
    engine.release()


@pytest.mark.real_weights
def test_real_sd15_with_depth_controlnet():
    """$STYLEPASS_REAL_WEIGHTS/sd15 (diffusers folder) and .../control_v11f1p_sd15_depth."""
    import os
    from pathlib import Path

    from conftest import scene
    from stylepass_core.engines.diffusion import DiffusionEngine

    root = Path(os.environ["STYLEPASS_REAL_WEIGHTS"])
    beauty, controls = scene(512, 512)
    params = {
        "model": str(root / "sd15"),
        "controlnet.depth.model": str(root / "control_v11f1p_sd15_depth"),
        "prompt": "a red ball on a blue floor, studio photo",
        "steps": 4,
    }
    result = DiffusionEngine().run(StyleRequest(beauty=beauty, controls=controls, params=params))
    _check_result(result, shape=(512, 512, 3))
    assert result.image.std() > 0.02
