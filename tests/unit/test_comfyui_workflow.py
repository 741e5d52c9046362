# SPDX-License-Identifier: GPL-3.0-or-later
"""ComfyUI workflows without a server: the built graph's wiring, an artist's workflow filled by node titles,
and the checks against a server's `/object_info` that refuse what it cannot run (the real server's own tests
are in tests/comfyui)."""

import json

import pytest

from stylepass_core.engines.comfyui import workflow
from stylepass_core.engines.comfyui.settings import ComfyUISettings, parse_headers
from stylepass_core.engines.diffusion.settings import ControlUnit, Lora
from stylepass_core.settings import SettingsError

INPUTS = workflow.Inputs(
    {"beauty": "b.png", "depth": "d.png", "lineart": "l.png"}, "a hut", "blurry", 7, 64, 48
)

# A server's /object_info, cut down to what these tests use (choices are lists, as ComfyUI sends them).
OBJECT_INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["sd15.safetensors"]]}}},
    "LoraLoader": {"input": {"required": {"model": ["MODEL"], "clip": ["CLIP"], "lora_name": [["ink.safetensors"]],
                                          "strength_model": ["FLOAT", {}], "strength_clip": ["FLOAT", {}]}}},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {}], "clip": ["CLIP"]}}},
    "LoadImage": {"input": {"required": {"image": [["old.png"], {"image_upload": True}]}}},
    "ControlNetLoader": {"input": {"required": {"control_net_name": [["depth.safetensors", "lines.safetensors"]]}}},
    "ControlNetApplyAdvanced": {"input": {"required": {}}},
    "VAEEncode": {"input": {"required": {}}},
    "EmptyLatentImage": {"input": {"required": {}}},
    "KSampler": {"input": {"required": {"sampler_name": [["euler", "dpmpp_2m"]], "scheduler": [["normal", "karras"]]}}},
    "VAEDecode": {"input": {"required": {}}},
    "PreviewImage": {"input": {"required": {}}},
    "SaveImage": {"input": {"required": {}}},
}  # fmt: skip


def _settings(**changes) -> ComfyUISettings:
    values = dict(
        checkpoint="sd15.safetensors",
        denoise=0.6,
        controls=(
            ControlUnit(map="depth", model="depth.safetensors", weight=0.8, start=0.1, end=0.9),
            ControlUnit(map="lineart", model="lines.safetensors"),
        ),
        loras=(Lora(file="ink.safetensors", weight=0.5),),
    )
    values.update(changes)
    return ComfyUISettings(**values)


def test_the_built_workflow_chains_loras_controls_and_starts_from_the_beauty():
    graph = workflow.build(_settings(), INPUTS)
    assert graph["lora_1"]["inputs"]["model"] == ["checkpoint", 0] and graph["lora_1"]["inputs"]["clip"] == [
        "checkpoint",
        1,
    ]
    assert graph["prompt"]["inputs"] == {"text": "a hut", "clip": ["lora_1", 1]}
    # The two controls in a chain: the second takes the first's conditioning.
    depth, lines = graph["depth_control"]["inputs"], graph["lineart_control"]["inputs"]
    assert depth["positive"] == ["prompt", 0] and depth["negative"] == ["negative_prompt", 0]
    assert (depth["strength"], depth["start_percent"], depth["end_percent"]) == (0.8, 0.1, 0.9)
    assert lines["positive"] == ["depth_control", 0] and lines["negative"] == ["depth_control", 1]
    assert graph["depth_image"]["inputs"]["image"] == "d.png"
    sampler = graph["sampler"]["inputs"]
    assert sampler["positive"] == ["lineart_control", 0] and sampler["model"] == ["lora_1", 0]
    assert sampler["latent_image"] == ["start", 0] and graph["start"]["class_type"] == "VAEEncode"
    assert (sampler["seed"], sampler["denoise"], sampler["steps"]) == (7, 0.6, 20)
    assert graph[workflow.OUTPUT_NODE]["class_type"] == "PreviewImage"
    workflow.check(graph, OBJECT_INFO, {"b.png", "d.png", "l.png"})  # the server can run it
    json.dumps(graph)


def test_text_to_image_starts_from_noise_at_the_generation_size():
    graph = workflow.build(_settings(denoise=1.0, controls=(), loras=()), INPUTS)
    assert graph["start"] == {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1},
        "_meta": {"title": "Start from noise"},
    }
    assert "beauty" not in graph and graph["sampler"]["inputs"]["model"] == ["checkpoint", 0]


