#!/usr/bin/env python
"""Package a ``train_galip.py`` run on the emoji data set as the shipped ``galip-emoji`` pipeline folder, then judge
the packaged folder and write its model card.

1. Pipeline: tokenizer, text encoder and image encoder of the bridge CLIP, the run's generator (EMA weights when the
   checkpoint has them), the scorer CLIP as the optional ``scorer`` component and the discriminator in
   ``discriminator/``; float16 storage that loads in float32 (``galip_diffusers.training.packaging``).
2. ``galip_settings.json``: the sampling truncation given by ``--truncation`` (none by default), which the pipelines,
   ``galip generate`` and the demo then use.
3. Evaluation of the *saved* folder with the emoji judge (``galip_diffusers.data.emoji_eval``): ``--num_seen`` seen
   captions, the 159 held-out Noto and the 632 held-out tone prompts against issue #24's targets, seed diversity, a
   64-image grid, two interpolation strips, generation speed and the cold start of ``galip-generate``; and, as an
   additional figure, how the style probe (``galip_diffusers.data.emoji_style_probe``, trained on the seen real
   images only) reads the same images. Figures go to ``--results_dir`` (JSON, Markdown, PNG) and into the model card,
   with the licences and the Twemoji attribution.
4. The whole folder, card included, is built beside ``--output_dir`` and swapped in at the end (a failed run
   replaces nothing). Every flag and path is checked first: ``--output_dir`` is never an input (``--run_dir``, the
   CLIPs, ``--cache_dir``) nor holds or lies in one, and a non-empty one, the shipped folder (the default) included,
   is replaced only with ``--overwrite``.

    python training/package_emoji_model.py --run_dir $RUNS/galip-emoji --checkpoint latest \\
        --clip_model_name_or_path $RUNS/clip-bridge --scorer_model_name_or_path $RUNS/clip-scorer --overwrite
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from galip_core.finite import check_number_in_range
from galip_core.runtime import packaged_models_dir
from galip_core.settings import GALIPSettings
from galip_diffusers import GALIPPipeline
from galip_diffusers.conversion.model_card import render_model_card
from galip_diffusers.data.emoji import PACKAGES
from galip_diffusers.data.emoji_eval import (TARGETS, evaluate_emoji_pipeline, evaluation_prompts, interpolation,
                                             meets_seen_targets, missed_targets, report_markdown, write_results)
from galip_diffusers.data.emoji_judge import EmojiJudge
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe, probe_report
from galip_diffusers.training.options import check_folder_flag
from galip_diffusers.training.packaging import (SHIPPED_MODEL_MAX_MB, check_package_output, checkpoint_steps,
                                                folder_size_mb, measure_speed, save_strip, speed_markdown,
                                                staged_folder, write_half_precision)
from galip_diffusers.training.runs import check_run, checkpoint_path, clip_components, run_pipeline

STRIPS = {
    "dog_to_cat": ["dog face, twemoji style", "cat face, twemoji style"],
    "twemoji_to_noto": ["red apple, twemoji style", "red apple, noto style"],
}
SPEED_PROMPT = "dog face, twemoji style"
#: the folder's example prompts (galip_settings.json ``prompts.examples``: the demo's examples and starting prompts)
#: (seen pairs the shipped model draws right for 4 of 4 seeds, checked again for each packaged folder: see the README)
EXAMPLE_PROMPTS = ("grinning face, twemoji style", "red apple, noto style", "waving hand: dark skin tone, twemoji style",
                   "flag: Japan, noto style", "thumbs up, twemoji style", "pizza, noto style", "rocket, twemoji style",
                   "rainbow, twemoji style")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="--output_dir of train_galip.py")
    parser.add_argument("--checkpoint", default=None,
                        help='"latest" or a checkpoint-N folder name: package that checkpoint (EMA generator if saved) '
                             "instead of the run's final pipeline")
    parser.add_argument("--clip_model_name_or_path", required=True, help="the bridge CLIP the run was trained on")
    parser.add_argument("--scorer_model_name_or_path", required=True, help="the scorer CLIP (optional component)")
    parser.add_argument("--output_dir", default=os.path.join(packaged_models_dir(), "galip-emoji"),
                        help="the packaged folder, built beside it and swapped in at the end (default: the shipped "
                             "galip-emoji folder); never an input folder, nor one holding or inside one")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --output_dir (needed for the default, the shipped folder, too)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="the sampling truncation to recommend in galip_settings.json (and to evaluate with)")
    parser.add_argument("--history", nargs="*", default=None, help="sentences for the card's training history")
    parser.add_argument("--num_seen", type=int, default=1000, help="seen image-caption pairs to judge (>= 1)")
    parser.add_argument("--results_dir", default=os.path.join("results", "emoji_model"))
    parser.add_argument("--cache_dir", default=None, help="where the npm tarballs are (fetched with npm if missing)")
    parser.add_argument("--skip_speed", action="store_true", help="skip the timing figures")
    parser.add_argument("--style_probe_steps", type=int, default=3000,
                        help="training steps of the style probe (an additional reading of the style; 0 skips it)")
    args = parser.parse_args(argv)
    try:  # every value and path, before anything loads or is written
        check_number_in_range("--num_seen", args.num_seen, 1, integer=True)
        check_number_in_range("--style_probe_steps", args.style_probe_steps, 0, integer=True)  # 0 skips the probe
        if args.truncation is not None:
            check_number_in_range("--truncation", args.truncation, 0, low_open=True)
        check_run(args.run_dir, args.checkpoint)
        check_folder_flag("--results_dir", args.results_dir)
        args.output_dir = check_package_output(
            args.output_dir, args.overwrite, inputs={"--run_dir": args.run_dir, "--clip_model_name_or_path":
                                                     args.clip_model_name_or_path, "--scorer_model_name_or_path":
                                                     args.scorer_model_name_or_path, "--cache_dir": args.cache_dir},
            results_dir=args.results_dir)
    except (ValueError, OSError) as error:  # OSError: a missing run or checkpoint, a path that cannot be written
        parser.error(str(error))
    return args


def sampling_settings(truncation: float | None) -> GALIPSettings:
    note = ("Recommended sampling settings of galip-emoji, measured by training/package_emoji_model.py; explicit "
            "arguments win.")
    return GALIPSettings({"_comment": note, "sampling": {"truncation": truncation},
                          "prompts": {"examples": list(EXAMPLE_PROMPTS)}})


def grid_markdown(rows: list[dict[str, Any]]) -> str:
    """The README grid's 64 prompts with what the judge read (nearest real image; emoji and style right or not)."""
    lines = ["| # | prompt | nearest real image | emoji top-1 / top-5 | style |", "| --- | --- | --- | --- | --- |"]
    mark = {True: "yes", False: "no"}
    for i, row in enumerate(rows):
        lines.append(f"| {i} | {row['prompt']} | {row['nearest_label']} | {mark[row['emoji_top1']]} / "
                     f"{mark[row['emoji_top5']]} | {mark[row['style_top1']]} |")
    return "\n".join(lines) + "\n"


