"""``galip train``: the ``accelerate launch training/train_galip.py ...`` command line for the given arguments.

The training script is an example-style script (like diffusers' ``examples/``): it lives in the source repository's
``training/`` folder and is not part of the installed package. So ``galip train ARGS`` prints the command to run from a
source checkout; with ``--run`` it also runs it, when the script can be found (``--script``, ``./training/``, or the
checkout an editable install points to).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import shlex
import shutil
import subprocess
import sys
from typing import Sequence

from galip_cli.common import CommandParser, run_cli

SCRIPT = os.path.join("training", "train_galip.py")

EXAMPLES = """examples:
  %(prog)s --train_data_dir data/shapes_train --output_dir galip-shapes-ft --max_train_steps 2000
  %(prog)s --accelerate_args="--num_processes 2 --mixed_precision bf16" --pretrained_model_name_or_path galip-coco \\
      --train_data_dir data/coco --output_dir galip-coco-ft
  %(prog)s --run --script ~/galip-diffusers/training/train_galip.py --train_data_dir data/x --output_dir out

Every argument this command does not know is passed to train_galip.py unchanged (see its --help, or
training/README.md). training/ is not part of the installed package: run the printed command from a galip-diffusers
source checkout (git clone ...), after `pip install -e ".[train]"`.
"""


class TrainScriptNotFound(FileNotFoundError):
    """The training script is not where ``--run`` looked for it."""


class TrainArgumentsError(ValueError):
    """The training script refuses the arguments (checked by ``--run`` before it launches anything)."""


def check_training_arguments(script: str, train_args: Sequence[str]) -> None:
    """Run the script's own argument checks (``parse_args`` and ``preflight``: no model or data is loaded) in this
    process, so that bad arguments are one line here instead of a traceback from every launched process. Raises
    :class:`TrainArgumentsError` with the script's message."""
    if any(a in ("-h", "--help") for a in train_args):
        return  # the launched script prints its help
    with open(script, encoding="utf-8") as f:
        if "\ndef preflight(" not in f.read():
            return  # not train_galip.py (another --script): it has no checks to run here
    spec = importlib.util.spec_from_file_location("_galip_train_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            args = module.parse_args(list(train_args))
        module.preflight(args)
    except SystemExit as exit_:  # argparse: usage lines, then "prog: error: ..."; keep the error line
        lines = [line for line in usage.getvalue().splitlines() if line.strip()]
        raise TrainArgumentsError(lines[-1] if lines else f"the training script exited with {exit_.code}") from None
    except (ValueError, OSError) as err:
        raise TrainArgumentsError(f"{os.path.basename(script)}: {err}") from None


def build_parser(prog: str = "galip train") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Print the `accelerate launch training/train_galip.py ...` command for these training arguments "
        "(or run it with --run).",
        epilog=EXAMPLES,
        allow_abbrev=False,  # unknown options go to train_galip.py; never read them as abbreviations of ours
    )
    parser.add_argument("--run", action="store_true", help="also run the command (needs the training script)")
    parser.add_argument("--script", default=None,
                        help=f"path of train_galip.py (default: ./{SCRIPT}, else the source checkout's)")
    parser.add_argument("--accelerate_args", default="",
                        help='options for `accelerate launch`, one string: --accelerate_args="--num_processes 2"')
    return parser  # fmt: skip


def source_checkout_script() -> str | None:
    """``training/train_galip.py`` of the source tree this package is imported from (an editable install), if any."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.join(os.path.dirname(os.path.dirname(package_dir)), SCRIPT)  # <repo>/src/galip_cli
    return candidate if os.path.isfile(candidate) else None


def find_script(script: str | None) -> str:
    """The training script to run: ``script`` if given, else ``./training/train_galip.py``, else the source
    checkout's. Raises :class:`TrainScriptNotFound` with what was tried."""
    if script is not None:
        if not os.path.isfile(script):
            raise TrainScriptNotFound(f"--script: {script!r} does not exist.")
        return script
    tried = [SCRIPT]
    if os.path.isfile(SCRIPT):
        return SCRIPT
    found = source_checkout_script()
    if found:
        return found
    raise TrainScriptNotFound(
        f"{' or '.join(tried)} not found: training/ is not part of the installed package. Run from a galip-diffusers "
        "source checkout, or pass --script PATH/TO/train_galip.py."
    )


def launch_command(train_args: Sequence[str], accelerate_args: str = "", script: str = SCRIPT,
                   quiet: bool = False) -> list[str]:
    """``["accelerate", "launch", *accelerate_args, script, *train_args]``; with ``quiet``, ``--quiet`` is added
    (unless ``accelerate_args`` has it), so that a script's one-line error is not followed by the launcher's own
    traceback."""
    launcher = shlex.split(accelerate_args)
    if quiet and not {"--quiet", "-q"} & set(launcher):
        launcher.insert(0, "--quiet")
    return ["accelerate", "launch", *launcher, script, *train_args]


def _run(args: argparse.Namespace) -> int:
    train_args = list(args.extra_args)
    if "--" in train_args:  # `galip train [--run] -- --flag ...`: the separator is ours, not the script's
        train_args.remove("--")
    if not args.run:
        print(shlex.join(launch_command(train_args, args.accelerate_args, args.script or SCRIPT)))
        print(
            "# training/ ships with the source repository, not with the installed package: run this line from a "
            "galip-diffusers checkout (pip install -e \".[train]\"), or add --run to run it now.",
            file=sys.stderr,
        )
        return 0
    script = find_script(args.script)
    check_training_arguments(script, train_args)
    command = launch_command(train_args, args.accelerate_args, script, quiet=True)
    print(shlex.join(command), file=sys.stderr)
    if shutil.which("accelerate") is None:  # same launcher, through this interpreter
        command = [sys.executable, "-m", "accelerate.commands.launch", *command[2:]]
    return subprocess.call(command)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--accelerate_args`` is split like a shell line: an unbalanced quote is an argument error naming the flag."""
    try:
        shlex.split(args.accelerate_args)
    except ValueError as err:
        parser.error(f"--accelerate_args {args.accelerate_args!r} cannot be split like a shell line ({err}); "
                     "balance its quotes.")


def main(argv: Sequence[str] | None = None, prog: str = "galip train") -> int:
    """Entry point of ``galip train``."""
    plain = (TrainScriptNotFound, TrainArgumentsError)
    return run_cli(_run, build_parser(prog), argv, check=check_args, pass_unknown=True, plain_errors=plain)


if __name__ == "__main__":
    sys.exit(main())
