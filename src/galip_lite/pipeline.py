"""``LitePipeline``: a GALIP pipeline folder run with torch, safetensors and tokenizers only.

It makes the same images as ``GALIPPipeline`` (same noise for the same ``torch.Generator``, same text embedding,
same generator function, same uint8 conversion) without importing diffusers or transformers, whose imports take
most of a cold start (about 9 s of ``galip-generate``'s on a 2-core CPU, against ~2.5 s for torch). CPU and float32
only; everything else goes through ``GALIPPipeline``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import network
from .finite import check_finite_number, check_finite_output, check_finite_tensor
from .folder import (
    FolderError,
    check_generator_config,
    check_generator_types,
    check_tokenizer_files,
    read_json_object,
    safetensors_shapes,
)
from .text import LiteTokenizer

PACKAGED_MODELS = ("galip-shapes",)
DEFAULT_MODEL = "galip-shapes"
TRUNCATION_MODES = ("resample", "clamp")

#: component -> (accepted ``model_index.json`` class names, files the lite runtime reads)
LITE_COMPONENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": (("CLIPTokenizer", "CLIPTokenizerFast"), ("tokenizer.json", "tokenizer_config.json")),
    "text_encoder": (("CLIPTextModelWithProjection",), ("config.json", "model.safetensors")),
    "generator": (("GALIPGenerator",), ("config.json", "diffusion_pytorch_model.safetensors")),
}


TEXT_CONFIG_KEYS = ("hidden_act", "layer_norm_eps", "num_attention_heads", "num_hidden_layers", "eos_token_id")
GENERATOR_CONFIG_KEYS = ("z_dim", "cond_dim", "ngf", "output_size", "code_channels", "mapping_mid_channels",
                         "num_mapping_blocks", "prompt_layers", "bridge_scale", "vision_config")  # fmt: skip
VISION_CONFIG_KEYS = ("hidden_act", "hidden_size", "layer_norm_eps", "num_attention_heads", "num_hidden_layers",
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
    returned unchanged. ``None`` means the default model."""
    name = str(DEFAULT_MODEL if name_or_path is None else name_or_path)
    if name in PACKAGED_MODELS and not os.path.exists(name):
        folder = os.path.join(packaged_models_dir(), name)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"The packaged model {name!r} is not part of this installation (expected it in {folder!r})."
            )
        return folder
    return DEFAULT_MODEL if name_or_path is None else name_or_path  # a local "galip-shapes" folder wins


