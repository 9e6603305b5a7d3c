"""Measure ``galip-convert`` on a full-size, official-format random checkpoint: wall time and peak RAM.

    python scripts/measure_conversion.py [--workdir /tmp/galip-measure] [--dtype fp32|fp16|bf16] [--size full|tiny]

Builds (once, in ``--workdir``) a random GALIP checkpoint with exactly the released key/shape layout, including
full-size Adam states (so the file is about as large as ``pre_coco.pth``), and an OpenAI-style CLIP ViT-B/32
TorchScript archive in fp16 (like ``ViT-B-32.pt``). Then runs ``galip-convert --include_discriminator`` on them in a
child process (``galip_cli.convert.main``), measures its wall time and peak resident memory, and writes
``results/conversion_benchmark-SIZE-DTYPE.json`` (``--results``). The inputs are built with the test fixtures
(``tests/helpers/official_fixtures.py``), so run it from a source checkout.

``--size tiny`` does the same with the tests' tiny geometry (seconds, not minutes): a smoke test of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from galip_core.paths import check_output_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))  # the test fixtures build the official-format inputs

from helpers import official_fixtures as fx  # noqa: E402

from galip_diffusers.conversion.official import DTYPES  # noqa: E402

#: The child process: ``galip-convert``'s ``main``; for ``--size tiny`` its converter gets the tiny geometry (the
#: command line has no option for other sizes than the official ones).
CHILD = """
import json, sys
from galip_cli import convert
from galip_diffusers.conversion.openai_clip import CLIPGeometry
sizes = json.loads(sys.argv[1])
if sizes:
    sizes["clip_geometry"] = CLIPGeometry(**sizes["clip_geometry"])
    original = convert.convert_official_checkpoint
    convert.convert_official_checkpoint = lambda *a, **k: original(*a, **k, **sizes)
sys.exit(convert.main(sys.argv[2:]))
"""
SIZES = {"full": fx.FULL, "tiny": fx.TINY}


def _adam_state(nets: dict) -> dict:
    params = [v for k, v in nets["netG"].items() if not k.startswith("mapping.CLIP_ViT.")]
    return {
        "state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
                  for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-4, "betas": (0.0, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                          "params": list(range(len(params)))}],
    }  # fmt: skip


def build_inputs(workdir: str, size: str = "full") -> tuple[str, str]:
    suffix = "" if size == "full" else f"-{size}"
    ckpt = os.path.join(workdir, f"pre_random{suffix}.pth")
    clip_file = os.path.join(workdir, f"ViT-B-32-random{suffix}.pt")
    if os.path.isfile(ckpt) and os.path.isfile(clip_file):
        return ckpt, clip_file
    os.makedirs(workdir, exist_ok=True)
    sizes = SIZES[size]
    clip_model = fx.make_openai_clip(sizes)
    nets = fx.make_official_nets(clip_model, sizes)
    checkpoint = fx.official_checkpoint(nets, ddp=True)
    checkpoint["optimizers"] = {"optimizer_G": _adam_state(nets)}
    torch.save(checkpoint, ckpt)
    resolution = sizes.clip["image_resolution"]
    image = torch.zeros(1, 3, resolution, resolution)
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :2] = torch.tensor([49406, 49407])
    with torch.no_grad():
        traced = torch.jit.trace(clip_model, (image, text), check_trace=False)
    traced.half().save(clip_file)
    return ckpt, clip_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/galip-measure")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="the converter's --dtype (fp16/bf16 also write the half-precision variant)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: the released geometry (default); tiny: the tests' tiny one, a quick smoke test")
    parser.add_argument("--results", default=None,
                        help="JSON file to write (an existing file is replaced; default: "
                             "results/conversion_benchmark-SIZE-DTYPE.json, so a tiny smoke test never replaces the "
                             "full-size figure)")
    args = parser.parse_args()
    if args.results is None:
        args.results = os.path.join(HERE, os.pardir, "results", f"conversion_benchmark-{args.size}-{args.dtype}.json")
    try:  # before the ~30 s conversion, not after it
        check_output_file("--results", args.results)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    ckpt, clip_file = build_inputs(args.workdir, args.size)
    out = os.path.join(args.workdir, f"converted-{args.size}-{args.dtype}")
    sizes = SIZES[args.size]
    extra = {} if args.size == "full" else {"clip_geometry": sizes.geometry, "generator_config": sizes.generator_config,
                                            "discriminator_config": sizes.discriminator_config}  # fmt: skip
    command = [sys.executable, "-c", CHILD, json.dumps(extra),
               "--checkpoint", ckpt, "--clip", clip_file, "--output_dir", out, "--overwrite", "--quiet",
               "--include_discriminator", "--dtype", args.dtype]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the conversion failed (exit code {proc.returncode}):\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the child's: the only one this process waited for
    peak_kb = peak / 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux
    result = {
        "size": args.size,
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
