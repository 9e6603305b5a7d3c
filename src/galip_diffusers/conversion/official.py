"""Convert the official GALIP checkpoints (``pre_coco.pth``, ``pre_cc12m.pth``, CUB) + OpenAI CLIP ViT-B/32 into a
diffusers ``GALIPPipeline`` folder (safetensors + model card)::

    galip-convert --checkpoint pre_coco.pth --clip ViT-B-32.pt --output_dir galip-coco [--include_discriminator]

or, from Python, :func:`convert_official_checkpoint`. The converted models reproduce the official forward passes to
float precision (G's images, D's logits, the text embeddings).

Where the weights come from:

* ``generator``: the checkpoint's ``netG`` (``GENERATOR_KEY_MAP``); its frozen ViT is ``mapping.CLIP_ViT.*``.
* ``image_encoder``: the same ViT, plus ``ln_post``/``proj`` from ``--clip`` (the checkpoint does not store them).
* ``text_encoder`` and the tokenizer: ``--clip`` (the text tower is not in the checkpoint) and the ``clip`` package's
  BPE vocabulary.
* ``discriminator/`` (``--include_discriminator``): ``netD`` + ``netC`` (``DISCRIMINATOR_KEY_MAP``). The official
  768->768 D_Blocks store a 1x1 ``conv_s`` that their forward never uses; those two tensors are dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Callable

import torch
from accelerate import init_empty_weights
from transformers import CLIPTokenizer

from galip_core import __version__
from galip_core.settings import starting_settings
from galip_core.staging import temporary_sibling
from galip_diffusers.conversion.openai_clip import VISION_KEY_MAP, VIT_B_32, CLIPGeometry, CLIPSource, image_encoder_from_openai, load_clip_source
from galip_diffusers.conversion.card import converted_card_fields
from galip_diffusers.conversion.commit import Snapshot, clean_stale, commit, snapshot
from galip_diffusers.conversion.keys import (
    ConversionError,
    KeyRule,
    beyond_range,
    check_finite_state,
    is_torchscript_archive,
    load_mapped,
    module_prefix,
    prefixed,
    safe_torch_load,
    strip_prefix,
)
from galip_diffusers.conversion.model_card import find_template, render_model_card
from galip_diffusers.conversion.paths import check_inputs, check_output_dir
from galip_diffusers.hub import save_half_precision_variant
from galip_diffusers.models.clip_bridge import CLIP_PREPROCESS_MODES
from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.pipelines.loading import check_pipeline_folder
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.conversion.tokenizer import BPE_FILE_NAME, build_clip_tokenizer, find_clip_bpe_file, write_vocab_and_merges

logger = logging.getLogger(__name__)

#: Official NetG names -> GALIPGenerator names (the ViT, ``mapping.CLIP_ViT.*``, maps with ``VISION_KEY_MAP``).
GENERATOR_KEY_MAP = [
    KeyRule("fc_code.{w}", "fc_code.{w}"),
    KeyRule("mapping.FBlocks.{i}.{rest}", "mapping_blocks.{i}.{rest}"),
    KeyRule("mapping.conv_fuse.{w}", "conv_fuse.{w}"),
    KeyRule("mapping.fc_prompt.{w}", "fc_prompt.{w}"),
    KeyRule("mapping.conv.{w}", "conv_bridge_out.{w}"),
    KeyRule("GBlocks.{i}.c1.{w}", "blocks.{i}.conv1.{w}"),
    KeyRule("GBlocks.{i}.c2.{w}", "blocks.{i}.conv2.{w}"),
    KeyRule("GBlocks.{i}.c_sc.{w}", "blocks.{i}.conv_shortcut.{w}"),
    KeyRule("GBlocks.{i}.{rest}", "blocks.{i}.{rest}"),  # fuse1 / fuse2 keep their names
    KeyRule("to_rgb.1.{w}", "conv_out.{w}"),
]
#: Official ``netD.*`` (NetD) and ``netC.*`` (NetC) names -> GALIPDiscriminator names.
DISCRIMINATOR_KEY_MAP = [
    KeyRule("netD.DBlocks.{i}.conv_s.{w}", "blocks.{i}.conv_s.{w}", "optional"),  # unused when in == out: dropped
    KeyRule("netD.DBlocks.{i}.{rest}", "blocks.{i}.{rest}"),
    KeyRule("netD.main.{rest}", "main.{rest}"),
    KeyRule("netC.joint_conv.0.weight", "head.0.weight"),
    KeyRule("netC.joint_conv.2.weight", "head.2.weight"),
]
CLIP_VIT_PREFIX = "mapping.CLIP_ViT."
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LICENSE = "cc-by-nc-sa-4.0"
LICENSE_TEXT = (
    "The converted GALIP weights are a derivative of the official GALIP checkpoints (https://github.com/tobran/GALIP), "
    "which are released under the Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International license "
    "(CC BY-NC-SA 4.0, https://creativecommons.org/licenses/by-nc-sa/4.0/): you must give credit to the GALIP "
    "authors, you may not use the weights for commercial purposes, and you must distribute derivatives under the "
    "same license. The CLIP weights (text encoder, image encoder and the generator's frozen ViT) are OpenAI's CLIP "
    "ViT-B/32 (https://github.com/openai/CLIP, MIT License)."
)
CARD_TEMPLATE = "galip_converted.md"
#: The model card's ``base_model`` for the official geometry: the CLIP whose text tower and ViT the folder holds.
OPENAI_CLIP_HUB_ID = "openai/clip-vit-base-patch32"


def load_official_checkpoint(path: str | os.PathLike, unsafe_pickle: bool = False) -> dict[str, Any]:
    """``{'netG': ..., 'netD': ..., 'netC': ...}`` from an official ``torch.save`` file (``module.`` prefixes removed).

    The file is memory-mapped, so optimiser states and other unused entries are never read into RAM. A ``netD`` or
    ``netC`` that is not a state dict (``None`` in a checkpoint slimmed to its generator) is returned as it is: only
    ``--include_discriminator`` needs them, and it says what they are (:func:`discriminator_nets`)."""
    if os.path.isfile(path) and is_torchscript_archive(path):
        raise ConversionError(
            f"--checkpoint: {os.fspath(path)!r} is a TorchScript archive (like OpenAI's ViT-B-32.pt), not a GALIP "
            "checkpoint; did you swap --checkpoint and --clip?"
        )
    obj = safe_torch_load(path, "--checkpoint", unsafe_pickle)
    nets = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(nets, dict) or not isinstance(nets.get("netG"), dict):
        found = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
        inner = f"; 'model' holds {sorted(map(str, nets))[:10]}" if isinstance(nets, dict) else ""
        hint = " (a bare state dict?)" if isinstance(obj, dict) and any("fc_code" in str(k) for k in obj) else ""
        raise ConversionError(
            f"--checkpoint: {os.fspath(path)!r} is not a GALIP checkpoint: expected the official layout "
            f"{{'model': {{'netG': ..., 'netD': ..., 'netC': ...}}, ...}}, found top-level keys {found}{inner}{hint}."
        )
    return {
        name: strip_prefix(state, what=f"--checkpoint {name}") if isinstance(state, dict) else state
        for name, state in nets.items()
        if name in ("netG", "netD", "netC")
    }


def discriminator_nets(nets: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``netD`` and ``netC`` for ``--include_discriminator``, or ``ConversionError`` saying which is absent or not a
    state dict."""
    for name in ("netD", "netC"):
        if name not in nets:
            raise ConversionError(f"--include_discriminator: the checkpoint has no netD/netC (it has {sorted(nets)}).")
        if not isinstance(nets[name], dict):
            raise ConversionError(
                f"--include_discriminator: the checkpoint's {name!r} is {type(nets[name]).__name__}, not a state dict "
                "(a checkpoint slimmed to its generator?); convert without --include_discriminator."
            )
    return nets["netD"], nets["netC"]


