# SPDX-License-Identifier: GPL-3.0-or-later
"""Regional prompting: each style group's prompt conditions only its region, in one denoising run.

    StyleRequest.regions --engine--> RegionPrompts --ModelCache.generate-->
        conditioning [scene | group 1 | ... | group N] + RegionalAttention on every cross-attention layer

1. Every region's prompt pair is encoded on its own (`prompts.encode`: any length, several 77-token chunks)
   and the results are concatenated along the token axis, positive and negative in the same layout, so
   region r owns the tokens `spans[r] = (start, end)` of both halves of the classifier-free-guidance batch.
   Region 0 is the scene's styled prompt; region k is group k's prompt, negative prompt and style preset.
   SDXL's pooled embedding stays the scene's.
2. Region weights (`level_weights`): the one-hot of the layer map area-averaged to the latent size, then to
   every resolution the UNet works at. Its stride-2 convolutions (kernel 3, padding 1) give ceil(n / 2) per
   level, so odd sizes round up, and the up blocks come back through the same sizes. A layer finds its
   resolution from its query length (h * w differs at every level). Weights sum to 1 at every position.
3. `RegionalAttention`, the cross-attention processor: for every query position q,

       out(q) = sum_r w_r(q) * softmax(Q(q) K_r^T / sqrt(d)) V_r

   with K_r, V_r the keys and values of region r's tokens only, so a position attends to nothing of a region
   it does not touch. Because the weights sum to 1 and `to_out` is affine, the weighted sum is taken before
   `to_out`. A region without weight at a layer gets no attention computed; a region covering a whole layer
   is that layer's attention as is. The projections are the module's own (`to_q`, `to_k`, `to_v`, `to_out`),
   so the LoRA layers PEFT wraps around them apply unchanged.
4. `installed` puts the processor on the cross-attention layers of the UNet and of every ControlNet for one
   call and gives each layer its previous processor back afterwards, also after an error or an abort: the
   warm pipelines serve later requests exactly as before.

Cross-attention over a few hundred tokens is a small share of a UNet step; attention slicing, when on, is
left out for these layers during a regional run (their attention matrix is query length x tokens, small).

Importing this module imports numpy only; torch is imported inside the functions.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prompts import PromptEmbeddings

SCENE = "scene"
"""The name region 0 (objects in no group and the background) has in `info["regions"]`."""


@dataclass(frozen=True, eq=False)
class RegionPrompts:
    """The prompt pairs of a regional run and where they apply; region 0 (the scene) first.

    Attributes:
        layer: `(H, W)` integers 0..N: which region each pixel of the beauty belongs to.
        names: N + 1 names, `SCENE` first, then the groups'.
        prompts: N + 1 `(prompt, negative prompt)` pairs, style preset words included.
    """

    layer: np.ndarray
    names: tuple[str, ...]
    prompts: tuple[tuple[str, str], ...]

    @property
    def count(self) -> int:
        """N + 1: the scene and every group."""
        return len(self.names)

    def describe(
        self, embeddings: list[PromptEmbeddings], spans: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """For the record, per region: name, prompt tokens and chunks, token span, share of the frame."""
        counts = np.bincount(self.layer.ravel(), minlength=self.count)
        return [
            {"name": name, "prompt_tokens": e.tokens, "prompt_chunks": e.chunks, "tokens": list(span),
             "coverage": float(count) / self.layer.size}
            for name, e, span, count in zip(self.names, embeddings, spans, counts, strict=True)
        ]  # fmt: skip


def concatenate(embeddings: list[PromptEmbeddings]) -> tuple[PromptEmbeddings, list[tuple[int, int]]]:
    """Regions' embeddings, in order, as one conditioning and each region's `(start, end)` token span.

    Args:
        embeddings: One `prompts.encode` result per region; positive and negative of each have equal length.

    Returns:
        `(joined, spans)`: `joined.prompt_embeds` is `(1, sum of lengths, D)`, the negative likewise; pooled
        embeddings are the first region's; `tokens` and `chunks` are the sums.
    """
    import torch

    spans, start = [], 0
    for embedding in embeddings:
        length = int(embedding.prompt_embeds.shape[1])
        spans.append((start, start + length))
        start += length
    first = embeddings[0]
    joined = PromptEmbeddings(
        prompt_embeds=torch.cat([e.prompt_embeds for e in embeddings], dim=1),
        negative_prompt_embeds=torch.cat([e.negative_prompt_embeds for e in embeddings], dim=1),
        pooled=first.pooled,
        negative_pooled=first.negative_pooled,
        tokens=sum(e.tokens for e in embeddings),
        chunks=sum(e.chunks for e in embeddings),
    )
    return joined, spans


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The latent size and every size below it that stride-2 convolutions give, down to 1x1."""
    sizes = [(height, width)]
    while sizes[-1] != (1, 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def level_weights(layer: np.ndarray, count: int, latent: tuple[int, int]) -> dict[int, Any]:
    """Each region's weight at every UNet resolution.

    Args:
        layer: `(H, W)` integers 0..count-1.
        count: Number of regions.
        latent: `(h, w)` of the latents.

    Returns:
        `{h * w: (count, h * w) float32 tensor}` for every size of `level_sizes(*latent)`; the columns sum to 1.
    """
    import torch
    import torch.nn.functional as F

    # One region at a time: a full-size one-hot of every region at once would be count x H x W floats.
    labels = torch.from_numpy(layer.astype(np.int32))  # torch compares few unsigned dtypes
    at_latent = torch.cat(
        [F.adaptive_avg_pool2d((labels == r).float()[None, None], latent)[0] for r in range(count)]
    )
    weights = {}
    for h, w in level_sizes(*latent):
        level = at_latent if (h, w) == latent else F.adaptive_avg_pool2d(at_latent[None], (h, w))[0]
        level = level.reshape(count, h * w)
        weights[h * w] = level / level.sum(dim=0, keepdim=True)
    return weights


class RegionalAttention:
    """Cross-attention processor in which each region's tokens condition only that region (module docstring).

    Args:
        spans: `(start, end)` of each region's tokens in the conditioning.
        weights: `level_weights` output: region weights by query length.
    """

    def __init__(self, spans: list[tuple[int, int]], weights: dict[int, Any]) -> None:
        import torch.nn.functional as F

        self.spans = list(spans)
        self.tokens = self.spans[-1][1]
        self.weights = weights
        self._attention = F.scaled_dot_product_attention
        self._plans: dict[tuple, list[tuple[int, Any]]] = {}

    def plan(self, length: int, like: Any) -> list[tuple[int, Any]]:
        """`[(region, weight), ...]` for a layer of `length` queries: the regions with any weight there, each
        with its weights as a `(1, 1, length, 1)` tensor of `like`'s dtype and device, or None for a region
        covering the whole layer (then the only one)."""
        key = (length, like.dtype, like.device)
        plan = self._plans.get(key)
        if plan is None:
            level = self.weights.get(length)
            if level is None:
                raise RuntimeError(
                    f"regional attention: a layer has {length} query positions, which is no UNet resolution of "
                    f"these latents ({sorted(self.weights, reverse=True)})"
                )
            plan = []
            for region in range(level.shape[0]):
                weight = level[region]
                if bool((weight == 1).all()):
                    plan = [(region, None)]
                    break
                if bool((weight > 0).any()):
                    plan.append((region, weight.to(like.device, like.dtype).reshape(1, 1, length, 1)))
            self._plans[key] = plan
        return plan

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # The same steps as diffusers' AttnProcessor2_0, with one attention per region.
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != self.tokens:
            got = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
            raise RuntimeError(
                f"regional attention expects {self.tokens} conditioning tokens on a cross-attention layer, got {got}"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, self.tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        # All tokens in one projection each: a few hundred rows cost less than a call per region.
        key = attn.to_k(encoder_hidden_states).view(batch, -1, heads, head_dim).transpose(1, 2)
        value = attn.to_v(encoder_hidden_states).view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        mixed = None
        for region, weight in self.plan(length, query):
            start, end = self.spans[region]
            mask = attention_mask[..., start:end] if attention_mask is not None else None
            out = self._attention(
                query,
                key[:, :, start:end],
                value[:, :, start:end],
                attn_mask=mask,
                dropout_p=0.0,
                is_causal=False,
            )
            if weight is None:
                mixed = out
            elif mixed is None:
                mixed = out * weight
            else:
                mixed = mixed.addcmul_(out, weight)

        hidden_states = mixed.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(model: Any) -> list[Any]:
    """Every cross-attention module of a UNet or ControlNet (the transformer blocks' `attn2`)."""
    from diffusers.models.attention_processor import Attention

    return [m for m in model.modules() if isinstance(m, Attention) and m.is_cross_attention]


@contextmanager
def installed(models: Iterable[Any], processor: Any) -> Iterator[list[int]]:
    """`processor` on every cross-attention layer of `models` while the block runs, the previous ones after.

    Yields:
        The number of layers it was put on, per model.
    """
    saved: list[tuple[Any, Any]] = []
    counts = []
    try:
        for model in models:
            layers = cross_attention_layers(model)
            for layer in layers:
                saved.append((layer, layer.processor))
                layer.set_processor(processor)
            counts.append(len(layers))
        yield counts
    finally:
        for layer, previous in reversed(saved):
            layer.set_processor(previous)
