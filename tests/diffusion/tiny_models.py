# SPDX-License-Identifier: GPL-3.0-or-later
"""Tiny random-weight Stable Diffusion parts, built in seconds and saved the way artists' files come.

Every builder is seeded, so two sessions build identical weights. The layouts written here:

* `save_sd15_folder`: a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
  scheduler/), safetensors only.
* `save_sd15_single_file`: the same weights as ONE original-layout (LDM) `.safetensors` checkpoint, with keys
  `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`, as community checkpoints
  have them. The conversion below is diffusers' `convert_diffusers_to_original_stable_diffusion.py` mapping,
  generalised from SD1.5's four blocks to any number; the fixture checks that diffusers' own loader turns it
  back into the very same weights.
* ControlNet, LoRA and IP-Adapter files in the formats diffusers reads.
"""

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

CROSS_DIM = 32
SDXL_CROSS_DIM = 64


# ----------------------------------------------------------------------------------------------------------
# Components


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer: every byte, every byte at a word end, and a few merges.

    transformers 5 ignores `vocab_file=`; the vocabulary and merges go in as `vocab=` and `merges=`.
    """
    chars = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in chars:
        vocab.setdefault(char, len(vocab))
    for char in chars:
        vocab.setdefault(char + "</w>", len(vocab))
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def text_encoder(vocab_size: int, hidden: int = CROSS_DIM, projection: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def unet(seed: int = 0, cross_attention_dim: int = CROSS_DIM) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    ).eval()


def sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=SDXL_CROSS_DIM,
    ).eval()


def vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    ).eval()


def tiny_autoencoder(seed: int = 0) -> AutoencoderTiny:
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).eval()


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def controlnet(base: UNet2DConditionModel, seed: int) -> ControlNetModel:
    """A ControlNet copied from `base` whose zero convolutions are NOT zero, so it visibly steers."""
    net = ControlNetModel.from_unet(base, conditioning_embedding_out_channels=(16, 32))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            module.weight.normal_(0.0, 0.3, generator=generator)
            module.bias.normal_(0.0, 0.1, generator=generator)
        # A random conditioning embedder, too, so different control images give different residuals.
        for parameter in net.controlnet_cond_embedding.conv_out.parameters():
            parameter.normal_(0.0, 0.2, generator=generator)
    return net.eval()


# ----------------------------------------------------------------------------------------------------------
# Saving


def sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    tok = tokenizer()
    return StableDiffusionPipeline(
        vae=vae(seed),
        text_encoder=text_encoder(len(tok), seed=seed),
        tokenizer=tok,
        unet=unet(seed),
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_sd15_folder(folder: Path, seed: int = 0) -> StableDiffusionPipeline:
    pipe = sd15_pipeline(seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def save_sdxl_folder(folder: Path, seed: int = 0) -> None:
    tok = tokenizer()
    pipe = StableDiffusionXLPipeline(
        vae=vae(seed),
        text_encoder=text_encoder(len(tok), hidden=32, seed=seed),
        text_encoder_2=text_encoder(len(tok), hidden=32, projection=True, seed=seed + 1),
        tokenizer=tok,
        tokenizer_2=tokenizer(),
        unet=sdxl_unet(seed),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def save_controlnet(folder: Path, base: UNet2DConditionModel, seed: int) -> ControlNetModel:
    net = controlnet(base, seed)
    net.save_pretrained(folder, safe_serialization=True)
    return net


def save_lora(path: Path, base: UNet2DConditionModel, seed: int = 7, rank: int = 4) -> None:
    """A LoRA for `base`'s attention projections with random (non-zero) weights, in diffusers' format."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = unet(seed=0, cross_attention_dim=base.config.cross_attention_dim)
    model.load_state_dict(base.state_dict())
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    model.add_adapter(config)
    layers = get_peft_model_state_dict(model)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=layers, weight_name=path.name, safe_serialization=True
    )


