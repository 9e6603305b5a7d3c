"""The fast runtime: a GALIP pipeline folder run with torch, safetensors and tokenizers only (:class:`LitePipeline`).

It makes the same images as ``GALIPPipeline`` (same noise for the same ``torch.Generator`` from :mod:`galip_core.noise`,
the same generator layers from :mod:`galip_core.layers` and :mod:`galip_core.vit`, same uint8 conversion) without
importing diffusers or transformers, whose imports take most of a cold start (about 9 s of ``galip generate``'s on a
2-core CPU, against ~2.5 s for torch). CPU and float32 only; everything else goes through ``GALIPPipeline``.

Only CLIP's transformer layers are written here a second time (as plain functions over the state dict, with the keys
of transformers' ``CLIPTextModelWithProjection`` / ``CLIPVisionModel``): the diffusers side rightly uses transformers
for them. ``tests/core/test_runtime.py`` checks the runtime against the diffusers modules and pipeline.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from galip_core.finite import check_finite_output, check_finite_tensor
from galip_core.folder import (
    FolderError,
    check_generator_config,
    check_generator_types,
    check_text_components,
    check_text_config,
    check_tokenizer_files,
    read_json_object,
    safetensors_shapes,
    select_weights,
    tokenizer_facts,
    weight_sets,
)
from galip_core.layers import GeneratorLayers
from galip_core.memory import check_memory, encode_runs, postprocess_in_chunks
from galip_core.noise import check_latents_without_truncation, check_noise_arguments, cpu_normal, sample_noise
from galip_core.packaged import (  # noqa: F401  (re-exported)
    DEFAULT_MODEL, PACKAGED_MODELS, choose_local_or_packaged, unknown_model_note,
)
from galip_core.settings import GALIPSettings, as_settings, load_settings
from galip_core.text import LiteTokenizer, prompt_list
from galip_core.vit import prompted_vit

# ------------------------------------------------------------------------------- CLIP's layers, as functions
Weights = Mapping[str, torch.Tensor]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r} is not supported by galip_core; supported: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def _linear(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))


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


# ------------------------------------------------------------------------------------------ the generator, from weights
class StateDictViT(nn.Module):
    """The frozen ViT of a generator state dict (``vision_model.*`` keys), run by :func:`galip_core.vit.prompted_vit`
    with :func:`clip_encoder_layer` as its blocks. Holds the weights as a plain dict (no parameters)."""

    def __init__(self, weights: Weights, vision_config: Mapping[str, Any]):
        super().__init__()
        self.weights, self.vision_config = weights, vision_config

    def forward(self, bridge_feature: torch.Tensor, prompts: torch.Tensor, prompt_layers: Sequence[int]) -> torch.Tensor:
        w, config = self.weights, self.vision_config
        name = "vision_model.encoder.layers.{}"
        layers = [lambda h, i=i: clip_encoder_layer(w, name.format(i), h, config)
                  for i in range(config["num_hidden_layers"])]  # fmt: skip
        return prompted_vit(
            bridge_feature, prompts, prompt_layers, w["vision_model.embeddings.class_embedding"],
            w["vision_model.embeddings.position_embedding.weight"],
            lambda h: _layer_norm(w, "vision_model.pre_layrnorm", h, config["layer_norm_eps"]), layers,
        )


class RuntimeGenerator(GeneratorLayers, nn.Module):
    """``GALIPGenerator`` without diffusers or transformers: the shared layers of :mod:`galip_core.layers` around a
    :class:`StateDictViT`. Build it with :meth:`from_weights`."""

    def __init__(self, config: Mapping[str, Any], vision_model: nn.Module):
        nn.Module.__init__(self)
        vision = config["vision_config"]
        self._build_generator_layers(
            z_dim=config["z_dim"], cond_dim=config["cond_dim"], ngf=config["ngf"], output_size=config["output_size"],
            code_channels=config["code_channels"], mapping_mid_channels=config["mapping_mid_channels"],
            num_mapping_blocks=config["num_mapping_blocks"], prompt_layers=config["prompt_layers"],
            bridge_scale=config["bridge_scale"], hidden_size=vision["hidden_size"],
            grid_size=vision["image_size"] // vision["patch_size"], vision_model=vision_model,
        )  # fmt: skip

    @classmethod
    def from_weights(cls, config: Mapping[str, Any], weights: Weights) -> "RuntimeGenerator":
        """A generator for a ``generator/config.json`` and its state dict (float32). The layers are made on the meta
        device and take the given tensors (no random initialisation, no copy)."""
        with torch.device("meta"):
            generator = cls(config, nn.Identity())
        generator.vision_model = StateDictViT(weights, config["vision_config"])
        own = {k: v for k, v in weights.items() if not k.startswith("vision_model.")}
        generator.load_state_dict(own, strict=True, assign=True)
        return generator.requires_grad_(False).eval()

    def forward(self, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S), roughly in [-1, 1] (not clamped), as ``GALIPGenerator(z, text_embeds)``."""
        return self.generate_images(z, text_embeds)


