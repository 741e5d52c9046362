# SPDX-License-Identifier: GPL-3.0-or-later
"""The live style preview as an artist meets it, in one Blender per suite: F3 > Live Preview over the
viewport, the stylised picture appears; orbit with the middle mouse button, the picture follows the view and is
exactly the engine's output for that view; Live Preview again, and all work stops at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

LIVE_LIMIT = 90  # seconds for a first picture (the first ONNX session and software GPU drawing)
BLOCKS = 8  # the screen and the picture are compared in 8x8 block means (scaling and filtering blur edges)


def _require_extension(ui) -> None:
    state = ui.state()
    if not state["stylepass_enabled"]:
        pytest.fail(f"Stylepass is not enabled in {ui.figures['blender']}: {ui.install['output'][-1500:]}")


def _live(ui) -> dict:
    return ui.command("live")


def _wait_live(ui, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        live = _live(ui)
        if check(live):
            return live
        if time.monotonic() > deadline:
            pytest.fail(
                f"waited {timeout:.0f} s for {what}; live preview: {_brief(live)}\n{ui.session.tail_log(15)}"
            )
        time.sleep(0.2)


def _brief(live: dict) -> dict:
    views = [
        {k: v for k, v in view.items() if k not in ("draw_seconds", "capture_seconds")}
        for view in live["views"]
    ]
    return {**live, "views": views}


def _region_pixels(ui, region: list[int]) -> np.ndarray:
    """The 3D viewport's region as on screen, (H, W, 3) float in [0, 1], row 0 at the top."""
    x, y, width, height = region
    top = ui.state()["window"][1] - (y + height)
    raw = ui.screen.grab((x, top, x + width, top + height), step=1)
    pixels = np.frombuffer(raw, np.uint8).reshape(height, width, 4)
    return pixels[..., 2::-1].astype(np.float32) / 255  # Xvfb stores BGRX


