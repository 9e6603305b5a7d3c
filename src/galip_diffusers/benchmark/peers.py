"""Models for ``galip-benchmark``: GALIP and the diffusion peers, from a local folder or from published configs.

Without a folder, every model is built from its published architecture config (shipped as JSON in
``galip_diffusers/configs/``) with random weights: the speed of a network does not depend on its weight values, and
nothing can be downloaded. ``scale="tiny"`` shrinks every config (same block types, tiny widths) for tests.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

GALIP = "galip"
PEERS = ("sd-1.5", "ldm-256", "sd-turbo")
PEER_ALIASES = {
    "sd-1.5": "sd-1.5", "sd15": "sd-1.5", "sd": "sd-1.5", "stable-diffusion-1.5": "sd-1.5",
    "ldm-256": "ldm-256", "ldm": "ldm-256", "ldm-text2im-large-256": "ldm-256",
    "sd-turbo": "sd-turbo", "turbo": "sd-turbo",
}
GALIP_SOURCES = ("default-config", "tiny")
GALIP_VARIANTS = ("fast", "default", "compiled")
SCALES = ("full", "tiny")
MODE_RANDOM = "random-weights architecture"
MODE_REAL = "real checkpoint"
MODE_TINY = "tiny test config (random weights)"

# Tiny overrides per component class: same block types as the published configs, tiny widths.
_TINY_UNET = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
_TINY_VAE = {
    "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
}
_TINY_CLIP_TEXT = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "projection_dim": 32}
_TINY_LDMBERT = {"vocab_size": 1000, "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "head_dim": 16,
                 "encoder_ffn_dim": 37}
TINY_RESOLUTION = 32  # latent 16 with the 2-block tiny VAE

PROMPT = "a photograph of an astronaut riding a horse"


@dataclass
class ModelSpec:
    """One model to benchmark. ``error`` is set when the request itself is invalid (the row reports it)."""

    name: str
    display_name: str
    kind: str  # "galip" or "peer"
    source: str  # "default-config", "tiny" or a folder
    mode: str
    variant: str = "diffusers"
    resolution: int = 0
    steps: int = 1
    guidance_scale: float | None = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    learnable_components: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    tokenizer: str = "from the folder"

    @property
    def label(self) -> str:
        return f"{self.display_name} ({self.variant})" if self.kind == GALIP else self.display_name


def load_config(name: str) -> dict[str, Any]:
    """A packaged architecture config (``galip``, ``sd-1.5``, ``ldm-256``, ``sd-turbo``)."""
    text = resources.files("galip_diffusers").joinpath("configs", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def resolve_peer_name(name: str) -> str:
    """Canonical peer name; raises ``ValueError`` naming the allowed values."""
    key = name.strip().lower()
    if key not in PEER_ALIASES:
        raise ValueError(f"unknown peer {name!r}: choose from {', '.join(PEERS)} (aliases: sd, ldm, turbo)")
    return PEER_ALIASES[key]


def _tiny_component(cls_name: str, config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if cls_name == "UNet2DConditionModel":
        heads = config.get("attention_head_dim", 8)
        config.update(_TINY_UNET, sample_size=TINY_RESOLUTION // 2)
        config["attention_head_dim"] = [2, 4] if isinstance(heads, list) else 4
    elif cls_name == "AutoencoderKL":
        config.update(_TINY_VAE, sample_size=TINY_RESOLUTION)
    elif cls_name.startswith("CLIPText"):
        config.update(_TINY_CLIP_TEXT)
    elif cls_name == "LDMBertModel":
        config.update(_TINY_LDMBERT)
    return config


def peer_spec(name: str, folder: str | None = None, scale: str = "full", steps: int | None = None) -> ModelSpec:
    """The spec of a diffusion peer: a real checkpoint when ``folder`` is given, else its published config."""
    config = load_config(name)
    if scale == "tiny" and folder is None:
        for comp in config["components"].values():
            comp["config"] = _tiny_component(comp["class"], comp["config"])
        config["resolution"] = TINY_RESOLUTION
    mode = MODE_REAL if folder else (MODE_TINY if scale == "tiny" else MODE_RANDOM)
    spec = ModelSpec(
        name=name, display_name=config["display_name"], kind="peer", source=folder or f"{scale}-config", mode=mode,
        resolution=config["resolution"], guidance_scale=config["guidance_scale"], call_kwargs=config["call_kwargs"],
        steps=config["steps"] if name == "sd-turbo" or steps is None else steps,
        learnable_components=config["learnable_components"], config=config,
    )
    if folder is not None and not os.path.isdir(folder):
        spec.error = f"folder {folder!r} for peer {name!r} does not exist"
    elif folder is not None and not os.path.isfile(os.path.join(folder, "model_index.json")):
        spec.error = f"folder {folder!r} for peer {name!r} has no model_index.json (not a diffusers pipeline folder)"
    return spec


def galip_spec(source: str = "default-config", variant: str = "fast") -> ModelSpec:
    """The GALIP spec: ``"default-config"`` (official size, random weights), ``"tiny"``, or a pipeline folder."""
    config = load_config(GALIP)
    if source == "tiny":
        mode, resolution = MODE_TINY, None
    elif source == "default-config":
        mode, resolution = MODE_RANDOM, config["resolution"]
    else:
        mode, resolution = MODE_REAL, None  # read from the loaded generator
    spec = ModelSpec(
        name=GALIP, display_name="GALIP", kind=GALIP, source=source, mode=mode, variant=variant,
        resolution=resolution or 0, steps=1, learnable_components=config["learnable_components"], config=config,
    )
    if variant not in GALIP_VARIANTS:
        spec.error = f"unknown GALIP variant {variant!r}: choose from {', '.join(GALIP_VARIANTS)}"
    elif source not in GALIP_SOURCES:
        from galip_diffusers.pretrained import PRETRAINED_MODELS

        if source not in PRETRAINED_MODELS and not os.path.isdir(source):
            spec.error = (
                f"--galip: {source!r} is neither {' nor '.join(GALIP_SOURCES)}, a packaged model "
                f"({', '.join(PRETRAINED_MODELS)}) nor an existing folder"
            )
    return spec


# ----------------------------------------------------------------------------------------------------- building
def build_module(cls_name: str, config: dict[str, Any]):
    """Instantiate one component from its config (random weights; on the current default device)."""
    import diffusers
    import transformers

    if cls_name == "LDMBertModel":
        from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

        return LDMBertModel(LDMBertConfig(**config))
    if cls_name.startswith("CLIPText"):
        return getattr(transformers, cls_name)(transformers.CLIPTextConfig(**config))
    if cls_name == "GALIPGenerator":
        from galip_diffusers.models.generator import GALIPGenerator

        return GALIPGenerator(**config)
    cls = getattr(diffusers, cls_name)
    return cls.from_config(config)


@functools.lru_cache(maxsize=2)
def clip_tokenizer(real: bool = True):
    """``(tokenizer, description)``: OpenAI CLIP's BPE tokenizer when the ``clip`` package's vocabulary is installed
    (the prompt then has its real token count, which GALIP's fast path depends on), else a byte-level
    ``CLIPTokenizer`` (one token per non-space character; only the text-encoder cost of GALIP's fast path changes)."""
    from galip_diffusers.testing_utils import byte_level_clip_tokenizer

    if real:
        try:
            from galip_diffusers.conversion.tokenizer import build_clip_tokenizer

            return build_clip_tokenizer(), "CLIP BPE (vocabulary of the installed clip package)"
        except (ImportError, FileNotFoundError, ValueError):
            pass
    return byte_level_clip_tokenizer(), "byte-level CLIPTokenizer (no CLIP BPE vocabulary installed)"


def _with_tokenizer_ids(cls_name: str, config: dict[str, Any], tokenizer) -> dict[str, Any]:
    if cls_name.startswith("CLIPText"):  # pool at the tokenizer's end-of-text id
        config = {**config, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                  "pad_token_id": tokenizer.pad_token_id}
    return config


def build_peer_pipeline(spec: ModelSpec):
    """A diffusers pipeline for ``spec`` (fp32, CPU): ``from_pretrained`` for a folder, else built from configs."""
    import diffusers

    if spec.mode == MODE_REAL:
        if spec.name == "sd-1.5":
            return diffusers.StableDiffusionPipeline.from_pretrained(
                spec.source, safety_checker=None, requires_safety_checker=False
            )
        if spec.name == "ldm-256":
            return diffusers.LDMTextToImagePipeline.from_pretrained(spec.source)
        return diffusers.AutoPipelineForText2Image.from_pretrained(spec.source)
    # LDMBert has a 30,522-token vocabulary: byte-level ids fit (LDM pads to 77 tokens anyway).
    tokenizer, spec.tokenizer = clip_tokenizer(real=spec.mode == MODE_RANDOM and spec.name != "ldm-256")
    comps = spec.config["components"]
    modules = {
        key: build_module(c["class"], _with_tokenizer_ids(c["class"], c["config"], tokenizer))
        for key, c in comps.items()
        if not c["class"].endswith("Scheduler")
    }
    scheduler_spec = next(c for c in comps.values() if c["class"].endswith("Scheduler"))
    scheduler = getattr(diffusers, scheduler_spec["class"]).from_config(scheduler_spec["config"])
    if spec.name == "ldm-256":
        return diffusers.LDMTextToImagePipeline(tokenizer=tokenizer, scheduler=scheduler, **modules)
    # SD-Turbo's published folder resolves to StableDiffusionPipeline through AutoPipelineForText2Image.
    return diffusers.StableDiffusionPipeline(
        tokenizer=tokenizer, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, **modules,
    )


def build_galip_pipeline(spec: ModelSpec):
    """A :class:`GALIPPipeline` (fp32, CPU) for ``spec``."""
    from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
    from galip_diffusers.testing_utils import tiny_pipeline

    if spec.source == "tiny":
        return tiny_pipeline()
    if spec.source != "default-config":
        return GALIPPipeline.from_pretrained(spec.source)
    tokenizer, spec.tokenizer = clip_tokenizer(real=True)
    comps = spec.config["components"]
    text = comps["text_encoder"]
    text_encoder = build_module(text["class"], _with_tokenizer_ids(text["class"], text["config"], tokenizer))
    generator = build_module("GALIPGenerator", comps["generator"]["config"])
    return GALIPPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), generator=generator.eval())


