"""Checks of a saved GALIP pipeline folder, shared by both engines (``GALIPPipeline.from_pretrained`` and the fast
runtime :class:`galip_core.LitePipeline`): the same function, the same messages.

Everything here reads JSON files and safetensors *headers* only, so a crafted folder is refused before any tensor is
allocated (``z_dim: 250000000`` never draws a single number). Every error names the file, the field and what was
expected. Part of the torch-only core (safetensors for the headers).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from safetensors import safe_open

from .layers import generator_block_sizes, generator_channels

Shapes = Mapping[str, tuple[int, ...]]

#: integer fields of ``generator/config.json`` and their smallest allowed value
GENERATOR_INT_FIELDS = {"z_dim": 1, "cond_dim": 1, "ngf": 1, "output_size": 8, "code_channels": 1,
                        "mapping_mid_channels": 1, "num_mapping_blocks": 0}  # fmt: skip
VISION_INT_FIELDS = {"hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 1,
                     "patch_size": 1}  # fmt: skip


JSON_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")


class FolderError(ValueError):
    """A pipeline folder's file is missing, corrupt, or does not fit the rest of the folder."""


def read_json_object(path: str) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`FolderError` naming the file if it is missing, corrupt or not an object."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing file {path!r}.")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FolderError(f"Corrupt JSON file {path!r}: {err}") from err
    if not isinstance(value, dict):
        raise FolderError(f"{path!r} holds a JSON {type(value).__name__}; expected a JSON object ({{...}}).")
    return value


#: the dtypes a weight may be stored in (safetensors' names); integer tensors are only index buffers (INDEX_BUFFERS)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
INDEX_BUFFERS = ("position_ids", "num_batches_tracked")


def safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the file's header only; :class:`FolderError` naming the file if it is corrupt, or
    naming the tensor if a weight is not stored as floating point (a bool or int weight would be cast silently into
    a wrong model; only index buffers such as ``position_ids`` may be integers)."""
    try:
        with safe_open(path, framework="pt") as f:
            header = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error type for bad headers)
        raise FolderError(f"Corrupt safetensors file {path!r}: {err}") from err
    for key, (_, dtype) in header.items():
        if dtype not in FLOAT_DTYPES and not key.endswith(INDEX_BUFFERS):
            raise FolderError(f"{path!r}: the weight {key!r} is stored as {dtype}; weights must be floating point "
                              f"({', '.join(FLOAT_DTYPES)}). The file is corrupt or not a GALIP component.")
    return {key: shape for key, (shape, _) in header.items()}


def check_text_config(config: Mapping[str, Any], shapes: Shapes, where: str = "text_encoder/config.json",
                      weights: str = "text_encoder/model.safetensors") -> None:
    """The CLIP text encoder's ``config.json`` against its weights' shapes: ``num_hidden_layers`` must be the number
    of layers the weights hold (fewer would silently skip layers), ``hidden_size`` the embedding width and
    ``projection_dim`` the projection's output. :class:`FolderError` naming both files."""
    for field in ("num_hidden_layers", "hidden_size"):
        if field in config and not (_is_int(config[field]) and config[field] >= 1):
            raise FolderError(f"{where}: {field} must be an integer >= 1, got {config[field]!r}.")
    layers = _count(shapes, "text_model.encoder.layers.{}.layer_norm1.weight")
    if "num_hidden_layers" in config and layers and config["num_hidden_layers"] != layers:
        raise FolderError(f"{where}: num_hidden_layers is {config['num_hidden_layers']}, but {weights} holds {layers} "
                          "layers.")
    embedding = shapes.get("text_model.embeddings.token_embedding.weight")
    if embedding is not None and "hidden_size" in config:
        _expect(shapes, "text_model.embeddings.token_embedding.weight", (embedding[0], config["hidden_size"]),
                "hidden_size", where, weights)
    projection = shapes.get("text_projection.weight")
    if projection is not None and _is_int(config.get("projection_dim")) and "hidden_size" in config:
        _expect(shapes, "text_projection.weight", (config["projection_dim"], config["hidden_size"]),
                "projection_dim, hidden_size", where, weights)


