#!/usr/bin/env python
"""Does FuseDream-style search make GALIP follow the text better? Judged from pixels, not by either CLIP.

For a fixed set of shapes prompts (seen and held-out combinations) and fixed seeds, three methods are compared on the
same seeds with the pixel evaluator ``galip_diffusers.data.shapes.score_images``:

* ``one_step``: the plain GALIP sample (one forward pass) of that seed;
* ``selection``: FuseDream's initialisation only (best-k of ``num_candidates`` by scorer CLIP, their basis mix);
* ``refined``: initialisation + over-parameterised AugCLIP search.

Composition: for two-object prompts ("a small red circle and a small blue square on a white background"), the composed
image is split into left/right halves (the default masks), each half padded to a square with its own border colour and
read with ``predict_attributes``; a seed succeeds if the left half shows object 1's colour and shape and the right half
object 2's. The plain one-step sample of the joint prompt and the composition at initialisation are checked the same way.

Writes ``<output_dir>/fusedream.json`` and ``fusedream.md``. Cost is reported in seconds per image on this machine.

    python training/eval_fusedream.py --model galip-shapes --num_prompts 8 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
from transformers import CLIPModel

from galip_diffusers import GALIPFuseDreamPipeline, GALIPPipeline
from galip_diffusers.data import shapes

ATTRIBUTES = ("background", "color", "shape", "size")
COMPOSE_PAIRS = (  # (color, shape) left, (color, shape) right, background; the last two use held-out combinations
    (("red", "circle"), ("blue", "square"), "white"),
    (("green", "triangle"), ("yellow", "circle"), "black"),
    (("purple", "triangle"), ("orange", "square"), "gray"),
    (("orange", "circle"), ("green", "square"), "white"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="pipeline folder (with a scorer CLIP) or packaged short name")
    parser.add_argument("--scorer", default=None,
                        help="a CLIPModel folder to use as the scorer instead of the model's own (same tokenizer)")
    parser.add_argument("--splits", nargs="*", default=["train", "held_out"], choices=["train", "held_out"],
                        help="caption splits of the text-following comparison (none: composition only)")
    parser.add_argument("--num_prompts", type=int, default=8, help="prompts per split (seen and held-out)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    # None: the model's galip_settings.json (refinement / composition sections), else the pipeline's built-in default
    parser.add_argument("--num_candidates", type=int, default=None)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--num_steps", type=int, default=None)
    parser.add_argument("--num_augmentations", type=int, default=32)
    parser.add_argument("--num_measure_augmentations", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--optimize", default="noise+text", choices=["noise", "text", "noise+text"])
    parser.add_argument("--latent_noise", type=float, default=0.01)
    parser.add_argument("--compose_pairs", type=int, default=len(COMPOSE_PAIRS), help="0 skips composition")
    parser.add_argument("--compose_seeds", type=int, nargs="+", default=None, help="defaults to --seeds")
    parser.add_argument("--compose_steps", type=int, default=None,
                        help="defaults to --num_steps if given, else the model's composition.num_steps")
    parser.add_argument("--compose_top_k", type=int, default=None,
                        help="candidates kept per object in the composition (defaults to --top_k if given, else the "
                             "model's composition.top_k)")
    parser.add_argument("--layer", type=int, default=None,
                        help="G-block of the blend (default: the model's composition.layer, else num_blocks // 2)")
    parser.add_argument("--decode_condition", default="mix", choices=["mix", "joint"])
    parser.add_argument("--closeness", default="scorer", choices=["scorer", "generator"])
    parser.add_argument("--constraint", default="barrier", choices=["barrier", "penalty"])
    parser.add_argument("--containment_weight", type=float, default=None,
                        help="composition: weight of the spill-over penalty when choosing each object's candidates "
                             "(default: the model's composition.containment_weight, else 1)")
    parser.add_argument("--object_weight", type=float, default=0.0,
                        help="composition: weight of the object prompts' AugCLIP on their regions (0: joint only)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="truncate every noise to +-T (resampled), in one step, the search and composition alike "
                             "(default: the model's refinement / composition truncation; 0: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--output_dir", default="results")
    return parser.parse_args(argv)


def pick_prompts(split: str, n: int) -> list[str]:
    """``n`` captions of ``split``, deterministic and balanced over shapes: the captions of each shape are shuffled
    with a fixed seed and the shapes are taken in turn (circle, square, triangle, circle, ...), so every shape gets
    about ``n / 3`` prompts (on the held-out split: purple triangles and orange circles alternate) and an evaluation
    cannot miss the weakest shape. The other attributes come from the fixed shuffle."""
    rng = np.random.default_rng(0)
    by_shape = [[c for c in shapes.all_captions(split) if shapes.parse_caption(c)["shape"] == s] for s in shapes.SHAPES]
    by_shape = [[group[i] for i in rng.permutation(len(group))] for group in by_shape if group]
    longest = max(len(group) for group in by_shape)
    ordered = [group[r] for r in range(longest) for group in by_shape if r < len(group)]
    return ordered[:n]


def per_image_hits(images: np.ndarray, captions: list[str]) -> np.ndarray:
    """(N, 4) booleans: attribute read from pixels == caption's, in ATTRIBUTES order."""
    preds = shapes.score_images(images, captions, return_predictions=True)["per_image"]
    targets = [shapes.parse_caption(c) for c in captions]
    return np.array([[p[k] == t[k] for k in ATTRIBUTES] for p, t in zip(preds, targets)], dtype=bool).reshape(-1, 4)


