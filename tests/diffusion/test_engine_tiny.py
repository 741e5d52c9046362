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
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora

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
    assert engine.settings_type is DiffusionSettings


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
    # The settings' own default is image to image: Denoise 0.75 repaints three quarters of the steps.
    default = engine.run(make_request(denoise=None, steps=4))
    assert default.info["mode"] == "img2img" and default.info["steps_run"] == 3


def _units(tiny, depth: dict | None = None, normal: dict | None = None) -> tuple[ControlUnit, ...]:
    """A depth and a normal ControlNet unit on the tiny ControlNets, with `depth`/`normal` field changes."""
    return (
        ControlUnit(map="depth", model=str(tiny.cn_depth), **(depth or {})),
        ControlUnit(map="normal", model=str(tiny.cn_normal), **(normal or {})),
    )


def test_two_controlnets_at_once_with_different_weights(engine, make_request, tiny):
    plain = engine.run(make_request()).image
    a = engine.run(make_request(controls=_units(tiny, {"weight": 1.0}, {"weight": 0.3})))
    b = engine.run(make_request(controls=_units(tiny, {"weight": 0.3}, {"weight": 1.0})))
    _check_result(a)
    assert [u["map"] for u in a.info["controlnets"]] == ["depth", "normal"]
    assert [u["weight"] for u in a.info["controlnets"]] == [1.0, 0.3]
    assert _differ(a.image, plain) and _differ(b.image, plain) and _differ(a.image, b.image)
    # Weight 0 on every unit adds exactly nothing: the wiring is per unit, not a global switch.
    off = engine.run(make_request(controls=_units(tiny, {"weight": 0.0}, {"weight": 0.0})))
    np.testing.assert_allclose(off.image, plain, atol=1e-5)
    # A unit's start/end window matters too.
    late = engine.run(make_request(controls=_units(tiny, {"start": 0.5}, {"start": 0.5})))
    both = engine.run(make_request(controls=_units(tiny))).image
    assert _differ(late.image, both)
    # A disabled unit is left out: the picture is the one without it.
    one = engine.run(make_request(controls=_units(tiny)[:1])).image
    disabled = engine.run(make_request(controls=_units(tiny, normal={"enabled": False})))
    assert [u["map"] for u in disabled.info["controlnets"]] == ["depth"]
    np.testing.assert_allclose(disabled.image, one, atol=1e-5)
    # Units reach the pipeline in the order they are listed, each with its own map.
    swapped = engine.run(make_request(controls=_units(tiny)[::-1]))
    assert [u["map"] for u in swapped.info["controlnets"]] == ["normal", "depth"]
    np.testing.assert_allclose(swapped.image, both, atol=1e-4)


def test_controlnet_img2img_and_single_file_controlnet(engine, make_request, tiny):
    lineart = ControlUnit(map="lineart", model=str(tiny.cn_lineart_single))
    result = engine.run(make_request(controls=(lineart,), denoise=0.5, steps=4))
    _check_result(result)
    assert result.info["mode"] == "img2img"
    assert _differ(result.image, engine.run(make_request(denoise=0.5, steps=4)).image)


def test_segmentation_unit(engine, make_request, tiny):
    result = engine.run(make_request(controls=(ControlUnit(map="segmentation", model=str(tiny.cn_depth)),)))
    assert result.info["controlnets"][0]["convention"] == "ADE20K palette colours"


def test_lora_load_unload_and_reweight_without_reloading_the_base(engine, make_request, tiny):
    plain = engine.run(make_request()).image
    with_lora = engine.run(make_request(loras=(Lora(file=str(tiny.lora)),)))
    assert with_lora.info["loaded"] == [f"lora: {tiny.lora.resolve()}"]
    assert with_lora.info["loras"] == [{"file": str(tiny.lora), "weight": 1.0}]
    assert _differ(with_lora.image, plain)
    half = engine.run(make_request(loras=(Lora(file=str(tiny.lora), weight=0.5),)))
    assert half.info["loaded"] == [] and _differ(half.image, with_lora.image)
    swapped = engine.run(make_request(loras=(Lora(file=str(tiny.lora_other)),)))
    assert swapped.info["loaded"] == [f"lora: {tiny.lora_other.resolve()}"]
    assert _differ(swapped.image, with_lora.image)
    unloaded = engine.run(make_request())
    np.testing.assert_allclose(unloaded.image, plain, atol=1e-5)
    # A disabled LoRA is left out, like none at all.
    disabled = engine.run(make_request(loras=(Lora(enabled=False, file=str(tiny.lora)),)))
    assert disabled.info["loras"] == [] and disabled.info["loaded"] == []
    np.testing.assert_allclose(disabled.image, plain, atol=1e-5)
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


