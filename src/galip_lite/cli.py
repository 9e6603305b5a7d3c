"""The ``galip`` command (``galip generate | convert | train | eval | benchmark | demo``) and the error handling shared
by every ``galip-*`` command (all re-exported by :mod:`galip_diffusers.cli`).

Each subcommand lives in its own module, which exposes ``build_parser(prog)`` and ``main(argv, prog)``; ``galip NAME
ARGS`` calls ``main(ARGS, prog="galip NAME")``, and the ``galip-NAME`` console scripts call the same ``main``. The
modules are imported only when their command runs. This module sits outside galip_diffusers, whose import loads
diffusers and transformers (seconds), so ``galip --help`` and ``galip generate`` with the lite engine start fast,
and ``galip generate`` never imports gradio.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from . import __version__

#: ``--dtype`` choices; ``auto`` is bf16 where the device computes it natively, else fp32 (:mod:`galip_lite.machine`)
DTYPES = ("auto", "fp32", "fp16", "bf16")

#: ``check(parser, args)``: validation after parsing; it calls ``parser.error`` (exit code 2) on bad arguments.
ArgsCheck = Callable[[argparse.ArgumentParser, argparse.Namespace], None]


def run_cli(
    main: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    check: Optional[ArgsCheck] = None,
    plain_errors: tuple[type[BaseException], ...] = (),
    pass_unknown: bool = False,
    interrupt_note: str = "",
) -> int:
    """Parse ``argv`` and run ``main(args)``; return its exit code.

    Bad arguments exit with code 2 (argparse). An exception from ``main`` becomes one line on stderr,
    ``PROG: error: Type: message`` (without ``Type:`` for the classes in ``plain_errors``, whose messages stand alone),
    and exit code 1; ``--debug`` (added to ``parser`` unless it has one) re-raises it, showing the traceback. With
    ``pass_unknown``, arguments the parser does not know are kept in ``args.extra_args`` instead of being an error.
    """
    if "--debug" not in parser._option_string_actions:  # noqa: SLF001  (argparse has no public lookup)
        parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    if pass_unknown:
        args, extra = parser.parse_known_args(argv)
        args.extra_args = extra
    else:
        args = parser.parse_args(argv)
    if check is not None:
        check(parser, args)
    try:
        return main(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted{'; ' + interrupt_note if interrupt_note else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (a CLI boundary: report, don't crash)
        if args.debug:
            raise
        label = "" if isinstance(err, plain_errors) else f"{type(err).__name__}: "
        message = " ".join(str(err).split()) or "(no message)"  # one line, whatever the exception's text
        print(f"{parser.prog}: error: {label}{message}", file=sys.stderr)
        return 1


def resolve_dtype_name(name: str, device: str = "cpu", warn: bool = True) -> str:
    """``--dtype`` as ``"fp32" | "fp16" | "bf16"``: ``auto`` becomes bf16 where ``device`` has it natively, else
    fp32; bf16 asked for on a CPU that emulates it is kept, with a warning that says what to use instead."""
    from .machine import auto_dtype_name, warn_if_emulated_bf16

    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {name!r}.")
    if name == "auto":
        return auto_dtype_name(device)
    if warn:
        warn_if_emulated_bf16(name, device)
    return name


def torch_dtype(name: str, device: str = "cpu", warn: bool = True):
    """``"auto" | "fp32" | "fp16" | "bf16"`` -> the ``torch.dtype`` (``auto``: see :func:`resolve_dtype_name`)."""
    import torch

    name = resolve_dtype_name(name, device, warn)
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# ------------------------------------------------------------------------------------------------ the galip command
@dataclass(frozen=True)
class Command:
    """A ``galip`` subcommand: the module holding its ``build_parser``/``main``, and a one-line summary."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "generate": Command("galip_lite.generate", "generate images from prompts and write PNG files"),
    "convert": Command("galip_diffusers.conversion", "convert an official GALIP checkpoint into a diffusers folder"),
    "train": Command("galip_diffusers.train_launcher", "print (or --run) the accelerate command of "
                     "training/train_galip.py"),
    "eval": Command("galip_diffusers.evaluation", "FID and CLIP score of a pipeline (or FID statistics of a data set)"),
    "benchmark": Command("galip_diffusers.benchmark", "speed of GALIP vs SD-1.5, LDM-256 and SD-Turbo"),
    "demo": Command("galip_diffusers.demo", "Gradio web demo: generation, CLIP refinement, interpolation"),
    "env": Command("galip_lite.env", "print versions, device, CPU flags and thread counts (for bug reports)"),
}  # fmt: skip

GALIP_EXAMPLES = """examples:
  galip generate "a large red circle on a white background" --num-images 4 --out samples/
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
    parser = argparse.ArgumentParser(
        prog=prog,
        description="GALIP text-to-image (one forward pass per image) with diffusers: generate, convert, train, "
        "evaluate, benchmark, demo.",
        epilog=GALIP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    """``galip-generate``'s entry point (kept for existing imports; the command is :mod:`galip_lite.generate`)."""
    from .generate import main as _main

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
