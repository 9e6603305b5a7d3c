"""The error handling and argument helpers shared by every ``galip-*`` command (re-exported by
:mod:`galip_diffusers.cli`). It lives here, outside galip_diffusers, so that ``galip-generate`` can use it without
importing diffusers."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

DTYPES = ("fp32", "fp16", "bf16")

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


def torch_dtype(name: str):
    """``"fp32" | "fp16" | "bf16"`` -> the ``torch.dtype``."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {name!r}.")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