def lite_support_problem(folder: str | os.PathLike) -> str | None:
    """Why the lite runtime cannot run ``folder`` (a message), or ``None`` when it can."""
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
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
    :mod:`galip_lite.folder`'s checks, the ones ``GALIPPipeline`` runs (same messages), plus the fields this runtime
    needs (:class:`LiteUnsupportedError` if one is missing)."""
    folder = os.fspath(folder)
    check_tokenizer_files(os.path.join(folder, "tokenizer"))
    text_config = read_json_object(os.path.join(folder, "text_encoder", "config.json"))
    generator_path = os.path.join(folder, "generator", "config.json")
    generator_config = read_json_object(generator_path)
    check_generator_types(generator_config, generator_path)
    _require(text_config, TEXT_CONFIG_KEYS, "text_encoder/config.json")
    _require(generator_config, GENERATOR_CONFIG_KEYS, "generator/config.json")
    _require(generator_config["vision_config"], VISION_CONFIG_KEYS, "generator/config.json's vision_config")
    weights = os.path.join(folder, "generator", "diffusion_pytorch_model.safetensors")
    check_generator_config(generator_config, safetensors_shapes(weights), generator_path, weights)
    safetensors_shapes(os.path.join(folder, "text_encoder", "model.safetensors"))
    network.activation(text_config["hidden_act"])  # unsupported activations fail here
    network.activation(generator_config["vision_config"]["hidden_act"])
    return text_config, generator_config


def sample_noise(
    draw: Callable[[], torch.Tensor], truncation: float | None = None, truncation_mode: str = "resample",
    max_resample_rounds: int = 1000,
) -> torch.Tensor:
    """Noise from ``draw()`` (a fresh standard-normal tensor per call), optionally truncated at ±``truncation``:
    ``"resample"`` redraws the values beyond the bound (a truncated normal), ``"clamp"`` clips them."""
    latents = draw()
    if truncation is not None:
        if truncation_mode == "resample":
            for _ in range(max_resample_rounds):
                outside = latents.abs() > truncation
                if not outside.any():
                    break
                latents = torch.where(outside, draw(), latents)
        latents = latents.clamp(-truncation, truncation)
    return latents


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Generator output (B, 3, H, W) in about [-1, 1] -> PIL images, rounded like diffusers' ``VaeImageProcessor``."""
    arrays = (images.clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()
    return [Image.fromarray(a) for a in (arrays * 255).round().astype(np.uint8)]


class LitePipeline:
    """Text-to-image with a GALIP pipeline folder, on CPU in float32, without diffusers or transformers.

    ```py
    >>> from galip_lite import LitePipeline
    >>> pipe = LitePipeline.from_pretrained("galip-shapes")
    >>> images = pipe(["a large red circle on a white background"], generator=torch.Generator().manual_seed(0))
    ```
    """

    def __init__(self, tokenizer: LiteTokenizer, text_config: dict, text_weights: dict, generator_config: dict,
                 generator_weights: dict):  # fmt: skip
        self.tokenizer = tokenizer
        self.text_config, self.text_weights = text_config, text_weights
        self.generator_config, self.generator_weights = generator_config, generator_weights
        self.source: str | None = None  # the folder, once loaded: named in errors

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None) -> "LitePipeline":
        """Load a local pipeline folder or a packaged model by name; raises :class:`LiteUnsupportedError` for
        folders whose components it cannot run (use ``GALIPPipeline`` for those)."""
        folder = resolve_pretrained(name_or_path)
        problem = lite_support_problem(folder)
        if problem is not None:
            raise LiteUnsupportedError(f"galip_lite cannot load {str(name_or_path)!r}: {problem}.")
        text_config, generator_config = check_lite_folder(folder)
        text_weights = _load_weights(os.path.join(folder, "text_encoder", "model.safetensors"))
        generator_weights = _load_weights(os.path.join(folder, "generator", "diffusion_pytorch_model.safetensors"))
        pipe = cls(LiteTokenizer(os.path.join(folder, "tokenizer")), text_config, text_weights, generator_config,
                   generator_weights)  # fmt: skip
        pipe.source = os.fspath(folder)
        return pipe

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings (len(prompts), cond_dim), as ``GALIPPipeline.encode_prompt``."""
        return network.clip_text_embeds(self.text_weights, self.text_config, self.tokenizer(prompts))

    def prepare_latents(self, num_images: int, generator: torch.Generator | None = None,
                        truncation: float | None = None, truncation_mode: str = "resample") -> torch.Tensor:  # fmt: skip
        """Noise (num_images, z_dim) drawn exactly as ``GALIPPipeline.prepare_latents`` draws it on CPU."""
        if truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"`truncation_mode` must be one of {TRUNCATION_MODES}, got {truncation_mode!r}.")
        check_finite_number("truncation", truncation)
        shape = (num_images, self.generator_config["z_dim"])
        return sample_noise(lambda: torch.randn(shape, generator=generator), truncation, truncation_mode)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], latents: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[Image.Image]:  # fmt: skip
        """One image per prompt (one generator forward pass), as PIL images."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompts` must be a string or a non-empty list of strings, got {prompts!r}.")
        if latents is None:
            latents = self.prepare_latents(len(prompts), generator)
        if latents.shape != (len(prompts), self.generator_config["z_dim"]):
            raise ValueError(
                f"`latents` must have shape ({len(prompts)}, {self.generator_config['z_dim']}), "
                f"got {tuple(latents.shape)}."
            )
        check_finite_tensor("latents", latents)
        text_embeds = check_finite_output(self.encode_prompt(prompts), "text encoder", self._source("text_encoder"))
        images = network.generate(self.generator_weights, self.generator_config, latents.float(), text_embeds)
        return to_pil(check_finite_output(images, "generator", self._source("generator")))

    def _source(self, component: str) -> str | None:
        return os.path.join(self.source, component) if self.source else None
