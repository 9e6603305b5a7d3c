#!/usr/bin/env python
"""Learning curve of a ``train_galip.py`` run: D/G losses over steps (from ``losses.jsonl``, including the
generator's CLIP-similarity term) and, for every saved ``checkpoint-N``, what the task's pixel judge reads in
generated images:

* ``--task shapes``: the attribute accuracy of ``score_images`` on seen and held-out caption combinations;
* ``--task emoji``: the emoji judge's checks (``galip_diffusers.data.emoji_eval.TARGETS``) on ``--num_images`` seen
  captions and on all held-out Noto and skin-tone prompts.

    python training/learning_curve.py --run_dir $RUNS/galip-shapes-run \
        --clip_model_name_or_path $RUNS/clip-bridge --num_images 256 --use_ema
    # beside a long run: judge each checkpoint as it is saved (Ctrl-C writes the report)
    python training/learning_curve.py --task emoji --run_dir $RUNS/galip-emoji \
        --clip_model_name_or_path $RUNS/clip-bridge --num_images 300 --use_ema --watch 60

Every judged checkpoint is also appended to ``learning_curve_points.jsonl`` in the run folder, so a checkpoint that
``--checkpoints_total_limit`` later deletes keeps its point, and a re-run judges only new checkpoints. Writes
``learning_curve.json``, ``learning_curve.md`` and ``learning_curve.png`` under ``--results_dir`` (default
``results/learning_curve``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from transformers import CLIPModel, CLIPTokenizer

from galip_diffusers import GALIPPipeline
from galip_diffusers.data import shapes
from galip_diffusers.data.emoji_eval import TARGETS as EMOJI_TARGETS
from galip_diffusers.data.shapes_eval import caption_cycle, generate
from galip_diffusers.training.checkpoints import list_checkpoints, load_checkpoint_generator
from galip_diffusers.training.setup import clip_towers

LOSS_KEYS = ("loss_d", "loss_g", "loss_g_adversarial", "clip_similarity", "loss_d_magp")
#: per task, the checks of each prompt set that the curve follows
CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "shapes": {"train": ("background", "color", "shape", "size"), "held_out": ("background", "color", "shape", "size")},
    "emoji": {name: tuple(checks) for name, checks in EMOJI_TARGETS.items()},
}
POINTS_FILE = "learning_curve_points.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="--output_dir of train_galip.py (checkpoint-N/, losses.jsonl)")
    parser.add_argument("--clip_model_name_or_path", required=True,
                        help="the CLIP the run was trained on (tokenizer and text tower)")
    parser.add_argument("--task", choices=tuple(CHECKS), default="shapes", help="the data set the run trained on")
    parser.add_argument("--num_images", type=int, default=256,
                        help="generated images per split and checkpoint (emoji: seen captions; the held-out sets are "
                             "always judged whole)")
    parser.add_argument("--use_ema", action="store_true", help="score checkpoint-N/generator_ema instead of generator")
    parser.add_argument("--loss_window", type=int, default=25, help="moving-average window (steps) of the losses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=os.path.join("results", "learning_curve"))
    parser.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                        help="keep judging new checkpoints as the run saves them, polling every SECONDS; Ctrl-C stops "
                             "and writes the report")
    parser.add_argument("--cache_dir", default=None, help="emoji: where the npm tarballs are (fetched if missing)")
    parser.add_argument("--zero_noise", action="store_true",
                        help="judge the samples at z = 0 (what train_galip.py --reconstruction_warmup_steps fits) "
                             "instead of one random noise per image")
    args = parser.parse_args(argv)
    if args.watch is not None and not args.watch > 0:
        parser.error(f"--watch must be a number of seconds > 0, got {args.watch}")
    if args.num_images < 1:
        parser.error(f"--num_images must be >= 1, got {args.num_images}")
    if args.loss_window < 1:
        parser.error(f"--loss_window must be >= 1, got {args.loss_window}")
    if args.watch is None and not os.path.isfile(os.path.join(args.run_dir, "losses.jsonl")):
        parser.error(f"--run_dir {args.run_dir!r} has no losses.jsonl (is it a train_galip.py --output_dir?)")
    return args


def read_losses(path: str, window: int) -> dict[str, Any]:
    """Per-step losses and their trailing moving averages."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    rows = list({row["step"]: row for row in rows}.values())  # a resumed run may repeat steps: keep the last
    steps = np.array([row["step"] for row in rows])
    out: dict[str, Any] = {"step": steps.tolist()}
    for key in LOSS_KEYS:
        values = np.array([row.get(key, np.nan) for row in rows], dtype=np.float64)
        kernel = np.ones(min(window, len(values))) / min(window, len(values))
        out[key] = np.convolve(values, kernel, mode="valid").tolist() if len(values) else []
    out["smoothed_from_step"] = int(steps[min(window, len(steps)) - 1]) if len(steps) else 0
    return out


