"""The command line of the emoji data set builder: ``python -m galip_diffusers.data.emoji OUT [--split train]
[--format arrow|imagefolder] [--cache_dir DIR]``. Everything it can check (the output path, the cache folder, given
tarballs) is checked before the build (about 20 s), about a second after the start: neither this module nor the
packages above it import diffusers or torch (see ``galip_diffusers/__init__.py``), and ``datasets`` is imported by the
build. Errors are one line naming the flag; Ctrl-C or SIGTERM at any point ends in one line, and an interrupted
build leaves nothing where the data set would be."""

from __future__ import annotations

import argparse
from typing import Iterable, Optional

from galip_core.paths import check_new_folder
from galip_core.staging import terminate_as_interrupt
from galip_diffusers.data import emoji as data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=data.__doc__.split("\n\n")[0],
                                     prog="python -m galip_diffusers.data.emoji")
    parser.add_argument("output_dir", help="New folder to write (must not exist).")
    parser.add_argument("--split", default="train", choices=data.SPLITS)
    parser.add_argument("--format", default="arrow", choices=["arrow", "imagefolder"],
                        help="arrow: save_to_disk (load_from_disk / --train_data_dir); imagefolder: PNGs + metadata.jsonl")
    parser.add_argument("--cache_dir", default=None,
                        help="Where `npm pack` puts the tarballs (default: $GALIP_EMOJI_CACHE, else "
                             "~/.cache/galip_diffusers/npm).")
    for key, package in data.PACKAGES.items():
        parser.add_argument(f"--{key}_tarball", default=None, help=f"An existing {package.spec} tarball.")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[dict]:
    """Everything that can be checked before the build, as one-line errors naming the flag (``parser.error``, and
    exit status 1 for a bad tarball); returns the given tarballs (``None``: fetched into the cache folder)."""
    given = {key: getattr(args, f"{key}_tarball") for key in data.PACKAGES}
    if any(given.values()) and not all(given.values()):
        parser.error("pass all of " + ", ".join(f"--{key}_tarball" for key in given) + ", or none")
    try:  # empty, under a file, not writable, existing: found now, not after the build (the save checks again)
        check_new_folder("output_dir", args.output_dir)
        if not all(given.values()):
            data.check_cache_dir(args.cache_dir, "--cache_dir")
    except (ValueError, OSError) as error:
        parser.error(str(error))
    if not all(given.values()):
        return None
    for key, path in given.items():
        try:  # a folder, a missing file, another package's tarball (two flags swapped), a corrupt one
            data.verify_tarball(path, data.PACKAGES[key])
        except (ValueError, OSError) as error:  # exit status 1, as when the build finds it
            parser.exit(1, f"{parser.prog}: error: --{key}_tarball: {error}\n")
    return given


def main(argv: Optional[Iterable[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    save = data.save_dataset if args.format == "arrow" else data.export_imagefolder
    try:  # one line, not a traceback: npm failing, a corrupt tarball, a folder made meanwhile, a full disk, a signal
        with terminate_as_interrupt():
            tarballs = check_args(parser, args)
            dataset = data.build_dataset(tarballs, cache_dir=args.cache_dir, split=args.split)
            print(f"wrote {len(dataset)} images to {save(dataset, args.output_dir, split=args.split)}")
    except (OSError, data.EmojiDataError, RuntimeError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (galip_core.staging.Terminated)
        parser.exit(130, f"{parser.prog}: interrupted; nothing was written to {args.output_dir}\n")


if __name__ == "__main__":
    main()
