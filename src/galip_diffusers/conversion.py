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

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import torch
from accelerate import init_empty_weights

from galip_lite.settings import starting_settings

from .clip_convert import VISION_KEY_MAP, VIT_B_32, CLIPGeometry, CLIPSource, image_encoder_from_openai, load_clip_source
from .conversion_card import converted_card_fields
from .conversion_utils import (
    ConversionError,
    KeyRule,
    is_torchscript_archive,
    load_mapped,
    module_prefix,
    prefixed,
    safe_torch_load,
    strip_prefix,
)
from .hub import push_folder_to_hub, save_half_precision_variant
from .model_card import find_template, render_model_card
from .models.clip_bridge import CLIP_PREPROCESS_MODES
from .models.discriminator import GALIPDiscriminator
from .models.generator import GALIPGenerator
from .pipelines.folder_checks import check_pipeline_folder
from .pipelines.pipeline_galip import GALIPPipeline
from .tokenizer_bpe import build_clip_tokenizer, write_vocab_and_merges

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


def load_official_checkpoint(path: str | os.PathLike, unsafe_pickle: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """``{'netG': ..., 'netD': ..., 'netC': ...}`` from an official ``torch.save`` file (``module.`` prefixes removed).

    The file is memory-mapped, so optimiser states and other unused entries are never read into RAM."""
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
    return {name: strip_prefix(state) for name, state in nets.items() if name in ("netG", "netD", "netC")}


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


def _check_output_dir(output_dir: str, overwrite: bool, inputs: list[str]) -> str:
    out = os.path.abspath(output_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConversionError(f"--output_dir: {out!r} exists and is not a folder.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ConversionError(f"--output_dir: {out!r} exists and is not empty; pass --overwrite to replace it.")
    real, cwd = os.path.realpath(out), os.path.realpath(os.getcwd())
    if real in (os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.sep)) or (cwd + os.sep).startswith(
        real + os.sep
    ):
        raise ConversionError(f"--output_dir: refusing to use {out!r} (the current, home or root folder or a parent).")
    for path in inputs:
        if os.path.realpath(path).startswith(os.path.realpath(out) + os.sep):
            raise ConversionError(f"--output_dir: {out!r} contains the input {path!r}; choose another folder.")
    return out


def _missing_ancestors(folder: str) -> list[str]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _commit(tmp: str, out: str) -> None:
    """Move the finished folder into place (replacing an empty or --overwrite'd one)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _, files in os.walk(tmp):  # mkdtemp makes a 0700 folder; some writers make 0600 files
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
    old = None
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def convert_official_checkpoint(
    checkpoint_path: str | os.PathLike,
    clip_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "fp32",
    include_discriminator: bool = False,
    clip_preprocess: str = "official",
    overwrite: bool = False,
    unsafe_pickle: bool = False,
    bpe_path: str | None = None,
    clip_geometry: CLIPGeometry = VIT_B_32,
    generator_config: dict[str, Any] | None = None,
    discriminator_config: dict[str, Any] | None = None,
    measure_speed: bool = False,
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
        clip_preprocess: the discriminator's CLIP preprocessing, ``"official"`` (the released checkpoints' double
            shift) or ``"standard"``; recorded in the model card.
        overwrite: replace a non-empty ``output_dir`` (only once everything else has succeeded).
        unsafe_pickle: allow ``torch.load(weights_only=False)`` when the safe loader refuses a file (runs its code).
        bpe_path: CLIP's ``bpe_simple_vocab_16e6.txt.gz``; by default the one in the installed ``clip`` package.
        clip_geometry, generator_config, discriminator_config: other sizes than the official ones (tests, variants).
        measure_speed: time the converted pipeline on this machine (CPU, batch 1) for the model card's speed table;
            by default the card shows the package's reference timing of the official architecture.

    Nothing is written unless the whole conversion succeeds: the folder is built next to ``output_dir`` and renamed.
    """
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    variant = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(torch_dtype)
    if clip_preprocess not in CLIP_PREPROCESS_MODES:
        raise ConversionError(f"--clip_preprocess must be one of {CLIP_PREPROCESS_MODES}, got {clip_preprocess!r}.")
    checkpoint_path, clip_path = os.fspath(checkpoint_path), os.fspath(clip_path)
    out = _check_output_dir(os.fspath(output_dir), overwrite, [checkpoint_path, clip_path])
    try:
        template = find_template(CARD_TEMPLATE)
    except FileNotFoundError as err:
        raise ConversionError(str(err)) from err

    logger.info("Reading %s", checkpoint_path)
    nets = load_official_checkpoint(checkpoint_path, unsafe_pickle)
    if include_discriminator and not {"netD", "netC"} <= set(nets):
        raise ConversionError(f"--include_discriminator: the checkpoint has no netD/netC (it has {sorted(nets)}).")
    generator = convert_generator(nets["netG"], clip_geometry, generator_config)
    discriminator = None
    if include_discriminator:
        discriminator = convert_discriminator(nets["netD"], nets["netC"], clip_preprocess, discriminator_config)
    logger.info("Reading %s", clip_path)
    clip = load_clip_source(clip_path, clip_geometry, unsafe_pickle)
    vit = checkpoint_vit(nets["netG"])
    _warn_if_other_vit(vit, clip)
    image_encoder = image_encoder_from_openai({**vit, **clip.vision_head}, clip_geometry)
    try:
        tokenizer = build_clip_tokenizer(bpe_path, model_max_length=clip_geometry.context_length)
    except FileNotFoundError as err:
        raise ConversionError(str(err)) from err
    pipe = GALIPPipeline(tokenizer, clip.text_encoder, generator, image_encoder=image_encoder)
    pipe.settings = starting_settings(None, "galip convert")
    official_geometry = clip_geometry == VIT_B_32 and not generator_config
    speed_rows, speed_machine = None, None
    if measure_speed:
        from .speed_figures import machine_description, measure_pipeline_speed

        logger.info("Timing the converted pipeline")
        speed_rows = [row.as_card_row() for row in measure_pipeline_speed(pipe, batch_sizes=(1,), repeats=3)]
        speed_machine = machine_description(pipe.device)

    parent = os.path.dirname(out)
    created = _missing_ancestors(parent)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        logger.info("Writing %s", out)
        pipe.save_pretrained(tmp)
        write_vocab_and_merges(tokenizer, os.path.join(tmp, "tokenizer"))
        if discriminator is not None:
            discriminator.save_pretrained(os.path.join(tmp, "discriminator"))
        if variant is not None:  # beside the fp32 weights, not instead of them
            extra = {"discriminator": discriminator} if discriminator is not None else None
            save_half_precision_variant(pipe, tmp, variant, extra)
        write_model_card(
            tmp, template,
            model_name=f"GALIP ({os.path.splitext(os.path.basename(checkpoint_path))[0]}), diffusers format",
            converter=f"galip-diffusers {_version()} (galip-convert)",
            source_checkpoint=os.path.basename(checkpoint_path), source_sha256=_sha256(checkpoint_path),
            source_notes="Official GALIP weights by Ming Tao, Bing-Kun Bao, Hao Tang and Changsheng Xu "
                         "(https://github.com/tobran/GALIP).",
            clip_source=clip.description, clip_sha256=_sha256(clip_path) if os.path.isfile(clip_path) else None,
            dtype="float32" + (f", plus a {variant} variant" if variant else ""),
            clip_preprocess=clip_preprocess,
            include_discriminator=discriminator is not None, components=_component_notes(discriminator is not None),
            repo_path=os.path.basename(out), example_prompt="a photo of a red double-decker bus on a city street",
            license_text=LICENSE_TEXT,
            base_model=OPENAI_CLIP_HUB_ID if official_geometry else None,
            **converted_card_fields(checkpoint_path, official_geometry, speed_rows, speed_machine),
        )  # fmt: skip
        check_pipeline_folder(tmp)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # deepest first; only the folders this call made, and only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    logger.info("Done: %s", out)
    return out


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


def _version() -> str:
    from . import __version__

    return __version__


def build_parser(prog: str = "galip-convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert an official GALIP checkpoint (+ OpenAI CLIP ViT-B/32) into a diffusers GALIPPipeline "
        "folder that DiffusionPipeline.from_pretrained loads (after `import galip_diffusers`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  %(prog)s --checkpoint pre_coco.pth --clip ViT-B-32.pt --output_dir galip-coco\n"
        "  %(prog)s --checkpoint pre_cc12m.pth --clip ./clip-vit-base-patch32 --output_dir galip-cc12m \\\n"
        "      --dtype fp16 --include_discriminator\n"
        "  %(prog)s --checkpoint pre_coco.pth --clip ViT-B-32.pt --output_dir galip-coco --push_to_hub \\\n"
        "      --hub_model_id me/galip-coco --private\n\n"
        "The official GALIP weights are licensed CC BY-NC-SA 4.0 (non-commercial); so is the converted folder.",
    )
    parser.add_argument("--checkpoint", required=True, help="official GALIP .pth: {'model': {'netG','netD','netC'}}")
    parser.add_argument("--clip", required=True, help="OpenAI ViT-B-32.pt (or a state dict) or a transformers CLIPModel folder")
    parser.add_argument("--output_dir", "--output-dir", required=True, help="pipeline folder to create")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="fp32 (default): float32 weights; fp16 / bf16: float32 weights plus a half-precision "
                             "diffusers variant beside them (from_pretrained(..., variant='fp16'))")
    parser.add_argument("--push_to_hub", "--push-to-hub", action="store_true",
                        help="upload the converted folder (weights, card, galip_settings.json) to the Hub")
    parser.add_argument("--hub_model_id", "--hub-model-id", default=None,
                        help="repository to push to (default: the output folder's name)")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create a private repository")
    parser.add_argument("--hub_token", "--hub-token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--include_discriminator", "--include-discriminator", action="store_true",
                        help="also convert netD/netC to GALIPDiscriminator in <output_dir>/discriminator")
    parser.add_argument("--clip_preprocess", "--clip-preprocess", choices=CLIP_PREPROCESS_MODES, default="official",
                        help="discriminator CLIP preprocessing (default: official, as the released weights were trained)")
    parser.add_argument("--bpe", default=None, help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: from the clip package)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--measure_speed", "--measure-speed", action="store_true",
                        help="time the converted pipeline here (CPU, batch 1) for the model card's speed table")
    parser.add_argument("--unsafe-pickle", "--unsafe_pickle", action="store_true",
                        help="allow torch.load(weights_only=False) if the safe loader refuses a file (runs its code!)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only print errors and warnings")
    return parser  # fmt: skip


