#!/usr/bin/env python
"""Package a ``train_galip.py`` run on the captioned-shapes data as the shipped ``galip-shapes`` pipeline folder, then
evaluate the packaged folder and write its model card.

1. Pipeline: tokenizer, text encoder and image encoder of the bridge CLIP, the generator of the run (EMA weights when
   the checkpoint has them), the scorer CLIP as the optional ``scorer`` component, and the discriminator in
   ``discriminator/`` (so that fine-tuning can continue from the folder).
2. Weights are stored in float16 (half the size); every component's config says float32, so the folder loads in
   float32 by default, as diffusers models do, and ``torch_dtype=`` still picks another dtype.
3. Evaluation of the *saved* folder (``galip_diffusers.data.shapes_eval``): ``score_images`` accuracy on ``--num_images``
   generated images per split, positional diversity, scorer-CLIP score, Fréchet distance in the scorer's feature
   space, an interpolation strip, generation speed (1 and 2 threads, default and fast path) and the cold start of
   ``galip-generate``. Figures go to ``--results_dir`` (JSON, Markdown, PNG) and into the model card.
4. The recommended settings (``galip_settings.json``, ``--settings_file``; by default the shipped folder's own,
   measured in the README's FuseDream section) travel with the folder and are the pipelines' defaults.
5. The whole folder, card included, is built beside ``--output_dir`` and swapped in at the end (a failed run
   replaces nothing). Every flag and path is checked first: ``--output_dir`` is never an input (``--run_dir``, the
   CLIPs) nor holds or lies in one, and a non-empty one, the shipped folder (the default) included, is replaced only
   with ``--overwrite``. ``--components_from`` and ``--settings_file`` may be the folder being replaced (they are
   read first and carried into the new one).

    python training/package_shapes_model.py --run_dir $RUNS/galip-shapes-run --checkpoint latest \\
        --clip_model_name_or_path $RUNS/clip-bridge --scorer_model_name_or_path $RUNS/clip-scorer --overwrite
    # a run fine-tuned from the shipped folder: take the CLIPs and the scorer from it
    python training/package_shapes_model.py --run_dir $RUNS/runB --checkpoint latest --overwrite \\
        --components_from galip-shapes --history "4,000 steps from scratch." "N more steps from the shipped folder."
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch

from galip_diffusers import GALIPPipeline
from galip_diffusers.conversion.model_card import render_model_card
from galip_diffusers.pretrained import PRETRAINED_MODELS, resolve_pretrained
from galip_diffusers.data.shapes_eval import evaluate_shapes_pipeline, interpolation_strip
from galip_diffusers.training.packaging import (SHIPPED_MODEL_MAX_MB, check_package_output, checkpoint_steps,
                                                folder_size_mb, measure_speed, save_strip, speed_markdown,
                                                staged_folder, write_half_precision)
from galip_diffusers.training.runs import check_run, checkpoint_path, clip_components, run_pipeline
from galip_core.finite import check_number_in_range
from galip_core.paths import check_output_folder
from galip_core.settings import SETTINGS_NAME, GALIPSettings

STRIPS = {
    "red_to_blue": ["a large red circle on a white background", "a large blue circle on a white background"],
    "circle_to_square": ["a large green circle on a black background", "a large green square on a black background"],
}
#: the quality targets of the shipped model (per-attribute accuracy), seen and held-out caption combinations
TARGETS = {
    "train": {"background": 0.95, "color": 0.90, "size": 0.90, "shape": 0.85},
    "held_out": {"background": 0.70, "color": 0.70, "size": 0.70, "shape": 0.70},
}


def missed_targets(report: dict[str, Any]) -> list[str]:
    """One sentence per attribute below its target, for the card's limitations."""
    names = {"train": "seen combinations", "held_out": "held-out combinations"}
    return [f"{attr.capitalize()} accuracy on {names[split]} is {100 * report[f'accuracy_{split}'][attr]:.1f}%, below "
            f"the {100 * target:.0f}% this model is meant to reach."
            for split, targets in TARGETS.items() for attr, target in targets.items()
            if report[f"accuracy_{split}"][attr] < target]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="--output_dir of train_galip.py")
    parser.add_argument("--checkpoint", default=None,
                        help='"latest" or a checkpoint-N folder name: package that checkpoint instead of the final '
                             "pipeline of the run (EMA generator if saved)")
    parser.add_argument("--clip_model_name_or_path", help="the bridge CLIP the run was trained on")
    parser.add_argument("--scorer_model_name_or_path", help="the scorer CLIP (optional component)")
    parser.add_argument("--components_from", default=None,
                        help="a GALIP pipeline folder (or packaged name, e.g. galip-shapes) to take the tokenizer, text "
                             "encoder, image encoder and scorer from, instead of the two CLIP folders: for a run "
                             "fine-tuned from that pipeline")
    parser.add_argument("--output_dir", default=PRETRAINED_MODELS["galip-shapes"],
                        help="the packaged folder, built beside it and swapped in at the end (default: the shipped "
                             "galip-shapes folder); never an input folder, nor one holding or inside one")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --output_dir (needed for the default, the shipped folder, too)")
    parser.add_argument("--history", nargs="*", default=None,
                        help="sentences for the card's training history (e.g. the stages of a fine-tuned run)")
    parser.add_argument("--num_images", type=int, default=1000,
                        help="generated images per split for the evaluation (>= 2: the Fréchet distance fits a "
                             "covariance)")
    parser.add_argument("--results_dir", default=os.path.join("results", "shapes_model"))
    parser.add_argument("--skip_speed", action="store_true", help="skip the timing figures")
    parser.add_argument("--settings_file", default=os.path.join(PRETRAINED_MODELS["galip-shapes"], SETTINGS_NAME),
                        help="the recommended settings (galip_settings.json) to ship with the folder; default: those "
                             "of the packaged galip-shapes, read before the folder is replaced")
    args = parser.parse_args(argv)
    if (args.components_from is None) == (args.clip_model_name_or_path is None or args.scorer_model_name_or_path is None):
        parser.error("give either --components_from, or both --clip_model_name_or_path and --scorer_model_name_or_path")
    try:  # every value and path, before anything loads or is written
        check_number_in_range("--num_images", args.num_images, 2, integer=True)
        check_run(args.run_dir, args.checkpoint)
        if not os.path.isfile(args.settings_file):
            raise FileNotFoundError(f"--settings_file {args.settings_file!r} is not a file; give a "
                                    "galip_settings.json.")
        check_output_folder("--results_dir", args.results_dir)
        components = resolve_pretrained(args.components_from) if args.components_from is not None else None
        args.output_dir = check_package_output(
            args.output_dir, args.overwrite, inputs={"--run_dir": args.run_dir, "--clip_model_name_or_path":
                                                     args.clip_model_name_or_path, "--scorer_model_name_or_path":
                                                     args.scorer_model_name_or_path},
            carried={"--components_from": components, "--settings_file": args.settings_file},
            results_dir=args.results_dir)
    except (ValueError, OSError) as error:  # OSError: a missing run or checkpoint, a path that cannot be written
        parser.error(str(error))
    return args


