"""``galip eval`` / ``galip-eval``: FID and CLIP score of a pipeline, or FID statistics of a data set."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

import torch

from galip_cli.common import CommandParser, run_cli
from galip_diffusers.evaluation.clip_score import CLIPScorer
from galip_diffusers.evaluation.evaluate import COCO_RESOLUTION, PROTOCOLS, dataset_fid_statistics, evaluate_pipeline
from galip_diffusers.evaluation.fid import save_fid_statistics

EVAL_EXAMPLES = """examples:
  %(prog)s --model galip-coco --dataset data/coco_val --num_images 30000 --batch_size 32 \\
      --inception_weights weights-inception-2015-12-05-6726825d.pth --clip_model ./clip-vit-base-patch32 \\
      --output results/eval.json
  %(prog)s --model galip-coco --dataset data/coco_val --no_fid --num_images 1000      # CLIP scores only
  %(prog)s --save_stats coco_val.npz --dataset data/coco_val --inception_weights weights-inception-....pth
  %(prog)s --model galip-coco --protocol official --fid_stats coco_val256_FIDK0.npz --dataset data/coco_val \\
      --inception_weights weights-inception-....pth

Nothing is downloaded: FID needs a local InceptionV3 weights file (or pass --no_fid).
"""


def build_parser(prog: str = "galip-eval") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="FID and CLIP score of a GALIP pipeline, or FID statistics of a data set (--save_stats).",
        epilog=EVAL_EXAMPLES,
    )
    parser.add_argument("--model", help="GALIP pipeline folder (or a packaged short name).")
    parser.add_argument("--dataset", required=True, help="Data set: imagefolder, save_to_disk folder, or name.")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default=None, help="Split (default: validation, else test, else train).")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="text")
    parser.add_argument("--protocol", default="coco30k", choices=PROTOCOLS)
    parser.add_argument("--num_images", type=int, default=None, help="Default: 30000 (coco30k) / the whole split.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inception_weights", default=None, help="Local InceptionV3 weights file (torch-fidelity).")
    parser.add_argument("--fid_stats", default=None, help="Reference .npz with mu and sigma (default: the data set).")
    parser.add_argument("--fid_feature", type=int, default=2048, choices=[64, 192, 768, 2048],
                        help="Inception feature layer (2048, the standard pool3 features).")
    parser.add_argument("--no_fid", action="store_true", help="Only the CLIP scores.")
    parser.add_argument("--clip_model", default=None, help="CLIPModel folder for the CLIP scores (default: the "
                        "pipeline's scorer, else its own training CLIP).")
    parser.add_argument("--resolution", type=int, default=COCO_RESOLUTION, help="Centre-crop size of real images.")
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--output", default=None, help="JSON file to write (default: print only).")
    parser.add_argument("--save_stats", dest="save_stats", default=None,
                        help="Compute FID statistics of --dataset into this .npz instead of evaluating a model.")
    parser.add_argument("--cache_dir", default=None)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across arguments; ``parser.error`` (exit code 2) on a bad combination."""
    if args.save_stats is None and args.model is None:
        parser.error("give --model (evaluate a pipeline) or --save_stats OUT.npz (statistics of --dataset).")
    if (args.save_stats is not None or not args.no_fid) and args.inception_weights is None:
        parser.error("FID needs --inception_weights FILE (nothing can be downloaded); or pass --no_fid.")
    if args.num_images is not None and args.num_images < 2:
        parser.error("--num_images must be at least 2.")
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1.")
    if args.device is not None:
        from galip_core.machine import check_device

        try:
            check_device(args.device)
        except ValueError as err:
            parser.error(str(err))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def _load_eval_dataset(args: argparse.Namespace):
    from galip_diffusers.training.data import check_columns, load_image_text_dataset

    kwargs: dict[str, Any] = {"cache_dir": args.cache_dir}
    if os.path.isdir(args.dataset):
        kwargs["train_data_dir"] = args.dataset
    else:
        kwargs.update(dataset_name=args.dataset, dataset_config_name=args.dataset_config_name)
    dataset = load_image_text_dataset(split=args.split, **kwargs)
    check_columns(dataset, args.image_column, args.caption_column if args.save_stats is None else args.image_column)
    return dataset


def format_table(result: dict[str, Any]) -> str:
    """Two-column text table of a result dict (floats with 4 decimals)."""
    width = max(len(k) for k in result)
    lines = []
    for key, value in result.items():
        if isinstance(value, float):
            text = f"{value:.4f}"
        elif isinstance(value, (list, tuple)):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        lines.append(f"{key.ljust(width)}  {text}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = "galip-eval") -> int:
    """``galip-eval`` / ``galip eval``: 0 on success, 1 on an error (one line on stderr), 2 on bad arguments."""
    return run_cli(_run, build_parser(prog), argv, check=check_args)


def _run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = _load_eval_dataset(args)
    if args.save_stats is not None:
        mu, sigma, n, meta = dataset_fid_statistics(
            dataset, args.inception_weights, protocol=args.protocol, image_column=args.image_column,
            num_images=args.num_images, batch_size=args.batch_size, resolution=args.resolution, seed=args.seed,
            fid_feature=args.fid_feature,
        )
        save_fid_statistics(args.save_stats, mu, sigma, n, **meta)
        result = {"fid_stats": args.save_stats, "num_images": n, **meta}
    else:
        import galip_diffusers  # noqa: F401  (registers the classes)

        from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

        pipe = GALIPPipeline.from_pretrained(args.model).to(device)
        pipe.set_progress_bar_config(disable=True)
        scorer = CLIPScorer.from_pretrained(args.clip_model, device) if args.clip_model else None
        result = {"model": args.model, **evaluate_pipeline(
            pipe, dataset, protocol=args.protocol, num_images=args.num_images, batch_size=args.batch_size,
            seed=args.seed, image_column=args.image_column, caption_column=args.caption_column,
            inception_weights=args.inception_weights, fid_stats=args.fid_stats, fid_feature=args.fid_feature,
            clip_scorer=scorer,
            resolution=args.resolution, compute_fid=not args.no_fid,
        )}
    print(format_table(result))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