# ---------------------------------------------------------------------------------------------------- the pipeline

#: component -> (accepted ``model_index.json`` class names, files the lite runtime reads)
LITE_COMPONENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": (("CLIPTokenizer", "CLIPTokenizerFast"), ("tokenizer.json", "tokenizer_config.json")),
    "text_encoder": (("CLIPTextModelWithProjection",), ("config.json", "model.safetensors")),
    "generator": (("GALIPGenerator",), ("config.json", "diffusion_pytorch_model.safetensors")),
}


TEXT_CONFIG_KEYS = ("hidden_act", "layer_norm_eps", "num_attention_heads", "num_hidden_layers", "eos_token_id")
GENERATOR_CONFIG_KEYS = ("z_dim", "cond_dim", "ngf", "output_size", "code_channels", "mapping_mid_channels",
                         "num_mapping_blocks", "prompt_layers", "bridge_scale", "vision_config")  # fmt: skip
VISION_CONFIG_KEYS = ("hidden_size", "hidden_act", "layer_norm_eps", "num_attention_heads", "num_hidden_layers",
                      "image_size", "patch_size")  # fmt: skip


class LiteUnsupportedError(ValueError):
    """The folder (or the requested setting) needs the full diffusers pipeline."""


def _require(config: dict, keys: Sequence[str], where: str) -> None:
    missing = [key for key in keys if key not in config]
    if missing:
        raise LiteUnsupportedError(f"{where} has no {', '.join(missing)}: load this folder with GALIPPipeline.")


def packaged_models_dir() -> str:
    """``galip_diffusers/pretrained``, located without importing galip_diffusers (whose import loads diffusers)."""
    spec = importlib.util.find_spec("galip_diffusers")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("galip_diffusers is not installed, so its packaged models are not available.")
    return os.path.join(list(spec.submodule_search_locations)[0], "pretrained")


def resolve_pretrained(name_or_path: str | os.PathLike | None) -> str | os.PathLike:
    """Map a packaged model's short name (``"galip-shapes"``) to its folder; anything else (a path, a Hub id) is
    returned unchanged. ``None`` always means the packaged default model. A packaged name means a local entry of
    that name only when it is a pipeline folder (with a ``model_index.json``; logged), never an unrelated folder or
    file (a warning names it): :func:`galip_core.packaged.choose_local_or_packaged`. Anything but a str or path is a
    ``TypeError``."""
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"`pretrained_model_name_or_path` must be a folder, a Hub id or a packaged model name "
                        f"({unknown_model_note('')}), got {type(name_or_path).__name__} {name_or_path!r}.")
    name = os.fspath(DEFAULT_MODEL if name_or_path is None else name_or_path)
    if name not in PACKAGED_MODELS:
        return name_or_path
    folder = os.path.join(packaged_models_dir(), name)
    if name_or_path is not None and choose_local_or_packaged(name, folder) == name:
        return name_or_path
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise FileNotFoundError(
            f"The packaged model {name!r} is not part of this installation (expected it in {folder!r})."
        )
    return folder


def lite_support_problem(folder: str | os.PathLike) -> str | None:
    """Why the lite runtime cannot run ``folder`` (a message), or ``None`` when it can."""
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        if not os.path.exists(folder):
            return f"{str(folder)!r} is not a local folder or a packaged model; {unknown_model_note(folder)}"
        return f"{str(folder)!r} is not a local pipeline folder (no model_index.json)"
    index = read_json_object(index_path)
    for component, (classes, files) in LITE_COMPONENTS.items():
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in classes):
            return f"its {component} is {entry!r}, the lite runtime reads {' or '.join(classes)}"
        missing = [name for name in files if not os.path.isfile(os.path.join(folder, component, name))]
        if missing:
            return f"{component}/ has no {', '.join(missing)}"
    return None


