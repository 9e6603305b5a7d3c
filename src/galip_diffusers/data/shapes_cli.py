"""The command line of the captioned-shapes data set: ``python -m galip_diffusers.data.shapes OUT [--num_images N]
[--seed S] [--split train|held_out|all] [--format arrow|imagefolder]``. It writes a new folder only (an existing one
is refused), under a temporary name renamed when complete, so an interrupted build leaves nothing; the arguments are
checked before anything is generated, and errors are one line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Optional

from galip_core.finite import check_number_in_range
from galip_core.paths import check_new_folder
from galip_core.staging import write_new_folder
from galip_diffusers.data import shapes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write the procedural captioned-shapes data set to a new folder.",
                                     prog="python -m galip_diffusers.data.shapes")
    parser.add_argument("output_dir", help="New folder to write (must not exist).")
    parser.add_argument("--num_images", type=int, default=10_000, help="images to generate, >= 1 (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="0 or more (default: 0)")
    parser.add_argument("--split", default="train", choices=shapes.SPLITS,
                        help="train (96 captions), held_out (12 never trained on) or all (default: train)")
    parser.add_argument("--format", default="arrow", choices=["arrow", "imagefolder"],
                        help="arrow: save_to_disk (load_from_disk / --train_data_dir); imagefolder: PNGs + metadata.jsonl")
    return parser


def main(argv: Optional[Iterable[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_number_in_range("--num_images", args.num_images, 1, integer=True)
        check_number_in_range("--seed", args.seed, 0, integer=True)
        check_new_folder("output_dir", args.output_dir)
    except (ValueError, OSError) as error:
        parser.error(str(error))

    def write(folder: Path) -> None:  # into a hidden sibling, renamed when complete: never a half-written data set
        if args.format == "arrow":
            shapes.make_dataset(args.num_images, seed=args.seed, split=args.split).save_to_disk(str(folder))
        else:
            shapes.to_imagefolder(args.num_images, folder, seed=args.seed, split=args.split)

    try:
        write_new_folder(args.output_dir, write)
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted; nothing was written to {args.output_dir}\n")
    print(f"wrote {args.num_images} {args.split} images to {args.output_dir}")


if __name__ == "__main__":
    main()
