"""``galip eval`` / ``galip-eval``: FID and CLIP score of a pipeline, or FID statistics of a data set."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

import torch

from galip_cli.common import CommandParser, as_argument_error, check_output_file, run_cli
from galip_core.finite import check_number_in_range
from galip_core.paths import check_apart
from galip_diffusers.evaluation.clip_score import CLIPScorer
from galip_diffusers.evaluation.evaluate import (
    COCO30K_IMAGES,
    COCO_RESOLUTION,
    PROTOCOLS,
    check_captions,
    dataset_fid_statistics,
    evaluate_pipeline,
    num_evaluation_images,
    prepare_fid_metric,
)
from galip_diffusers.evaluation.fid import save_fid_statistics
from galip_diffusers.evaluation.references import check_dataset_source, probe_reference_images

#: the default Inception feature layer: the standard pool3 features
FID_FEATURE = 2048

#: ``--seed`` range: image ``i`` uses seed ``seed + i``, which must stay within torch's 64-bit seeds
SEED_MAX = 2**63 - 1

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
    parser.add_argument("--num_images", type=int, default=None,
                        help=f"Images (captions) to evaluate, 2 to the data set's size; examples are never repeated. "
                        f"Default: {COCO30K_IMAGES} for coco30k, or all of a smaller data set (with a note); the "
                        "whole data set for official and --save_stats.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help=f"0 to {SEED_MAX} (default: 0).")
    parser.add_argument("--inception_weights", default=None, help="Local InceptionV3 weights file (torch-fidelity).")
    parser.add_argument("--fid_stats", default=None, help="Reference .npz with mu and sigma (default: the data set).")
    parser.add_argument("--fid_feature", type=int, default=None, choices=[64, 192, 768, 2048],
                        help="Inception feature layer (default 2048, the standard pool3 features).")
    parser.add_argument("--no_fid", action="store_true", help="Only the CLIP scores.")
    parser.add_argument("--clip_model", default=None, help="CLIPModel folder for the CLIP scores (default: the "
                        "pipeline's scorer, else its own training CLIP).")
    parser.add_argument("--resolution", type=int, default=COCO_RESOLUTION,
                        help=f"Centre-crop size of real images, >= 1 (default: {COCO_RESOLUTION}).")
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--output", default=None,
                        help="JSON file to write (default: print only); an existing file is replaced.")
    parser.add_argument("--save_stats", dest="save_stats", default=None,
                        help="Compute FID statistics of --dataset into this .npz instead of evaluating a model; an "
                        "existing file is refused unless --overwrite is given.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --save_stats file.")
    parser.add_argument("--cache_dir", default=None)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across arguments; ``parser.error`` (exit code 2) on a bad combination."""
    if args.save_stats is None and args.model is None:
        parser.error("give --model (evaluate a pipeline) or --save_stats OUT.npz (statistics of --dataset).")
    refuse_ignored_flags(parser, args)
    if (args.save_stats is not None or not args.no_fid) and args.inception_weights is None:
        parser.error("FID needs --inception_weights FILE (nothing can be downloaded); or pass --no_fid.")
    ranges = [("--num_images", args.num_images, 2, None), ("--batch_size", args.batch_size, 1, None),
              ("--seed", args.seed, 0, SEED_MAX), ("--resolution", args.resolution, 1, None)]
    for flag, value, low, high in ranges:
        if value is not None:
            as_argument_error(parser, lambda: check_number_in_range(flag, value, low, high, integer=True))
    for flag in ("--inception_weights", "--fid_stats"):
        path = getattr(args, flag[2:])
        if path is not None and not os.path.isfile(path):
            parser.error(f"{flag} {path!r} is not a file.")
    if args.output is not None:
        as_argument_error(parser, lambda: check_output_file("--output", args.output))
    inputs = {"--model": args.model, "--dataset": args.dataset, "--fid_stats": args.fid_stats,
              "--inception_weights": args.inception_weights, "--clip_model": args.clip_model}
    for flag in ("--output", "--save_stats"):  # never written over (or into) one of the inputs
        path = getattr(args, flag[2:])
        if path is not None:
            as_argument_error(parser, lambda: check_apart(flag, path, inputs))
    if args.save_stats is not None:
        as_argument_error(parser, lambda: check_output_file("--save_stats", args.save_stats, suffix=".npz",
                                                            overwrite=args.overwrite))
    if args.device is not None:
        from galip_core.machine import check_device

        as_argument_error(parser, lambda: check_device(args.device))