def _run(args: argparse.Namespace, prog: str = "galip-convert") -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=f"{prog}: %(message)s")
    if args.quiet:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    out = convert_official_checkpoint(
        args.checkpoint, args.clip, args.output_dir, dtype=args.dtype,
        include_discriminator=args.include_discriminator, clip_preprocess=args.clip_preprocess,
        overwrite=args.overwrite, unsafe_pickle=args.unsafe_pickle, bpe_path=args.bpe, measure_speed=args.measure_speed,
    )  # fmt: skip
    if args.push_to_hub:
        repo_id = push_folder_to_hub(out, args.hub_model_id or os.path.basename(os.path.abspath(out)),
                                     private=args.private or None, token=args.hub_token,
                                     commit_message="Convert an official GALIP checkpoint (galip convert)")
        if not args.quiet:
            print(f"https://huggingface.co/{repo_id}")
    if not args.quiet:
        print(out)
    return 0


def main(argv: list[str] | None = None, prog: str = "galip-convert") -> int:
    """``galip-convert`` / ``galip convert``. Returns the exit code (0 on success, 1 on a conversion error, 2 on bad
    arguments); the error is one line on stderr (``--debug`` re-raises it)."""
    from .cli import run_cli

    return run_cli(lambda args: _run(args, prog), build_parser(prog), argv, plain_errors=(ConversionError,),
                   interrupt_note="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