def save_ip_adapter(folder: Path, base: UNet2DConditionModel, seed: int = 11) -> None:
    """IP-Adapter (plain, 4 image tokens) weights plus a tiny CLIP vision encoder, laid out like h94/IP-Adapter.

    `folder/models/ip-adapter_tiny.safetensors` and `folder/models/image_encoder/`.
    """
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection

    torch.manual_seed(seed)
    cross = base.config.cross_attention_dim
    weights: dict[str, torch.Tensor] = {}
    key_id = 1
    channels = list(base.config.block_out_channels)
    for name in base.attn_processors:
        if not name.endswith("attn1.processor"):
            if name.startswith("mid_block"):
                hidden = channels[-1]
            elif name.startswith("up_blocks"):
                hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
            else:
                hidden = channels[int(name[len("down_blocks.")])]
            state = IPAdapterAttnProcessor(
                hidden_size=hidden, cross_attention_dim=cross, scale=1.0
            ).state_dict()
            weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = state["to_k_ip.0.weight"]
            weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = state["to_v_ip.0.weight"]
            key_id += 2  # diffusers numbers the original file's cross-attention layers 1, 3, 5, ...
    projection = ImageProjection(cross_attention_dim=cross, image_embed_dim=cross, num_image_text_embeds=4)
    state = projection.state_dict()
    weights["image_proj.proj.weight"] = state["image_embeds.weight"]
    weights["image_proj.proj.bias"] = state["image_embeds.bias"]
    weights["image_proj.norm.weight"] = state["norm.weight"]
    weights["image_proj.norm.bias"] = state["norm.bias"]
    (folder / "models").mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, folder / "models" / "ip-adapter_tiny.safetensors"
    )
    vision = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=cross,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    vision.save_pretrained(folder / "models" / "image_encoder", safe_serialization=True)


# ----------------------------------------------------------------------------------------------------------
# Diffusers -> original (LDM) single-file layout


def _unet_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    layers = config.layers_per_block
    blocks = len(config.block_out_channels)
    up_has_attention = ["CrossAttn" in kind for kind in config.up_block_types]
    prefixes: list[tuple[str, str]] = []  # (ldm, diffusers)
    for i in range(blocks):
        for j in range(layers):
            prefixes.append((f"input_blocks.{(layers + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            prefixes.append(
                (f"input_blocks.{(layers + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}.")
            )
        for j in range(layers + 1):
            prefixes.append((f"output_blocks.{(layers + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            prefixes.append((f"output_blocks.{(layers + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < blocks - 1:
            prefixes.append(
                (f"input_blocks.{(layers + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.")
            )
            slot = 2 if up_has_attention[i] else 1
            prefixes.append(
                (f"output_blocks.{(layers + 1) * i + layers}.{slot}.", f"up_blocks.{i}.upsamplers.0.")
            )
    prefixes.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        prefixes.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    whole = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    resnet_parts = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"),
        ("skip_connection", "conv_shortcut"),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for diffusers_prefix, ldm_prefix in whole.items():
            if key.startswith(diffusers_prefix):
                new = ldm_prefix + key[len(diffusers_prefix) :]
        if "resnets" in new:
            for ldm_part, diffusers_part in resnet_parts:
                new = new.replace(diffusers_part, ldm_part)
        for ldm_prefix, diffusers_prefix in prefixes:
            if new.startswith(diffusers_prefix):
                new = ldm_prefix + new[len(diffusers_prefix) :]
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    blocks = len(config.block_out_channels)
    layers = config.layers_per_block
    renames: list[tuple[str, str]] = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(blocks):
        for j in range(layers):
            renames.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < blocks - 1:
            renames.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            renames.append((f"up.{blocks - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(layers + 1):
            renames.append((f"decoder.up.{blocks - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        renames.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attention = [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ]
    out = {}
    for key, value in state.items():
        new = key
        for ldm_part, diffusers_part in renames:
            new = new.replace(diffusers_part, ldm_part)
        if "attn_1" in new:
            for ldm_part, diffusers_part in attention:
                new = new.replace(diffusers_part, ldm_part)
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)  # the original layout uses 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def ldm_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights in the original single-checkpoint layout of SD1.x."""
    state = _unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    state.update(_vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    for key, value in pipe.text_encoder.state_dict().items():
        text_key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + text_key] = value
    return {k: v.contiguous().clone() for k, v in state.items()}


def save_sd15_single_file(path: Path, pipe: StableDiffusionPipeline) -> None:
    save_file(ldm_state_dict(pipe), path)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))
