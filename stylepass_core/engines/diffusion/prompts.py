# SPDX-License-Identifier: GPL-3.0-or-later
"""Prompts of any length as CLIP embeddings: split into 75-token chunks, encoded one by one, concatenated.

CLIP text encoders see at most 77 tokens (begin + 75 + end). diffusers' own `encode_prompt` truncates longer
prompts with only a log message; here nothing is ever cut:

1. The prompt is tokenised without truncation and split into chunks of at most 75 tokens, preferring to end a
   chunk just after a comma among its last `COMMA_LOOKBACK` tokens, so a phrase is not torn apart.
2. Each chunk becomes its own `[BOS] chunk [EOS] [PAD]...` row of 77 ids, and all rows are encoded in one batch.
3. The rows' hidden states are concatenated along the sequence axis: `(1, 77 * chunks, D)`. The UNet's
   cross-attention accepts any sequence length.
4. The negative prompt is padded with empty chunks to the same number, since both go through the UNet in one
   batch under classifier-free guidance.

SDXL encodes with both text encoders (penultimate hidden states, concatenated on the feature axis) and takes
the pooled embedding of the second encoder's FIRST chunk, as the SDXL pipeline does for a short prompt. An empty
negative prompt becomes zeros when the model asks for it (`force_zeros_for_empty_prompt`).
"""

from dataclasses import dataclass
from typing import Any

CHUNK_TOKENS = 75
MAX_CHUNKS = 8  # 600 tokens; longer prompts are refused with a clear message, never cut
COMMA_LOOKBACK = 20


@dataclass
class PromptEmbeddings:
    """Embeddings ready for a diffusers pipeline's `prompt_embeds` arguments.

    Attributes:
        prompt_embeds: `(1, 77 * chunks, D)`.
        negative_prompt_embeds: Same shape.
        pooled: `(1, D2)` for SDXL, else None.
        negative_pooled: `(1, D2)` for SDXL, else None.
        tokens: Number of prompt tokens (without begin/end markers).
        chunks: Number of 77-token rows per prompt.
    """

    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled: Any
    negative_pooled: Any
    tokens: int
    chunks: int


def split_tokens(ids: list[int], comma_ids: set[int], size: int = CHUNK_TOKENS) -> list[list[int]]:
    """Split token ids into chunks of at most `size`, breaking after a comma near the end when there is one.

    Args:
        ids: Token ids without begin/end markers.
        comma_ids: Ids of comma tokens (may be empty).
        size: Largest chunk.

    Returns:
        The chunks, in order; `[[]]` for no tokens. Concatenated they give back `ids` exactly.
    """
    chunks: list[list[int]] = []
    rest = list(ids)
    while len(rest) > size:
        cut = size
        for position in range(size - 1, max(size - 1 - COMMA_LOOKBACK, 0), -1):
            if rest[position] in comma_ids:
                cut = position + 1
                break
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    return chunks


def _tokens(tokenizer: Any, text: str) -> list[int]:
    # verbose=False: the "longer than the maximum sequence length" warning is exactly what chunking handles.
    return list(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids)


def _comma_ids(tokenizer: Any) -> set[int]:
    ids = set()
    for token in (",</w>", ","):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


def _rows(tokenizer: Any, chunks: list[list[int]], count: int) -> list[list[int]]:
    """`count` rows of `model_max_length` ids: BOS, chunk, EOS, padding (empty chunks for the extra rows)."""
    length = min(int(tokenizer.model_max_length), CHUNK_TOKENS + 2)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for chunk in [*chunks, *([[]] * (count - len(chunks)))]:
        row = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
        rows.append(row + [pad] * (length - len(row)))
    return rows


def _check_length(which: str, tokens: int, chunks: int) -> None:
    if chunks > MAX_CHUNKS:
        raise ValueError(
            f"The {which} is {tokens} tokens; at most {MAX_CHUNKS * CHUNK_TOKENS} ({MAX_CHUNKS} chunks of "
            f"{CHUNK_TOKENS}) are supported, nothing is cut silently: shorten it"
        )


