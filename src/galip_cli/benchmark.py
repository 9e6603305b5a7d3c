"""``galip benchmark`` / ``galip-benchmark``: the command line of :mod:`galip_diffusers.benchmark.runner`.

Exit status: 0 when every row ran, 1 when at least one row failed (the others still run and are written) or on an
error, 2 for invalid command-line arguments (nothing runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from galip_cli.common import CommandParser, as_argument_error, check_output_folder, run_cli
from galip_core.finite import check_number_in_range
from galip_diffusers.benchmark.peers import GALIP_VARIANTS, PEERS, SCALES, galip_spec
from galip_diffusers.benchmark.runner import check_batch_memory, check_peer_batch_memory, run_benchmark
from galip_diffusers.benchmark.timing import DEVICES, DTYPES


#: ``--threads`` may be at most this many times ``os.cpu_count()``. More threads than cores only measures
#: oversubscription, and a huge count makes torch/OpenMP fail after the model has loaded (``--threads 99999`` ended
#: in a bare ``MemoryError``); 4x leaves room to measure oversubscription on purpose.
MAX_THREADS_PER_CPU = 4


def max_threads() -> int:
    """The largest ``--threads`` accepted on this machine (see :data:`MAX_THREADS_PER_CPU`)."""
    return MAX_THREADS_PER_CPU * (os.cpu_count() or 1)


def _int_list(name: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be comma-separated integers, got {text!r}") from None
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{name} must be positive integers, got {text!r}")
        _refuse_repeats(name, values)
        return values

    return parse


def _choice_list(name: str, allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"{name}: {bad or text!r} not in {', '.join(allowed)}")
        _refuse_repeats(name, values)
        return values

    return parse


def _refuse_repeats(name: str, values: list) -> None:
    """A value given twice would time (and report) the same rows twice."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{name}: {', '.join(repeated)} given more than once")


BENCHMARK_EXAMPLES = """examples:
  %(prog)s --galip default-config --dtype fp32,bf16 --batch_sizes 1,8 --quick --out results/
  %(prog)s --galip path/to/galip-folder --peers none --batch_sizes 1,8,32        # GALIP alone
  %(prog)s --galip path/to/galip-folder --sd path/to/sd15 --ldm path/to/ldm-256 --sd_turbo path/to/sd-turbo \\
      --device cuda --dtype fp16

Without a local folder, a peer is built from its published config with random weights (speed does not depend on
weight values). Exit status: 0 all rows ran; 1 some rows failed (reported, others still ran); 2 bad arguments.
"""