def _blocks(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    h, w = image.shape[:2]
    image = image[: h - h % rows, : w - w % cols]
    return image.reshape(rows, image.shape[0] // rows, cols, image.shape[1] // cols, 3).mean(axis=(1, 3))


def _compare(ui, region, save: str) -> dict:
    """How far the viewport on screen is from the engine's picture and from the plain captured view."""
    check = ui.command("live_check", save=ui.session.inner_dir + "/" + save)
    picture = np.load(ui.path(f"{save}/picture.npy"))
    captured = np.load(ui.path(f"{save}/input.npy"))
    screen = _region_pixels(ui, region)
    rows, cols = BLOCKS, BLOCKS * 2
    shown = _blocks(screen, rows, cols)
    return {
        **check,
        "screen_vs_picture": float(np.abs(shown - _blocks(picture, rows, cols)).mean()),
        "screen_vs_plain_view": float(np.abs(shown - _blocks(captured, rows, cols)).mean()),
        "screen": screen,
    }


def test_live_preview_follows_an_orbit_and_stops_at_once(ui):
    _require_extension(ui)
    state = ui.state()
    viewport = ui.region_centre(state["view3d"])
    ui.mouse_to(*viewport)
    ui.screen.wait_settled()

    plain = _region_pixels(ui, ui.command("live")["region"])  # the viewport before the preview

    # 1. On: F3 > Live Preview over the viewport (the header and sidebar buttons run the same operator).
    ui.search("Live Preview")
    live = _wait_live(
        ui, lambda s: s["views"] and s["views"][0]["shown"] >= 1, LIVE_LIMIT, "a first live picture"
    )
    ui.screen.wait_settled(quiet=0.6)
    live = _live(ui)
    assert not live["views"][0]["error"], live["views"][0]["error"]
    ui.shot("live-01-on")
    first = _compare(ui, live["region"], "live-1")
    # What the engine got is the viewport as it was (without the grid and gizmos; compared in block means).
    captured = np.load(ui.path("live-1/input.npy"))
    first["capture_vs_plain_screen"] = float(np.abs(_blocks(captured, 8, 16) - _blocks(plain, 8, 16)).mean())
    assert first["capture_vs_plain_screen"] < 0.05, first["capture_vs_plain_screen"]
    ui.figures["live_first"] = {k: round(v, 4) for k, v in first.items() if isinstance(v, float)}
    # The picture shown is exactly the engine's output on the captured view...
    assert first["max_difference"] < 1e-4, first
    # ...stylised (far from the plain view), and what the viewport shows is that picture.
    assert first["input_difference"] > 0.05, first
    assert (
        first["screen_vs_picture"] < 0.06 and first["screen_vs_picture"] < first["screen_vs_plain_view"] / 2
    ), first

    # 2. Orbit: middle-drag across the viewport, as an artist turns the view.
    before = _live(ui)["views"][0]
    ui.session.xdotool("mousedown", "2")
    for _ in range(12):
        ui.session.xdotool("mousemove_relative", "--", "25", "4")
        time.sleep(0.05)
    ui.session.xdotool("mouseup", "2")
    live = _wait_live(
        ui,
        lambda s: s["views"][0]["shown"] > before["shown"] and not s["views"][0]["working"],
        LIVE_LIMIT,
        "the picture of the orbited view",
    )
    ui.screen.wait_settled(quiet=0.6)
    ui.shot("live-02-orbited")
    after = _compare(ui, live["region"], "live-2")
    ui.figures["live_orbited"] = {k: round(v, 4) for k, v in after.items() if isinstance(v, float)}
    ui.figures["live_orbit_pictures"] = live["views"][0]["shown"] - before["shown"]
    assert live["views"][0]["captures"] > before["captures"]
    assert after["max_difference"] < 1e-4, after
    assert after["screen_vs_picture"] < 0.06, after
    # The view changed, so did the picture on screen.
    assert float(np.abs(_blocks(after["screen"], 8, 16) - _blocks(first["screen"], 8, 16)).mean()) > 0.02

    # 3. A Stylepass setting changes (Strength): a new picture, the engine's mixed with the same view.
    before = _live(ui)["views"][0]
    ui.command("stylepass", values={"strength": 0.6})
    live = _wait_live(
        ui,
        lambda s: s["views"][0]["shown"] > before["shown"] and not s["views"][0]["working"],
        30,
        "a setting",
    )
    mixed = ui.command("live_check")
    assert mixed["max_difference"] > 0.01, "Strength 0.6 mixes the view back in; the engine alone differs"
    ui.command("stylepass", values={"strength": 1.0})
    _wait_live(
        ui,
        lambda s: not s["views"][0]["working"] and s["views"][0]["shown"] > live["views"][0]["shown"],
        30,
        "strength back",
    )

    # An edit (the cube moves) brings a new picture; so would the timeline, but this scene does not move
    # between frames: the new frame is captured and, identical, costs no job.
    before = _live(ui)["views"][0]
    ui.command("edit", object="Cube", location=[0.8, -0.6, 1.0])
    moved = _wait_live(
        ui,
        lambda s: s["views"][0]["shown"] > before["shown"] and not s["views"][0]["working"],
        30,
        "the cube moved",
    )["views"][0]
    ui.command("edit", frame=2)
    framed = _wait_live(ui, lambda s: s["views"][0]["captures"] > moved["captures"], 30, "frame 2 captured")
    time.sleep(0.5)
    assert _live(ui)["views"][0]["shown"] == framed["views"][0]["shown"] == moved["shown"]
    ui.command("edit", frame=1)

    # 4. Camera view (Numpad 0): only the camera frame is stylised, at the render's shape.
    ui.mouse_to(*viewport)
    ui.key("KP_0")
    live = _wait_live(
        ui,
        lambda s: s["views"][0]["camera"] and not s["views"][0]["working"],
        30,
        "the camera frame's picture",
    )
    assert live["views"][0]["picture"] == [144, 256, 3], live["views"][0]  # 480x270 at a long side of 256
    # 5. Before/after wipe at half: the left half stylised, the right half the plain viewport.
    ui.command("stylepass", values={"live_wipe": 0.5})
    ui.screen.wait_settled(quiet=0.6)
    ui.shot("live-03-camera-wipe")
    ui.command("stylepass", values={"live_wipe": 1.0})
    ui.key("KP_0")  # back to the orbited view
    _wait_live(
        ui, lambda s: not s["views"][0]["camera"] and not s["views"][0]["working"], 30, "the user view"
    )

    # 6. Pin keeps the live picture as a new image (shown in an open Image Editor; none is open here).
    ui.search("Pin Live Picture")
    live = _wait_live(ui, lambda s: "Stylepass Live Pin" in s["images"], 15, "the pinned image")
    ui.figures["live_pin_images"] = [name for name in live["images"] if name.startswith("Stylepass Live Pin")]

    # 7. Idle: with nothing changing, no more work starts (showing a picture triggers no update).
    # (The pin's new image is an update of its own: let it pass first.)
    ui.screen.wait_settled(quiet=1.0)
    settled = _live(ui)["views"][0]
    time.sleep(2.0)
    idle = _live(ui)["views"][0]
    assert (idle["captures"], idle["shown"]) == (settled["captures"], settled["shown"]), (settled, idle)

    # 8. Off: Live Preview again stops everything at once.
    ui.mouse_to(*viewport)
    off_at = ui.search("Live Preview")
    live = _wait_live(ui, lambda s: not s["views"], 10, "the live preview to turn off")
    stopped = time.monotonic() - off_at
    live = _wait_live(ui, lambda s: not s["threads"], 2, "the live worker thread to end")
    assert not live["draw_handler"] and not live["timer"], live
    ui.screen.wait_settled(quiet=0.5)
    ui.shot("live-04-off")
    ui.figures["live_off_seconds"] = round(stopped, 2)


# -- Diffusion live through a worker ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
TINY_MODELS = """
import sys
from pathlib import Path
import tiny_models
folder = Path(sys.argv[1])
pipe = tiny_models.save_sd15_folder(folder / "tiny-sd15")
tiny_models.save_controlnet(folder / "tiny-depth-controlnet", pipe.unet, seed=3)
"""


@pytest.fixture(scope="module")
def tiny_worker(tmp_path_factory):
    """A Stylepass worker on this machine (the diffusion venv, tiny random-weight models), reached over HTTP
    from the Blender in the chroot as a GPU box would be."""
    found = subprocess.run([str(ROOT / "run"), "venv", "diffusion"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"./run venv diffusion failed: {found.stderr[-1500:]}")
    python = str(Path(found.stdout.strip().splitlines()[-1]) / "bin" / "python")
    models = tmp_path_factory.mktemp("models")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'diffusion'}"}
    subprocess.run([python, "-c", TINY_MODELS, str(models)], check=True, env=env, capture_output=True)
    token = "live-ui-test-token"
    worker = subprocess.Popen(
        [
            python,
            "-m",
            "stylepass_core.worker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-dir",
            str(models),
        ],
        env={**env, "STYLEPASS_WORKER_TOKEN": token, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = json.loads(worker.stdout.readline())
        assert ready.get("event") == "listening", ready
        yield {"url": ready["url"], "token": token, "models": models}
    finally:
        worker.terminate()
        worker.wait(20)


def test_diffusion_live_through_a_worker_with_the_gpu_control_maps(ui, tiny_worker):
    """Diffusion in the live preview: its fast preset runs on a warm worker, steered by the depth map the GPU
    draws for the view; the picture shown is the worker's for that view."""
    _require_extension(ui)
    ui.command(
        "live_diffusion",
        url=tiny_worker["url"],
        token=tiny_worker["token"],
        model="tiny-sd15",
        controlnet="tiny-depth-controlnet",
    )
    state = ui.state()
    viewport = ui.region_centre(state["view3d"])
    ui.mouse_to(*viewport)
    ui.search("Live Preview")
    try:
        live = _wait_live(
            ui,
            lambda s: s["views"] and (s["views"][0]["shown"] >= 1 or s["views"][0]["error"]),
            180,
            "a picture",
        )
        view = live["views"][0]
        assert not view["error"], view["error"]
        ui.screen.wait_settled(quiet=0.6)
        ui.shot("live-05-diffusion")
        shown = ui.command("live_shown")
        # The fast preset ran (few steps, image to image from the view), with a depth map drawn on the GPU.
        assert shown["engine"] == "DIFFUSION" and shown["steps"] <= 8 and shown["denoise"] < 1.0, shown
        assert shown["controls"] == ["depth"] and shown["depth_range"][1] > shown["depth_range"][0], shown
        assert shown["input_difference"] > 0.01, shown
        ui.figures["live_diffusion"] = {k: v for k, v in shown.items() if k != "controls"} | {
            "latency": view["latency"],
            "job_seconds": view["job_seconds"],
        }
        # A second view of the same scene: the worker's models are warm (nothing loaded again).
        before = view["shown"]
        ui.mouse_to(*viewport)
        ui.key("KP_4")  # orbit a step left, as Numpad 4 does
        live = _wait_live(
            ui,
            lambda s: s["views"][0]["shown"] > before and not s["views"][0]["working"],
            120,
            "a second view",
        )
        assert not live["views"][0]["error"], live["views"][0]["error"]
        assert ui.command("live_shown")["loaded"] == [], "the second live picture loaded models again"
    finally:
        ui.mouse_to(*viewport)
        ui.search("Live Preview")
        _wait_live(ui, lambda s: not s["views"] and not s["threads"], 30, "the live preview to turn off")
        ui.command("live_diffusion", off=True)