def refuse_ignored_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that the chosen mode would not read are refused (``parser.error``), never silently dropped."""
    if args.save_stats is not None:  # statistics of --dataset: no model, no CLIP score, FID statistics only
        given = [flag for flag, value in (("--model", args.model), ("--clip_model", args.clip_model),
                                          ("--fid_stats", args.fid_stats), ("--no_fid", args.no_fid or None))
                 if value is not None]
        if given:
            parser.error(f"--save_stats computes the FID statistics of --dataset only, so {', '.join(given)} would be "
                         "ignored: drop them, or drop --save_stats to evaluate a model.")
    elif args.no_fid:
        fid_flags = (("--fid_stats", args.fid_stats), ("--inception_weights", args.inception_weights),
                     ("--fid_feature", args.fid_feature))
        given = [flag for flag, value in fid_flags if value is not None]
        if given:
            parser.error(f"{', '.join(given)} only serve FID, which --no_fid turns off: drop "
                         f"{'it' if len(given) == 1 else 'them'} or --no_fid.")
    if args.overwrite and args.save_stats is None:
        parser.error("--overwrite only replaces an existing --save_stats file (--output is always replaced): "
                     "add --save_stats OUT.npz or drop --overwrite.")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def _load_eval_dataset(args: argparse.Namespace):
    """The data set, with its columns and (unless ``--save_stats``) every caption checked: a blank caption is found
    now, naming its row, not when its batch comes up after hours of generation."""
    from galip_diffusers.training.data import check_columns

    dataset = _open_eval_dataset(args)
    check_columns(dataset, args.image_column, args.caption_column if args.save_stats is None else None)
    if args.save_stats is None:
        check_captions(dataset, args.caption_column, args.image_column)
    return dataset


def _open_eval_dataset(args: argparse.Namespace):
    """``--dataset`` (its ``--split``) opened as a data set, before any model loads: a path that cannot be one is
    refused without opening it (:func:`check_dataset_source`), and a failure to open it, or a data set of no rows,
    is a one-line ``ValueError`` naming ``--dataset`` (and ``--split``), which ``datasets``' own errors do not."""
    from galip_diffusers.training.data import load_image_text_dataset

    check_dataset_source(args.dataset)
    kwargs: dict[str, Any] = {"cache_dir": args.cache_dir}
    if os.path.isdir(args.dataset):
        kwargs["train_data_dir"] = args.dataset
    else:
        kwargs.update(dataset_name=args.dataset, dataset_config_name=args.dataset_config_name)
    where = f"--dataset {args.dataset!r}" + (f" (--split {args.split!r})" if args.split is not None else "")
    try:
        dataset = load_image_text_dataset(split=args.split, **kwargs)
    except Exception as err:  # noqa: BLE001  (datasets' errors have no common base)
        detail = err if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{where} cannot be opened as a data set: {detail}") from err
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(f"{where} has no rows: there is nothing to evaluate.")
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
    parser = build_parser(prog)
    return run_cli(lambda args: _run(args, parser), parser, argv, check=check_args)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Load the data set and check what depends on it (its rows, ``--num_images``, the first reference images) and
    the FID inputs, then load the models (Inception, the pipeline, CLIP) and evaluate: every check of the references
    comes before the first model load."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fid_feature = args.fid_feature or FID_FEATURE
    dataset = _load_eval_dataset(args)
    size = len(dataset) if hasattr(dataset, "__len__") else None
    default = COCO30K_IMAGES if args.protocol == "coco30k" and args.save_stats is None else None
    num_images, note = as_argument_error(parser, lambda: num_evaluation_images(args.num_images, size, default))
    if note:
        print(f"{parser.prog}: note: {note}", file=sys.stderr)
    if args.save_stats is not None or (not args.no_fid and args.fid_stats is None):  # FID reads the images
        probe_reference_images(dataset, args.image_column, num_images, args.seed,
                               hint="" if args.save_stats is not None else ", or pass --fid_stats")
    if args.save_stats is not None:
        mu, sigma, n, meta = dataset_fid_statistics(
            dataset, args.inception_weights, protocol=args.protocol, image_column=args.image_column,
            num_images=num_images, batch_size=args.batch_size, resolution=args.resolution, seed=args.seed,
            fid_feature=fid_feature,
        )
        save_fid_statistics(args.save_stats, mu, sigma, n, overwrite=args.overwrite, **meta)
        result = {"fid_stats": args.save_stats, "num_images": n, **meta}
    else:
        import galip_diffusers  # noqa: F401  (registers the classes)

        from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

        metric = None  # a bad weights or statistics file is an argument error, found before the model loads
        if not args.no_fid:
            metric = as_argument_error(
                parser, lambda: prepare_fid_metric(args.inception_weights, fid_feature, args.fid_stats))
        pipe = GALIPPipeline.from_pretrained(args.model).to(device)
        pipe.set_progress_bar_config(disable=True)
        scorer = CLIPScorer.from_pretrained(args.clip_model, device) if args.clip_model else None
        result = {"model": args.model, **evaluate_pipeline(
            pipe, dataset, protocol=args.protocol, num_images=num_images, batch_size=args.batch_size,
            seed=args.seed, image_column=args.image_column, caption_column=args.caption_column,
            inception_weights=args.inception_weights, fid_stats=args.fid_stats, fid_feature=fid_feature,
            clip_scorer=scorer, resolution=args.resolution, compute_fid=not args.no_fid, fid_metric=metric,
        )}
    if note:
        result["num_images_note"] = note
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
