#!/usr/bin/env python
"""How high can the held-out Noto *style* check go when a model is handed the exact Twemoji drawing?

galip-emoji meets every target of the emoji judge but one: for the 159 emoji whose Noto image is held out, the
nearest real image of ``"{label}, noto style"`` should be a Noto image in >= 70% of images. The generator has only
ever seen those emoji drawn by Twemoji. This script measures what a model built for nothing but that step reaches:

* **translator**: a small image-to-image U-Net trained (L1) to map each *seen* Twemoji image to the same emoji's
  *seen* Noto image (3,311 pairs; no held-out image is ever read as a target), then given the Twemoji image of each
  held-out emoji. Judged every ``--eval_every`` steps with the package's judge (all 7,572 real images, 32x32).
* **shrink**: the Twemoji image itself, scaled by 0.95 ... 0.80 on white (Noto drawings are a little smaller).
* **nearest other real image** (no model): for each held-out Noto image, and for comparison the seen Noto images of
  the train pairs (all of them, and those of emoji without tone variants), the nearest real image but itself: how
  often it is a Noto image, and how far it is. Where that neighbour is a Twemoji image, a drawing that misses the
  unseen Noto image by about that distance is read as Twemoji.

It is a diagnostic, not a shipped model: the translator sees the Twemoji pixels, which the generator never gets.
Reading the best checkpoint on the held-out set makes its figure an optimistic ceiling. Writes
``noto_style_ceiling.json`` and ``.md`` under ``--results_dir`` (default ``results/noto_style_ceiling``, git-ignored).

    python training/noto_style_ceiling.py --steps 5000 --flip
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from galip_diffusers.data.emoji import default_cache_dir, fetch_tarballs, load_held_out, read_emoji_images
from galip_diffusers.data.emoji_judge import EmojiJudge, summarize, to_judge_pixels
from galip_diffusers.training.options import FLAG_RANGES as TRAINING_FLAG_RANGES
from galip_diffusers.training.options import check_flag_ranges
from galip_core.paths import check_output_folder

Pair = Tuple[int, int]  # (index of the Twemoji image, index of the Noto image) in the records
#: the allowed values of the flags (galip_core.finite.check_number_in_range keywords; the learning rate's and the
#: seed's as in the training scripts)
FLAG_RANGES = {**{name: dict(low=1, integer=True) for name in ("steps", "eval_every", "resolution", "channels",
                                                               "batch_size")},
               "learning_rate": TRAINING_FLAG_RANGES["learning_rate"], "seed": TRAINING_FLAG_RANGES["seed"]}
SHRINK_SCALES = (0.95, 0.9, 0.85, 0.8)
CHECKS = ("emoji_top1", "emoji_top5", "style_top1")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="translator training steps")
    parser.add_argument("--eval_every", type=int, default=1000, help="judge the held-out outputs every N steps")
    parser.add_argument("--resolution", type=int, default=32, help="translator resolution (the judge's is 32)")
    parser.add_argument("--channels", type=int, default=32, help="U-Net base width")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--flip", action="store_true", help="flip input and target together (augmentation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_dir", default="results/noto_style_ceiling")
    parser.add_argument("--cache_dir", default=None, help="where the npm tarballs are (fetched with npm if missing)")
    args = parser.parse_args(argv)
    try:  # every value and the results folder, before the images are read and the translator trains
        check_flag_ranges(args, FLAG_RANGES)
        check_output_folder("--results_dir", args.results_dir)
    except (ValueError, OSError) as error:  # OSError: a results path that cannot be a folder
        parser.error(str(error))
    if args.resolution % 4:
        parser.error(f"--resolution must be a multiple of 4 (two 2x downsamplings), got {args.resolution}")
    return args


def translation_pairs(records: Sequence[Mapping[str, Any]], held_out: Mapping[Tuple[str, str], Any]
                      ) -> Tuple[List[Pair], List[Pair]]:
    """``(train, test)``: Twemoji -> Noto pairs of one emoji. ``train``: both images seen. ``test``: the Noto image
    held out, the Twemoji one seen (the 159 held-out Noto prompts). Pairs with a held-out Twemoji image (the held-out
    skin tones) are in neither."""
    index = {(r["unified"], r["style"]): i for i, r in enumerate(records)}
    train: List[Pair] = []
    test: List[Pair] = []
    for (unified, style), noto in sorted(index.items(), key=lambda item: item[1]):
        twemoji = index.get((unified, "twemoji"))
        if style != "noto" or twemoji is None or (unified, "twemoji") in held_out:
            continue
        (test if (unified, "noto") in held_out else train).append((twemoji, noto))
    return train, test


def to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` in [-1, 1], composited on white and box-filtered (as the judge reads them)."""
    pixels = to_judge_pixels(images, size).reshape(-1, size, size, 3) * 2.0 - 1.0
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def to_uint8(images: torch.Tensor) -> List[np.ndarray]:
    return list(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


class TranslatorUNet(nn.Module):
    """A three-level U-Net that predicts a residual on its input image. Written here because the diagnostic needs
    only a small, fixed image-to-image net (diffusers' UNet2DModel expects a timestep and is far larger)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels

        def convs(cin: int, cout: int, n: int, first_stride: int = 1) -> nn.Sequential:
            layers: List[nn.Module] = []
            for k in range(n):
                stride = first_stride if k == 0 else 1
                layers += [nn.Conv2d(cin if k == 0 else cout, cout, 4 if stride == 2 else 3, stride, 1), nn.GELU()]
            return nn.Sequential(*layers)

        self.down1, self.down2, self.down3 = convs(3, c, 2), convs(c, 2 * c, 2, 2), convs(2 * c, 4 * c, 3, 2)
        self.up2 = convs(6 * c, 2 * c, 2)
        self.up1 = nn.Sequential(convs(3 * c, c, 1), nn.Conv2d(c, 3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.down1(x)
        b = self.down2(a)
        h = self.up2(torch.cat([F.interpolate(self.down3(b), scale_factor=2.0), b], 1))
        return x + self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), a], 1))


def shrink(image: Image.Image, scale: float, size: int = 64) -> np.ndarray:
    """An RGB image (as ``read_emoji_images`` returns them: already on white) scaled by ``scale`` about the centre of
    a white ``size`` x ``size`` canvas, as a uint8 ``(size, size, 3)`` array."""
    inner = max(1, round(size * scale))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(image.convert("RGB").resize((inner, inner), Image.LANCZOS), ((size - inner) // 2,) * 2)
    return np.asarray(canvas)


def nearest_other(judge: EmojiJudge, targets: Sequence[int]) -> Dict[str, float]:
    """For real images ``targets`` (indices into the judge), the nearest real image *other than itself*: the share
    of targets where it has the target's style, and the median distance to it (RMS, 32x32, [0, 1])."""
    distances = judge.pixel_distances(judge.pixels[list(targets)])
    distances[np.arange(len(targets)), list(targets)] = np.inf
    nearest = distances.argmin(1)
    return {"n": len(targets), "same_style": float(np.mean(judge.style[nearest] == judge.style[list(targets)])),
            "median_distance": float(np.median(distances.min(1)))}


def without_tone_variants(judge: EmojiJudge, pairs: Sequence[Pair]) -> List[int]:
    """The Noto images of ``pairs`` whose emoji has no skin-tone variants (one image per style, like the 159
    held-out ones); tone variants are near-copies of each other, so their nearest other image is much closer."""
    concepts, counts = np.unique(judge.concept, return_counts=True)
    solo = set(concepts[counts == 2])
    return [noto for _, noto in pairs if judge.concept[noto] in solo]


def judged(judge: EmojiJudge, images: Sequence[np.ndarray], test: Sequence[Pair]) -> Dict[str, float]:
    return summarize(judge.judge(images, [noto for _, noto in test]))


def train_translator(args: argparse.Namespace, images: Sequence[Image.Image], train: Sequence[Pair],
                     test: Sequence[Pair], judge: EmojiJudge) -> List[Dict[str, Any]]:
    """Train the U-Net on ``train`` and judge its outputs on ``test``; one row per evaluation (step 0 included)."""
    torch.manual_seed(args.seed)
    x = to_tensor([images[t] for t, _ in train], args.resolution)
    y = to_tensor([images[n] for _, n in train], args.resolution)
    x_test = to_tensor([images[t] for t, _ in test], args.resolution)
    net = TranslatorUNet(args.channels)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    rng = torch.Generator().manual_seed(args.seed)
    rows, start = [], time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                out = torch.cat([net(chunk) for chunk in x_test.split(256)])
            net.train()
            rows.append({"step": step, "seconds": round(time.time() - start, 1), **judged(judge, to_uint8(out), test)})
            print(json.dumps(rows[-1]), flush=True)
        if step == args.steps:
            break
        batch = torch.randint(0, len(train), (args.batch_size,), generator=rng)
        inputs, targets = x[batch], y[batch]
        if args.flip:
            flip = torch.rand(args.batch_size, generator=rng) < 0.5
            inputs = torch.where(flip[:, None, None, None], inputs.flip(-1), inputs)
            targets = torch.where(flip[:, None, None, None], targets.flip(-1), targets)
        loss = F.l1_loss(net(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rows


def report_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Held-out Noto style: what a model handed the Twemoji drawing reaches", "",
             f"{report['num_train_pairs']} seen Twemoji -> Noto pairs, {report['num_held_out']} held-out Noto "
             f"emoji; target: style >= 70% with emoji top-5 >= 40%.", "",
             "| input | step | nearest is the emoji | emoji in 5 nearest | nearest has Noto style |",
             "| --- | --- | --- | --- | --- |"]
    percent = lambda row, key: f"{100 * row[key]:.1f}%"  # noqa: E731
    for row in report["shrink"]:
        lines.append(f"| Twemoji image x{row['scale']} | | " + " | ".join(percent(row, k) for k in CHECKS) + " |")
    for row in report["translator"]:
        lines.append(f"| translator | {row['step']} | " + " | ".join(percent(row, k) for k in CHECKS) + " |")
    lines += ["", "Nearest real image other than the Noto image itself:", "",
              "| Noto images | n | it has Noto style | median distance |", "| --- | --- | --- | --- |"]
    for name, row in report["nearest_other"].items():
        lines.append(f"| {name} | {row['n']} | {percent(row, 'same_style')} | {row['median_distance']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None, judge_data=None) -> Dict[str, Any]:
    """``judge_data``: ``(judge, records, images)`` already read (tests pass theirs)."""
    args = parse_args(argv)
    if judge_data is None:
        cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        records, images = read_emoji_images(fetch_tarballs(cache_dir))
        judge = EmojiJudge.from_records(records, images)
    else:
        judge, records, images = judge_data
    train, test = translation_pairs(records, load_held_out())
    report = {
        "num_train_pairs": len(train), "num_held_out": len(test), "args": vars(args),
        "shrink": [{"scale": s, **judged(judge, [shrink(images[t], s) for t, _ in test], test)}
                   for s in (1.0,) + SHRINK_SCALES],
        "nearest_other": {"held-out": nearest_other(judge, [noto for _, noto in test]),
                          "seen, all": nearest_other(judge, [noto for _, noto in train]),
                          "seen, no tone variants": nearest_other(judge, without_tone_variants(judge, train))},
        "translator": train_translator(args, images, train, test, judge),
    }
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, "noto_style_ceiling.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.results_dir, "noto_style_ceiling.md"), "w") as f:
        f.write(report_markdown(report))
    print(report_markdown(report))
    return report


if __name__ == "__main__":
    main()
