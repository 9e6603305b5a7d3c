"""Command-line entry points: ``galip-generate`` (and the shared error handling of every ``galip-*`` command)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

DTYPES = ("fp32", "fp16", "bf16")

GENERATE_EXAMPLES = """examples:
  galip-generate "a large red circle on a white background"
  galip-generate "a small bird with a red head" --model ./galip-coco --num-images 8 --seed 1 --out samples/
  galip-generate --prompt-file prompts.txt --num-images 4 --dtype bf16
"""


def run_cli(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``main``; errors become one line on stderr and exit code 1 (traceback with --debug)."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    try:
        return main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (a CLI boundary: report, don't crash)
        if args.debug:
            raise
        print(f"{parser.prog}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {name!r}.")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galip-generate",
        description="Generate images with a GALIP pipeline (one forward pass) and write them as PNG files.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="*", help="one or more prompts (quote each)")
    parser.add_argument("--prompt-file", help="a text file with one prompt per line (blank lines are skipped)")
    parser.add_argument("--model", default="galip-shapes", help="pipeline folder, Hub id or packaged name (default: galip-shapes)")
    parser.add_argument("--num-images", type=int, default=1, help="images per prompt (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--truncation", type=float, default=None, help="truncate the noise at +-T (resampling)")
    parser.add_argument("--batch-size", type=int, default=64, help="largest generator batch per forward pass")
    parser.add_argument("--out", default="galip-samples", help="output folder (default: galip-samples)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES, help="weights dtype (default: fp32)")
    return parser


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError("no prompt given: pass prompts as arguments or with --prompt-file.")
    return prompts


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .pipelines.pipeline_galip import GALIPPipeline
    from .utils import dtype_kwargs

    prompts = _read_prompts(args)
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}.")
    pipe = GALIPPipeline.from_pretrained(args.model, **dtype_kwargs(torch_dtype(args.dtype))).to(args.device)
    pipe.set_progress_bar_config(disable=len(prompts) * args.num_images <= args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    images = pipe(
        prompts, num_images_per_prompt=args.num_images, generator=generator, truncation=args.truncation,
        max_batch_size=args.batch_size,
    ).images
    os.makedirs(args.out, exist_ok=True)
    for index, image in enumerate(images):
        prompt_index, k = divmod(index, args.num_images)
        path = os.path.join(args.out, f"{prompt_index:04d}_{k:02d}_seed{args.seed}.png")
        image.save(path)
        print(path)
    return 0


def generate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``galip-generate``."""
    return run_cli(_generate, generate_parser(), argv)


if __name__ == "__main__":
    sys.exit(generate_main())
