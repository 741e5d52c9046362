# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion engine from Blender: through a local worker process running tiny random-weight models.

Needs the diffusion venv (`./run test` passes its interpreter as STYLEPASS_DIFFUSION_PYTHON); the tiny
models are built with it once per session, the way tests/diffusion builds them.
"""

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import blender_harness
import bpy
import numpy as np
import pytest
from conftest import ROOT, addon_module, diff_snapshots, readme_python_examples, scene_snapshot
from scenes import known_scene

from stylepass_core import exr, png

runtime = addon_module("addon.runtime")
compositor = addon_module("addon.compositor")

PYTHON = os.environ.get("STYLEPASS_DIFFUSION_PYTHON", "")
pytestmark = pytest.mark.skipif(
    not os.path.isfile(PYTHON),
    reason="needs the diffusion venv (STYLEPASS_DIFFUSION_PYTHON, set by ./run test)",
)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-models")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import tiny_models as t
        out = Path({str(folder)!r})
        pipe = t.save_sd15_folder(out / "tiny-sd15")
        t.save_controlnet(out / "tiny-controlnet-depth", pipe.unet, seed=1)
        t.save_lora(out / "tiny-lora.safetensors", pipe.unet)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "diffusion")}
    subprocess.run([PYTHON, "-c", script], check=True, capture_output=True, timeout=600, env=env)
    return folder


@pytest.fixture
def prefs():
    prefs = bpy.context.preferences.addons[blender_harness.MODULE].preferences
    saved = (prefs.engine_location, prefs.python_path, prefs.device)
    prefs.engine_location, prefs.python_path, prefs.device = "PYTHON", PYTHON, "cpu"
    yield prefs
    runtime.RUNTIME.release()
    prefs.engine_location, prefs.python_path, prefs.device = saved


def _diffusion_scene(empty_file, out_dir, models):
    scene = empty_file
    known_scene(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.view_settings.view_transform = "Standard"
    s = scene.stylepass
    s.output_dir = str(out_dir)
    s.engine = "DIFFUSION"
    s.seed = 5
    d = s.diffusion
    d.model = str(models / "tiny-sd15")
    d.prompt = "a watercolour castle"
    d.steps = 2
    d.denoise = 0.6
    control = d.controls.add()
    control.map, control.model, control.weight = "depth", str(models / "tiny-controlnet-depth"), 0.8
    return scene


def test_stylise_through_a_local_worker_and_f12_shows_it(empty_file, out_dir, tiny_models, prefs, tmp_path):
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    folder = out_dir / scene.name / "stylised"
    record = json.loads((folder / "0001.json").read_text())
    assert record["engine"] == "DIFFUSION"
    values = record["request"]["settings"]["values"]
    assert values["controls"][0]["weight"] == pytest.approx(0.8) and values["denoise"] == pytest.approx(0.6)
    assert record["result"]["worker"]["job"]
    pids = [w.pid for w in runtime.RUNTIME.workers.values()]
    assert len(pids) == 1 and pids[0] is not None and pids[0] != os.getpid()

    stylised = png.read_png(folder / "0001.png")[..., :3].astype(int)
    scene.render.filepath = str(tmp_path / "f12.png")
    scene.render.use_file_extension = False
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "8"
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    shown = png.read_png(tmp_path / "f12.png")[..., :3].astype(int)
    assert np.abs(shown - stylised).max() <= 2

    # Release Memory stops the worker process.
    assert bpy.ops.stylepass.release_memory() == {"FINISHED"}
    assert not runtime.RUNTIME.workers
    assert (
        not os.path.exists(f"/proc/{pids[0]}") or "zombie" in open(f"/proc/{pids[0]}/status").read().lower()
    )


def _worker_processes() -> list[int]:
    """Live worker processes this Blender started (children running `stylepass_core.worker`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(parent) == os.getpid() and state not in ("Z", "X") and b"stylepass_core.worker" in command:
            found.append(int(entry.name))
    return found


def _stylised_with(scene, out_dir) -> str:
    """Stylise the frame; the ControlNet model the engine loaded, from the record."""
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
    return record["result"]["controlnets"][0]["model"]


def test_names_in_a_model_folder_are_models(empty_file, out_dir, tiny_models, prefs):
    """A Model Folders entry plus a relative model name failed with 'does not exist': the worker handed the
    engine the bare name, which it looked for in its working folder."""
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    d = scene.stylepass.diffusion
    d.model, d.controls[0].model = "tiny-sd15", "tiny-controlnet-depth"
    prefs.model_dirs.add().path = str(tiny_models)
    try:
        assert _stylised_with(scene, out_dir) == str((tiny_models / "tiny-controlnet-depth").resolve())
        record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
        assert record["request"]["settings"]["values"]["model"] == "tiny-sd15"  # the record keeps the name
    finally:
        prefs.model_dirs.clear()


def test_switching_between_model_folders_keeps_one_worker(empty_file, out_dir, tiny_models, prefs, tmp_path):
    """Models in two folders used to get a worker each, both with their models loaded until Release Memory."""
    other = tmp_path / "other-models"
    for name in ("tiny-sd15", "tiny-controlnet-depth"):
        shutil.copytree(tiny_models / name, other / name)
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    d = scene.stylepass.diffusion
    assert _stylised_with(scene, out_dir) == str((tiny_models / "tiny-controlnet-depth").resolve())
    first = _worker_processes()
    assert len(first) == 1

    d.model, d.controls[0].model = str(other / "tiny-sd15"), str(other / "tiny-controlnet-depth")
    assert _stylised_with(scene, out_dir) == str((other / "tiny-controlnet-depth").resolve())
    second = _worker_processes()
    assert len(second) == 1 and second != first, (first, second)
    assert len(runtime.RUNTIME.workers) == 1

    # Back, through the Model Folders preference this time: still one worker.
    d.model, d.controls[0].model = "tiny-sd15", "tiny-controlnet-depth"
    prefs.model_dirs.add().path = str(tiny_models)
    try:
        assert _stylised_with(scene, out_dir) == str((tiny_models / "tiny-controlnet-depth").resolve())
        assert len(_worker_processes()) == 1
    finally:
        prefs.model_dirs.clear()
    assert bpy.ops.stylepass.release_memory() == {"FINISHED"}
    assert _worker_processes() == []


def test_worker_that_cannot_start_is_reported_and_scene_unchanged(
    empty_file, out_dir, tiny_models, prefs, tmp_path
):
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no engine here' >&2\nexit 3\n")
    broken.chmod(0o755)
    prefs.python_path = str(broken)
    before = scene_snapshot(scene)
    with pytest.raises(RuntimeError, match="worker"):
        bpy.ops.stylepass.stylise()
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    assert bpy.data.node_groups.get(compositor.GROUP_NAME) is None
    assert not (out_dir / scene.name / "stylised" / "0001.png").exists()


def test_missing_python_or_model_is_reported_before_rendering(empty_file, out_dir, tiny_models, prefs):
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    prefs.python_path = str(out_dir / "no-such-python")
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.stylepass.stylise()
    prefs.python_path = PYTHON
    scene.stylepass.diffusion.model = ""
    with pytest.raises(RuntimeError, match="needs a model"):
        bpy.ops.stylepass.stylise()
    assert not (out_dir / scene.name).exists()


@pytest.fixture
def remote_worker(tiny_models):
    """A worker started by hand, as on a GPU box, on loopback with a token."""
    token = "test-token-" + os.urandom(8).hex()
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # a GPU box pip-installs the core's wheel instead
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "stylepass_core.worker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--token",
            token,
            "--model-dir",
            str(tiny_models),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.PIPE,
        env=env,
        text=True,
    )
    ready = json.loads(process.stdout.readline())
    yield ready["url"], token, process
    process.kill()
    process.wait(10)