def summarize(hits: np.ndarray) -> dict[str, float]:
    out = {k: float(hits[:, i].mean()) for i, k in enumerate(ATTRIBUTES)}
    out.update(mean=float(hits.mean()), all=float(hits.all(1).mean()), n=int(len(hits)))
    return out


def paired_gain(new: np.ndarray, old: np.ndarray) -> dict[str, float]:
    """Mean of per-image (mean attribute accuracy) differences, with its standard error."""
    diff = new.mean(1) - old.mean(1)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"gain": float(diff.mean()), "stderr": se, "n": int(len(diff))}


def first_given(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def resolve_settings(pipe: GALIPFuseDreamPipeline, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The refinement and composition settings of this evaluation: the flags given, else the model's recommended
    ones (``galip_settings.json``), else the pipeline's built-in defaults."""
    shared = dict(num_candidates=args.num_candidates, truncation=args.truncation)
    return {
        "refinement": pipe.settings.resolve("refinement", top_k=args.top_k, num_steps=args.num_steps, **shared),
        "composition": pipe.settings.resolve(
            "composition", top_k=first_given(args.compose_top_k, args.top_k), layer=args.layer,
            num_steps=first_given(args.compose_steps, args.num_steps), containment_weight=args.containment_weight,
            **shared),
    }  # fmt: skip


def search_options(args: argparse.Namespace, resolved: dict[str, Any]) -> dict[str, Any]:
    """The search arguments that refinement (`pipe(...)`) and composition (`pipe.compose(...)`) share."""
    return dict(num_candidates=resolved["num_candidates"], top_k=resolved["top_k"],
                num_augmentations=args.num_augmentations, num_measure_augmentations=args.num_measure_augmentations,
                lr=args.lr, optimize=args.optimize, latent_noise=args.latent_noise,
                truncation=resolved["truncation"] or 0, output_type="np")


def one_step(pipe: GALIPFuseDreamPipeline, prompt: str, generator: torch.Generator, truncation: float | None):
    """Plain GALIP sampling (no search) of the same seed, with the evaluation's truncation."""
    return GALIPPipeline.__call__(pipe, prompt, generator=generator, truncation=truncation or 0, output_type="np")


def run_text_following(pipe: GALIPFuseDreamPipeline, args: argparse.Namespace) -> dict[str, Any]:
    refine = args.resolved["refinement"]
    search = search_options(args, refine)
    report: dict[str, Any] = {}
    for split in args.splits:
        captions, images, seconds, scores = [], {"one_step": [], "selection": [], "refined": []}, {}, []
        for prompt in pick_prompts(split, args.num_prompts):
            for seed in args.seeds:
                captions.append(prompt)
                for method, call in (
                    ("one_step", lambda g: one_step(pipe, prompt, g, refine["truncation"])),
                    ("selection", lambda g: pipe(prompt, generator=g, num_steps=0, **search)),
                    ("refined", lambda g: pipe(prompt, generator=g, num_steps=refine["num_steps"], **search)),
                ):
                    start = time.perf_counter()
                    out = call(torch.Generator().manual_seed(seed))
                    seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - start
                    images[method].append(out.images[0])
                    if method == "refined":
                        scores.append((float(out.scores_before[0]), float(out.scores_after[0])))
        hits = {m: per_image_hits(np.stack(v), captions) for m, v in images.items()}
        report[split] = {
            "prompts": sorted(set(captions)),
            "accuracy": {m: summarize(h) for m, h in hits.items()},
            "gain_refined_vs_one_step": paired_gain(hits["refined"], hits["one_step"]),
            "gain_selection_vs_one_step": paired_gain(hits["selection"], hits["one_step"]),
            "augclip_before_after": [float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))],
            "seconds_per_image": {m: s / len(captions) for m, s in seconds.items()},
        }
        if split == "held_out":
            for pair in shapes.HELD_OUT_PAIRS:
                idx = [i for i, c in enumerate(captions) if f"{pair[0]} {pair[1]}" in c]
                if idx:
                    report[split][f"accuracy_{pair[0]}_{pair[1]}"] = {m: summarize(h[idx]) for m, h in hits.items()}
    return report