def load_components(args) -> dict[str, Any]:
    """Tokenizer, text encoder, image encoder and scorer: from ``--components_from`` or the two CLIP folders."""
    if args.components_from is not None:
        base = GALIPPipeline.from_pretrained(args.components_from)
        if base.image_encoder is None or base.scorer is None:
            raise ValueError(f"--components_from {args.components_from!r} must have an image_encoder and a scorer.")
        return {k: getattr(base, k) for k in ("tokenizer", "text_encoder", "image_encoder", "scorer")}
    return clip_components(args.clip_model_name_or_path, args.scorer_model_name_or_path)


def markdown_report(report: dict[str, Any]) -> str:
    """The evaluation table (accuracy, diversity, CLIP score, FID-like distance, interpolation, size)."""
    lines = ["| split | background | color | shape | size | all four |", "| --- | --- | --- | --- | --- | --- |"]
    for split, name in (("train", "seen combinations"), ("held_out", "held-out (purple triangle, orange circle)")):
        acc = report[f"accuracy_{split}"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * acc[k]:.1f}%" for k in ("background", "color", "shape", "size", "all")) + " |")
    lines += ["", "| figure | value |", "| --- | --- |"]
    spread = report["center_spread"]
    lines.append(f"| object-centre spread over 64 seeds (one prompt) | std x {spread['std_x']:.1f} px, y {spread['std_y']:.1f} px |")
    lines.append(f"| mean pairwise L1, generated / real | {report['pairwise_l1_generated']:.3f} / {report['pairwise_l1_real']:.3f} |")
    if "scorer_clip_score_generated" in report:
        lines.append(f"| scorer CLIP score, generated / real | {report['scorer_clip_score_generated']:.1f} / {report['scorer_clip_score_real']:.1f} |")
        lines.append(f"| Fréchet distance (scorer CLIP image embeddings) | {report['frechet_distance_scorer_clip']:.4f} |")
    for name, strip in report.get("interpolation", {}).items():
        lines.append(f"| interpolation `{name}`: largest / mean frame-to-frame L1 | {strip['max_over_mean_step']:.2f} |")
    lines.append(f"| folder size | {report['folder_size_mb']:.2f} MiB |")
    return "\n".join(lines) + "\n"


