"""GALIP's generator and CLIP's text tower as plain torch functions over a state dict.

This is the inference half of the network definitions in :mod:`galip_diffusers.models` (generator, CLIP bridge) and
of transformers' ``CLIPTextModelWithProjection``, written against the *same state-dict keys*, so the weights of any
GALIP pipeline folder run here unchanged. It imports only torch. ``tests/test_lite.py`` checks it against the
diffusers/transformers modules (max abs diff ~1e-6 in fp32).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Weights = Mapping[str, torch.Tensor]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


def generator_channels(ngf: int, output_size: int) -> list[int]:
    """Channel widths from the bottleneck to the last block: ``[ngf * min(2**i, 8) for i in range(log2(S) - 1)]``
    reversed, with S the power of two at or above ``output_size`` (224 -> 256 -> 512,512,512,512,256,128,64)."""
    log_size = math.ceil(math.log2(output_size))
    return [ngf * min(2**i, 8) for i in range(log_size - 1)][::-1]


def generator_block_sizes(num_blocks: int, output_size: int) -> list[int]:
    """Spatial size after each G-block: 8, 16, 32, ... doubling, and ``output_size`` for the last block."""
    return [2 ** (3 + i) for i in range(num_blocks - 1)] + [output_size]


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported by galip_lite; supported: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def _linear(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))


def _conv(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    kernel = w[name + ".weight"]
    return F.conv2d(x, kernel, w.get(name + ".bias"), padding=kernel.shape[-1] // 2)


def _layer_norm(w: Weights, name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps)


def clip_encoder_layer(
    w: Weights, name: str, h: torch.Tensor, config: Mapping[str, Any], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One pre-LN CLIP transformer block (``CLIPEncoderLayer``): attention then MLP, each with a residual."""
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    batch, length, width = h.shape
    x = _layer_norm(w, f"{name}.layer_norm1", h, eps)
    q, k, v = (
        _linear(w, f"{name}.self_attn.{p}_proj", x).view(batch, length, heads, -1).transpose(1, 2) for p in "qkv"
    )
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=(width // heads) ** -0.5)
    h = h + _linear(w, f"{name}.self_attn.out_proj", attn.transpose(1, 2).reshape(batch, length, width))
    x = _layer_norm(w, f"{name}.layer_norm2", h, eps)
    act = activation(config["hidden_act"])
    return h + _linear(w, f"{name}.mlp.fc2", act(_linear(w, f"{name}.mlp.fc1", x)))


def clip_text_embeds(w: Weights, config: Mapping[str, Any], input_ids: torch.Tensor) -> torch.Tensor:
    """``CLIPTextModelWithProjection(input_ids).text_embeds``: the projected, final-layer-normed state at the EOT
    token (causal attention, no padding mask), not L2-normalised."""
    length = input_ids.shape[1]
    h = w["text_model.embeddings.token_embedding.weight"][input_ids]
    h = h + w["text_model.embeddings.position_embedding.weight"][:length]
    causal = torch.full((length, length), float("-inf"), dtype=h.dtype, device=h.device).triu(1)
    for i in range(config["num_hidden_layers"]):
        h = clip_encoder_layer(w, f"text_model.encoder.layers.{i}", h, config, causal)
    h = _layer_norm(w, "text_model.final_layer_norm", h, config["layer_norm_eps"])
    eos = config.get("eos_token_id", 2)
    # transformers' pooling: the legacy configs (eos_token_id == 2) take the highest id, the others the first EOS
    index = input_ids.argmax(-1) if eos == 2 else (input_ids == eos).int().argmax(-1)
    pooled = h[torch.arange(h.shape[0], device=h.device), index]
    return F.linear(pooled, w["text_projection.weight"])


def _affine(w: Weights, name: str, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    gamma, beta = (
        _linear(w, f"{name}.{p}.linear2", F.relu(_linear(w, f"{name}.{p}.linear1", cond))) for p in ("fc_gamma", "fc_beta")
    )
    return gamma[:, :, None, None] * x + beta[:, :, None, None]


def _fuse(w: Weights, name: str, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    x = F.leaky_relu(_affine(w, f"{name}.affine0", x, cond), 0.2)
    return F.leaky_relu(_affine(w, f"{name}.affine1", x, cond), 0.2)


def _shortcut(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return _conv(w, f"{name}.conv_shortcut", x) if f"{name}.conv_shortcut.weight" in w else x


def _mapping_block(w: Weights, name: str, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    h = _fuse(w, f"{name}.fuse1", _conv(w, f"{name}.conv1", x), cond)
    h = _fuse(w, f"{name}.fuse2", _conv(w, f"{name}.conv2", h), cond)
    return _shortcut(w, name, x) + h


def _generator_block(w: Weights, name: str, x: torch.Tensor, cond: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(x, size=(size, size))
    h = _conv(w, f"{name}.conv1", _fuse(w, f"{name}.fuse1", x, cond))
    h = _conv(w, f"{name}.conv2", _fuse(w, f"{name}.fuse2", h, cond))
    return _shortcut(w, name, x) + h


def bridge_vit(
    w: Weights, bridge_feature: torch.Tensor, prompts: torch.Tensor, prompt_layers: Sequence[int],
    vision_config: Mapping[str, Any],
) -> torch.Tensor:
    """The frozen ViT of Mate-G on the bridge feature, with ``prompts[:, k]`` appended while block
    ``prompt_layers[k]`` runs; returns the patch tokens (no CLS, no post-layernorm) as a (B, C, g, g) map."""
    batch, channels, grid, _ = bridge_feature.shape
    tokens = bridge_feature.flatten(2).transpose(1, 2)
    cls = w["vision_model.embeddings.class_embedding"].expand(batch, 1, -1)
    h = torch.cat([cls, tokens], dim=1) + w["vision_model.embeddings.position_embedding.weight"]
    h = _layer_norm(w, "vision_model.pre_layrnorm", h, vision_config["layer_norm_eps"])
    prompt_index = {layer: k for k, layer in enumerate(prompt_layers)}
    for i in range(vision_config["num_hidden_layers"]):
        name, k = f"vision_model.encoder.layers.{i}", prompt_index.get(i)
        if k is None:
            h = clip_encoder_layer(w, name, h, vision_config)
        else:
            h = clip_encoder_layer(w, name, torch.cat([h, prompts[:, k : k + 1]], dim=1), vision_config)[:, :-1]
    return h[:, 1:].transpose(1, 2).reshape(batch, channels, grid, grid)


def num_generator_blocks(w: Weights) -> int:
    """How many G-blocks a generator state dict holds."""
    count = 0
    while f"blocks.{count}.conv1.weight" in w:
        count += 1
    return count


def generate(w: Weights, config: Mapping[str, Any], z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """``GALIPGenerator(**config)(z, text_embeds)`` with the generator state dict ``w``: images (B, 3, S, S),
    roughly in [-1, 1] (not clamped)."""
    vision = config["vision_config"]
    grid = vision["image_size"] // vision["patch_size"]
    prompt_layers = list(config["prompt_layers"])
    cond = torch.cat([z, text_embeds.to(z.dtype)], dim=1)
    h = _linear(w, "fc_code", z).view(z.shape[0], config["code_channels"], grid, grid)
    for i in range(config["num_mapping_blocks"]):
        h = _mapping_block(w, f"mapping_blocks.{i}", h, cond)
    bridge_feature = _conv(w, "conv_fuse", h)
    prompts = _linear(w, "fc_prompt", cond).view(z.shape[0], len(prompt_layers), -1)
    vit_out = bridge_vit(w, bridge_feature, prompts, prompt_layers, vision)
    h = _conv(w, "conv_bridge_out", bridge_feature + config["bridge_scale"] * vit_out)
    sizes = generator_block_sizes(num_generator_blocks(w), config["output_size"])
    for i, size in enumerate(sizes):
        h = _generator_block(w, f"blocks.{i}", h, cond, size)
    return _conv(w, "conv_out", F.leaky_relu(h, 0.2))