def square_half(half: np.ndarray) -> np.ndarray:
    """Pad an (H, W/2, 3) half image to (H, H, 3) with its own border median colour."""
    h, w = half.shape[:2]
    border = np.concatenate([half[0], half[-1], half[:, 0], half[:, -1]])
    fill = np.median(border, axis=0)
    out = np.broadcast_to(fill, (h, h, 3)).astype(half.dtype)  # keep uint8 or float [0, 1]
    left = (h - w) // 2
    out[:, left : left + w] = half
    return out


def two_object_check(image: np.ndarray, left: tuple[str, str], right: tuple[str, str]) -> dict[str, bool]:
    """Left/right halves read from pixels: colour+shape of each object in its half (and colours only)."""
    w = image.shape[1] // 2
    preds = [shapes.predict_attributes(square_half(image[:, :w])), shapes.predict_attributes(square_half(image[:, w:]))]
    colors = all(p["color"] == o[0] for p, o in zip(preds, (left, right)))
    both = colors and all(p["shape"] == o[1] for p, o in zip(preds, (left, right)))
    return {"both_objects": both, "both_colors": colors}


def run_composition(pipe: GALIPFuseDreamPipeline, args: argparse.Namespace) -> dict[str, Any]:
    seeds = args.compose_seeds or args.seeds
    compose = args.resolved["composition"]
    top_k = compose["top_k"]
    options = dict(search_options(args, compose), layer=compose["layer"], decode_condition=args.decode_condition,
                   closeness=args.closeness, constraint=args.constraint,
                   containment_weight=compose["containment_weight"], object_weight=args.object_weight)
    steps = compose["num_steps"]
    checks: dict[str, list[dict[str, bool]]] = {"one_step_joint": [], "composed_init": [], "composed": []}
    seconds, rows = 0.0, []
    for left, right, background in COMPOSE_PAIRS[: args.compose_pairs]:
        objects = [f"a small {c} {s} on a {background} background" for c, s in (left, right)]
        joint = f"a small {left[0]} {left[1]} and a small {right[0]} {right[1]} on a {background} background"
        for seed in seeds:
            plain = one_step(pipe, joint, torch.Generator().manual_seed(seed), compose["truncation"])
            start = time.perf_counter()
            init = pipe.compose(objects, prompt=joint, num_steps=0, generator=torch.Generator().manual_seed(seed), **options)
            if steps == 0:  # the composition at initialisation is the result
                out = init
            else:
                start = time.perf_counter()
                out = pipe.compose(objects, prompt=joint, num_steps=steps, generator=torch.Generator().manual_seed(seed),
                                   **options)
            seconds += time.perf_counter() - start
            for name, img in (("one_step_joint", plain.images[0]), ("composed_init", init.images[0]),
                              ("composed", out.images[0])):
                checks[name].append(two_object_check(img, left, right))
            rows.append({"prompt": joint, "seed": seed, **checks["composed"][-1],
                         "augclip_before": float(out.scores_before[0]), "augclip_after": float(out.scores_after[0])})
    rate = {m: {k: float(np.mean([c[k] for c in v])) for k in ("both_objects", "both_colors")} for m, v in checks.items()}
    return {"success_rate": rate, "target_both_objects": 0.7, "per_image": rows,
            "seconds_per_image": seconds / max(1, len(rows)), "num_steps": steps, "top_k": top_k}