def test_remote_worker_and_a_worker_that_died(empty_file, out_dir, tiny_models, prefs, remote_worker):
    url, token, process = remote_worker
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    prefs.engine_location, prefs.remote_url, prefs.remote_token = "REMOTE", url, token
    try:
        assert bpy.ops.stylepass.stylise() == {"FINISHED"}
        record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
        assert record["result"]["worker"]["url"].rstrip("/") == url.rstrip("/")
        # One client (and connection pool) per remote worker, kept between frames.
        clients = list(runtime.RUNTIME.remote_clients.values())
        assert bpy.ops.stylepass.stylise() == {"FINISHED"}
        assert list(runtime.RUNTIME.remote_clients.values()) == clients and len(clients) == 1
        # Wrong token: refused with a clear message.
        prefs.remote_token = "wrong"
        with pytest.raises(RuntimeError, match=r"(?i)token|401|unauthori"):
            bpy.ops.stylepass.stylise()
        prefs.remote_token = token
        # The worker dies: a clear report, nothing changed in the scene.
        process.kill()
        process.wait(10)
        before = scene_snapshot(scene)
        with pytest.raises(RuntimeError, match=r"(?i)worker"):
            bpy.ops.stylepass.stylise()
        assert diff_snapshots(before, scene_snapshot(scene)) == []
    finally:
        prefs.engine_location, prefs.remote_url, prefs.remote_token = "PYTHON", "", ""