def galip_generator_config(spec: ModelSpec) -> dict[str, Any] | None:
    """The generator config of a GALIP ``spec``, read without building the model (for the up-front memory check of
    ``--batch_sizes``): the published config over ``GALIPGenerator``'s defaults, the tiny config, or a folder's
    ``generator/config.json``, completed with ``GALIPGenerator``'s defaults
    (:func:`galip_diffusers.pipelines.loading.complete_generator_config`). ``None`` where it cannot be read: the row
    then reports its own error."""
    from galip_diffusers.pipelines.loading import complete_generator_config

    if spec.source == "tiny":
        from galip_diffusers.testing_utils import TINY_GENERATOR_CONFIG

        return complete_generator_config(TINY_GENERATOR_CONFIG)
    if spec.source == "default-config":
        return complete_generator_config(spec.config["components"]["generator"]["config"])
    from galip_core.runtime import resolve_pretrained

    try:
        with open(os.path.join(resolve_pretrained(spec.source), "generator", "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return complete_generator_config(config) if isinstance(config, dict) else None


def pipeline_modules(pipe) -> dict[str, torch.nn.Module]:
    """The ``torch.nn.Module`` components of a pipeline, by name."""
    return {name: comp for name, comp in pipe.components.items() if isinstance(comp, torch.nn.Module)}


def count_parameters(spec: ModelSpec, pipe) -> dict[str, Any]:
    """Total parameters of all components, per component, and the learnable ones (see :func:`learnable_note`)."""
    modules = pipeline_modules(pipe)
    per_component = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}
    if spec.kind == GALIP:
        learnable = sum(p.numel() for p in pipe.generator.learnable_parameters())
    else:
        learnable = sum(per_component.get(name, 0) for name in spec.learnable_components)
    return {"total": sum(per_component.values()), "learnable": learnable, "components": per_component}


LEARNABLE_NOTE = (
    "learnable = parameters trained for the text-to-image model itself: GALIP's generator without its frozen "
    "CLIP-ViT; the UNet for SD-1.5 and SD-Turbo; UNet + LDMBert for LDM (trained jointly). Frozen, separately "
    "pretrained encoders/decoders count in the total only."
)


# ----------------------------------------------------------------------------------------------------- FLOPs
def _meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """The same architecture on the meta device (no memory, instant): for FLOP counting."""
    config = module.config
    with torch.device("meta"):
        if hasattr(config, "to_dict") and not hasattr(module, "register_to_config"):  # transformers
            return type(module)(copy.deepcopy(config)).eval()
        return type(module).from_config(dict(config)).eval()


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def uses_cfg(spec: ModelSpec, pipe) -> bool:
    """Whether the pipeline runs classifier-free guidance (the UNet then sees a doubled batch)."""
    return guidance_doubles_batch(spec, pipe.unet.config)


def guidance_doubles_batch(spec: ModelSpec, unet_config: Any) -> bool:
    """:func:`uses_cfg` from the UNet's config alone (a dict or a ``FrozenDict``), for the memory check made before
    the pipeline is built."""
    g = spec.guidance_scale
    if g is None:
        return False
    if spec.name == "ldm-256":
        return g != 1.0
    return g > 1.0 and dict(unet_config).get("time_cond_proj_dim") is None


def count_gflops(spec: ModelSpec, pipe, unet_evals: int, fast: bool = False) -> dict[str, float]:
    """GFLOPs per image (``torch.utils.flop_counter``, one multiply-add = 2 FLOPs) counted on meta-device copies.

    Peers: text encoding (twice with CFG) + ``unet_evals`` UNet calls (batch 2 with CFG) + one VAE decode.
    GALIP: text encoding + one generator call (``fast``: what the fast-inference plan executes: fewer FLOPs in the
    generator, and the prompt's own token count instead of 77 in the text encoder)."""
    ids = torch.zeros(1, 77, dtype=torch.long, device="meta")
    if spec.kind == GALIP:
        if fast:  # fast inference pads the prompt to its own length only
            ids = ids[:, : len(pipe.tokenizer(PROMPT, truncation=True, max_length=77).input_ids)]
        text = _flops(lambda: _meta_copy(pipe.text_encoder)(ids))
        gen = _meta_copy(pipe.generator)
        if fast:
            gen.enable_fast_inference(channels_last=False)
        z = torch.zeros(1, gen.config.z_dim, device="meta")
        s = torch.zeros(1, gen.config.cond_dim, device="meta")
        generator = _flops(lambda: gen(z, s))
        return {"text_encoder": text / 1e9, "generator": generator / 1e9, "total": (text + generator) / 1e9}
    cfg = uses_cfg(spec, pipe)
    text_model = pipe.bert if spec.name == "ldm-256" else pipe.text_encoder
    text = _flops(lambda: _meta_copy(text_model)(ids)) * (2 if cfg else 1)
    unet, vae = _meta_copy(pipe.unet), _meta_copy(pipe.vqvae if spec.name == "ldm-256" else pipe.vae)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = spec.resolution // scale
    batch = 2 if cfg else 1
    sample = torch.zeros(batch, unet.config.in_channels, size, size, device="meta")
    context = torch.zeros(batch, 77, unet.config.cross_attention_dim, device="meta")
    step = _flops(lambda: unet(sample, torch.tensor(10, device="meta"), context))
    latents = torch.zeros(1, vae.config.latent_channels, size, size, device="meta")
    decode = _flops(lambda: vae.decode(latents))
    total = text + unet_evals * step + decode
    return {"text_encoder": text / 1e9, "unet_per_eval": step / 1e9, "vae_decode": decode / 1e9, "total": total / 1e9}
