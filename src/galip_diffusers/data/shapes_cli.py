"""The command line of the captioned-shapes data set: ``python -m galip_diffusers.data.shapes OUT [--num_images N]
[--seed S] [--split train|held_out|all] [--format arrow|imagefolder]``. It writes a new folder only (an existing one
is refused), under a temporary name renamed when complete, so an interrupted build leaves nothing; the arguments are
checked before anything is generated, within a second of the start (nothing imports diffusers or torch, see
``galip_diffusers/__init__.py``). Errors are one line; Ctrl-C or SIGTERM at any point ends in one line. Every row
carries ``held_out`` (true for the held-out pairs), which the training scripts drop."""

from __future__ import annotations

import argparse
from typing import Iterable, Optional

from galip_core.finite import check_number_in_range
from galip_core.paths import check_new_folder
from galip_core.staging import terminate_as_interrupt, write_new_folder
from galip_diffusers.data import shapes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write the procedural captioned-shapes data set to a new folder.",
                                     prog="python -m galip_diffusers.data.shapes")
    parser.add_argument("output_dir", help="New folder to write (must not exist).")
    parser.add_argument("--num_images", type=int, default=10_000, help="images to generate, >= 1 (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="0 or more (default: 0)")
    parser.add_argument("--split", default="train", choices=shapes.SPLITS,
                        help="train (96 captions), held_out (12 never trained on) or all (default: train); every "
                             "row's held_out column says which, and the training scripts drop the held-out rows")
    parser.add_argument("--format", default="arrow", choices=["arrow", "imagefolder"],
                        help="arrow: save_to_disk (load_from_disk / --train_data_dir); imagefolder: PNGs + metadata.jsonl")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything that can be checked before the build, as one-line errors naming the flag (``parser.error``)."""
    try:
        check_number_in_range("--num_images", args.num_images, 1, integer=True)
        check_number_in_range("--seed", args.seed, 0, integer=True)
        check_new_folder("output_dir", args.output_dir)
    except (ValueError, OSError) as error:
        parser.error(str(error))


def build(args: argparse.Namespace) -> None:
    """Write the new folder: built beside ``output_dir`` and put in place when complete, never half-written."""
    if args.format == "imagefolder":  # to_imagefolder builds beside its folder itself (and refuses a non-empty one)
        shapes.to_imagefolder(args.num_images, args.output_dir, seed=args.seed, split=args.split)
        return
    write_new_folder(args.output_dir, lambda folder: shapes.make_dataset(
        args.num_images, seed=args.seed, split=args.split).save_to_disk(str(folder)))


def main(argv: Optional[Iterable[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with terminate_as_interrupt():
            check_args(parser, args)
            build(args)
    except (OSError, ValueError) as error:  # a folder made meanwhile, a full disk
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (galip_core.staging.Terminated)
        parser.exit(130, f"{parser.prog}: interrupted; nothing was written to {args.output_dir}\n")
    print(f"wrote {args.num_images} {args.split} images to {args.output_dir}")


if __name__ == "__main__":
    main()