def write_markdown(report: dict[str, Any], path: str) -> None:
    lines = ["# FuseDream on GALIP: pixel-judged text following", "",
             f"Model `{report['model']}` (scorer: {report['scorer']}), seeds {report['seeds']}, "
             + ", ".join(f"{k}={v}" for k, v in report["settings"].items()) + f", {report['threads']} thread(s).", ""]
    if report["text_following"]:
        lines += ["| split | method | mean attr. acc. | all 4 correct | color | shape | size | background | s/image |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for split in report["text_following"]:
        part = report["text_following"][split]
        for method, acc in part["accuracy"].items():
            lines.append(f"| {split} | {method} | {acc['mean']:.3f} | {acc['all']:.3f} | {acc['color']:.3f} | "
                         f"{acc['shape']:.3f} | {acc['size']:.3f} | {acc['background']:.3f} | "
                         f"{part['seconds_per_image'][method]:.3f} |")
    lines.append("")
    for split in report["text_following"]:
        g = report["text_following"][split]["gain_refined_vs_one_step"]
        lines.append(f"- {split}: refined - one_step = {g['gain']:+.3f} ± {g['stderr']:.3f} (paired, n={g['n']})")
    if "composition" in report:
        comp = report["composition"]
        lines += ["", "| composition | both objects (colour + shape) | both colours |", "| --- | --- | --- |"]
        lines += [f"| {m} | {r['both_objects']:.3f} | {r['both_colors']:.3f} |" for m, r in comp["success_rate"].items()]
        lines += ["", f"Target: both objects in >= {comp['target_both_objects']:.0%} of seeds; composed: "
                  f"{comp['seconds_per_image']:.2f} s/image ({comp['num_steps']} steps)."]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {"scorer": CLIPModel.from_pretrained(args.scorer)} if args.scorer else {}
    pipe = GALIPFuseDreamPipeline.from_pretrained(args.model, **extra)
    pipe.set_progress_bar_config(disable=True)
    args.resolved = resolve_settings(pipe, args)
    settings = {**{k: v for k, v in args.resolved["refinement"].items()},
                **{k: getattr(args, k) for k in ("num_augmentations", "lr", "optimize", "latent_noise")},
                "composition": args.resolved["composition"]}
    report: dict[str, Any] = {"model": args.model, "scorer": args.scorer or "the model's own", "seeds": args.seeds,
                              "settings": settings, "threads": torch.get_num_threads(),
                              "text_following": run_text_following(pipe, args)}
    if args.compose_pairs > 0:
        report["composition"] = run_composition(pipe, args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "fusedream.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, os.path.join(args.output_dir, "fusedream.md"))
    return report


if __name__ == "__main__":
    main()