def build_parser(prog: str = "galip-benchmark") -> argparse.ArgumentParser:
    p = CommandParser(
        prog=prog,
        description="Side-by-side speed benchmark: GALIP (one forward pass) vs SD-1.5, LDM-256 and SD-Turbo.",
        epilog=BENCHMARK_EXAMPLES,
    )
    p.add_argument("--galip", default="default-config",
                   help="'default-config' (official size, random weights), 'tiny', a packaged name or a folder")
    p.add_argument("--galip_variants", default=["fast"], type=_choice_list("--galip_variants", GALIP_VARIANTS),
                   help="GALIP rows: fast (enable_fast_inference), default (plain pipeline), compiled (fast + "
                        "torch.compile); comma-separated (default: fast)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"comma-separated peers from {', '.join(PEERS)}, or 'none' alone (GALIP only); default: all")
    p.add_argument("--sd", metavar="PATH", help="a local StableDiffusionPipeline folder (SD-1.5)")
    p.add_argument("--ldm", metavar="PATH", help="a local LDMTextToImagePipeline folder (ldm-text2im-large-256)")
    p.add_argument("--sd_turbo", metavar="PATH", help="a local SD-Turbo folder (AutoPipelineForText2Image)")
    p.add_argument("--peer_scale", choices=SCALES, default="full",
                   help="'tiny' builds tiny peers (same block types) for tests; default: full published configs")
    p.add_argument("--device", default=["cpu"], type=_choice_list("--device", DEVICES),
                   help="cpu, cuda or both (comma-separated); default: cpu")
    p.add_argument("--dtype", default=["fp32"], type=_choice_list("--dtype", tuple(DTYPES)),
                   help="fp32, fp16, bf16, comma-separated (each model runs in each); default: fp32")
    p.add_argument("--batch_sizes", default=[1, 8, 32], type=_int_list("--batch_sizes"),
                   help="GALIP batch sizes (default: 1,8,32)")
    p.add_argument("--peer_batch_sizes", default=[1], type=_int_list("--peer_batch_sizes"),
                   help="peer batch sizes (default: 1; a 50-step peer at batch 32 takes hours on a CPU)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps of SD-1.5 and LDM (SD-Turbo: 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per GALIP batch size (default: 5)")
    p.add_argument("--peer_repeats", type=int, default=2, help="timed calls per peer batch size (default: 2)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed GALIP calls per batch size (default: 2); peers get one 1-step warm-up call")
    p.add_argument("--quick", action="store_true",
                   help="time --quick_steps denoising steps and extrapolate to --steps (stated in the output)")
    p.add_argument("--quick_steps", type=int, default=3, help="steps timed in --quick mode (>= 2; default 3)")
    p.add_argument("--no_channels_last", action="store_true",
                   help="do not put peers' UNet/VAE in channels_last (default: they are, as GALIP's fast path)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch.set_num_threads, 1 to {MAX_THREADS_PER_CPU} x the CPU count ({max_threads()} here; "
                        "default: torch's choice)")
    p.add_argument("--out", default="results",
                   help="output folder for benchmark.json/.md/.png (checked before anything runs; files of these "
                        "names in it are replaced)")
    p.add_argument("--no_plot", action="store_true", help="skip benchmark.png (needs matplotlib)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="print tracebacks")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks before anything runs; ``parser.error`` (exit code 2) on a bad value."""
    for name, low, high in (("steps", 1, None), ("repeats", 1, None), ("peer_repeats", 1, None), ("warmup", 0, None),
                            ("quick_steps", 2, None), ("threads", 1, max_threads())):  # fmt: skip
        value = getattr(args, name)
        if value is not None or name != "threads":
            as_argument_error(parser, lambda: check_number_in_range(f"--{name}", value, low, high, integer=True))
    peers = [n.strip().lower() for n in args.peers.split(",") if n.strip()]
    if not peers:
        parser.error(f"--peers is empty: give peers from {', '.join(PEERS)}, or 'none' (GALIP only)")
    if "none" in peers and len(peers) > 1:
        parser.error(f"--peers: 'none' cannot be combined with peers ({args.peers!r}); give 'none' alone, or the "
                     f"peers to run from {', '.join(PEERS)}")
    folders = [flag for flag, folder in (("--sd", args.sd), ("--ldm", args.ldm), ("--sd_turbo", args.sd_turbo))
               if folder is not None]
    if peers == ["none"] and folders:
        parser.error(f"--peers none runs GALIP alone, but {', '.join(folders)} adds "
                     f"{'its peer' if len(folders) == 1 else 'their peers'}: drop one of the two.")
    as_argument_error(parser, lambda: check_output_folder("--out", args.out))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def _run(args: argparse.Namespace, prog: str = "galip-benchmark") -> int:
    from galip_diffusers.benchmark.report import print_summary, write_report

    error = galip_spec(args.galip).error  # a model that is not there fails here (exit 1, as in the other commands),
    if error:  # not as a row after the peers ran
        raise FileNotFoundError(error)
    for flag, folder in (("--sd", args.sd), ("--ldm", args.ldm), ("--sd_turbo", args.sd_turbo)):
        if folder is not None and not os.path.isdir(folder):  # the same for a peer's folder, before the GALIP rows
            raise FileNotFoundError(f"{flag} {folder!r} is not a folder (a local diffusers pipeline folder).")
    check_batch_memory(args)  # before any model is built
    check_peer_batch_memory(args)  # and for the peers, before the GALIP rows spend their minutes
    report = run_benchmark(args)
    paths = write_report(report, args.out, plot=not args.no_plot)
    print_summary(report, paths)
    failed = [row for row in report["rows"] if row["status"] != "ok"]
    for row in failed:
        print(f"{prog}: error: row {row['name']} [{row['device']}/{row['dtype']}] failed: {row['error']}",
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None, prog: str = "galip-benchmark") -> int:
    """``galip-benchmark`` / ``galip benchmark`` (exit status: see the module docstring)."""
    return run_cli(lambda args: _run(args, prog), build_parser(prog), argv, check=check_args)



if __name__ == "__main__":
    sys.exit(main())