def write_card(args, folder: str, report: dict[str, Any], source: str, steps: Any, table: str) -> None:
    card = render_model_card(
        "galip_emoji",
        license="cc-by-4.0",
        tags=["emoji", "tiny", "cpu"],
        model_name="galip-emoji",
        repo_path="galip-emoji",
        source=source,
        steps=steps,
        evaluation_table=table,
        speed_table=speed_markdown(report["speed"]) if "speed" in report else None,
        size_mb=f"{report['folder_size_mb']:.2f}",
        limitations=missed_targets(report),
        meets_seen_targets=meets_seen_targets(report),
        packages=[f"{p.name}@{p.version}" for p in PACKAGES.values()],
        truncation=args.truncation,
        history=args.history,
    )
    card.save(os.path.join(folder, "README.md"))


@torch.no_grad()
def main(argv=None, judge: EmojiJudge | None = None) -> dict[str, Any]:
    """Package, judge and document the run; ``judge`` reuses an already built :class:`EmojiJudge`."""
    args = parse_args(argv)  # every check, before anything loads or is written
    os.makedirs(args.results_dir, exist_ok=True)
    # the whole folder (card included) is built beside --output_dir, judged there, and swapped in at the end
    with staged_folder(args.output_dir) as folder:
        components = clip_components(args.clip_model_name_or_path, args.scorer_model_name_or_path)
        pipe, discriminator, source = run_pipeline(args.run_dir, args.checkpoint, components)
        pipe.settings = sampling_settings(args.truncation)
        write_half_precision(pipe, discriminator, folder, os.path.basename(args.output_dir),
                             max_size_mb=SHIPPED_MODEL_MAX_MB)
        del pipe

        shipped = GALIPPipeline.from_pretrained(folder)
        shipped.set_progress_bar_config(disable=True)
        judge = judge if judge is not None else EmojiJudge.from_tarballs(cache_dir=args.cache_dir)
        report = evaluate_emoji_pipeline(shipped, judge, num_seen=args.num_seen)  # the folder's own truncation
        if args.style_probe_steps:  # the same images (seed i for prompt i), read by a second reader of the style
            probe = EmojiStyleProbe.fit(judge, steps=args.style_probe_steps)
            report["style_probe"] = probe_report(probe, shipped, evaluation_prompts(judge, num_seen=args.num_seen),
                                                 judge)
        report.update(source=source, targets=TARGETS, folder_size_mb=folder_size_mb(folder), interpolation={})
        for name, prompts in STRIPS.items():
            strip, info = interpolation(shipped, judge, prompts, num_steps=8, seed=3)
            save_strip(strip, os.path.join(args.results_dir, f"interpolation_{name}.png"))
            report["interpolation"][name] = info
        if not args.skip_speed:
            report["speed"] = measure_speed(folder, prompt=SPEED_PROMPT)
        grid = write_results(shipped, judge, report, args.results_dir, num_seen=args.num_seen)
        with open(os.path.join(args.results_dir, "grid.md"), "w") as f:
            f.write(grid_markdown(grid))
        table = report_markdown(report) + "\n" + "\n".join(
            f"Interpolation `{name}`: largest / mean frame-to-frame L1 = {info['max_over_mean_step']:.2f}; frames read "
            "as " + " → ".join(info["attributes"]) + "." for name, info in report["interpolation"].items())
        steps = checkpoint_steps(checkpoint_path(args.run_dir, args.checkpoint)) if args.checkpoint else "?"
        write_card(args, folder, report, source, steps, table + "\n")
    print(table)
    if "speed" in report:
        print(speed_markdown(report["speed"]))
    return report


if __name__ == "__main__":
    main()
