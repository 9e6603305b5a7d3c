#!/usr/bin/env python
"""Default forward vs ``enable_fast_inference()`` (fp32) of the same GALIP pipeline, in one run, calls interleaved.

The two pipelines share their weights' values (the fast one is a deep copy, since fast inference rewrites its
generator); the timed calls alternate (default, fast, default, ...), so that a busy machine slows both alike, and the
ratio of the medians is the figure. Also reports the largest pixel difference between the two outputs.

    python scripts/measure_fast_inference.py --model default-config --batch-sizes 1 8 --repeats 7 --threads 2
    python scripts/measure_fast_inference.py --model galip-shapes --batch-sizes 1 64
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from galip_diffusers.benchmark.peers import build_galip_pipeline, galip_spec
from galip_core.machine import environment


def timed(pipe, batch: int) -> tuple[float, object]:
    start = time.perf_counter()
    out = pipe("a large red circle on a white background", num_images_per_prompt=batch,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default-config",
                        help="'default-config' (official size, random weights), a packaged name or a folder")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant and batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant and batch size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
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
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