@pytest.mark.parametrize(
    "scheduler", ["dpmpp_2m_karras", "lcm", "model", "tcd", "euler_trailing", "euler_a_trailing"]
)
def test_schedulers(engine, make_request, scheduler):
    reference = engine.run(make_request()).image  # euler_a (the fixture's)
    result = engine.run(make_request(scheduler=scheduler))
    _check_result(result)
    assert _differ(result.image, reference)


def test_abort_mid_run_then_a_good_run(engine, make_request, tiny):
    values = {"steps": 4, "controls": (ControlUnit(map="depth", model=str(tiny.cn_depth)),)}
    reference = engine.run(make_request(**values)).image
    progress = AbortAfter(steps=2)
    with pytest.raises(Aborted):
        engine.run(make_request(**values), progress=progress, abort=progress.abort)
    assert "Denoising step 2/4" in progress.messages and "Denoising step 3/4" not in progress.messages
    after = engine.run(make_request(**values))
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

    values = {
        "controls": (ControlUnit(map="depth", model=str(tiny.cn_depth)),),
        "loras": (Lora(file=str(tiny.lora)),),
    }
    first = engine.run(make_request(**values))
    assert len(first.info["loaded"]) == 3
    counts = dict(engine.load_counts)

    calls = []
    for cls in (diffusers.ModelMixin, diffusers.DiffusionPipeline, transformers.PreTrainedModel):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            calls.append(klass.__name__)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    second = engine.run(make_request(**values, prompt="another prompt", seed=9, steps=3))
    assert second.info["loaded"] == [] and calls == [] and dict(engine.load_counts) == counts

    # Changing only the ControlNet set loads only the new ControlNet.
    third = engine.run(make_request(**{**values, "controls": _units(tiny)}))
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


def test_output_size_sets_the_generation_size(engine, make_request):
    # The generation size is the output size (snapped), not the beauty's: a 64x64 render out at 96x80.
    result = engine.run(make_request(size=(64, 64), request_fields={"width": 96, "height": 80}))
    _check_result(result, shape=(80, 96, 3))
    assert result.info["size"] == {"output": [80, 96], "generated": [80, 96]} and result.info["notes"] == []


def test_the_frame_writer_mixes_the_engines_picture_with_the_render(engine, make_request, tmp_path):
    """Strength and the object selection moved out of the engine: the engine returns its own picture, and the
    frame writer mixes it with the render as it does for every engine, and records settings that rebuild it."""
    from stylepass_core.settings import FrameSettings
    from stylepass_core.settings import from_plain as settings_from_plain
    from stylepass_core.stylise_job import Finish, stylise_frame

    def runner(engine_id, request, progress, abort):
        assert engine_id == "DIFFUSION"
        return engine.run(request, progress, abort)

    request = make_request()
    generated = engine.run(request).image
    assert _differ(generated, request.beauty)
    finish = Finish(FrameSettings(strength=0.0), request.beauty)
    none = stylise_frame(request, tmp_path / "a.png", tmp_path / "a.json", finish, runner=runner)
    np.testing.assert_allclose(none.image, request.beauty, atol=1e-6)
    assert settings_from_plain(none.record["request"]["settings"]) == request.settings
    assert none.record["frame"]["strength"] == 0.0
    index = np.zeros((64, 64), np.int32)
    index[:, 32:] = 1
    finish = Finish(FrameSettings(object_filter="EXCLUDE"), request.beauty, index, selection=(1,))
    selected = stylise_frame(request, tmp_path / "b.png", tmp_path / "b.json", finish, runner=runner)
    np.testing.assert_allclose(selected.image[:, 34:], request.beauty[:, 34:], atol=1e-6)
    np.testing.assert_allclose(selected.image[:, :30], generated[:, :30], atol=1e-6)


def test_style_preset_changes_the_prompt(engine, make_request):
    plain = engine.run(make_request()).image
    styled = engine.run(make_request(style_preset="watercolour"))
    assert _differ(styled.image, plain)


