"""Checks of a saved GALIP pipeline folder, shared by both engines (``GALIPPipeline.from_pretrained`` and the fast
runtime :class:`galip_core.LitePipeline`): the same function, the same messages. Also which weights a load reads
(:func:`select_weights`: a variant's, every shard; two sets for one variant are refused) and whether tokenizer, text
encoder and generator fit together (:func:`check_text_components`, for files and for components in memory).

Everything here reads JSON files and safetensors *headers* only, so a crafted folder is refused before any tensor is
allocated (``z_dim: 250000000`` never draws a single number). Every error names the file, the field and what was
expected. Part of the torch-only core (safetensors for the headers).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
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


# ------------------------------------------------------------------------------------ a component's weight files
#: a single weights file: ``diffusion_pytorch_model.safetensors`` (diffusers), ``model.safetensors`` /
#: ``pytorch_model.bin`` (transformers), with an optional variant before the extension (``model.bf16.safetensors``)
_SINGLE_FILE = re.compile(r"^(diffusion_pytorch_model|model|pytorch_model)(?:\.([^.]+))?\.(safetensors|bin)$")
#: the index of a sharded checkpoint: ``model.safetensors.index.json``, ``...safetensors.index.fp16.json``
_SHARD_INDEX = re.compile(r"^(diffusion_pytorch_model|model|pytorch_model)\.(safetensors|bin)\.index(?:\.([^.]+))?\.json$")
_SHARD_NAME = re.compile(r"-\d+-of-\d+$")  # "fp16-00001-of-00002" is a shard's name, not a variant


@dataclass(frozen=True)
class WeightSet:
    """One set of weights in a component folder: a single file, or a shard index (``*.index*.json``) and the shards
    its ``weight_map`` names. ``variant`` is ``None`` for the default weights."""

    folder: str
    name: str
    variant: str | None
    format: str  # "safetensors" or "bin"
    sharded: bool

    @property
    def path(self) -> str:
        return os.path.join(self.folder, self.name)

    def describe(self) -> str:
        """What the errors name: the file, or the index and its shards."""
        return f"{self.path} (and its shards)" if self.sharded else self.path

    def files(self) -> list[str]:
        """The files diffusers or transformers read: the single file, or every shard the index names (a listed
        shard that is missing is a ``FileNotFoundError`` naming it and the index)."""
        if not self.sharded:
            return [self.path]
        index = read_json_object(self.path)
        weight_map = index.get("weight_map")
        if not (isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values())):
            raise FolderError(f"{self.path!r}: weight_map must be an object of tensor name -> shard file, got "
                              f"{type(weight_map).__name__}.")
        shards = [os.path.join(self.folder, name) for name in sorted(set(weight_map.values()))]
        for shard in shards:
            if not os.path.isfile(shard):
                raise FileNotFoundError(f"Missing shard {shard!r}, which {self.path!r} lists.")
        return shards

    def shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Tensor name -> shape over all of the set's safetensors files (the union of a checkpoint's shards), from
        their headers; ``None`` for pickled ``.bin`` weights, whose tensors cannot be listed without unpickling."""
        if self.format != "safetensors":
            return None
        shapes: dict[str, tuple[int, ...]] = {}
        for path in self.files():
            shapes.update(safetensors_shapes(path))
        return shapes


def weight_sets(folder: str) -> list[WeightSet]:
    """Every set of weights in a component folder, default and variants, single files and shard indexes."""
    sets = []
    for name in sorted(os.listdir(folder)):
        index, single = _SHARD_INDEX.match(name), _SINGLE_FILE.match(name)
        if index:
            sets.append(WeightSet(folder, name, index.group(3), index.group(2), True))
        elif single and not (single.group(2) and _SHARD_NAME.search(single.group(2))):
            sets.append(WeightSet(folder, name, single.group(2), single.group(3), False))
    return sets


def preferred(sets: list[WeightSet]) -> list[WeightSet]:
    """The sets a load would choose among: the safetensors ones where there are any (diffusers, transformers and the
    lite runtime all prefer them to a ``.bin`` pickle of the same variant), else all of them."""
    return [s for s in sets if s.format == "safetensors"] or sets


def check_unambiguous(sets: list[WeightSet]) -> None:
    """:class:`FolderError` if two sets of weights a load could read are there for one variant (a single
    ``.safetensors`` file beside a safetensors shard index, or two ``.bin`` sets): diffusers, transformers and the
    lite runtime do not pick the same one, so the engines would run different models from one folder. A ``.bin``
    beside ``.safetensors`` is not ambiguous: every loader reads the safetensors (:func:`preferred`)."""
    by_variant: dict[str | None, list[WeightSet]] = {}
    for weight_set in sets:
        by_variant.setdefault(weight_set.variant, []).append(weight_set)
    for variant, same in by_variant.items():
        same = preferred(same)
        if len(same) > 1:
            which = "default weights" if variant is None else f"weights of the {variant!r} variant"
            raise FolderError(f"{same[0].folder!r} holds two sets of {which}: {', '.join(s.name for s in same)}. "
                              "diffusers, transformers and the lite runtime would not all load the same one: keep one "
                              "(move the others out of the folder).")


