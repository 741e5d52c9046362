# SPDX-License-Identifier: GPL-3.0-or-later
"""Regional prompting (style groups as regions) on the tiny random-weight models.

The central probe watches every cross-attention call of a real run (UNet and ControlNets) and measures, for
every query position, how much attention falls on each region's tokens. It does so from the outside: it
runs the installed processor again on the very same inputs with the layer's value projection swapped for
one that gives 1 on the probed region's tokens and 0 elsewhere, and its output projection for the identity,
so the output at a position IS the attention mass on those tokens. Which token a value belongs to is read
from where it lies in the conditioning tensor, not from the processor's own bookkeeping.
"""

import numpy as np
import pytest

from stylepass_core.engine_api import Regions, StyleRequest
from stylepass_core.engines.diffusion import ControlUnit, DiffusionSettings, Lora
from stylepass_core.engines.neural_style import NeuralStyleSettings

pytestmark = pytest.mark.needs_torch

# The tiny VAE halves (a real one divides by 8): latents 68 x 100, the tiny UNet's attention at 34 x 50.
# Odd sizes are tested on a deeper UNet of its own (`test_odd_latent_sizes_round_up_like_the_unet`).
SIZE = (136, 200)
GROUP_A = (slice(0, 64), slice(0, 96))
GROUP_B = (slice(72, 136), slice(112, 200))


def _differ(a: np.ndarray, b: np.ndarray, at_least: float = 1e-3) -> bool:
    return float(np.abs(a - b).max()) > at_least


def _layer(size: tuple[int, int] = SIZE) -> np.ndarray:
    """Group A top left, group B bottom right, the scene (0) in between and around."""
    layer = np.zeros(size, np.uint8)
    layer[GROUP_A] = 1
    layer[GROUP_B] = 2
    return layer


def _groups(a: str = "a blue glass vase", b: str = "a mossy stone wall", **a_values) -> tuple:
    return (
        DiffusionSettings(prompt=a, negative_prompt="", style_preset="ink", **a_values),
        DiffusionSettings(prompt=b, negative_prompt="bright colours"),
    )


def _regional(make_request, layer=None, groups=None, names=("vase", "wall"), size=SIZE, **values):
    request = make_request(size=size, **values)
    layer = _layer(size) if layer is None else layer
    regions = Regions(layer=layer, settings=groups or _groups(), names=names)
    return StyleRequest(
        beauty=request.beauty, settings=request.settings, controls=request.controls, regions=regions
    )


def _units(tiny) -> tuple:
    return (
        ControlUnit(map="depth", model=str(tiny.cn_depth), weight=0.8),
        ControlUnit(map="normal", model=str(tiny.cn_normal), weight=0.6),
    )


# ---------------------------------------------------------------------------------------------------------
# The attention probe


def _indicator(source, span: tuple[int, int], width: int):
    """A value projection giving 1 on the conditioning tokens `span` and 0 on the others, at every channel.

    The processor may project all tokens at once or each region's slice: a slice is a view of the conditioning
    tensor `source`, and its offset there says which tokens it holds.
    """
    import torch

    class Indicator(torch.nn.Module):
        def forward(self, tokens):
            assert tokens.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
            assert tokens.stride() == source.stride()
            offset = (tokens.data_ptr() - source.data_ptr()) // (source.stride(1) * source.element_size())
            positions = torch.arange(offset, offset + tokens.shape[1])
            inside = ((positions >= span[0]) & (positions < span[1])).to(tokens.dtype)
            return inside[None, :, None].expand(tokens.shape[0], -1, width)

    return Indicator()


@pytest.fixture
def attention_probe(monkeypatch):
    """Records `(attention module, query length, masses)` for every regional cross-attention call, `masses`
    `(regions, batch, queries, heads)`: the attention mass each query of each head puts on each region's
    tokens; and the processor that ran."""
    import torch

    from stylepass_core.engines.diffusion import regions

    records: list[tuple] = []
    processors: list = []
    original = regions.RegionalAttention.__call__

    def probing(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if not processors or processors[-1] is not self:
            processors.append(self)
        to_v, to_out = attn.to_v, attn.to_out
        width = attn.inner_dim
        head_dim = width // attn.heads
        masses = []
        try:
            attn.to_out = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
            for span in self.spans:
                attn.to_v = _indicator(encoder_hidden_states, span, width)
                mass = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb)
                masses.append(mass[..., ::head_dim])  # every channel of a head carries the same mass
        finally:
            attn.to_v, attn.to_out = to_v, to_out
        records.append((attn, hidden_states.shape[1], torch.stack(masses).float()))
        return out

    monkeypatch.setattr(regions.RegionalAttention, "__call__", probing)
    return records, processors