def encode(
    tokenizers: list[Any],
    text_encoders: list[Any],
    prompt: str,
    negative_prompt: str,
    *,
    sdxl: bool,
    zeros_for_empty_negative: bool,
    device: Any,
    dtype: Any,
    clip_skip: int = 0,
) -> PromptEmbeddings:
    """Encode a prompt pair of any length (see the module docstring).

    Args:
        tokenizers: `[tokenizer]` for SD1.x/2.x, `[tokenizer, tokenizer_2]` for SDXL.
        text_encoders: The matching text encoders.
        prompt: Positive prompt.
        negative_prompt: Negative prompt ("" for none).
        sdxl: Use SDXL's two-encoder scheme.
        zeros_for_empty_negative: SDXL's `force_zeros_for_empty_prompt`.
        device: Where to run the encoders (their own device, or the pipeline's execution device).
        dtype: dtype of the returned embeddings.
        clip_skip: Leave out this many of each encoder's last layers (as diffusers' `clip_skip`: SD1.x/2.x take
            that hidden state through the final layer norm; SDXL's already penultimate layer moves up as well).

    Returns:
        The embeddings.

    Raises:
        ValueError: a prompt longer than `MAX_CHUNKS` chunks, or `clip_skip` leaving no layer.
    """
    import torch

    # 1. Token ids and chunks for both prompts, on every tokenizer (they may pad differently)
    per_tokenizer = []
    for tokenizer in tokenizers:
        commas = _comma_ids(tokenizer)
        positive = split_tokens(_tokens(tokenizer, prompt), commas)
        negative = split_tokens(_tokens(tokenizer, negative_prompt), commas)
        per_tokenizer.append((positive, negative))
    count = max(max(len(p), len(n)) for p, n in per_tokenizer)
    tokens = len(_tokens(tokenizers[0], prompt))
    _check_length("prompt", tokens, max(len(p) for p, _ in per_tokenizer))
    _check_length(
        "negative_prompt", len(_tokens(tokenizers[0], negative_prompt)), max(len(n) for _, n in per_tokenizer)
    )

    # 2. Encode both prompts' rows in one batch per encoder
    hidden_parts, pooled = [], None
    with torch.no_grad():
        for tokenizer, encoder, (positive, negative) in zip(
            tokenizers, text_encoders, per_tokenizer, strict=True
        ):
            rows = _rows(tokenizer, positive, count) + _rows(tokenizer, negative, count)
            ids = torch.tensor(rows, dtype=torch.long, device=device)
            if sdxl or clip_skip:
                out = encoder(ids, output_hidden_states=True)
                # hidden_states holds the embeddings then one entry per layer; SDXL starts one layer up.
                layer = clip_skip + (2 if sdxl else 1)
                if layer >= len(out.hidden_states):
                    raise ValueError(
                        f"Clip Skip {clip_skip} leaves none of the text encoder's "
                        f"{len(out.hidden_states) - 1} layers: lower it"
                    )
                hidden = out.hidden_states[-layer]
                if not sdxl:
                    # transformers 5 keeps the layer norm on the model itself, 4.x on its `text_model`.
                    hidden = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
                if hasattr(out, "text_embeds"):
                    pooled = out.text_embeds  # (2 * count, D2); row 0 and row `count` are the first chunks
            else:
                hidden = encoder(ids)[0]
            hidden_parts.append(hidden)
    hidden = torch.cat(hidden_parts, dim=-1) if len(hidden_parts) > 1 else hidden_parts[0]

    # 3. Rows -> one long sequence per prompt
    width = hidden.shape[-1]
    prompt_embeds = hidden[:count].reshape(1, -1, width).to(dtype)
    negative_embeds = hidden[count:].reshape(1, -1, width).to(dtype)
    positive_pooled = negative_pooled = None
    if sdxl:
        if pooled is None:
            raise ValueError(
                "SDXL needs a second text encoder with a projection (CLIPTextModelWithProjection)"
            )
        positive_pooled = pooled[0:1].to(dtype)
        negative_pooled = pooled[count : count + 1].to(dtype)
    if zeros_for_empty_negative and not negative_prompt.strip():
        negative_embeds = torch.zeros_like(negative_embeds)
        if negative_pooled is not None:
            negative_pooled = torch.zeros_like(negative_pooled)
    return PromptEmbeddings(prompt_embeds, negative_embeds, positive_pooled, negative_pooled, tokens, count)