def test_clip_skip_uses_an_earlier_text_encoder_layer(engine, make_request):
    plain = engine.run(make_request()).image
    skipped = engine.run(make_request(clip_skip=1))
    _check_result(skipped)
    assert _differ(skipped.image, plain)
    np.testing.assert_array_equal(engine.run(make_request(clip_skip=1)).image, skipped.image)  # deterministic
    # The tiny text encoder has 2 layers: skipping both leaves nothing to encode with.
    with pytest.raises(ValueError, match="Clip Skip 2 leaves none of the text encoder's 2 layers"):
        engine.run(make_request(clip_skip=2))


def test_tiny_autoencoder_as_vae(engine, make_request, tiny):
    result = engine.run(make_request(vae=str(tiny.tiny_vae)))
    _check_result(result)
    assert result.info["vae"] == "AutoencoderTiny" and engine.load_counts["vae"] == 1
    back = engine.run(make_request())
    assert back.info["vae"] == "AutoencoderKL" and back.info["loaded"] == []
    with_controlnet = engine.run(
        make_request(vae=str(tiny.tiny_vae), controls=(ControlUnit(map="depth", model=str(tiny.cn_depth)),))
    )
    assert with_controlnet.info["vae"] == "AutoencoderTiny"


def test_memory_savers_keep_the_pixels(engine, make_request, tiny):
    depth = (ControlUnit(map="depth", model=str(tiny.cn_depth)),)
    reference = engine.run(make_request(controls=depth)).image
    saved = engine.run(make_request(controls=depth, attention_slicing=True, vae_tiling=True)).image
    np.testing.assert_allclose(saved, reference, atol=1e-4)
    np.testing.assert_allclose(engine.run(make_request(controls=depth)).image, reference, atol=1e-5)


def test_ip_adapter_reference_image_then_unload(engine, make_request, tiny):
    """IP-Adapter on tiny random weights in the h94 layout (real IP-Adapter files are not reachable here)."""
    plain = engine.run(make_request()).image
    picture = {"ip_adapter_image": np.random.default_rng(0).random((48, 40, 3)).astype(np.float32)}
    values = {
        "ip_adapter_model": str(tiny.ip_adapter),
        "ip_adapter_weight_name": "ip-adapter_tiny.safetensors",
    }
    steered = engine.run(make_request(**values, ip_adapter_scale=1.0, request_fields={"images": picture}))
    _check_result(steered)
    assert any(item.startswith("ip_adapter:") for item in steered.info["loaded"])
    assert _differ(steered.image, plain)
    np.testing.assert_allclose(engine.run(make_request()).image, plain, atol=1e-5)
    # Without an IP-Adapter model the picture steers nothing (as a disabled control would not).
    ignored = engine.run(make_request(request_fields={"images": picture}))
    assert not any(item.startswith("ip_adapter:") for item in ignored.info["loaded"])
    np.testing.assert_allclose(ignored.image, plain, atol=1e-5)


def test_sdxl_txt2img_and_controlnet(engine, tiny):
    from conftest import scene

    beauty, controls = scene()
    base = DiffusionSettings(
        model=str(tiny.sdxl), prompt="a castle", steps=2, guidance=5.0, denoise=1.0, scheduler="euler_a"
    )

    def run(**changes):
        return engine.run(StyleRequest(beauty=beauty, settings=base.replace(**changes), controls=controls))

    plain = run()
    _check_result(plain)
    steered = run(controls=(ControlUnit(map="depth", model=str(tiny.sdxl_cn_depth)),))
    assert _differ(steered.image, plain.image)
    long = run(prompt="tower " * 30)
    assert long.info["prompt_tokens"] > 75 and long.info["prompt_chunks"] >= 2
    img = run(denoise=0.5, steps=4)
    _check_result(img)
    assert img.info["mode"] == "img2img"


# ---------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming what to change


def test_pickle_files_refused(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"pickle.*turn on Allow Pickle Files"):
        engine.run(make_request(model=str(tiny.pickle_ckpt)))
    with pytest.raises(ValueError, match=r"pickle.*turn on Allow Pickle Files"):
        engine.run(make_request(model=str(tiny.pickle_folder)))
    with pytest.raises(ValueError, match=r"pickle.*turn on Allow Pickle Files"):
        engine.run(make_request(loras=(Lora(file=str(tiny.pickle_lora)),)))
    assert engine.load_counts["lora"] == 0


def test_pickle_opt_in_loads_with_a_warning(engine, make_request, tiny):
    reference = engine.run(make_request()).image
    with pytest.warns(UserWarning, match="pickle"):
        result = engine.run(make_request(model=str(tiny.pickle_ckpt), allow_pickle=True))
    assert any("Allow Pickle Files" in note for note in result.info["notes"])
    np.testing.assert_allclose(result.image, reference, atol=1e-5)