def test_a_remote_worker_resolves_names_in_its_model_folders(
    empty_file, out_dir, tiny_models, prefs, remote_worker
):
    """The worker README's promise: a name relative to the worker's `--model-dir` is a model."""
    url, token, _ = remote_worker
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    d = scene.stylepass.diffusion
    d.model, d.controls[0].model = "tiny-sd15", "tiny-controlnet-depth"
    prefs.engine_location, prefs.remote_url, prefs.remote_token = "REMOTE", url, token
    try:
        assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    finally:
        prefs.engine_location, prefs.remote_url, prefs.remote_token = "PYTHON", "", ""
    record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
    assert record["result"]["controlnets"][0]["model"] == str(
        (tiny_models / "tiny-controlnet-depth").resolve()
    )


def test_animation_with_diffusion_continues_from_the_carried_keyframe(
    empty_file, out_dir, tiny_models, prefs
):
    """The same fusion as neural style: frames 1 and 3 are keyframes, frame 2 is fused from both. Frames 2
    and 3 continue (img2img, the Repaint share, the shot's seed) from keyframe 1 carried along the motion."""
    from scenes import animated_scene

    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    animated_scene(scene, frames=3)
    scene.stylepass.keyframe_interval = 0
    scene.stylepass.diffusion.steps = 4
    assert bpy.ops.stylepass.stylise_animation() == {"FINISHED"}
    folder = out_dir / scene.name / "stylised"
    records = [json.loads((folder / f"{f:04d}.json").read_text()) for f in (1, 2, 3)]
    assert [r["postprocess"]["keyframe"] for r in records] == ["first", None, "last"]
    assert records[0]["request"]["settings"]["values"]["denoise"] == pytest.approx(0.6)
    for record in records[1:]:
        assert record["request"]["settings"]["values"]["denoise"] <= 0.45
        assert record["request"]["seed"] == records[0]["request"]["seed"]
    assert records[1]["context"]["keyframes"] == [1, 3] and records[1]["postprocess"]["carried_share"] > 0.5


def test_every_diffusion_feature_is_reachable_from_python(empty_file, out_dir, tiny_models, prefs):
    """LoRA, IP-Adapter, VAE, precision, offload... existed in the engine but nothing in Blender could set them;
    the prompt style presets could never be chosen. Each now reaches the request the worker gets."""
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    d = scene.stylepass.diffusion
    reference = bpy.data.images.new("Reference", 64, 64)
    d.style_preset = "watercolour"
    d.vae = "my/vae"
    d.dtype = "float32"
    d.vae_tiling = True
    d.ip_adapter_model = "my/ip-adapter"
    d.ip_adapter_image = reference
    d.ip_adapter_scale = 0.3
    lora = d.loras.add()
    lora.file, lora.weight = "/loras/ink.safetensors", 0.7
    run = addon_module("addon.stylise").RunSettings.from_scene(scene, prefs)
    settings = run.engine
    assert (settings.style_preset, settings.vae, settings.dtype, settings.vae_tiling) == (
        "watercolour",
        "my/vae",
        "float32",
        True,
    )
    assert settings.ip_adapter == (
        "my/ip-adapter",
        "models",
        "ip-adapter_sd15.safetensors",
        pytest.approx(0.3),
    )
    assert settings.ip_adapter_image == "Reference" and run.images["ip_adapter_image"] == reference
    assert settings.active_loras[0].file == "/loras/ink.safetensors" and settings.device == "cpu"
    # Detail Scale belongs to neural style only: changing it leaves the diffusion request alone.
    scene.stylepass.neural_style.detail_scale = 0.5
    assert addon_module("addon.stylise").RunSettings.from_scene(scene, prefs).engine == settings


