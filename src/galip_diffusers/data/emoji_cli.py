"""The command line of the emoji data set builder: ``python -m galip_diffusers.data.emoji OUT [--split train]
[--format arrow|imagefolder] [--cache_dir DIR]``. Everything it can check is checked before the build (about 20 s);
errors are one line, and an interrupted build leaves nothing where the data set would be."""

from __future__ import annotations

import argparse
from typing import Iterable, Optional

from galip_core.paths import check_new_folder
from galip_diffusers.data import emoji as data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=data.__doc__.split("\n\n")[0],
                                     prog="python -m galip_diffusers.data.emoji")
    parser.add_argument("output_dir", help="New folder to write (must not exist).")
    parser.add_argument("--split", default="train", choices=data.SPLITS)
    parser.add_argument("--format", default="arrow", choices=["arrow", "imagefolder"],
                        help="arrow: save_to_disk (load_from_disk / --train_data_dir); imagefolder: PNGs + metadata.jsonl")
    parser.add_argument("--cache_dir", default=None, help="Where `npm pack` puts the tarballs.")
    for key, package in data.PACKAGES.items():
        parser.add_argument(f"--{key}_tarball", default=None, help=f"An existing {package.spec} tarball.")
    return parser


def main(argv: Optional[Iterable[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {key: getattr(args, f"{key}_tarball") for key in data.PACKAGES}
    if any(given.values()) and not all(given.values()):
        parser.error("pass all of --twemoji_tarball, --noto_tarball and --labels_tarball, or none")
    try:  # empty, under a file, not writable, existing: found now, not after the build (the save checks again)
        check_new_folder("output_dir", args.output_dir)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    save = data.save_dataset if args.format == "arrow" else data.export_imagefolder
    try:  # one line, not a traceback: a missing or corrupt tarball, npm failing, a folder made meanwhile, a full disk
        dataset = data.build_dataset(given if all(given.values()) else None, cache_dir=args.cache_dir, split=args.split)
        print(f"wrote {len(dataset)} images to {save(dataset, args.output_dir, split=args.split)}")
    except (OSError, data.EmojiDataError, RuntimeError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted; nothing was written to {args.output_dir}\n")


if __name__ == "__main__":
    main()
