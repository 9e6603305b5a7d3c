"""``galip convert`` / ``galip-convert``: an official GALIP checkpoint (+ OpenAI CLIP) -> a diffusers folder."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from galip_cli.common import CommandParser, run_cli
from galip_diffusers.conversion.keys import ConversionError
from galip_diffusers.conversion.official import DTYPES, convert_official_checkpoint
from galip_diffusers.hub import DEFAULT_IGNORE_PATTERNS, HubPushError, push_error, push_folder_to_hub
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
    parser.add_argument("--clip_preprocess", choices=CLIP_PREPROCESS_MODES, default=None,
                        help="with --include_discriminator: its CLIP preprocessing (default: official, as the "
                             "released weights were trained)")
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
    """The Hub options only mean something with --push_to_hub, and --clip_preprocess only with
    --include_discriminator: refuse them alone rather than ignore them."""
    if args.clip_preprocess is not None and not args.include_discriminator:
        parser.error("--clip_preprocess needs --include_discriminator (it sets the discriminator's CLIP "
                     "preprocessing); add --include_discriminator or drop the option.")
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
    repo_id = _hub_repo_id(args) if args.push_to_hub else None
    out = convert_official_checkpoint(
        args.checkpoint, args.clip, args.output_dir, dtype=args.dtype,
        include_discriminator=args.include_discriminator, clip_preprocess=args.clip_preprocess,
        overwrite=args.overwrite, unsafe_pickle=args.unsafe_pickle, bpe_path=args.bpe, measure_speed=args.measure_speed,
        hub_model_id=repo_id,
    )  # fmt: skip
    if repo_id is not None:
        try:
            repo_id = push_folder_to_hub(out, repo_id, private=args.private or None, token=args.hub_token,
                                         commit_message="Convert an official GALIP checkpoint (galip convert)")
        except KeyboardInterrupt:  # the folder is written by now: "nothing was written" would be false
            error = push_error(out, repo_id, KeyboardInterrupt("Ctrl-C during the upload"), DEFAULT_IGNORE_PATTERNS)
            print(f"{prog}: interrupted: {error}", file=sys.stderr)
            return 130
        if not args.quiet:
            print(f"https://huggingface.co/{repo_id}")
    if not args.quiet:
        print(out)
    return 0


def _hub_repo_id(args: argparse.Namespace) -> str:
    """The repository ``--push_to_hub`` uploads to, with its owner, found before the conversion: the model card's
    usage code loads it. A name without an owner (``--hub_model_id NAME``, or by default the ``--output_dir`` folder's
    name) is created under the token's user, so the Hub is asked who that is; failing that, nothing is converted."""
    name = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
    if "/" in name:
        return name
    import huggingface_hub

    try:
        user = huggingface_hub.whoami(token=args.hub_token)["name"]
    except Exception as err:  # noqa: BLE001  (the Hub client's errors have no common base)
        raise HubPushError(
            f"--push_to_hub: cannot find out which Hub user the repository {name!r} belongs to ({type(err).__name__}: "
            f"{err}); log in (`hf auth login`, or --hub_token), or pass --hub_model_id OWNER/NAME. Nothing was "
            "converted."
        ) from err
    return f"{user}/{name}"


def main(argv: list[str] | None = None, prog: str = "galip-convert") -> int:
    """``galip-convert`` / ``galip convert``. Returns the exit code (0 on success, 1 on a conversion error, 2 on bad
    arguments); the error is one line on stderr (``--debug`` re-raises it)."""
    return run_cli(lambda args: _run(args, prog), build_parser(prog), argv, check=_check_args,
                   plain_errors=(ConversionError, HubPushError), interrupt_note="nothing was written")


if __name__ == "__main__":
    sys.exit(main())