def shapes_scorer(args) -> Callable[[GALIPPipeline], dict[str, Any]]:
    def score(pipe: GALIPPipeline) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in CHECKS["shapes"]:
            captions = caption_cycle(split, args.num_images)
            images = generate(pipe, captions, seed=args.seed, zero_noise=args.zero_noise)
            out[split] = {k: v for k, v in shapes.score_images(images, captions).items() if k != "n"}
        return out

    return score


def emoji_scorer(args, judge=None) -> Callable[[GALIPPipeline], dict[str, Any]]:
    from galip_diffusers.data.emoji_eval import evaluate_emoji_pipeline
    from galip_diffusers.data.emoji_judge import EmojiJudge

    judge = judge if judge is not None else EmojiJudge.from_tarballs(cache_dir=args.cache_dir)

    def score(pipe: GALIPPipeline) -> dict[str, Any]:
        report = evaluate_emoji_pipeline(pipe, judge, num_seen=args.num_images, seed=args.seed, diversity_prompts=8,
                                         zero_noise=args.zero_noise)
        return {**{name: report[name] for name in CHECKS["emoji"]},
                "diversity_between_seeds": report["diversity"]["between_seeds"]}

    return score


def points_key(args) -> dict[str, Any]:
    """The settings a cached point must share to be reused (``zero_noise`` only when set, so that points judged
    before the flag existed still match)."""
    key = {"task": args.task, "num_images": args.num_images, "seed": args.seed, "use_ema": args.use_ema}
    return {**key, "zero_noise": True} if args.zero_noise else key


