"""``galip env``: the versions, device, CPU flags and thread counts to paste into a bug report (like
``diffusers-cli env``); the same facts ``galip benchmark`` records with its figures (:func:`galip_core.machine.environment`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from galip_cli.common import CommandParser, run_cli


def build_parser(prog: str = "galip-env") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog, description="Print the versions, device, CPU flags and thread counts (for bug reports).",
        epilog="examples:\n  %(prog)s\n  %(prog)s --json --output_file environment.json\n\n"
               "bf16 on CPU says whether this CPU computes bf16 natively (AMX / AVX512-BF16) or emulates it (slow: "
               "use fp32 there);\n--dtype auto picks shows what `galip generate` and `galip demo` choose by default.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the list")
    parser.add_argument("--output_file", default=None, help="also write the report to this file")
    return parser


def format_environment(env: dict[str, Any]) -> str:
    """The Markdown list ``galip env`` prints."""
    packages = env["packages"]
    lines = [f"- {name}: {version or 'not installed'}" for name, version in packages.items()]
    threads = f"{env['torch_threads']} torch intra-op, {env['torch_interop_threads']} inter-op"
    if env.get("omp_num_threads"):
        threads += f", OMP_NUM_THREADS={env['omp_num_threads']}"
    lines += [
        f"- Python: {env['python']}",
        f"- Platform: {env['platform']}",
        f"- CPU: {env['cpu']} ({env['cpu_count']} logical cores)",
        f"- CPU flags: {' '.join(env['cpu_flags']) or 'unknown'}; PyTorch CPU capability {env['cpu_capability']}",
        f"- bf16 on CPU: {env['cpu_bf16']}",
        f"- Threads: {threads}",
        f"- GPU: {env['gpu'] + ' (CUDA ' + str(env['cuda']) + ')' if env['gpu'] else 'none'}",
        "- --dtype auto picks: " + ", ".join(f"{dtype} on {device}" for device, dtype in env["auto_dtype"].items()),
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from galip_core.machine import environment

    env = environment()
    text = json.dumps(env, indent=2) if args.json else format_environment(env)
    if args.output_file:
        folder = os.path.dirname(os.path.abspath(args.output_file))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--output_file: the folder {folder!r} does not exist.")
        with open(args.output_file, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "galip-env") -> int:
    """Entry point of ``galip env`` / ``galip-env``."""
    return run_cli(_run, build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