def test_what_the_server_lacks_is_named_before_queueing():
    graph = workflow.build(_settings(checkpoint="gone.safetensors"), INPUTS)
    with pytest.raises(
        workflow.WorkflowError, match=r"'gone.safetensors' is not on the ComfyUI server for ckpt_name"
    ):
        workflow.check(graph, OBJECT_INFO, {"b.png", "d.png", "l.png"})
    graph = workflow.build(_settings(), INPUTS)
    info = {k: v for k, v in OBJECT_INFO.items() if k != "ControlNetApplyAdvanced"}
    with pytest.raises(workflow.WorkflowError, match="server has no 'ControlNetApplyAdvanced' node"):
        workflow.check(graph, info, {"b.png", "d.png", "l.png"})
    with pytest.raises(workflow.WorkflowError, match=r"'d\.png' is not on the ComfyUI server for image"):
        workflow.check(graph, OBJECT_INFO)  # a picture that was never uploaded
    graph["sampler"]["inputs"]["sampler_name"] = "unheard_of"
    with pytest.raises(workflow.WorkflowError, match="it has: euler, dpmpp_2m"):
        workflow.check(graph, OBJECT_INFO, {"b.png", "d.png", "l.png"})


def _own_workflow():
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["4", 1]},
              "_meta": {"title": "Stylepass Prompt"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "old.png"}, "_meta": {"title": "Stylepass Depth"}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "sampler_name": "euler"},
              "_meta": {"title": "Stylepass Seed"}},
        "9": {"class_type": "SaveImage", "inputs": {}},
    }  # fmt: skip


def test_an_artists_workflow_is_filled_by_node_titles_and_left_as_it_was():
    own = _own_workflow()
    before = json.dumps(own, sort_keys=True)
    graph, used = workflow.fill(own, INPUTS)
    assert used == ["depth", "prompt", "seed"]
    assert graph["6"]["inputs"]["text"] == "a hut" and graph["10"]["inputs"]["image"] == "d.png"
    assert graph["3"]["inputs"]["seed"] == 7
    assert json.dumps(own, sort_keys=True) == before


def test_an_artists_workflow_that_cannot_take_the_inputs_is_refused_clearly(tmp_path):
    own = _own_workflow()
    own["10"]["_meta"]["title"] = "Stylepass Normal"  # this run has no normal pass
    with pytest.raises(workflow.WorkflowError, match="wants the normal pass"):
        workflow.fill(own, INPUTS)
    own = _own_workflow()
    own["6"]["_meta"]["title"] = "Stylepass Beauty"  # a text node cannot take a picture
    with pytest.raises(
        workflow.WorkflowError, match="is a CLIPTextEncode, which cannot take Stylepass's beauty"
    ):
        workflow.fill(own, INPUTS)
    untitled = {key: {**node, "_meta": {"title": "x"}} for key, node in _own_workflow().items()}
    with pytest.raises(workflow.WorkflowError, match="No node of the workflow is titled"):
        workflow.fill(untitled, INPUTS)
    no_output = {k: v for k, v in _own_workflow().items() if k != "9"}
    with pytest.raises(workflow.WorkflowError, match="no SaveImage or PreviewImage"):
        workflow.fill(no_output, INPUTS)
    ui_format = tmp_path / "ui.json"
    ui_format.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(workflow.WorkflowError, match=r"UI format: save it with 'Export \(API\)'"):
        workflow.load(ui_format)
    with pytest.raises(workflow.WorkflowError, match="Cannot read the workflow"):
        workflow.load(tmp_path / "missing.json")


def test_settings_share_the_diffusion_engines_names_and_refuse_bad_values():
    settings = _settings()
    assert settings.control_maps() == ("depth", "lineart") and settings.uses_beauty()
    assert settings.styled_prompts() == ("", "blurry, low quality")
    with pytest.raises(SettingsError, match="two enabled controls use the depth pass"):
        _settings(controls=(ControlUnit(map="depth", model="a"), ControlUnit(map="depth", model="b")))
    with pytest.raises(SettingsError, match="is not 'Name: value'"):
        _settings(comfyui_headers="Authorization Bearer x")
    assert parse_headers("Authorization: Bearer x; X-Team: a") == {"Authorization": "Bearer x", "X-Team": "a"}
    assert "needs a checkpoint" in ComfyUISettings().not_ready()
    assert ComfyUISettings(workflow="/some/file.json").not_ready() == ""
    # The viewport preview: fewer steps, never fewer than image to image needs for one.
    assert _settings(steps=30).live().steps == 6 and _settings(steps=4).live().steps == 4
    assert _settings(steps=40, denoise=0.1).live().steps == 10