def cached_points(run_dir: str, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The points already judged with the same settings (``key``), by checkpoint name."""
    path = os.path.join(run_dir, POINTS_FILE)
    if not os.path.isfile(path):
        return {}
    rows = []
    for number, line in enumerate(open(path), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed watcher: that checkpoint is judged again
            if line.strip():
                print(f"{path}:{number}: unreadable point skipped (its checkpoint is judged again if it still exists).")
    return {row["checkpoint"]: row["point"] for row in rows if row.get("key") == key}


def judge_new_checkpoints(args, key: dict[str, Any], points: dict[str, dict[str, Any]], text_components: dict,
                          score: Callable[[GALIPPipeline], dict[str, Any]]) -> None:
    """Judge every checkpoint not in ``points`` (added to it and appended to the run's points file)."""
    for step, path in list_checkpoints(args.run_dir):
        name = os.path.basename(path)
        if name in points:
            continue
        try:
            generator = load_checkpoint_generator(path, args.use_ema)[0].eval()
        except OSError as error:  # deleted by --checkpoints_total_limit between the listing and the load
            if os.path.isdir(path):
                raise
            print(f"{name} was deleted before it could be judged ({error.__class__.__name__}); skipped.", flush=True)
            continue
        pipe = GALIPPipeline(**text_components, generator=generator)
        pipe.set_progress_bar_config(disable=True)
        points[name] = {"step": step, **score(pipe)}
        with open(os.path.join(args.run_dir, POINTS_FILE), "a") as f:
            f.write(json.dumps({"checkpoint": name, "key": key, "point": points[name]}) + "\n")
        print(json.dumps(points[name]), flush=True)


def plot(losses: dict[str, Any], points: list[dict[str, Any]], path: str, task: str = "shapes") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    steps = losses["step"][len(losses["step"]) - len(losses["loss_d"]):]
    for key in ("loss_d", "loss_g_adversarial", "clip_similarity"):
        ax_loss.plot(steps, losses[key], label=key)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("losses (moving average)")
    ax_loss.legend()
    xs = [p["step"] for p in points]
    for (split, checks), style in zip(CHECKS[task].items(), ("-", "--", ":")):
        for check in checks:
            ax_acc.plot(xs, [p[split][check] for p in points], style, marker="o", label=f"{split} {check}")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_xlabel("step")
    ax_acc.set_title(f"{task}: what the pixel judge reads in generated images")
    ax_acc.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(points: list[dict[str, Any]], losses: dict[str, Any], task: str = "shapes") -> str:
    groups = CHECKS[task]
    lines = ["| step | loss_d | loss_g (adv) | CLIP sim | " + " | ".join(f"{split}: {' / '.join(checks)}"
                                                                 for split, checks in groups.items()) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in groups) + " |"]
    offset = len(losses["step"]) - len(losses["loss_d"])
    smoothed_steps = losses["step"][offset:]
    for p in points:
        i = max((k for k, s in enumerate(smoothed_steps) if s <= p["step"]), default=None)
        loss_cells = ["–"] * 3 if i is None else [f"{losses[k][i]:.3f}" for k in ("loss_d", "loss_g_adversarial", "clip_similarity")]
        cells = [" / ".join(f"{p[split][c]:.2f}" for c in checks) for split, checks in groups.items()]
        lines.append(f"| {p['step']} | {' | '.join(loss_cells)} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def wait_for_run(run_dir: str, poll_seconds: float | None) -> None:
    """With ``--watch``, the watcher may start before the run writes anything: wait (polling) until the run's
    ``losses.jsonl`` exists, so that it can be started beside ``train_galip.py`` in either order."""
    if poll_seconds is None or os.path.isfile(os.path.join(run_dir, "losses.jsonl")):
        return
    print(f"Waiting for the run in {run_dir!r} to start (no losses.jsonl yet; polling every {poll_seconds:g} s).",
          flush=True)
    while not os.path.isfile(os.path.join(run_dir, "losses.jsonl")):
        time.sleep(poll_seconds)


@torch.no_grad()
def main(argv=None, judge=None) -> None:
    """Judge the run's checkpoints and write the report; ``judge`` reuses an already built emoji judge."""
    args = parse_args(argv)
    os.makedirs(args.results_dir, exist_ok=True)
    wait_for_run(args.run_dir, args.watch)
    if not list_checkpoints(args.run_dir) and args.watch is None:
        raise SystemExit(f"No checkpoint-N folders in {args.run_dir!r}: train with --checkpointing_steps.")
    tokenizer = CLIPTokenizer.from_pretrained(args.clip_model_name_or_path)
    text_encoder, _ = clip_towers(CLIPModel.from_pretrained(args.clip_model_name_or_path))
    score = emoji_scorer(args, judge) if args.task == "emoji" else shapes_scorer(args)
    key = points_key(args)
    points = cached_points(args.run_dir, key)
    components = {"tokenizer": tokenizer, "text_encoder": text_encoder}
    try:
        judge_new_checkpoints(args, key, points, components, score)
        while args.watch is not None:
            time.sleep(args.watch)
            judge_new_checkpoints(args, key, points, components, score)
    except KeyboardInterrupt:
        print("Stopped watching; writing the report.", flush=True)
    write_report(args, sorted(points.values(), key=lambda p: p["step"]))


def write_report(args, points: list[dict[str, Any]]) -> None:
    """``learning_curve.json`` / ``.md`` / ``.png`` under ``--results_dir``."""
    losses = read_losses(os.path.join(args.run_dir, "losses.jsonl"), args.loss_window)
    report = {"run_dir": os.path.abspath(args.run_dir), "task": args.task, "use_ema": args.use_ema,
              "num_images": args.num_images, "points": points, "losses": losses}
    with open(os.path.join(args.results_dir, "learning_curve.json"), "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(points, losses, args.task)
    with open(os.path.join(args.results_dir, "learning_curve.md"), "w") as f:
        f.write(table)
    if points:
        plot(losses, points, os.path.join(args.results_dir, "learning_curve.png"), args.task)
    print(table)


if __name__ == "__main__":
    main()