def check_tokenizer_files(component: str) -> None:
    """A tokenizer folder holds its vocabulary, as ``tokenizer.json`` or as ``vocab.json`` + ``merges.txt`` (without
    either, transformers would quietly build a tokenizer with another vocabulary: wrong token ids, wrong images), and
    each of its JSON files is a readable JSON object."""
    has = lambda name: os.path.isfile(os.path.join(component, name))  # noqa: E731
    if not (has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))):
        present = sorted(os.listdir(component)) if os.path.isdir(component) else []
        raise FileNotFoundError(f"No tokenizer vocabulary in {component!r}: it needs tokenizer.json, or vocab.json and "
                                f"merges.txt (it holds {present or 'nothing'}).")
    for name in JSON_TOKENIZER_FILES:
        path = os.path.join(component, name)
        if os.path.isfile(path):
            read_json_object(path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_generator_types(config: Mapping[str, Any], where: str = "generator/config.json") -> dict[str, Any]:
    """Raise :class:`FolderError` naming ``where`` and the field if a ``GALIPGenerator`` config field present in
    ``config`` has the wrong type or range. Returns the vision config (a dict)."""
    for field, low in GENERATOR_INT_FIELDS.items():
        if field in config and not (_is_int(config[field]) and config[field] >= low):
            raise FolderError(f"{where}: {field} must be an integer >= {low}, got {config[field]!r}.")
    layers = config.get("prompt_layers", [])
    if not (isinstance(layers, list) and all(_is_int(v) and v >= 0 for v in layers)):
        raise FolderError(f"{where}: prompt_layers must be a list of ViT block indices (integers >= 0), got {layers!r}.")
    scale = config.get("bridge_scale", 0.1)
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale)):
        raise FolderError(f"{where}: bridge_scale must be a finite number, got {scale!r}.")
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise FolderError(f"{where}: vision_config must be an object (the frozen ViT's CLIPVisionConfig fields), "
                          f"got {vision!r}.")
    for field, low in VISION_INT_FIELDS.items():
        if field in vision and not (_is_int(vision[field]) and vision[field] >= low):
            raise FolderError(f"{where}: vision_config.{field} must be an integer >= {low}, got {vision[field]!r}.")
    eps = vision.get("layer_norm_eps", 1e-5)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > 0):
        raise FolderError(f"{where}: vision_config.layer_norm_eps must be a finite number > 0, got {eps!r}.")
    if not isinstance(vision.get("hidden_act", ""), str):
        raise FolderError(f"{where}: vision_config.hidden_act must be a string, got {vision['hidden_act']!r}.")
    return vision


def _expect(shapes: Shapes, key: str, expected: tuple[int, ...], fields: str, where: str, weights: str) -> None:
    got = shapes.get(key)
    if got is None:
        raise FolderError(f"{weights}: has no tensor {key!r}, which {where} describes; the file is not this "
                          "generator's weights.")
    if tuple(got) != tuple(expected):
        raise FolderError(f"{where}: {fields} does not fit {weights}: {key} has shape {tuple(got)}, the config "
                          f"needs {tuple(expected)}.")


def _count(shapes: Shapes, pattern: str) -> int:
    count = 0
    while pattern.format(count) in shapes:
        count += 1
    return count


def check_generator_config(config: Mapping[str, Any], shapes: Shapes, where: str = "generator/config.json",
                           weights: str = "generator/diffusion_pytorch_model.safetensors") -> None:  # fmt: skip
    """Raise :class:`FolderError` if ``config`` (a complete ``GALIPGenerator`` config: every field and vision field
    present) has a field of the wrong type or range, or does not fit the tensor ``shapes`` of its weights file. The message names
    ``where`` (the config file), the field, and what the weights need. Only shapes are read: nothing is allocated."""
    vision = check_generator_types(config, where)
    z_dim, cond_dim, hidden = config["z_dim"], config["cond_dim"], vision["hidden_size"]
    grid, layers = vision["image_size"] // vision["patch_size"], list(config["prompt_layers"])
    vit_layers = _count(shapes, "vision_model.encoder.layers.{}.layer_norm1.weight")
    if vit_layers != vision["num_hidden_layers"]:
        raise FolderError(f"{where}: vision_config.num_hidden_layers={vision['num_hidden_layers']} does not fit "
                          f"{weights}, which holds {vit_layers} ViT blocks.")
    if any(layer >= vit_layers for layer in layers):
        raise FolderError(f"{where}: prompt_layers {layers} must index the ViT's blocks 0..{vit_layers - 1}.")
    _expect(shapes, "vision_model.embeddings.position_embedding.weight", (grid * grid + 1, hidden),
            "vision_config (hidden_size, image_size, patch_size)", where, weights)
    _expect(shapes, "fc_code.weight", (config["code_channels"] * grid * grid, z_dim), "z_dim / code_channels", where,
            weights)
    _expect(shapes, "fc_prompt.weight", (len(layers) * hidden, z_dim + cond_dim), "prompt_layers / z_dim / cond_dim",
            where, weights)
    mapping = _count(shapes, "mapping_blocks.{}.conv1.weight")
    if mapping != config["num_mapping_blocks"]:
        raise FolderError(f"{where}: num_mapping_blocks={config['num_mapping_blocks']} does not fit {weights}, which "
                          f"holds {mapping} mapping blocks.")
    blocks = _count(shapes, "blocks.{}.conv1.weight")
    channels = generator_channels(config["ngf"], config["output_size"])
    if blocks != len(channels) - 1:
        low, high = 2 ** (blocks + 1) + 1, 2 ** (blocks + 2)
        raise FolderError(f"{where}: output_size={config['output_size']} does not fit {weights}, whose {blocks} "
                          f"G-blocks make images of {low} to {high} px.")
    _expect(shapes, "conv_bridge_out.weight", (channels[0], hidden, 5, 5), "ngf", where, weights)
    _expect(shapes, "conv_out.weight", (3, channels[-1], 3, 3), "ngf", where, weights)
    native = generator_block_sizes(blocks, 2 ** (blocks + 2))[-1]
    if config["output_size"] not in (native, vision["image_size"]):
        raise FolderError(f"{where}: output_size={config['output_size']} does not fit {weights}: its {blocks} G-blocks "
                          f"make {native}-px images (expected output_size {native}, or the ViT's image_size "
                          f"{vision['image_size']}).")