def convert_generator(
    netG: dict[str, torch.Tensor], geometry: CLIPGeometry = VIT_B_32, config: dict[str, Any] | None = None
) -> GALIPGenerator:
    """A ``GALIPGenerator`` (default config = the official NetG) holding the official ``netG`` weights."""
    with init_empty_weights():
        generator = GALIPGenerator(**{"vision_config": geometry.vision_config(), **(config or {})})
    rules = GENERATOR_KEY_MAP + prefixed(VISION_KEY_MAP, CLIP_VIT_PREFIX, module_prefix(generator, generator.vision_model))
    load_mapped(generator, netG, rules, "--checkpoint netG")
    generator.vision_model.requires_grad_(False)
    return generator.eval()


def convert_discriminator(
    netD: dict[str, torch.Tensor],
    netC: dict[str, torch.Tensor],
    clip_preprocess: str = "official",
    config: dict[str, Any] | None = None,
) -> GALIPDiscriminator:
    """A ``GALIPDiscriminator`` holding the official NetD + NetC weights."""
    with init_empty_weights():
        discriminator = GALIPDiscriminator(**{"clip_preprocess": clip_preprocess, **(config or {})})
    source = {**{f"netD.{k}": v for k, v in netD.items()}, **{f"netC.{k}": v for k, v in netC.items()}}
    return load_mapped(discriminator, source, DISCRIMINATOR_KEY_MAP, "--checkpoint netD/netC").eval()


