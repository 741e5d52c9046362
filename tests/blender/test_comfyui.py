# SPDX-License-Identifier: GPL-3.0-or-later
"""The ComfyUI engine from Blender against a real ComfyUI on loopback: the panel's pickers read from the
server, Stylise Frame through it with the same result handling as every engine (files, record, take,
compositor group), and a server that is down refused with nothing written and the scene unchanged."""

import json
import socket

import blender_harness
import bpy
import numpy as np
import pytest
import scenes
from conftest import addon_module, diff_snapshots, scene_snapshot
from scenes import known_scene

from stylepass_core import png
from stylepass_core.engine_api import StyleRequest
from stylepass_core.engines.comfyui import ComfyUISettings
from stylepass_core.errors import StylepassError
from stylepass_core.settings import CoherenceSettings, FrameSettings
from stylepass_core.stylise_job import Finish

compositor = addon_module("addon.compositor")
stylise = addon_module("addon.stylise")


@pytest.fixture
def prefs(comfyui):
    prefs = bpy.context.preferences.addons[blender_harness.MODULE].preferences
    saved = prefs.comfyui_server
    prefs.comfyui_server = comfyui.url
    yield prefs
    prefs.comfyui_server = saved


def _scene(empty_file, out_dir, comfyui, build=known_scene):
    scene = empty_file
    build(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.resolution_percentage = 100
    s = scene.stylepass
    s.output_dir = str(out_dir)
    s.engine = "COMFYUI"
    s.seed = 9
    c = s.comfyui
    c.checkpoint = comfyui.models.checkpoint
    c.prompt = "a watercolour castle"
    c.steps, c.denoise = 2, 0.99
    control = c.controls.add()
    control.map, control.model = "depth", comfyui.models.controlnet_depth
    c.loras.add().file = comfyui.models.lora
    return scene


def test_the_pickers_list_what_the_server_has(comfyui, prefs):
    assert bpy.ops.stylepass.comfyui_read() == {"FINISHED"}
    lists = bpy.context.window_manager.stylepass_comfyui
    assert lists.server == comfyui.url and "1 checkpoint(s), 1 LoRA(s), 2 ControlNet(s)" in lists.status
    assert [item.name for item in lists.checkpoints] == [comfyui.models.checkpoint]
    assert {item.name for item in lists.controlnets} == {
        comfyui.models.controlnet_depth,
        comfyui.models.controlnet_lineart,
    }
    assert "euler" in {item.name for item in lists.samplers} and "karras" in {
        i.name for i in lists.schedulers
    }


def test_stylise_frame_through_comfyui_keeps_files_record_take_and_compositor(
    empty_file, out_dir, comfyui, prefs
):
    scene = _scene(empty_file, out_dir, comfyui)
    assert bpy.ops.stylepass.stylise() == {"FINISHED"}
    folder = out_dir / scene.name / "stylised"
    image = png.read_png(folder / "0001.png")
    record = json.loads((folder / "0001.json").read_text())
    assert image.shape[:2] == (48, 64)
    assert record["engine"] == "COMFYUI" and record["result"]["server"] == comfyui.url
    assert record["result"]["workflow"] == "built" and record["take"] == 1
    assert record["request"]["settings"]["values"]["loras"][0]["file"] == comfyui.models.lora
    assert (folder / "takes" / "0001" / "001.png").is_file()
    node = compositor.find_group_node(
        scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree
    )
    assert node is not None and node.node_tree.nodes["Stylised"].image is not None
    beauty = png.read_png(out_dir / scene.name / "passes" / "beauty" / "0001.png")
    assert np.abs(image[..., :3].astype(int) - beauty[..., :3].astype(int)).mean() > 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_is_named_and_nothing_changes(empty_file, out_dir, comfyui, prefs):
    scene = _scene(empty_file, out_dir, comfyui)
    prefs.comfyui_server = url = f"http://127.0.0.1:{_closed_port()}"
    before = scene_snapshot(scene)
    options = stylise.RunSettings.from_scene(scene, prefs)
    with pytest.raises(StylepassError, match=f"Cannot reach the ComfyUI server at {url}"):
        stylise.stylise(scene, bpy.context.view_layer, options, prefs=prefs)
    assert not list((out_dir / scene.name).glob("stylised/*.png"))
    assert diff_snapshots(before, scene_snapshot(scene)) == []
    with pytest.raises(RuntimeError, match="Cannot reach the ComfyUI server"):  # reported as an error
        bpy.ops.stylepass.comfyui_read()
    assert "Cannot reach" in bpy.context.window_manager.stylepass_comfyui.status


def test_an_animation_through_comfyui_continues_each_frame_from_the_one_before(
    empty_file, out_dir, comfyui, prefs
):
    animation = addon_module("addon.animation")
    scene = _scene(empty_file, out_dir, comfyui, build=lambda s: scenes.animated_scene(s, frames=3))
    run_settings = stylise.RunSettings.from_scene(scene, prefs)
    run_settings = stylise.replace(run_settings, passes=run_settings.passes.replace(show_images=False))
    options = animation.AnimationOptions(1, 3, coherence=CoherenceSettings(keyframe_interval=12))
    summary = animation.stylise_animation(scene, bpy.context.view_layer, run_settings, options, prefs=prefs)
    assert summary.stylised == [1, 2, 3] and summary.keyframes == {1: "first", 3: "last"}
    folder = out_dir / scene.name / "stylised"
    records = [json.loads((folder / f"{frame:04d}.json").read_text()) for frame in (1, 2, 3)]
    assert all(record["engine"] == "COMFYUI" for record in records)
    # The last keyframe starts from the first, carried along the motion: image to image at Repaint, the seed kept.
    assert (
        records[2]["result"]["mode"] == "img2img"
        and records[2]["result"]["seed"] == records[0]["result"]["seed"]
    )
    image = (
        compositor.find_group_node(
            scene.compositing_node_group if compositor.COMPOSITOR_IS_GROUP else scene.node_tree
        )
        .node_tree.nodes["Stylised"]
        .image
    )
    assert image.source == "SEQUENCE"


def test_the_live_preview_runs_a_shorter_comfyui_job_and_writes_no_files(empty_file, out_dir, comfyui, prefs):
    live_capture = addon_module("addon.live_capture")
    live_preview = addon_module("addon.live_preview")
    scene = _scene(empty_file, out_dir, comfyui)
    scene.stylepass.comfyui.steps = 30
    run = stylise.RunSettings.from_scene(scene, prefs)
    inputs = stylise.engine_inputs(scene, bpy.context.view_layer, run, prefs)
    settings = inputs.settings.live()
    assert (
        settings.steps == 6 and settings.checkpoint == comfyui.models.checkpoint
    )  # the rest as Stylise Frame
    rows, cols = np.mgrid[0:48, 0:64] / 64.0
    beauty = np.dstack([rows, cols, 0.5 + 0 * rows]).astype(np.float32)
    depth = (1.0 - rows).astype(np.float32)
    request = StyleRequest(beauty=beauty, settings=settings, controls={"depth": depth}, seed=1)
    view = live_capture.ViewFrame(None, None, 64, 48, camera=False)
    frame = FrameSettings()
    live = live_preview.LiveRequest(request, Finish(frame=frame, beauty=beauty), inputs.runner, view)
    job = live_preview._start_job(live)
    assert job.wait(300) and job.error is None, job.error
    image, returned, info = job.result
    assert returned is live and image.shape == (48, 64, 3)
    assert info["steps"]["total"] == 6
    assert list(out_dir.rglob("*")) == []


def test_a_step_preview_is_shown_in_an_open_image_editor_as_its_own_image(comfyui, tmp_path):
    images = addon_module("addon.images")
    from stylepass_core.engines.comfyui import ComfyClient
    from stylepass_core.jobs import PartProgress, QueueProgress

    previews = []
    events = __import__("queue").Queue()
    progress = PartProgress(QueueProgress(events, __import__("threading").Event()), 0.45, 1.0)
    client = ComfyClient(comfyui.url)
    settings = ComfyUISettings(
        comfyui_server=comfyui.url, checkpoint=comfyui.models.checkpoint, steps=3, denoise=1.0
    )
    from stylepass_core.engines.comfyui import workflow

    graph = workflow.build(settings, workflow.Inputs({}, "a hut", "", 1, 64, 64))
    client.follow(client.queue(graph), None, progress.preview)
    while not events.empty():
        event = events.get()
        if event.preview is not None:
            previews.append(event.preview)
    assert previews, "no step preview came through the job's progress"
    # Headless Blender has no Image Editor: the image is made and nothing else is touched.
    shown = images.show_step_preview(bpy.context.window_manager, *previews[-1], tmp_path)
    image = bpy.data.images[images.PREVIEW_IMAGE]
    assert not shown and min(image.size) > 0 and image.has_data  # Blender reads the server's JPEG
    before = len(bpy.data.images)
    images.show_step_preview(bpy.context.window_manager, *previews[0], tmp_path)
    assert len(bpy.data.images) == before  # the same image, its file replaced
