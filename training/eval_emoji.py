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

from galip_diffusers import GALIPPipeline
from galip_diffusers.data.emoji_eval import (TARGETS, evaluate_emoji_pipeline, evaluation_prompts, report_markdown,
                                             write_results)
from galip_diffusers.data.emoji_judge import EmojiJudge
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe, probe_report
from galip_diffusers.training.options import check_folder_flag
from galip_diffusers.training.runs import clip_components, run_pipeline
from galip_core.finite import check_number_in_range

#: image ``i`` is drawn with ``torch.Generator().manual_seed(seed + i)`` (seeds up to 2**64 - 1) and the seen pairs are
#: picked by ``np.random.default_rng(seed)`` (seeds >= 0): [0, 2**63 - 1] leaves room for every prompt
MAX_SEED = 2**63 - 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a GALIP pipeline folder")
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
    except (ValueError, OSError) as error:  # OSError: an output path that cannot be a folder
        parser.error(str(error))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.model is not None:
        pipe, source = GALIPPipeline.from_pretrained(args.model), args.model
    else:
        pipe, _, source = run_pipeline(args.run_dir, args.checkpoint, clip_components(args.clip_model_name_or_path))
    pipe.set_progress_bar_config(disable=True)
    judge = EmojiJudge.from_tarballs(cache_dir=args.cache_dir)
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