def test_an_unlocked_seed_is_stored_only_when_the_frame_succeeds(empty_file, out_dir, tiny_models, prefs):
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    scene.stylepass.seed_locked = False
    scene.stylepass.diffusion.controls[0].model = str(out_dir / "no-such-controlnet")
    with pytest.raises(RuntimeError):
        bpy.ops.stylepass.stylise()
    assert scene.stylepass.seed == 5  # the failed run chose a seed but did not write it into the scene
    scene.stylepass.diffusion.controls[0].model = str(tiny_models / "tiny-controlnet-depth")
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
    assert scene.stylepass.seed == record["request"]["seed"] != 5


def test_the_readme_diffusion_example_runs(empty_file, out_dir, tiny_models, prefs):
    scene = empty_file
    known_scene(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.stylepass.output_dir = str(out_dir)
    example = next(e for e in readme_python_examples() if "dreamshaper" in e)
    for placeholder, real in (
        ("/models/dreamshaper_8.safetensors", tiny_models / "tiny-sd15"),
        ("/models/control_v11f1p_sd15_depth", tiny_models / "tiny-controlnet-depth"),
        ("/models/ink_style.safetensors", tiny_models / "tiny-lora.safetensors"),
    ):
        assert placeholder in example
        example = example.replace(placeholder, str(real))
    example = example.replace("d.steps, d.guidance, d.denoise = 20,", "d.steps, d.guidance, d.denoise = 4,")
    exec(compile(example, "README.md", "exec"), {})
    record = json.loads((out_dir / scene.name / "stylised" / "0001.json").read_text())
    values = record["request"]["settings"]["values"]
    assert values["prompt"] == "a watercolour village at dusk" and values["denoise"] == pytest.approx(0.7)
    assert values["controls"][0]["weight"] == pytest.approx(0.9) and values["loras"][0][
        "weight"
    ] == pytest.approx(0.8)
    assert record["request"]["seed"] == 7 and record["result"]["loras"][0]["weight"] == pytest.approx(0.8)


def test_style_groups_become_regions_of_one_diffusion_run(empty_file, out_dir, tiny_models, prefs):
    # Issue 15 with diffusion: each group's prompt conditions only its objects, in ONE denoising run through
    # the worker (the attention confinement itself is probed in tests/diffusion/test_regions.py).
    scene = _diffusion_scene(empty_file, out_dir, tiny_models)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    folder = out_dir / scene.name / "stylised"
    plain = png.read_png(folder / "0001.png")[..., :3].astype(int)
    group = scene.stylepass.style_groups.add()
    group.name = "Hut"
    group.diffusion.prompt = "an ink drawing of a hut"
    group.objects.add().object = scene.objects["Box"]
    group.diffusion.model = ""  # a region takes only its prompts: the group needs no model of its own
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    record = json.loads((folder / "0001.json").read_text())
    regions = record["result"]["regions"]
    assert [region["name"] for region in regions][-1] == "Hut" and len(regions) == 2
    assert record["context"]["style_groups"][0]["name"] == "Hut"
    assert record["request"]["regions"]["names"] == ["Hut"]
    assert len(record["result"]["worker"]["job"]) and record["result"]["steps_run"] >= 1
    grouped = png.read_png(folder / "0001.png")[..., :3].astype(int)
    changed = np.abs(grouped - plain).sum(axis=-1)
    mask = exr.group_passes(exr.read_exr(folder / "layers" / "0001.exr"), "Stylepass")["Hut Mask"][..., 0]
    inside, outside = mask == 1.0, mask == 0.0
    # The tiny random models barely listen to text, but what they change is the group's region.
    print(
        f"change in levels: inside the group {changed[inside].mean():.2f}, outside {changed[outside].mean():.2f}"
    )
    assert changed[inside].mean() > 2 * changed[outside].mean() > 0, (
        "the group's prompt did not act on its region"
    )
    layers = exr.group_passes(exr.read_exr(folder / "layers" / "0001.exr"), "Stylepass")
    assert {"Hut Layer", "Hut Mask", "Line Art"} <= set(layers)