def _clearly(layer: np.ndarray, region: int, level: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`(outside, inside)` bool masks `(h * w,)` at a level: cells whose footprint grown by one cell on every
    side holds no pixel of `region`, or only pixels of it. Independent of how the engine downsamples."""
    height, width = layer.shape
    h, w = level
    outside, inside = np.zeros((h, w), bool), np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            rows = slice(max(0, (i - 1) * height // h), min(height, -(-(i + 2) * height // h)))
            cols = slice(max(0, (j - 1) * width // w), min(width, -(-(j + 2) * width // w)))
            cell = layer[rows, cols] == region
            outside[i, j], inside[i, j] = not cell.any(), cell.all()
    return outside.ravel(), inside.ravel()


def test_each_regions_attention_stays_in_its_region(engine, make_request, tiny, attention_probe):
    records, processors = attention_probe
    layer = _layer()
    request = _regional(make_request, controls=_units(tiny))
    result = engine.run(request)

    # 1. Every cross-attention layer of the UNet and of both ControlNets ran regionally, every step
    cache = engine._cache
    unet_layers = {id(m) for m in cache.base.unet.modules() if getattr(m, "is_cross_attention", False)}
    net_layers = [
        {id(m) for m in net.modules() if getattr(m, "is_cross_attention", False)}
        for net in cache.controlnets.values()
    ]
    seen = {id(attn) for attn, _, _ in records}
    assert unet_layers and all(net_layers) and seen == unet_layers.union(*net_layers)
    assert result.info["regional_attention_layers"] == {
        "unet": len(unet_layers),
        "controlnets": [len(n) for n in net_layers],
    }
    [processor] = processors
    assert [tuple(r["tokens"]) for r in result.info["regions"]] == processor.spans
    assert [r["name"] for r in result.info["regions"]] == ["scene", "vase", "wall"]

    # 2. At every layer and query: no attention at all on a region whose weight there is 0, all of it on
    #    the region's own tokens inside it, and 1 in total (batch 2: the negative half too)
    checked = {"outside": 0, "inside": 0}
    for _, length, masses in records:
        assert masses.shape[:2] == (3, 2)
        weights = processor.weights[length]  # (regions, queries)
        level = {h * w: (h, w) for h, w in [(68, 100), (34, 50)]}[length]
        np.testing.assert_allclose(masses.sum(0).numpy(), 1.0, atol=1e-5)
        for region in range(3):
            mass = masses[region].numpy()  # (batch, queries, heads)
            zero = (weights[region] == 0).numpy()
            assert (mass[:, zero] == 0).all(), f"region {region} gets attention where it has no weight"
            np.testing.assert_allclose(mass[:, (weights[region] == 1).numpy()], 1.0, atol=1e-5)
            outside, inside = _clearly(layer, region, level)
            assert zero[outside].all()
            assert (mass[:, outside] == 0).all()
            np.testing.assert_allclose(mass[:, inside], 1.0, atol=1e-5)
            checked["outside"] += int(outside.sum())
            checked["inside"] += int(inside.sum())
    assert checked["outside"] > 100 and checked["inside"] > 100  # the rectangles leave cells to check

    # 3. The weights: at the latent size and each stride-2 level below it, summing to 1
    assert {length for _, length, _ in records} == {34 * 50}
    assert sorted(processor.weights, reverse=True)[:3] == [68 * 100, 34 * 50, 17 * 25]
    for weights in processor.weights.values():
        np.testing.assert_allclose(weights.sum(0).numpy(), 1.0, atol=1e-6)


def test_odd_latent_sizes_round_up_like_the_unet():
    """A four-level UNet with cross-attention at every level, on 17 x 25 latents: 17 x 25, 9 x 13, 5 x 7."""
    import torch
    from diffusers import UNet2DConditionModel

    from stylepass_core.engines.diffusion import regions

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16,
        attention_head_dim=2,
    ).eval()
    layer = np.zeros((136, 200), np.uint8)
    layer[:, 100:] = 1
    spans = [(0, 5), (5, 12)]
    processor = regions.RegionalAttention(spans, regions.level_weights(layer, 2, (17, 25)))
    seen = []
    plan = processor.plan
    processor.plan = lambda length, like: seen.append(length) or plan(length, like)
    with torch.no_grad(), regions.installed([unet], processor) as counts:
        unet(torch.randn(2, 4, 17, 25), 10, encoder_hidden_states=torch.randn(2, 12, 16))
    assert counts == [len(regions.cross_attention_layers(unet))] and counts[0] > 0
    assert set(seen) == {17 * 25, 9 * 13, 5 * 7}
    assert regions.level_sizes(17, 25)[:4] == [(17, 25), (9, 13), (5, 7), (3, 4)]
    # Left half region 0, right half region 1: at 9 x 13 the middle column is shared, the others are not.
    weights = processor.weights[9 * 13].reshape(2, 9, 13)
    assert (weights[0, :, :6] == 1).all() and (weights[1, :, 7:] == 1).all()
    assert (weights[:, :, 6] > 0).all()


# ---------------------------------------------------------------------------------------------------------
# Pictures


def test_regions_change_the_picture_deterministically(engine, make_request):
    plain = engine.run(make_request(size=SIZE))
    regional = engine.run(_regional(make_request))
    again = engine.run(_regional(make_request))
    np.testing.assert_array_equal(regional.image, again.image)
    assert _differ(regional.image, plain.image)
    other_vase = engine.run(_regional(make_request, groups=_groups(a="a red paper lantern")))
    assert _differ(other_vase.image, regional.image)
    other_seed = engine.run(StyleRequest(**{**_fields(_regional(make_request)), "seed": 5}))
    assert _differ(other_seed.image, regional.image)

    # The record: the scene's prompt tokens as a plain run's, and every region's share of the frame
    info = regional.info
    assert info["prompt_tokens"] == plain.info["prompt_tokens"] == info["regions"][0]["prompt_tokens"]
    shares = [r["coverage"] for r in info["regions"]]
    a, b = 64 * 96 / (136 * 200), 64 * 88 / (136 * 200)
    assert shares == pytest.approx([1 - a - b, a, b])


def _fields(request: StyleRequest) -> dict:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_a_region_covering_everything_is_that_prompt_alone(engine, make_request):
    # The scene everywhere: the groups' tokens must not count at all.
    plain = engine.run(make_request(size=SIZE)).image
    nothing = engine.run(_regional(make_request, layer=np.zeros(SIZE, np.int32))).image
    np.testing.assert_allclose(nothing, plain, atol=1e-5)
    # Group A everywhere: as a plain run with group A's prompt, negative prompt and style.
    vase = engine.run(
        make_request(size=SIZE, prompt="a blue glass vase", negative_prompt="", style_preset="ink")
    )
    regional = engine.run(_regional(make_request, layer=np.ones(SIZE, np.int32)))
    everywhere = regional.image
    np.testing.assert_allclose(everywhere, vase.image, atol=1e-5)
    assert regional.info["regions"][1]["prompt_tokens"] == vase.info["prompt_tokens"]
    # Only the group's prompt, negative prompt and style are its own; its other settings are not used.
    ignored = _groups(steps=9, guidance=1.0, scheduler="lcm", clip_skip=1)
    same = engine.run(_regional(make_request, layer=np.ones(SIZE, np.int32), groups=ignored)).image
    np.testing.assert_array_equal(same, everywhere)


def test_controlnets_img2img_and_lora_together_then_plain_runs_are_unchanged(engine, make_request, tiny):
    values = {
        "controls": _units(tiny),
        "loras": (Lora(file=str(tiny.lora), weight=0.8),),
        "denoise": 0.5,
        "steps": 4,
        "attention_slicing": True,  # sliced processors on every layer: they must come back too
    }
    plain_before = engine.run(make_request(size=SIZE, **values))
    models = [engine._cache.base.unet, *engine._cache.controlnets.values()]

    def kinds() -> dict[tuple[int, str], str]:
        return {
            (number, name): type(module.processor).__name__
            for number, model in enumerate(models)
            for name, module in model.named_modules()
            if hasattr(module, "processor")
        }

    plain_kinds = kinds()
    assert "SlicedAttnProcessor" in plain_kinds.values()
    regional = engine.run(_regional(make_request, **values))
    assert kinds() == plain_kinds
    assert regional.info["mode"] == "img2img" and regional.info["steps_run"] == 2
    assert regional.info["loaded"] == []  # warm: the regional run loads nothing of its own
    assert len(regional.info["regional_attention_layers"]["controlnets"]) == 2
    assert _differ(regional.image, plain_before.image)
    np.testing.assert_array_equal(engine.run(_regional(make_request, **values)).image, regional.image)
    without_lora = engine.run(_regional(make_request, **{**values, "loras": ()}))
    assert _differ(without_lora.image, regional.image)

    plain_after = engine.run(make_request(size=SIZE, **values))
    np.testing.assert_array_equal(plain_after.image, plain_before.image)


def test_plain_runs_keep_their_processors(engine, make_request, tiny):
    values = {"controls": _units(tiny)[:1], "size": SIZE}
    plain_before = engine.run(make_request(**values)).image
    models = [engine._cache.base.unet, *engine._cache.controlnets.values()]
    before = {id(m): m.processor for model in models for m in model.modules() if hasattr(m, "processor")}
    engine.run(_regional(make_request, controls=values["controls"]))
    after = {id(m): m.processor for model in models for m in model.modules() if hasattr(m, "processor")}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    np.testing.assert_array_equal(engine.run(make_request(**values)).image, plain_before)


def test_processors_come_back_after_an_abort(engine, make_request):
    from conftest import AbortAfter

    from stylepass_core.engine_api import Aborted

    plain = engine.run(make_request(size=SIZE, steps=3)).image
    stop = AbortAfter(1)
    with pytest.raises(Aborted):
        engine.run(_regional(make_request, steps=3), progress=stop, abort=stop.abort)
    np.testing.assert_array_equal(engine.run(make_request(size=SIZE, steps=3)).image, plain)


def test_sdxl_regions_keep_the_scenes_pooled_embedding(engine, tiny, attention_probe):
    records, _ = attention_probe
    settings = DiffusionSettings(
        model=str(tiny.sdxl), prompt="a red house", negative_prompt="", steps=2, guidance=5.0, denoise=1.0,
        scheduler="euler_a",
    )  # fmt: skip
    beauty = np.full((64, 96, 3), 0.5, np.float32)
    layer = np.zeros((64, 96), np.uint8)
    layer[:, 48:] = 1
    group = DiffusionSettings(prompt="a green tree", negative_prompt="")

    def run(scene: str, layer: np.ndarray | None) -> np.ndarray:
        regions = None if layer is None else Regions(layer=layer, settings=(group,), names=("tree",))
        request = StyleRequest(beauty=beauty, settings=settings.replace(prompt=scene), regions=regions)
        return engine.run(request).image

    assert _differ(run("a red house", layer), run("a red house", None))
    assert records and all(masses.shape[1] == 2 for _, _, masses in records)
    for _, _, masses in records:
        np.testing.assert_allclose(masses.sum(0).numpy(), 1.0, atol=1e-5)
    # The tree everywhere: its tokens condition every pixel, but the pooled embedding stays the scene's.
    everywhere = np.ones((64, 96), np.uint8)
    tree = run("a green tree", None)
    assert _differ(run("a red house", everywhere), tree)
    np.testing.assert_allclose(run("a green tree", everywhere), tree, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Refused before anything runs


def test_bad_regions_are_refused_before_loading_anything(engine, make_request, tiny):
    picture = {"ip_adapter_image": np.full((32, 32, 3), 0.5, np.float32)}
    ip = make_request(
        ip_adapter_model=str(tiny.ip_adapter),
        ip_adapter_weight_name="ip-adapter_tiny.safetensors",
        request_fields={"images": picture},
    )
    groups = _groups()
    cases = [
        (
            StyleRequest(
                beauty=ip.beauty,
                settings=ip.settings,
                images=picture,
                regions=Regions(_layer((64, 64)), groups, ("vase", "wall")),
            ),
            "cannot be combined with an IP-Adapter",
        ),
        (_regional(make_request, layer=_layer((64, 64))), r"regions.layer must be a \(136, 200\) array"),
        (_regional(make_request, layer=_layer() * 2), r"values must be in \[0, 2\].*got values in \[0, 4\]"),
        (_regional(make_request, layer=_layer().astype(np.float32)), "integer dtype"),
        (
            _regional(make_request, groups=(groups[0], NeuralStyleSettings())),
            "group 'wall' must be DiffusionSettings like the request's settings, got NeuralStyleSettings",
        ),
        (_regional(make_request, names=("vase",)), "regions.settings must be a tuple of 1"),
    ]
    for request, message in cases:
        with pytest.raises(ValueError, match=message):
            engine.run(request)
    assert engine._cache is None and sum(engine.load_counts.values()) == 0
