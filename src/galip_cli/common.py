"""The ``galip`` command (``galip generate | convert | train | eval | benchmark | demo | env``) and the error handling shared
by every ``galip-*`` command (all re-exported by :mod:`galip_cli.common`).

Each subcommand lives in its own module, which exposes ``build_parser(prog)`` and ``main(argv, prog)``; ``galip NAME
ARGS`` calls ``main(ARGS, prog="galip NAME")``, and the ``galip-NAME`` console scripts call the same ``main``. The
modules are imported only when their command runs. This module sits outside galip_diffusers, whose import loads
diffusers and transformers (seconds), so ``galip --help`` and ``galip generate`` with the lite engine start fast,
and ``galip generate`` never imports gradio.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Optional, Sequence, TypeVar

from galip_core.paths import check_output_file, check_output_folder  # noqa: F401  (re-exported for the commands)


#: ``--dtype`` choices; ``auto`` is bf16 where the device computes it natively, else fp32 (:mod:`galip_core.machine`)
DTYPES = ("auto", "fp32", "fp16", "bf16")

T = TypeVar("T")

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
    from galip_core.machine import auto_dtype_name, warn_if_emulated_bf16

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


# ------------------------------------------------------------------------------------------------ flag spelling
#: The documented flag style: underscores, as diffusers' and accelerate's scripts spell them (``--num_images``).
FLAG_STYLE_NOTE = ("Flags are spelled with underscores (--num_images); the dash spelling (--num-images) is accepted "
                   "everywhere as an alias.")


def flag_spellings(name: str) -> list[str]:
    """``"--num-images"`` or ``"--num_images"`` -> ``["--num_images", "--num-images"]``: the documented underscore
    spelling first, then the dash alias; short options and positionals are returned unchanged."""
    if not name.startswith("--"):
        return [name]
    body = name[2:]
    under, dash = "--" + body.replace("-", "_"), "--" + body.replace("_", "-")
    return [under] if under == dash else [under, dash]


class CommandHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` lists each option under its documented spelling only (the aliases still parse)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        aliases = getattr(action, "aliases", ())
        if not aliases:
            return super()._format_action_invocation(action)
        spelled = action.option_strings
        action.option_strings = [s for s in spelled if s not in aliases]
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = spelled


class CommandParser(argparse.ArgumentParser):
    """The parser of every ``galip`` command: each ``--long_option`` is registered under its underscore spelling and
    its dash alias (hidden from ``--help``, see :func:`flag_spellings`); descriptions and example epilogs are kept as
    written."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", CommandHelpFormatter)
        if kwargs.get("epilog"):
            kwargs["epilog"] = kwargs["epilog"].rstrip("\n") + "\n\n" + FLAG_STYLE_NOTE + "\n"
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        spelled: list[str] = []
        for name in names:
            spelled += [s for s in flag_spellings(name) if s not in spelled]
        documented = {flag_spellings(name)[0] for name in names}
        action = super().add_argument(*spelled, **kwargs)
        action.aliases = tuple(s for s in spelled if s not in documented)
        return action


# ------------------------------------------------------------------------------------------------ output paths
def as_argument_error(parser: argparse.ArgumentParser, check: Callable[[], T]) -> T:
    """``check()``'s result; a ``ValueError`` or ``OSError`` it raises becomes ``parser.error`` (exit code 2) with its
    message: for checks of the arguments made after parsing, before the work they would spoil."""
    try:
        return check()
    except (ValueError, OSError) as err:
        parser.error(str(err))