def _load_weights(path: str) -> dict:
    """A safetensors file as float32 tensors; an unreadable file is named in the error."""
    from safetensors.torch import load_file

    try:
        weights = load_file(path)
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error type)
        raise FolderError(f"Corrupt safetensors file {path!r}: {err}") from err
    return {k: v.float() for k, v in weights.items()}


def check_lite_folder(folder: str | os.PathLike) -> tuple[dict, dict]:
    """The text encoder's and the generator's configs, checked before any tensor is allocated: with
    :mod:`galip_core.folder`'s checks, the ones ``GALIPPipeline`` runs (same messages; tokenizer, text encoder and
    generator fitting together included), plus the fields this runtime needs (:class:`LiteUnsupportedError` if one
    is missing)."""
    folder = os.fspath(folder)
    check_tokenizer_files(os.path.join(folder, "tokenizer"))
    text_path = os.path.join(folder, "text_encoder", "config.json")
    text_config = read_json_object(text_path)
    generator_path = os.path.join(folder, "generator", "config.json")
    generator_config = read_json_object(generator_path)
    check_generator_types(generator_config, generator_path)
    _require(text_config, TEXT_CONFIG_KEYS, "text_encoder/config.json")
    _require(generator_config, GENERATOR_CONFIG_KEYS, "generator/config.json")
    _require(generator_config["vision_config"], VISION_CONFIG_KEYS, "generator/config.json's vision_config")
    weights = {}
    for component in ("text_encoder", "generator"):  # as GALIPPipeline picks them (ambiguous sets are named)
        chosen = select_weights(os.path.join(folder, component))
        if chosen.sharded or chosen.format != "safetensors":
            raise LiteUnsupportedError(f"{component}/ holds {chosen.name}; the lite runtime reads one .safetensors "
                                       "file: load this folder with GALIPPipeline.")
        weights[component] = chosen.path
    check_generator_config(generator_config, safetensors_shapes(weights["generator"]), generator_path,
                           weights["generator"])
    check_text_config(text_config, safetensors_shapes(weights["text_encoder"]), text_path, weights["text_encoder"])
    check_text_components(tokenizer_facts(os.path.join(folder, "tokenizer")), text_config, text_path,
                          generator_config["cond_dim"], generator_path)
    activation(text_config["hidden_act"])  # unsupported activations fail here
    activation(generator_config["vision_config"]["hidden_act"])
    return text_config, generator_config


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Generator output (B, 3, H, W) in about [-1, 1] -> PIL images, rounded like diffusers' ``VaeImageProcessor``
    (a chunk at a time, as ``GALIPPipeline`` does: :func:`galip_core.memory.postprocess_in_chunks`)."""
    def convert(chunk: torch.Tensor) -> list[Image.Image]:
        arrays = (chunk.clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
        return [Image.fromarray(a) for a in (arrays * 255).round().astype(np.uint8)]

    return postprocess_in_chunks(convert, images)


class LitePipeline:
    """Text-to-image with a GALIP pipeline folder, on CPU in float32, without diffusers or transformers.

    ```py
    >>> from galip_core import LitePipeline
    >>> pipe = LitePipeline.from_pretrained("galip-shapes")
    >>> images = pipe(["a large red circle on a white background"], generator=torch.Generator().manual_seed(0))
    ```
    """

    def __init__(self, tokenizer: LiteTokenizer, text_config: dict, text_weights: dict, generator_config: dict,
                 generator_weights: dict):  # fmt: skip
        self.tokenizer = tokenizer
        self.text_config, self.text_weights = text_config, text_weights
        self.generator_config = generator_config
        self.generator = RuntimeGenerator.from_weights(generator_config, generator_weights)
        self.source: str | None = None  # the folder, once loaded: named in errors
        self.settings = GALIPSettings()

    @property
    def settings(self) -> GALIPSettings:
        """The model's recommended settings (``galip_settings.json``), as in ``GALIPPipeline``: the call defaults."""
        return self._settings

    @settings.setter
    def settings(self, value: GALIPSettings | dict) -> None:
        self._settings = as_settings(value)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None) -> "LitePipeline":
        """Load a local pipeline folder or a packaged model by name; raises :class:`LiteUnsupportedError` for
        folders whose components it cannot run (use ``GALIPPipeline`` for those)."""
        folder = resolve_pretrained(name_or_path)
        for component in (os.path.join(folder, name) for name in ("text_encoder", "generator")):
            if os.path.isdir(component) and weight_sets(component):  # ambiguous or variant-only weights: named first
                select_weights(component)
        problem = lite_support_problem(folder)
        if problem is not None:
            raise LiteUnsupportedError(f"galip_core cannot load {str(name_or_path)!r}: {problem}.")
        text_config, generator_config = check_lite_folder(folder)
        text_weights = _load_weights(os.path.join(folder, "text_encoder", "model.safetensors"))
        generator_weights = _load_weights(os.path.join(folder, "generator", "diffusion_pytorch_model.safetensors"))
        pipe = cls(LiteTokenizer(os.path.join(folder, "tokenizer")), text_config, text_weights, generator_config,
                   generator_weights)  # fmt: skip
        pipe.source = os.fspath(folder)
        pipe.settings = load_settings(folder)
        return pipe

    @torch.no_grad()
    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Sentence embeddings (number of prompts, cond_dim), as ``GALIPPipeline.encode_prompt`` (one string is one
        prompt)."""
        return clip_text_embeds(self.text_weights, self.text_config, self.tokenizer(prompt_list(prompts, "prompts")))

    def prepare_latents(self, num_images: int, generator: torch.Generator | list[torch.Generator] | None = None,
                        truncation: float | None = None, truncation_mode: str = "resample") -> torch.Tensor:  # fmt: skip
        """Noise (num_images, z_dim) drawn exactly as ``GALIPPipeline.__call__`` draws it on CPU (a list of
        generators: one per image): ``truncation=None`` takes the model's ``sampling.truncation`` setting, ``0`` turns
        it off."""
        truncation = self.settings.resolve("sampling", truncation=truncation)["truncation"]
        num_images = check_noise_arguments("num_images", num_images, generator, truncation, truncation_mode)
        shape = (num_images, self.generator_config["z_dim"])
        return sample_noise(lambda: cpu_normal(shape, generator), truncation, truncation_mode)

    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str], latents: torch.Tensor | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 truncation: float | None = None) -> list[Image.Image]:  # fmt: skip
        """One image per prompt (one generator forward pass), as PIL images. ``truncation`` as in ``GALIPPipeline``
        (``None``: the model's setting; it applies to the noise drawn here, not to given ``latents``). Repeated
        prompts next to each other are encoded once (:func:`galip_core.memory.prompt_runs`), so ``galip generate``'s
        batches get exactly the embeddings of ``GALIPPipeline(prompts, num_images_per_prompt=N)``."""
        check_latents_without_truncation(latents, truncation)
        prompts = prompt_list(prompts, "prompts")
        check_memory("prompts", f"[{len(prompts)} prompts]", self.generator_config, len(prompts), None,
                     torch.device("cpu"), text_config=self.text_config, num_prompts=len(prompts))
        if latents is None:
            latents = self.prepare_latents(len(prompts), generator, truncation)
        expected = (len(prompts), self.generator_config["z_dim"])
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected or not latents.is_floating_point():
            got = (f"{tuple(latents.shape)} {latents.dtype}" if isinstance(latents, torch.Tensor)
                   else type(latents).__name__)
            raise ValueError(f"`latents` must be a floating-point tensor of shape {expected}, got {got}.")
        check_finite_tensor("latents", latents)
        encode = lambda indices: self.encode_prompt([prompts[i] for i in indices])  # noqa: E731
        text_embeds = encode_runs(encode, prompts, 1)  # a run of one prompt encoded once, as GALIPPipeline does
        check_finite_output(text_embeds, "text encoder", self._source("text_encoder"))
        images = self.generator(latents.float(), text_embeds)
        return to_pil(check_finite_output(images, "generator", self._source("generator"),
                                          inputs={"latents": latents, "text embeddings": text_embeds}))

    def _source(self, component: str) -> str | None:
        return os.path.join(self.source, component) if self.source else None
