"""Measure ``galip-convert`` on a full-size, official-format random checkpoint: wall time and peak RAM.

    PYTHONPATH=src python scripts/measure_conversion.py [--workdir /tmp/galip-measure] [--keep]

Builds (once, in ``--workdir``) a random GALIP checkpoint with exactly the released key/shape layout, including
full-size Adam states (so the file is about as large as ``pre_coco.pth``), and an OpenAI-style CLIP ViT-B/32
TorchScript archive in fp16 (like ``ViT-B-32.pt``). Then runs the converter in a child process under
``/usr/bin/time -v`` and writes ``results/conversion_benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import official_fixtures as fx  # noqa: E402


def _adam_state(nets: dict) -> dict:
    params = [v for k, v in nets["netG"].items() if not k.startswith("mapping.CLIP_ViT.")]
    return {
        "state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
                  for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-4, "betas": (0.0, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                          "params": list(range(len(params)))}],
    }  # fmt: skip


def build_inputs(workdir: str) -> tuple[str, str]:
    ckpt, clip_file = os.path.join(workdir, "pre_random.pth"), os.path.join(workdir, "ViT-B-32-random.pt")
    if os.path.isfile(ckpt) and os.path.isfile(clip_file):
        return ckpt, clip_file
    os.makedirs(workdir, exist_ok=True)
    clip_model = fx.make_openai_clip(fx.FULL)
    nets = fx.make_official_nets(clip_model, fx.FULL)
    checkpoint = fx.official_checkpoint(nets, ddp=True)
    checkpoint["optimizers"] = {"optimizer_G": _adam_state(nets)}
    torch.save(checkpoint, ckpt)
    image = torch.zeros(1, 3, 224, 224)
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :2] = torch.tensor([49406, 49407])
    with torch.no_grad():
        traced = torch.jit.trace(clip_model, (image, text), check_trace=False)
    traced.half().save(clip_file)
    return ckpt, clip_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/galip-measure")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--results", default=os.path.join(HERE, os.pardir, "results", "conversion_benchmark.json"))
    args = parser.parse_args()
    ckpt, clip_file = build_inputs(args.workdir)
    out = os.path.join(args.workdir, f"converted-{args.dtype}")
    command = [sys.executable, "-c", "import sys; from galip_diffusers.conversion.official import main; sys.exit(main())",
               "--checkpoint", ckpt, "--clip", clip_file, "--output_dir", out, "--overwrite", "--quiet",
               "--include_discriminator", "--dtype", args.dtype]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    result = {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "checkpoint_mb": round(os.path.getsize(ckpt) / 2**20, 1),
        "clip_mb": round(os.path.getsize(clip_file) / 2**20, 1),
        "dtype": args.dtype,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
