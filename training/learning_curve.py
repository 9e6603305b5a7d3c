#!/usr/bin/env python
"""Learning curve of a ``train_galip.py`` run on the captioned-shapes data: D/G losses over steps (from
``losses.jsonl``, including the generator's CLIP-similarity term) and, for every saved ``checkpoint-N``, the
pixel-level attribute accuracy of ``score_images`` on generated images (seen and held-out caption combinations).

    python training/learning_curve.py --run_dir $RUNS/galip-shapes-run \
        --clip_model_name_or_path $RUNS/clip-bridge --num_images 256 --use_ema

Writes ``learning_curve.json``, ``learning_curve.md`` and ``learning_curve.png`` under ``--results_dir``
(default ``results/learning_curve``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
import torch
from transformers import CLIPModel, CLIPTokenizer

from galip_diffusers import GALIPPipeline
from galip_diffusers.data import shapes
from galip_diffusers.data.shapes_eval import caption_cycle, generate
from galip_diffusers.training.checkpoints import list_checkpoints, load_checkpoint_generator
from galip_diffusers.training.setup import clip_towers

LOSS_KEYS = ("loss_d", "loss_g", "loss_g_adversarial", "clip_similarity", "loss_d_magp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="--output_dir of train_galip.py (checkpoint-N/, losses.jsonl)")
    parser.add_argument("--clip_model_name_or_path", required=True,
                        help="the CLIP the run was trained on (tokenizer and text tower)")
    parser.add_argument("--num_images", type=int, default=256, help="generated images per split and checkpoint")
    parser.add_argument("--use_ema", action="store_true", help="score checkpoint-N/generator_ema instead of generator")
    parser.add_argument("--loss_window", type=int, default=25, help="moving-average window (steps) of the losses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default=os.path.join("results", "learning_curve"))
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f"--num_images must be >= 1, got {args.num_images}")
    if args.loss_window < 1:
        parser.error(f"--loss_window must be >= 1, got {args.loss_window}")
    if not os.path.isfile(os.path.join(args.run_dir, "losses.jsonl")):
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


def score_checkpoint(pipe: GALIPPipeline, num_images: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("train", "held_out"):
        captions = caption_cycle(split, num_images)
        images = generate(pipe, captions, seed=seed)
        out[split] = {k: v for k, v in shapes.score_images(images, captions).items() if k != "n"}
    return out


def plot(losses: dict[str, Any], points: list[dict[str, Any]], path: str) -> None:
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
    for split, style in (("train", "-"), ("held_out", "--")):
        for attr in ("background", "color", "shape", "size"):
            ax_acc.plot(xs, [p[split][attr] for p in points], style, marker="o", label=f"{split} {attr}")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_xlabel("step")
    ax_acc.set_title("score_images accuracy of generated images")
    ax_acc.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(points: list[dict[str, Any]], losses: dict[str, Any]) -> str:
    lines = ["| step | loss_d | loss_g (adv) | CLIP sim | seen bg / color / shape / size | held-out bg / color / shape / size |",
             "| --- | --- | --- | --- | --- | --- |"]
    offset = len(losses["step"]) - len(losses["loss_d"])
    smoothed_steps = losses["step"][offset:]
    for p in points:
        i = max((k for k, s in enumerate(smoothed_steps) if s <= p["step"]), default=None)
        loss_cells = ["–"] * 3 if i is None else [f"{losses[k][i]:.3f}" for k in ("loss_d", "loss_g_adversarial", "clip_similarity")]
        seen = " / ".join(f"{p['train'][a]:.2f}" for a in ("background", "color", "shape", "size"))
        held = " / ".join(f"{p['held_out'][a]:.2f}" for a in ("background", "color", "shape", "size"))
        lines.append(f"| {p['step']} | {' | '.join(loss_cells)} | {seen} | {held} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def main(argv=None) -> None:
    args = parse_args(argv)
    os.makedirs(args.results_dir, exist_ok=True)
    checkpoints = list_checkpoints(args.run_dir)
    if not checkpoints:
        raise SystemExit(f"No checkpoint-N folders in {args.run_dir!r}: train with --checkpointing_steps.")
    tokenizer = CLIPTokenizer.from_pretrained(args.clip_model_name_or_path)
    text_encoder, _ = clip_towers(CLIPModel.from_pretrained(args.clip_model_name_or_path))
    losses = read_losses(os.path.join(args.run_dir, "losses.jsonl"), args.loss_window)
    points = []
    for step, path in checkpoints:
        pipe = GALIPPipeline(tokenizer=tokenizer, text_encoder=text_encoder,
                             generator=load_checkpoint_generator(path, args.use_ema)[0].eval())
        pipe.set_progress_bar_config(disable=True)
        points.append({"step": step, **score_checkpoint(pipe, args.num_images, args.seed)})
        print(json.dumps(points[-1]), flush=True)
    report = {"run_dir": os.path.abspath(args.run_dir), "use_ema": args.use_ema, "num_images": args.num_images,
              "points": points, "losses": losses}
    with open(os.path.join(args.results_dir, "learning_curve.json"), "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(points, losses)
    with open(os.path.join(args.results_dir, "learning_curve.md"), "w") as f:
        f.write(table)
    plot(losses, points, os.path.join(args.results_dir, "learning_curve.png"))
    print(table)


if __name__ == "__main__":
    main()
