"""``galip convert`` / ``galip-convert``: an official GALIP checkpoint (+ OpenAI CLIP) -> a diffusers folder."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from galip_cli.common import CommandParser, run_cli
from galip_diffusers.conversion.keys import ConversionError
from galip_diffusers.conversion.official import DTYPES, convert_official_checkpoint
from galip_diffusers.hub import HubPushError, push_folder_to_hub
from galip_diffusers.models.clip_bridge import CLIP_PREPROCESS_MODES


def build_parser(prog: str = "galip-convert") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Convert an official GALIP checkpoint (+ OpenAI CLIP ViT-B/32) into a diffusers GALIPPipeline "
        "folder that DiffusionPipeline.from_pretrained loads (after `import galip_diffusers`).",
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
    parser.add_argument("--output_dir", required=True, help="pipeline folder to create")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="fp32 (default): float32 weights; fp16 / bf16: float32 weights plus a half-precision "
                             "diffusers variant beside them (from_pretrained(..., variant='fp16'))")
    parser.add_argument("--push_to_hub", action="store_true",
                        help="upload the converted folder (weights, card, galip_settings.json) to the Hub")
    parser.add_argument("--hub_model_id", default=None, help="repository to push to (default: the output folder's name)")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create a private repository")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--include_discriminator", action="store_true",
                        help="also convert netD/netC to GALIPDiscriminator in <output_dir>/discriminator")
    parser.add_argument("--clip_preprocess", choices=CLIP_PREPROCESS_MODES, default="official",
                        help="discriminator CLIP preprocessing (default: official, as the released weights were trained)")
    parser.add_argument("--bpe", default=None, help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: from the clip package)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")
    parser.add_argument("--measure_speed", action="store_true",
                        help="time the converted pipeline here (CPU, batch 1) for the model card's speed table")
    parser.add_argument("--unsafe_pickle", action="store_true",
                        help="allow torch.load(weights_only=False) if the safe loader refuses a file (runs its code!)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only print errors and warnings")
    return parser  # fmt: skip


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The Hub options only mean something with --push_to_hub: refuse them alone rather than ignore them."""
    if not args.push_to_hub:
        given = [flag for flag, value in (("--hub_model_id", args.hub_model_id), ("--private", args.private),
                                          ("--hub_token", args.hub_token)) if value]  # fmt: skip
        if given:
            parser.error(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --push_to_hub (nothing is "
                         "uploaded without it); add --push_to_hub or drop the option.")


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
    return run_cli(lambda args: _run(args, prog), build_parser(prog), argv, check=_check_args,
                   plain_errors=(ConversionError, HubPushError), interrupt_note="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