def write_card(args, folder: str, report: dict[str, Any], source: str, summary: dict[str, Any], table: str) -> None:
    card = render_model_card(
        "galip_shapes",
        license="apache-2.0",
        tags=["shapes", "tiny", "cpu"],
        model_name="galip-shapes",
        repo_path="galip-shapes",
        source=source,
        steps=summary.get("steps", "?"),
        training_summary=summary,
        evaluation_table=table,
        speed_table=speed_markdown(report["speed"]) if "speed" in report else None,
        num_images=report["num_images_per_split"],
        size_mb=f"{report['folder_size_mb']:.2f}",
        limitations=missed_targets(report),
        history=args.history,
    )
    card.save(os.path.join(folder, "README.md"))


@torch.no_grad()
def main(argv=None) -> None:
    args = parse_args(argv)  # every check, before anything loads or is written
    os.makedirs(args.results_dir, exist_ok=True)
    # the whole folder (card included) is built beside --output_dir, evaluated there, and swapped in at the end
    with staged_folder(args.output_dir) as folder:
        pipe, discriminator, source = run_pipeline(args.run_dir, args.checkpoint, load_components(args))
        pipe.settings = GALIPSettings.from_file(args.settings_file)  # read before the folder is replaced
        write_half_precision(pipe, discriminator, folder, os.path.basename(args.output_dir),
                             max_size_mb=SHIPPED_MODEL_MAX_MB)
        del pipe

        shipped = GALIPPipeline.from_pretrained(folder)
        report = evaluate_shapes_pipeline(shipped, num_images=args.num_images, with_speed=False)
        report["folder_size_mb"] = folder_size_mb(folder)
        report["interpolation"] = {}
        for name, prompts in STRIPS.items():
            strip, info = interpolation_strip(shipped, prompts, num_steps=8, seed=3)
            save_strip(strip, os.path.join(args.results_dir, f"interpolation_{name}.png"))
            report["interpolation"][name] = info
        if not args.skip_speed:
            report["speed"] = measure_speed(folder, prompt="a large red circle on a white background")
        summary_path = os.path.join(args.run_dir, "training_summary.json")
        summary = json.load(open(summary_path)) if os.path.isfile(summary_path) else {}
        if args.checkpoint is not None:
            summary = {**summary, "steps": checkpoint_steps(checkpoint_path(args.run_dir, args.checkpoint))}
        table = markdown_report(report)
        write_card(args, folder, report, source, summary, table)
    with open(os.path.join(args.results_dir, "eval.json"), "w") as f:
        json.dump({"source": source, **report}, f, indent=2)
    if "speed" in report:
        table += "\n" + speed_markdown(report["speed"])
    with open(os.path.join(args.results_dir, "eval.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
