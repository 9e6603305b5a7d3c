#!/usr/bin/env python
"""Default forward vs ``enable_fast_inference()`` (fp32) of the same GALIP pipeline, in one run, calls interleaved.

The two pipelines share their weights' values (the fast one is a deep copy, since fast inference rewrites its
generator); the timed calls alternate (default, fast, default, ...), so that a busy machine slows both alike, and the
ratio of the medians is the figure. Also reports the largest pixel difference between the two outputs.

    python scripts/measure_fast_inference.py --model default-config --batch_sizes 1 8 --repeats 7 --threads 2
    python scripts/measure_fast_inference.py --model galip-shapes --batch_sizes 1 64
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from galip_cli.common import as_argument_error, check_output_file
from galip_core.finite import check_number_in_range
from galip_core.machine import environment
from galip_core.paths import check_apart
from galip_diffusers.benchmark.peers import build_galip_pipeline, galip_spec


def timed(pipe, batch: int) -> tuple[float, object]:
    start = time.perf_counter()
    out = pipe("a large red circle on a white background", num_images_per_prompt=batch,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    return time.perf_counter() - start, out


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Ranges, the model and the output file, before any model loads (``parser.error``: exit code 2)."""
    ranges = [("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)]
    ranges += [("--batch_sizes", batch, 1) for batch in args.batch_sizes]
    repeated = sorted({batch for batch in args.batch_sizes if args.batch_sizes.count(batch) > 1})
    if repeated:
        parser.error(f"--batch_sizes: {', '.join(map(str, repeated))} given more than once")
    for flag, value, low in ranges:
        if value is not None or flag != "--threads":
            as_argument_error(parser, lambda: check_number_in_range(flag, value, low, integer=True))
    error = galip_spec(args.model).error
    if error:
        parser.error(error.replace("--galip", "--model", 1))
    if args.out is not None:
        as_argument_error(parser, lambda: check_output_file("--out", args.out))
        as_argument_error(parser, lambda: check_apart("--out", args.out, {"--model": args.model}))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default-config",
                        help="'default-config' (official size, random weights), a packaged name or a folder")
    parser.add_argument("--batch_sizes", "--batch-sizes", type=int, nargs="+", default=[1, 8],
                        help=">= 1 each, no repeats (default: 1 8)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant and batch size, >= 1")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant and batch size, >= 0")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (default: torch's choice)")
    parser.add_argument("--out", default=None, help="write the report as JSON here (an existing file is replaced)")
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    default = build_galip_pipeline(galip_spec(args.model, "default"))
    default.set_progress_bar_config(disable=True)
    fast = copy.deepcopy(default)
    fast.enable_fast_inference()
    env = environment()
    report = {"model": args.model, "cpu": env["cpu"], "cpu_flags": env["cpu_flags"], "torch": env["torch"],
              "threads": torch.get_num_threads(), "load_average": env["load_average"], "rows": []}
    with torch.no_grad():
        for batch in args.batch_sizes:
            for _ in range(args.warmup):
                timed(default, batch), timed(fast, batch)
            times = {"default": [], "fast": []}
            diff = 0.0
            for _ in range(args.repeats):
                t_default, a = timed(default, batch)
                t_fast, b = timed(fast, batch)
                times["default"].append(t_default)
                times["fast"].append(t_fast)
                diff = max(diff, float(abs(a - b).max()))
            row = {"batch_size": batch, **{f"{k}_s_per_image": statistics.median(v) / batch for k, v in times.items()},
                   "speedup": statistics.median(times["default"]) / statistics.median(times["fast"]),
                   "max_abs_pixel_diff": diff}
            report["rows"].append(row)
            print(json.dumps(row))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