def select_weights(folder: str, variant: str | None = None) -> WeightSet:
    """The weights a load with ``variant`` reads from a component folder, as diffusers picks them: the variant's
    when the folder has it, else the default ones. Refused with the files named: no weights at all, two sets for the
    chosen variant (:func:`check_unambiguous`), and default weights missing beside a variant (the error names the
    ``variant`` to pass)."""
    sets = weight_sets(folder)
    if not sets:
        raise FileNotFoundError(f"No weights file (*.safetensors or *.bin) in component folder {folder!r}.")
    chosen = variant if any(s.variant == variant for s in sets) else None
    candidates = [s for s in sets if s.variant == chosen]
    if not candidates:
        variants = sorted({s.variant for s in sets if s.variant is not None})
        files = ", ".join(s.name for s in sets)
        wanted = "default weights" if variant is None else f"weights of the {variant!r} variant nor default weights"
        raise FileNotFoundError(f"{folder!r} has no {wanted}; it holds {files}: load it with variant="
                                f"{variants[0]!r} (e.g. GALIPPipeline.from_pretrained(folder, variant={variants[0]!r}), "
                                "torch_dtype to match; the lite runtime reads default weights only).")
    check_unambiguous(candidates)
    return preferred(candidates)[0]


# ------------------------------------------------------------------------- tokenizer, text encoder and generator
#: transformers' ``CLIPTextConfig`` defaults of the fields :func:`check_text_components` reads, for a config file
#: that leaves one out (what the loaded model then has)
CLIP_TEXT_DEFAULTS = {"vocab_size": 49408, "max_position_embeddings": 77, "projection_dim": 512,
                      "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}  # fmt: skip
#: ``CLIPTokenizer``'s special tokens when its files name none
CLIP_SPECIAL_TOKENS = {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}
#: a ``model_max_length`` at least this large means "no limit" (transformers' ``VERY_LARGE_INTEGER`` is 1e30)
UNLIMITED_LENGTH = 10**20


@dataclass(frozen=True)
class TokenizerFacts:
    """What a tokenizer must agree on with its text encoder: ``name`` (named by the errors), ``num_ids`` (its
    largest token id + 1), the ids of its ``bos``/``eos``/``pad`` tokens (``None``: unknown) and
    ``model_max_length`` (``None``: no limit)."""

    name: str
    num_ids: int | None
    special_ids: Mapping[str, int | None]
    model_max_length: int | None


def tokenizer_facts(folder: str) -> TokenizerFacts:
    """:class:`TokenizerFacts` of a saved tokenizer folder, from its JSON files only (``tokenizer.json`` or
    ``vocab.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), the way transformers reads them."""
    def read(name: str) -> dict[str, Any]:
        path = os.path.join(folder, name)
        return read_json_object(path) if os.path.isfile(path) else {}

    vocab: dict[Any, Any] = {}
    model = read("tokenizer.json")
    if isinstance(model.get("model"), dict) and isinstance(model["model"].get("vocab"), dict):
        vocab.update(model["model"]["vocab"])
    added = model.get("added_tokens")
    vocab.update({t.get("content"): t.get("id") for t in added if isinstance(t, dict)} if isinstance(added, list) else {})
    if not vocab:
        vocab.update(read("vocab.json"))
    config = read("tokenizer_config.json")
    decoder = config.get("added_tokens_decoder")
    for token_id, token in decoder.items() if isinstance(decoder, dict) else ():
        if isinstance(token, dict) and str(token_id).isdigit():
            vocab.setdefault(token.get("content"), int(token_id))
    names: dict[str, Any] = dict(CLIP_SPECIAL_TOKENS)
    for source in (config, read("special_tokens_map.json")):  # the map wins, as in transformers
        names.update({kind: source[f"{kind}_token"] for kind in CLIP_SPECIAL_TOKENS if f"{kind}_token" in source})
    ids = [i for i in vocab.values() if _is_int(i)]
    special = {kind: _token_id(vocab, token) for kind, token in names.items()}
    length = config.get("model_max_length")
    return TokenizerFacts(folder, max(ids) + 1 if ids else None, special,
                          length if _is_int(length) and length < UNLIMITED_LENGTH else None)


def _token_id(vocab: Mapping[str, Any], token: Any) -> int | None:
    content = token.get("content") if isinstance(token, dict) else token
    value = vocab.get(content) if isinstance(content, str) else None
    return value if _is_int(value) else None


def tokenizer_facts_of(tokenizer: Any, name: str = "`tokenizer`") -> TokenizerFacts:
    """:class:`TokenizerFacts` of a loaded (transformers) tokenizer, read through its public attributes."""
    try:
        vocab = tokenizer.get_vocab()
        num_ids = max(vocab.values()) + 1 if vocab else None
    except Exception:  # noqa: BLE001  (a tokenizer-like object without a vocabulary: nothing to compare)
        num_ids = None
    special = {kind: getattr(tokenizer, f"{kind}_token_id", None) for kind in CLIP_SPECIAL_TOKENS}
    length = getattr(tokenizer, "model_max_length", None)
    return TokenizerFacts(name, num_ids if _is_int(num_ids) else None,
                          {k: v if _is_int(v) else None for k, v in special.items()},
                          length if _is_int(length) and length < UNLIMITED_LENGTH else None)


def check_text_components(tokenizer: TokenizerFacts, text_config: Mapping[str, Any], text_name: str,
                          cond_dim: Any = None, generator_name: str = "`generator`") -> None:  # fmt: skip
    """The tokenizer, the text encoder's config and the generator's ``cond_dim`` belong together: every token id has
    an embedding (``vocab_size``), the end-of-text id is the one the encoder pools (a foreign end-of-text id makes
    every prompt the same embedding), the start and padding ids agree, prompts fit the position embeddings
    (``model_max_length <= max_position_embeddings``) and the sentence embedding is as wide as the generator's
    condition (``projection_dim == cond_dim``). :class:`FolderError` naming both sides (files, or components).
    Configs with transformers' legacy ``eos_token_id`` 2 pool at the highest id: the tokenizer's end-of-text token
    must then be its highest id (their start and padding ids are placeholders, not compared)."""
    config = {**CLIP_TEXT_DEFAULTS, **{k: v for k, v in text_config.items() if k in CLIP_TEXT_DEFAULTS}}
    tok, special = tokenizer.name, tokenizer.special_ids
    foreign = "The tokenizer belongs to another model: use the text encoder's own tokenizer."
    if tokenizer.num_ids is not None and _is_int(config["vocab_size"]) and tokenizer.num_ids > config["vocab_size"]:
        raise FolderError(f"{tok} makes token ids up to {tokenizer.num_ids - 1}, but {text_name} has vocab_size "
                          f"{config['vocab_size']}: ids from {config['vocab_size']} on have no embedding. {foreign}")
    eos = special.get("eos")
    if config["eos_token_id"] == 2:  # transformers' legacy CLIP configs: the pooled token is the highest id
        if eos is not None and tokenizer.num_ids is not None and eos != tokenizer.num_ids - 1:
            raise FolderError(f"{tok}'s end-of-text token has id {eos}, but {text_name} (eos_token_id 2: pooling at "
                              f"the highest id) needs it to be the tokenizer's highest id, {tokenizer.num_ids - 1}: "
                              f"every prompt would get a wrong embedding. {foreign}")
    else:
        for kind, what in (("eos", "end-of-text"), ("bos", "start-of-text"), ("pad", "padding")):
            expected = config[f"{kind}_token_id"]
            if special.get(kind) is not None and _is_int(expected) and special[kind] != expected:
                effect = " (pooled for the sentence embedding: every prompt would get the same one)" if kind == "eos" else ""
                raise FolderError(f"{tok}'s {what} token has id {special[kind]}, but {text_name} has "
                                  f"{kind}_token_id {expected}{effect}. {foreign}")
    positions = config["max_position_embeddings"]
    if _is_int(positions) and (tokenizer.model_max_length is None or tokenizer.model_max_length > positions):
        length = "sets no model_max_length" if tokenizer.model_max_length is None else \
            f"has model_max_length {tokenizer.model_max_length}"
        raise FolderError(f"{tok} {length}, but {text_name} has max_position_embeddings {positions}: longer prompts "
                          f"would have no position embedding. Set the tokenizer's model_max_length to {positions} "
                          "(tokenizer_config.json) or use the text encoder's own tokenizer.")
    if _is_int(cond_dim) and _is_int(config["projection_dim"]) and config["projection_dim"] != cond_dim:
        raise FolderError(f"{text_name} has projection_dim {config['projection_dim']}, but {generator_name} has "
                          f"cond_dim {cond_dim}: the generator is conditioned on {cond_dim}-d sentence embeddings. "
                          "Use the text encoder the generator was trained with.")