def checkpoint_vit(netG: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The frozen ViT stored in ``netG`` (``mapping.CLIP_ViT.*``), in OpenAI ``visual.*`` names without the prefix."""
    return {k[len(CLIP_VIT_PREFIX) :]: v for k, v in netG.items() if k.startswith(CLIP_VIT_PREFIX)}


def _warn_if_other_vit(vit: dict[str, torch.Tensor], clip: CLIPSource) -> None:
    for key, reference in clip.vision_reference.items():
        ours = vit.get(key)
        if ours is None or ours.shape != reference.shape or not torch.allclose(
            ours.float(), reference.float(), rtol=1e-2, atol=1e-3
        ):
            logger.warning(
                "The ViT in --clip (%s) differs from the one inside the GALIP checkpoint (%r): the image encoder's "
                "ln_post/proj come from a different CLIP than its transformer blocks.", clip.description, key
            )
            return


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model_card(folder: str, template_path: str, **fields: Any) -> None:
    """Render the converted-model card template into ``folder/README.md``."""
    card = render_model_card(template_path, license=LICENSE, tags=["gan", "converted"], **fields)
    card.save(os.path.join(folder, "README.md"))


def convert_official_checkpoint(
    checkpoint_path: str | os.PathLike,
    clip_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "fp32",
    include_discriminator: bool = False,
    clip_preprocess: str | None = None,
    overwrite: bool = False,
    unsafe_pickle: bool = False,
    bpe_path: str | None = None,
    clip_geometry: CLIPGeometry = VIT_B_32,
    generator_config: dict[str, Any] | None = None,
    discriminator_config: dict[str, Any] | None = None,
    measure_speed: bool = False,
    hub_model_id: str | None = None,
) -> str:
    """Convert an official GALIP checkpoint + a CLIP into a ``GALIPPipeline`` folder; returns the folder's path.

    Args:
        checkpoint_path: the official ``torch.save`` file ``{'model': {'netG', 'netD', 'netC'}, ...}``.
        clip_path: OpenAI CLIP ViT-B/32 (``ViT-B-32.pt`` TorchScript archive, a plain state dict or safetensors) or a
            transformers ``CLIPModel`` folder.
        output_dir: the pipeline folder to create; it must not exist or be empty unless ``overwrite``.
        dtype: ``"fp32"`` (default): float32 weights only; ``"fp16"`` or ``"bf16"``: the float32 weights plus that
            half-precision copy as a diffusers variant (``*.fp16.safetensors``, loaded with ``variant="fp16"``).
        include_discriminator: also save NetD + NetC as ``GALIPDiscriminator`` in ``discriminator/``.
        clip_preprocess: the discriminator's CLIP preprocessing, ``"official"`` (the default: the released
            checkpoints' double shift) or ``"standard"``; recorded in the model card. Only with
            ``include_discriminator`` (without a discriminator it would have no effect).
        overwrite: replace a non-empty ``output_dir`` (only once everything else has succeeded).
        unsafe_pickle: allow ``torch.load(weights_only=False)`` when the safe loader refuses a file (runs its code).
        bpe_path: CLIP's ``bpe_simple_vocab_16e6.txt.gz``; by default the one in the installed ``clip`` package.
        clip_geometry, generator_config, discriminator_config: other sizes than the official ones (tests, variants).
        measure_speed: time the converted pipeline on this machine (CPU, batch 1) for the model card's speed table;
            by default the card shows the package's reference timing of the official architecture.
        hub_model_id: the Hub repository (``owner/name``) the folder will be pushed to: the model card's usage code
            loads it from there (by default, from the local folder).

    Nothing is written unless the whole conversion succeeds: the folder is built next to ``output_dir`` and swapped
    in (see :mod:`galip_diffusers.conversion.commit`); a file written into ``output_dir`` meanwhile is never deleted.
    A symbolic link as ``output_dir`` is followed (the model goes into the linked folder); the real path is returned.
    """
    _check_flags(include_discriminator=include_discriminator, overwrite=overwrite, unsafe_pickle=unsafe_pickle,
                 measure_speed=measure_speed)
    variant = _variant(dtype)
    clip_preprocess = _clip_preprocess(clip_preprocess, include_discriminator)
    if hub_model_id is not None and not (isinstance(hub_model_id, str) and hub_model_id.strip()):
        raise ConversionError(f"--hub_model_id must be a Hub repository id (owner/name), got {hub_model_id!r}.")
    checkpoint_path, clip_path = os.fspath(checkpoint_path), os.fspath(clip_path)
    bpe_path = None if bpe_path is None else os.fspath(bpe_path)
    check_inputs(checkpoint_path, clip_path, bpe_path)
    inputs = {"--checkpoint": checkpoint_path, "--clip": clip_path, "--bpe": bpe_path}
    out = check_output_dir(os.fspath(output_dir), overwrite, inputs)
    tokenizer = load_tokenizer(bpe_path, clip_geometry)  # before anything is written: the BPE file is an input too
    clean_stale(out)
    checked = snapshot(out)  # the swap at the end replaces exactly this, or nothing
    try:
        template = find_template(CARD_TEMPLATE)
    except FileNotFoundError as err:
        raise ConversionError(str(err)) from err

    logger.info("Reading %s", checkpoint_path)
    nets = load_official_checkpoint(checkpoint_path, unsafe_pickle)
    pipe, discriminator, clip = _convert_models(
        nets, clip_path, include_discriminator=include_discriminator, clip_preprocess=clip_preprocess,
        unsafe_pickle=unsafe_pickle, tokenizer=tokenizer, clip_geometry=clip_geometry, generator_config=generator_config,
        discriminator_config=discriminator_config, torch_dtype=torch.float32,
    )  # fmt: skip
    if variant == "fp16":  # bf16 has float32's range; float16 overflows to inf beyond 65504
        _check_fits_float16(pipe, discriminator)
    pipe.settings = starting_settings(None, "galip convert")
    official_geometry = clip_geometry == VIT_B_32 and not generator_config
    speed_rows, speed_machine = None, None
    if measure_speed:
        from galip_diffusers.benchmark.speed_figures import machine_description, measure_pipeline_speed

        logger.info("Timing the converted pipeline")
        speed_rows = [row.as_card_row() for row in measure_pipeline_speed(pipe, batch_sizes=(1,), repeats=3)]
        speed_machine = machine_description(pipe.device)
    card = dict(
        model_name=f"GALIP ({os.path.splitext(os.path.basename(checkpoint_path))[0]}), diffusers format",
        converter=f"galip-diffusers {__version__} (galip-convert)",
        source_checkpoint=os.path.basename(checkpoint_path), source_sha256=_sha256(checkpoint_path),
        source_notes="Official GALIP weights by Ming Tao, Bing-Kun Bao, Hao Tang and Changsheng Xu "
                     "(https://github.com/tobran/GALIP).",
        clip_source=clip.description, clip_sha256=_sha256(clip_path) if os.path.isfile(clip_path) else None,
        dtype="float32" + (f", plus a {variant} variant" if variant else ""), clip_preprocess=clip_preprocess,
        include_discriminator=discriminator is not None, components=_component_notes(discriminator is not None),
        repo_path=hub_model_id or os.path.basename(os.path.abspath(output_dir)),  # a link's name, not its target's
        example_prompt="a photo of a red double-decker bus on a city street",
        license_text=LICENSE_TEXT,
        base_model=OPENAI_CLIP_HUB_ID if official_geometry else None,
        **converted_card_fields(checkpoint_path, official_geometry, speed_rows, speed_machine),
    )  # fmt: skip

    def write(folder: str) -> None:
        logger.info("Writing %s", out)
        pipe.save_pretrained(folder)
        write_vocab_and_merges(pipe.tokenizer, os.path.join(folder, "tokenizer"))
        if discriminator is not None:
            discriminator.save_pretrained(os.path.join(folder, "discriminator"))
        if variant is not None:  # beside the fp32 weights, not instead of them
            save_half_precision_variant(pipe, folder, variant,
                                        {"discriminator": discriminator} if discriminator is not None else None)
        write_model_card(folder, template, **card)

    _write_atomically(out, write, checked)
    logger.info("Done: %s", out)
    return out


def _check_flags(**flags: Any) -> None:
    """``TypeError`` unless each on/off argument is a real ``bool``: ``overwrite="no"`` is truthy and would replace
    the folder, ``unsafe_pickle="false"`` would run the pickle (the same check as ``GALIPPipeline.interpolate``'s)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` (--{name}) must be True or False, got {value!r}.")


def _variant(dtype: str | torch.dtype) -> str | None:
    """The half-precision variant ``--dtype`` asks for (``"fp16"``, ``"bf16"``; ``None`` for fp32), or
    ``ConversionError`` naming the allowed values."""
    if not isinstance(dtype, (str, torch.dtype)) or (dtype not in DTYPES and dtype not in DTYPES.values()):
        raise ConversionError(f"--dtype must be one of {sorted(DTYPES)} (or {list(DTYPES.values())}), got {dtype!r}.")
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(torch_dtype)


def _clip_preprocess(clip_preprocess: str | None, include_discriminator: bool) -> str:
    """The discriminator's CLIP preprocessing (default ``"official"``), or ``ConversionError`` for a value not in
    ``CLIP_PREPROCESS_MODES``, or for one given without a discriminator, where it would be ignored."""
    if clip_preprocess is None:
        return "official"
    if clip_preprocess not in CLIP_PREPROCESS_MODES:
        raise ConversionError(f"--clip_preprocess must be one of {CLIP_PREPROCESS_MODES}, got {clip_preprocess!r}.")
    if not include_discriminator:
        raise ConversionError(
            "--clip_preprocess sets the discriminator's CLIP preprocessing and needs --include_discriminator; add "
            "--include_discriminator or drop --clip_preprocess."
        )
    return clip_preprocess


def _component_notes(with_discriminator: bool) -> list[tuple[str, str]]:
    notes = [
        ("tokenizer", "`CLIPTokenizer` with OpenAI CLIP's BPE vocabulary (same ids as `clip.tokenize`)."),
        ("text_encoder", "`CLIPTextModelWithProjection`, CLIP ViT-B/32's text tower; GALIP conditions on its "
                         "`text_embeds` (not L2-normalised)."),
        ("generator", "`GALIPGenerator`, the official NetG, with its frozen CLIP ViT (`vision_model`)."),
        ("image_encoder", "`CLIPVisionModelWithProjection`: the checkpoint's ViT with CLIP's `ln_post`/`proj`; "
                          "the discriminator's feature extractor."),
    ]  # fmt: skip
    if with_discriminator:
        notes.append(("discriminator", "`GALIPDiscriminator`, the official NetD + NetC (not a pipeline component)."))
    return notes


def _convert_models(
    nets: dict[str, dict[str, torch.Tensor]], clip_path: str, *, include_discriminator: bool, clip_preprocess: str,
    unsafe_pickle: bool, tokenizer: CLIPTokenizer, clip_geometry: CLIPGeometry, generator_config: dict[str, Any] | None,
    discriminator_config: dict[str, Any] | None, torch_dtype: torch.dtype,
) -> tuple[GALIPPipeline, GALIPDiscriminator | None, CLIPSource]:
    """The converted ``GALIPPipeline`` in ``torch_dtype``, the discriminator (``None`` unless asked for) and the CLIP
    source the text tower and the image encoder's head came from."""
    netD_netC = discriminator_nets(nets) if include_discriminator else None
    generator = convert_generator(nets["netG"], clip_geometry, generator_config)
    discriminator = None
    if netD_netC is not None:
        discriminator = convert_discriminator(*netD_netC, clip_preprocess, discriminator_config)
    logger.info("Reading %s", clip_path)
    clip = load_clip_source(clip_path, clip_geometry, unsafe_pickle)
    check_finite_state("--clip", {**clip.vision_head, **clip.text_encoder.state_dict()})  # a CLIPModel folder too
    vit = checkpoint_vit(nets["netG"])
    _warn_if_other_vit(vit, clip)
    image_encoder = image_encoder_from_openai({**vit, **clip.vision_head}, clip_geometry,
                                              "--checkpoint netG (mapping.CLIP_ViT.*) + --clip (visual.ln_post/proj)")
    models = [clip.text_encoder, generator, image_encoder] + ([discriminator] if discriminator is not None else [])
    for model in models:
        torch.nn.Module.to(model, torch_dtype)  # plain cast (diffusers' .to() warns about fp32-only modules: none here)
    return GALIPPipeline(tokenizer, clip.text_encoder, generator, image_encoder=image_encoder), discriminator, clip


def load_tokenizer(bpe_path: str | None, geometry: CLIPGeometry = VIT_B_32) -> CLIPTokenizer:
    """The CLIP tokenizer from ``--bpe`` (default: the ``clip`` package's file), or ``ConversionError`` naming
    ``--bpe`` when the file is not CLIP's BPE vocabulary or does not fit the text encoder's ``vocab_size``."""
    try:
        shown = repr(bpe_path or find_clip_bpe_file())
        tokenizer = build_clip_tokenizer(bpe_path, model_max_length=geometry.context_length)
    except FileNotFoundError as err:
        raise ConversionError(str(err) if bpe_path is None else f"--bpe: no such file {bpe_path!r}.") from err
    except (OSError, EOFError, ValueError) as err:  # gzip.BadGzipFile is an OSError, UnicodeDecodeError a ValueError
        raise ConversionError(f"--bpe: {shown} is not CLIP's {BPE_FILE_NAME} (gzipped BPE merges): {err}") from err
    if len(tokenizer) != geometry.vocab_size:
        raise ConversionError(
            f"--bpe: {shown} gives {len(tokenizer)} token ids, but the CLIP text encoder has {geometry.vocab_size}; "
            f"pass CLIP's own {BPE_FILE_NAME}."
        )
    return tokenizer


def _check_fits_float16(pipe: GALIPPipeline, discriminator: GALIPDiscriminator | None) -> None:
    """``ConversionError`` naming the first weight beyond float16's range, which the fp16 variant would hold as inf."""
    limit = torch.finfo(torch.float16).max
    models = {**{k: m for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)},
              **({"discriminator": discriminator} if discriminator is not None else {})}  # fmt: skip
    for component, model in models.items():
        beyond = beyond_range(model.state_dict(), torch.float16)
        if beyond is not None:
            raise ConversionError(
                f"--dtype fp16: {component}.{beyond[0]} holds values up to {beyond[1]:.4g}, beyond float16's range "
                f"({limit:g}); the fp16 variant would hold inf there. Use --dtype bf16 or fp32."
            )


def _write_atomically(out: str, write: Callable[[str], None], checked: Snapshot | None) -> None:
    """``write(folder)`` into a fresh folder next to ``out``, check it, and swap it in for ``out``, whose contents
    must still be ``checked`` (see :mod:`galip_diffusers.conversion.commit`). On any failure, Ctrl-C or SIGTERM the
    folder is removed, and so are the parent folders this call created
    (:func:`galip_core.staging.temporary_sibling`)."""
    with temporary_sibling(out, kind="conversion") as tmp:
        write(tmp)
        check_pipeline_folder(tmp)
        commit(tmp, out, checked)