def test_unknown_model_id_offline(engine, make_request):
    with pytest.raises(ValueError, match=r"not in the Hugging Face cache.*Allow Model Downloads"):
        engine.run(make_request(model="nobody-here/no-such-model"))


def test_folder_that_is_not_a_pipeline(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"not a diffusers pipeline.*model_index.json"):
        engine.run(make_request(model=str(tiny.cn_depth)))
    with pytest.raises(ValueError, match="does not exist"):
        engine.run(make_request(model=str(tiny.root / "missing")))


def test_checkpoint_without_config(engine, make_request, tiny):
    with pytest.raises(ValueError, match=r"needs a diffusers config folder.*or set Model Config"):
        engine.run(make_request(model=str(tiny.sd15_single_no_config)))


def test_wrong_family_controlnet(engine, make_request, tiny):
    with pytest.raises(
        ValueError,
        match=r"ControlNet .* is SD1\.5-class \(custom\) \(cross-attention 64\).*cross_attention_dim",
    ):
        engine.run(make_request(controls=(ControlUnit(map="depth", model=str(tiny.cn_wrong_family)),)))
    with pytest.raises(ValueError, match=r"SDXL-class.*choose a depth ControlNet made for SD1.5-class"):
        engine.run(make_request(controls=(ControlUnit(map="depth", model=str(tiny.sdxl_cn_depth)),)))
    assert engine.load_counts["controlnet"] == 0  # refused from configs, before any weights were read


def test_checkpoint_config_of_another_family(engine, make_request, tiny):
    with pytest.raises(
        ValueError, match=r"SD1.5-class .* but its config folder .* SDXL-class.*\(Model Config\)"
    ):
        engine.run(make_request(model=str(tiny.sd15_single_no_config), model_config=str(tiny.sdxl)))


def test_missing_control_map_and_ip_adapter_without_its_picture(engine, make_request, tiny):
    request = make_request(controls=(ControlUnit(map="depth", model=str(tiny.cn_depth)),))
    del request.controls["depth"]
    with pytest.raises(ValueError, match=r"use the control maps \['depth'\], but controls has"):
        engine.run(request)
    with pytest.raises(ValueError, match=r"images\['ip_adapter_image'\] is needed \(an IP-Adapter is set\)"):
        engine.run(make_request(ip_adapter_model=str(tiny.ip_adapter)))
    assert engine.load_counts["base"] == 0  # refused before loading anything


def test_device_settings_the_machine_cannot_honour(engine, make_request):
    with pytest.raises(ValueError, match="Precision float16 is not supported on the CPU; use float32"):
        engine.run(make_request(device="cpu", dtype="float16"))
    assert engine.load_counts["base"] == 0


def test_out_of_memory_names_what_to_change(engine, make_request, monkeypatch):
    from stylepass_core.engines.diffusion import OutOfMemory
    from stylepass_core.engines.diffusion.pipeline import ModelCache

    engine.run(make_request())

    def exhausted(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ModelCache, "generate", exhausted)
    with pytest.raises(OutOfMemory, match=r"lower the render resolution.*turn on Attention Slicing"):
        engine.run(make_request())
    monkeypatch.undo()
    assert engine.run(make_request()).info["loaded"] == []


# ---------------------------------------------------------------------------------------------------------
# Need a GPU or real weights: skipped by default (see conftest)


@pytest.mark.gpu
def test_cuda_float16_auto(make_request, tiny):
    from stylepass_core.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine()
    values = {
        "controls": (ControlUnit(map="depth", model=str(tiny.cn_depth)),),
        "loras": (Lora(file=str(tiny.lora)),),
    }
    result = engine.run(make_request(**values))
    assert result.info["device"] == {"device": "cuda", "dtype": "float16", "reason": "auto: CUDA"}
    _check_result(result)
    offloaded = engine.run(make_request(**values, cpu_offload=True, attention_slicing=True, vae_tiling=True))
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
    settings = DiffusionSettings(
        model=str(root / "sd15"),
        controls=(ControlUnit(map="depth", model=str(root / "control_v11f1p_sd15_depth")),),
        prompt="a red ball on a blue floor, studio photo",
        steps=4,
        denoise=1.0,
    )
    result = DiffusionEngine().run(StyleRequest(beauty=beauty, settings=settings, controls=controls))
    _check_result(result, shape=(512, 512, 3))
    assert result.image.std() > 0.02
