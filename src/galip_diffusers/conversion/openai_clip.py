"""OpenAI CLIP -> transformers CLIP towers, for the CLIP geometry GALIP was trained with (ViT-B/32).

``--clip`` may be OpenAI's ``ViT-B-32.pt`` (a TorchScript archive), a plain OpenAI state dict (``torch.save`` or
safetensors), or a transformers ``CLIPModel`` folder. From it we take the text tower (GALIP's sentence encoder) and the
vision head (``ln_post`` and ``proj``, which the GALIP checkpoint does not store). The rest of the ViT always comes from
the GALIP checkpoint (``mapping.CLIP_ViT.*``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import init_empty_weights
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from galip_diffusers.conversion.keys import (
    ConversionError,
    KeyRule,
    is_torchscript_archive,
    load_mapped,
    map_state_dict,
    module_prefix,
    prefixed,
    safe_torch_load,
    strip_prefix,
)

#: One residual attention block, OpenAI names -> transformers ``CLIPEncoderLayer`` names (shared by both towers).
CLIP_LAYER_KEY_MAP = [
    KeyRule("transformer.resblocks.{i}.attn.in_proj_{w}", "encoder.layers.{i}.self_attn.{qkv}_proj.{w}", "split_qkv"),
    KeyRule("transformer.resblocks.{i}.attn.out_proj.{w}", "encoder.layers.{i}.self_attn.out_proj.{w}"),
    KeyRule("transformer.resblocks.{i}.ln_1.{w}", "encoder.layers.{i}.layer_norm1.{w}"),
    KeyRule("transformer.resblocks.{i}.ln_2.{w}", "encoder.layers.{i}.layer_norm2.{w}"),
    KeyRule("transformer.resblocks.{i}.mlp.c_fc.{w}", "encoder.layers.{i}.mlp.fc1.{w}"),
    KeyRule("transformer.resblocks.{i}.mlp.c_proj.{w}", "encoder.layers.{i}.mlp.fc2.{w}"),
]
#: OpenAI ``visual.*`` (without the prefix) -> transformers vision transformer (``CLIPVisionModelWithProjection
#: .vision_model``, or GALIP's ``CLIPBridge``, which has the same names and no ``post_layernorm``).
VISION_KEY_MAP = [
    KeyRule("conv1.weight", "embeddings.patch_embedding.weight"),
    KeyRule("class_embedding", "embeddings.class_embedding"),
    KeyRule("positional_embedding", "embeddings.position_embedding.weight"),
    KeyRule("ln_pre.{w}", "pre_layrnorm.{w}"),
    *CLIP_LAYER_KEY_MAP,
    KeyRule("ln_post.{w}", "post_layernorm.{w}"),
]
VISION_PROJECTION_KEY_MAP = [KeyRule("proj", "weight", "transpose")]
#: OpenAI top-level text keys -> transformers text transformer (``CLIPTextModelWithProjection.text_model``).
TEXT_KEY_MAP = [
    KeyRule("token_embedding.weight", "embeddings.token_embedding.weight"),
    KeyRule("positional_embedding", "embeddings.position_embedding.weight"),
    *CLIP_LAYER_KEY_MAP,
    KeyRule("ln_final.{w}", "final_layer_norm.{w}"),
]
TEXT_PROJECTION_KEY_MAP = [KeyRule("text_projection", "weight", "transpose")]
#: Entries of OpenAI files that are not weights of either tower.
OPENAI_NON_WEIGHTS = ("logit_scale", "input_resolution", "context_length", "vocab_size")
#: The vision tensors (OpenAI names, no ``visual.``) that a CLIP source returns besides the text tower.
VISION_HEAD_KEYS = ("ln_post.weight", "ln_post.bias", "proj")
_CONSISTENCY_KEYS = ("class_embedding", "ln_pre.weight", "conv1.weight")


@dataclass(frozen=True)
class CLIPGeometry:
    """The sizes of a CLIP model. Head counts are not stored in weights (OpenAI uses ``width // 64``)."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    vocab_size: int = 49408
    context_length: int = 77

    def vision_config(self) -> dict[str, Any]:
        """A ``CLIPVisionConfig`` dict (also GALIPGenerator's ``vision_config``)."""
        return {
            "hidden_size": self.vision_width, "intermediate_size": 4 * self.vision_width,
            "num_hidden_layers": self.vision_layers, "num_attention_heads": self.vision_heads,
            "image_size": self.image_size, "patch_size": self.patch_size, "num_channels": 3,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": self.embed_dim,
        }  # fmt: skip

    def text_config(self) -> dict[str, Any]:
        """A ``CLIPTextConfig`` dict; EOT pooling finds the first ``<|endoftext|>`` (id ``vocab_size - 1``)."""
        return {
            "vocab_size": self.vocab_size, "hidden_size": self.text_width, "intermediate_size": 4 * self.text_width,
            "num_hidden_layers": self.text_layers, "num_attention_heads": self.text_heads,
            "max_position_embeddings": self.context_length, "projection_dim": self.embed_dim,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": self.vocab_size - 2,
            "eos_token_id": self.vocab_size - 1, "pad_token_id": self.vocab_size - 1,
        }  # fmt: skip


VIT_B_32 = CLIPGeometry()


def _check_geometry(found: dict[str, int], expected: CLIPGeometry, source: str) -> None:
    wanted = asdict(expected)
    diffs = [f"{k} {v} (expected {wanted[k]})" for k, v in found.items() if v != wanted[k]]
    if diffs:
        name = "ViT-B/32" if expected == VIT_B_32 else "the expected CLIP"
        raise ConversionError(
            f"--clip: {source} is not {name}: {', '.join(diffs)}. GALIP's official checkpoints are built on OpenAI's "
            "CLIP ViT-B/32 (ViT-B-32.pt or openai/clip-vit-base-patch32)."
        )


def openai_geometry(state: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """The sizes stored in an OpenAI CLIP state dict (like ``clip.model.build_model``); heads excluded."""
    required = ("visual.conv1.weight", "visual.positional_embedding", "visual.ln_post.weight", "visual.ln_post.bias",
                "visual.proj", "token_embedding.weight", "positional_embedding", "text_projection",
                "ln_final.weight")  # fmt: skip
    missing = [k for k in required if k not in state]
    if missing:
        hint = " (a ResNet CLIP? only ViT models are supported)" if "visual.attnpool.c_proj.weight" in state else ""
        raise ConversionError(
            f"--clip: {source} is not an OpenAI CLIP ViT state dict{hint}: missing {missing}; it has keys like "
            f"{sorted(state)[:6]}."
        )
    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)

    def count(prefix: str) -> int:
        return sum(1 for k in state if k.startswith(prefix) and k.endswith(".attn.in_proj_weight"))

    return {
        "embed_dim": state["text_projection"].shape[1], "image_size": conv.shape[-1] * grid,
        "patch_size": conv.shape[-1], "vision_width": conv.shape[0],
        "vision_layers": count("visual.transformer.resblocks."), "text_width": state["ln_final.weight"].shape[0],
        "text_layers": count("transformer.resblocks."), "vocab_size": state["token_embedding.weight"].shape[0],
        "context_length": state["positional_embedding"].shape[0],
    }  # fmt: skip


def load_openai_state_dict(path: str, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """An OpenAI CLIP state dict from a TorchScript archive, a ``torch.save`` file or a safetensors file."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    elif is_torchscript_archive(path):
        # TorchScript archives are not pickles of arbitrary objects: torch.jit.load only builds TorchScript modules.
        # Its FutureWarning ("torch.jit.load is deprecated") is advice for torch.jit users: ViT-B-32.pt is OpenAI's
        # documented file, and there is no other reader of it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`?torch\.jit\.load`? is deprecated", category=FutureWarning)
            state = dict(torch.jit.load(path, map_location="cpu").state_dict())
    else:
        state = safe_torch_load(path, "--clip", unsafe_pickle)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        hint = " It looks like a GALIP checkpoint: did you swap --checkpoint and --clip?" if (
            isinstance(state, dict) and "model" in state) else ""
        raise ConversionError(f"--clip: {path!r} does not hold a state dict (a mapping of names to tensors).{hint}")
    return {k: v for k, v in strip_prefix(state, what="--clip").items() if k not in OPENAI_NON_WEIGHTS}


@dataclass
class CLIPSource:
    """What the converter takes from ``--clip``."""

    text_encoder: CLIPTextModelWithProjection
    vision_head: dict[str, torch.Tensor]  # VISION_HEAD_KEYS, OpenAI names
    vision_reference: dict[str, torch.Tensor]  # a few ViT tensors, to compare with the GALIP checkpoint's ViT
    description: str


def empty_text_encoder(geometry: CLIPGeometry) -> CLIPTextModelWithProjection:
    with init_empty_weights():
        return CLIPTextModelWithProjection(CLIPTextConfig(**geometry.text_config()))


def empty_image_encoder(geometry: CLIPGeometry) -> CLIPVisionModelWithProjection:
    with init_empty_weights():
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**geometry.vision_config()))


def text_encoder_from_openai(state: dict[str, torch.Tensor], geometry: CLIPGeometry) -> CLIPTextModelWithProjection:
    """``CLIPTextModelWithProjection`` from the text keys of an OpenAI CLIP state dict."""
    model = empty_text_encoder(geometry)
    rules = prefixed(TEXT_KEY_MAP, "", module_prefix(model, model.text_model)) + prefixed(
        TEXT_PROJECTION_KEY_MAP, "", module_prefix(model, model.text_projection)
    )
    text_state = {k: v for k, v in state.items() if not k.startswith("visual.") and k not in OPENAI_NON_WEIGHTS}
    return load_mapped(model, text_state, rules, "--clip text tower").eval()


def image_encoder_from_openai(
    visual: dict[str, torch.Tensor], geometry: CLIPGeometry, what: str = "CLIP vision tower"
) -> CLIPVisionModelWithProjection:
    """``CLIPVisionModelWithProjection`` from OpenAI ``visual.*`` tensors (given without the ``visual.`` prefix);
    ``what`` names their source in error messages."""
    model = empty_image_encoder(geometry)
    rules = prefixed(VISION_KEY_MAP, "", module_prefix(model, model.vision_model)) + prefixed(
        VISION_PROJECTION_KEY_MAP, "", module_prefix(model, model.visual_projection)
    )
    return load_mapped(model, visual, rules, what).eval()


def vision_head_from_openai(state: dict[str, torch.Tensor], geometry: CLIPGeometry) -> dict[str, torch.Tensor]:
    """The vision head (``VISION_HEAD_KEYS``, without ``visual.``) of an OpenAI CLIP state dict, checked here under
    its ``--clip`` names (shape, dtype, finite values): the image encoder built later mixes it with the GALIP
    checkpoint's ViT, where an error could not say which file is at fault."""
    rules = [KeyRule(f"visual.{key}", key) for key in VISION_HEAD_KEYS]
    width = torch.Size([geometry.vision_width])
    proj = torch.Size([geometry.vision_width, geometry.embed_dim])
    expected = {"ln_post.weight": width, "ln_post.bias": width, "proj": proj}
    return map_state_dict({r.source: state[r.source] for r in rules}, rules, expected, "--clip")


def _load_transformers_folder(folder: str, geometry: CLIPGeometry) -> CLIPSource:
    """The text tower and vision head of a transformers ``CLIPModel`` folder. Only a whole ``CLIPModel`` is taken:
    ``CLIPConfig`` fills a tower that a sub-model folder lacks with its defaults (ViT-B/32's sizes) and
    ``from_pretrained`` with random weights, which would convert without an error and condition on noise."""
    try:
        config_dict, _ = CLIPConfig.get_config_dict(folder)
        config = CLIPConfig.from_dict(config_dict) if config_dict.get("model_type") == "clip" else None
    except (OSError, ValueError) as err:
        raise ConversionError(f"--clip: {folder!r} is not a transformers CLIPModel folder: {err}") from err
    if config is None:
        raise ConversionError(
            f"--clip: the folder {folder!r} holds a transformers {config_dict.get('model_type')!r} model, not a whole "
            "CLIPModel (model_type 'clip'); the conversion needs both CLIP towers (the text tower and the vision "
            "ln_post/proj). Pass a CLIPModel folder (openai/clip-vit-base-patch32) or OpenAI's ViT-B-32.pt."
        )
    v, t = config.vision_config, config.text_config
    found = {
        "embed_dim": config.projection_dim, "image_size": v.image_size, "patch_size": v.patch_size,
        "vision_width": v.hidden_size, "vision_layers": v.num_hidden_layers, "vision_heads": v.num_attention_heads,
        "text_width": t.hidden_size, "text_layers": t.num_hidden_layers, "text_heads": t.num_attention_heads,
        "vocab_size": t.vocab_size, "context_length": t.max_position_embeddings,
    }  # fmt: skip
    _check_geometry(found, geometry, repr(folder))
    try:
        clip, info = CLIPModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:  # no or unreadable weights, or weights of another shape
        raise ConversionError(f"--clip: cannot load the CLIPModel in {folder!r}: {err}") from err
    absent = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    if absent:  # transformers filled them with random values
        raise ConversionError(
            f"--clip: the CLIPModel in {folder!r} has no weights for {len(absent)} parameter(s), e.g. "
            f"{', '.join(map(repr, absent[:4]))}; pass a complete CLIPModel folder or OpenAI's ViT-B-32.pt."
        )
    clip = clip.eval()
    text_encoder = empty_text_encoder(geometry)
    text_encoder.text_model.load_state_dict(clip.text_model.state_dict(), strict=True, assign=True)
    text_encoder.text_projection.load_state_dict(clip.text_projection.state_dict(), strict=True, assign=True)
    vision = clip.vision_model
    head = {"ln_post.weight": vision.post_layernorm.weight.detach(), "ln_post.bias": vision.post_layernorm.bias.detach(),
            "proj": clip.visual_projection.weight.detach().t().contiguous()}  # fmt: skip
    reference = {"class_embedding": vision.embeddings.class_embedding.detach(),
                 "ln_pre.weight": vision.pre_layrnorm.weight.detach(),
                 "conv1.weight": vision.embeddings.patch_embedding.weight.detach()}  # fmt: skip
    return CLIPSource(text_encoder.eval(), head, reference, f"transformers CLIPModel folder {os.path.basename(folder)}")


def load_clip_source(path: str | os.PathLike, geometry: CLIPGeometry = VIT_B_32, unsafe_pickle: bool = False) -> CLIPSource:
    """Read ``--clip``: an OpenAI CLIP file (TorchScript, ``torch.save`` or safetensors) or a transformers folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_transformers_folder(path, geometry)
    if not os.path.isfile(path):
        raise ConversionError(f"--clip: no such file or folder {path!r}.")
    state = load_openai_state_dict(path, unsafe_pickle)
    _check_geometry(openai_geometry(state, repr(os.path.basename(path))), geometry, repr(os.path.basename(path)))
    text_encoder = text_encoder_from_openai(state, geometry)
    head = vision_head_from_openai(state, geometry)
    reference = {k: state[f"visual.{k}"] for k in _CONSISTENCY_KEYS}
    kind = "TorchScript archive" if is_torchscript_archive(path) else "state dict"
    return CLIPSource(text_encoder, head, reference, f"OpenAI CLIP {kind} {os.path.basename(path)}")
