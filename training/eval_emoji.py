#!/usr/bin/env python
"""Judge a GALIP model on the emoji data set: nearest real images at 32x32 (``galip_diffusers.data.emoji_judge``).

Scores one image per prompt for ``--num_seen`` seen pairs, the 159 held-out Noto prompts and the 632 held-out tone
prompts, plus diversity across seeds, and writes ``eval.json``, ``eval.md`` and ``grid.png`` (64 generated emoji with
their prompts: 32 seen, 16 held-out Noto, 16 held-out tones) under ``--results_dir``. ``--style_probe`` adds a second
reading of the style by a Noto/Twemoji classifier trained on the seen real images
(``galip_diffusers.data.emoji_style_probe``): an additional, more lenient figure, not the targets' judge.

    python training/eval_emoji.py --run_dir $RUNS/galip-emoji --checkpoint latest --clip_model_name_or_path $RUNS/clip-bridge
    python training/eval_emoji.py --model path/to/galip-emoji-folder --style_probe
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, TypeVar

from galip_diffusers import GALIPPipeline
from galip_diffusers.conversion.model_card import hub_ids
from galip_diffusers.data.emoji_eval import (MAX_SEED, TARGETS, evaluate_emoji_pipeline, evaluation_prompts,
                                             report_markdown, write_results)
from galip_diffusers.data.emoji_judge import EmojiJudge
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe, probe_report
from galip_diffusers.pretrained import resolve_pretrained
from galip_diffusers.training.options import check_folder_flag
from galip_diffusers.training.runs import check_run, clip_components, run_pipeline
from galip_core.finite import check_number_in_range
from galip_core.packaged import unknown_model_note

T = TypeVar("T")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a GALIP pipeline folder, packaged model name or Hub repo id")
    source.add_argument("--run_dir", help="--output_dir of train_galip.py (with --clip_model_name_or_path)")
    parser.add_argument("--checkpoint", default=None,
                        help='with --run_dir: "latest" or checkpoint-N (EMA generator if saved)')
    parser.add_argument("--clip_model_name_or_path", help="with --run_dir: the bridge CLIP of the run")
    parser.add_argument("--num_seen", type=int, default=1000, help="seen image-caption pairs to judge")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (0 to 2**63 - 1)")
    parser.add_argument("--truncation", type=float, default=None, help="truncate the noise to [-t, t] (t > 0)")
    parser.add_argument("--style_probe", action="store_true",
                        help="also read the style with a Noto/Twemoji classifier trained on the seen real images "
                             "(an additional, more lenient figure; about 30 s of training on 2 cores)")
    parser.add_argument("--results_dir", default="results/emoji_eval", help="a folder (created if missing)")
    parser.add_argument("--cache_dir", default=None, help="where the npm tarballs are (fetched with npm if missing)")
    args = parser.parse_args(argv)
    if args.run_dir is not None and args.clip_model_name_or_path is None:
        parser.error("--run_dir needs --clip_model_name_or_path (the bridge CLIP the run was trained on)")
    ignored = [flag for flag in ("--checkpoint", "--clip_model_name_or_path") if getattr(args, flag[2:]) is not None]
    if args.model is not None and ignored:  # they pick and complete a training run; --model is judged as it is
        parser.error(f"{' and '.join(ignored)} go{'es' if len(ignored) == 1 else ''} with --run_dir, not with --model "
                     "(a pipeline folder, judged as it is): pass --run_dir RUN with them to judge a checkpoint of a "
                     f"run, or leave {'it' if len(ignored) == 1 else 'them'} out.")
    try:  # before the model and the judge load
        check_number_in_range("--num_seen", args.num_seen, 1, integer=True)
        check_number_in_range("--seed", args.seed, 0, MAX_SEED, integer=True)
        if args.truncation is not None:
            check_number_in_range("--truncation", args.truncation, 0, low_open=True)
        check_folder_flag("--results_dir", args.results_dir)
        if args.cache_dir is not None and not os.path.isdir(args.cache_dir):  # an existing one may be read-only
            check_folder_flag("--cache_dir", args.cache_dir)  # created, and the tarballs fetched into it
    except (ValueError, OSError) as error:  # OSError: an output path that cannot be a folder
        parser.error(str(error))
    return args


def check_sources(args: argparse.Namespace) -> None:
    """Before anything loads (``main``; ``parse_args`` checks only values and output paths): the run and its
    checkpoint exist, and each model flag names a folder, a packaged model or a Hub repo id. A bad one is one line
    naming the flag and exit code 2, as argparse's errors."""
    try:
        if args.model is not None:
            check_model_source("--model", args.model)
        else:
            check_run(args.run_dir, args.checkpoint)
            check_model_source("--clip_model_name_or_path", args.clip_model_name_or_path)
    except (ValueError, OSError) as error:
        print(f"{os.path.basename(__file__)}: error: {error}", file=sys.stderr)
        sys.exit(2)


def check_model_source(flag: str, value: str) -> None:
    """Before anything loads: ``value`` is a folder, a packaged model's name (``--model`` only) or a Hub repo id
    (``owner/name``), so that a mistyped path is one line naming the flag, not a traceback from the loader."""
    path = os.fspath(resolve_pretrained(value)) if flag == "--model" else value
    if not os.path.isdir(path) and not hub_ids(path):
        packaged = f", nor a packaged model ({unknown_model_note(value)})" if flag == "--model" else ""
        raise FileNotFoundError(f"{flag} {value!r} is neither a folder nor a Hub repo id (owner/name){packaged}.")


def loaded(flag: str, load: Callable[[], T]) -> T:
    """``load()``; a model, CLIP or tarball it cannot load (not a pipeline folder, not on the Hub, corrupt, npm
    missing) ends the script with one line naming ``flag``, not a traceback."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError) as error:  # EmojiDataError is a ValueError; npm failing, RuntimeError
        sys.exit(f"{os.path.basename(__file__)}: error: {flag}: {' '.join(str(error).split())}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_sources(args)
    if args.model is not None:
        pipe, source = loaded("--model", lambda: GALIPPipeline.from_pretrained(args.model)), args.model
    else:
        components = loaded("--clip_model_name_or_path", lambda: clip_components(args.clip_model_name_or_path))
        pipe, _, source = loaded("--run_dir", lambda: run_pipeline(args.run_dir, args.checkpoint, components))
    tarballs = "--cache_dir (the judge's emoji tarballs)"
    judge = loaded(tarballs, lambda: EmojiJudge.from_tarballs(cache_dir=args.cache_dir))
    pipe.set_progress_bar_config(disable=True)
    kwargs = {} if args.truncation is None else {"truncation": args.truncation}
    report = evaluate_emoji_pipeline(pipe, judge, num_seen=args.num_seen, seed=args.seed, **kwargs)
    if args.style_probe:
        probe = EmojiStyleProbe.fit(judge, seed=args.seed)
        sets = evaluation_prompts(judge, num_seen=args.num_seen, seed=args.seed)
        report["style_probe"] = probe_report(probe, pipe, sets, judge, seed=args.seed, **kwargs)
    report["source"], report["targets"] = source, TARGETS
    write_results(pipe, judge, report, args.results_dir, num_seen=args.num_seen, seed=args.seed, **kwargs)
    print(report_markdown(report))
    return report


if __name__ == "__main__":
    main()
