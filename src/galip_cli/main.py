"""The ``galip`` command: ``galip generate | convert | train | eval | benchmark | demo | env``.

Each command lives in its own module of :mod:`galip_cli`, which exposes ``build_parser(prog)`` and ``main(argv,
prog)``; ``galip NAME ARGS`` calls ``main(ARGS, prog="galip NAME")``, and the ``galip-NAME`` console scripts call the
same ``main``. This front door imports nothing heavy: a command's module (and with it diffusers, transformers or
gradio) is imported only when that command runs, so ``galip --help`` and ``galip generate`` with the fast engine
start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence

from galip_cli.common import CommandParser
from galip_core import __version__


@dataclass(frozen=True)
class Command:
    """A ``galip`` subcommand: the module holding its ``build_parser``/``main``, and a one-line summary."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "generate": Command("galip_cli.generate", "generate images from prompts and write PNG files"),
    "convert": Command("galip_cli.convert", "convert an official GALIP checkpoint into a diffusers folder"),
    "train": Command("galip_cli.train", "print (or --run) the accelerate command of "
                     "training/train_galip.py"),
    "eval": Command("galip_cli.eval", "FID and CLIP score of a pipeline (or FID statistics of a data set)"),
    "benchmark": Command("galip_cli.benchmark", "speed of GALIP vs SD-1.5, LDM-256 and SD-Turbo"),
    "demo": Command("galip_cli.demo", "Gradio web demo: generation, CLIP refinement, interpolation"),
    "env": Command("galip_cli.env", "print versions, device, CPU flags and thread counts (for bug reports)"),
}  # fmt: skip

GALIP_EXAMPLES = """examples:
  galip generate "a large red circle on a white background" --num_images 4 --out samples/
  galip convert --checkpoint pre_coco.pth --clip ViT-B-32.pt --output_dir galip-coco
  galip train --train_data_dir data/shapes --output_dir galip-ft --max_train_steps 1000
  galip eval --model galip-coco --dataset data/coco_val --no_fid --num_images 1000
  galip benchmark --galip default-config --quick
  galip demo --model galip-coco --port 7860
  galip env

`galip COMMAND --help` shows a command's options and examples. Every command is also installed as galip-COMMAND
(galip-generate, galip-convert, galip-eval, galip-benchmark, galip-demo, galip-env). Errors: one line on stderr and a non-zero
exit code; add --debug to a command to see the traceback.
"""


def build_parser(prog: str = "galip") -> argparse.ArgumentParser:
    """The top-level parser: it lists the commands (``galip --help``) and rejects unknown ones."""
    parser = CommandParser(
        prog=prog,
        description="GALIP text-to-image (one forward pass per image) with diffusers: generate, convert, train, "
        "evaluate, benchmark, demo.",
        epilog=GALIP_EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``galip``: dispatch ``galip COMMAND ARGS`` to the command's own ``main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help / --version exit 0; a missing or unknown command exits 2
        return 2  # not reached: anything that is not a command is an argparse error
    name = argv[0]
    module = importlib.import_module(COMMANDS[name].module)
    return module.main(argv[1:], prog=f"galip {name}")


def generate_main(argv: Sequence[str] | None = None) -> int:
    """``galip-generate``'s entry point (kept for existing imports; the command is :mod:`galip_cli.generate`)."""
    from galip_cli.generate import main as _main

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
