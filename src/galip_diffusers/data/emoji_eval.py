"""Evaluation of a GALIP pipeline on the emoji data set with the pixel nearest-neighbour judge.

Prompts are ``"{label}, {style} style"``, one per target image, in three sets:

* ``seen``: ``num_seen`` image-caption pairs drawn (seeded) from the pairs a model may train on;
* ``held_out_noto``: the 159 emoji whose Noto image is held out (their Twemoji image is seen);
* ``held_out_tones``: the 316 held-out skin-tone variants, in both styles (632 prompts).

Each prompt gets one image (seed ``seed + i``) judged by :class:`~galip_diffusers.data.emoji_judge.EmojiJudge`.
The caption contract's other form, the bare ``"{label}"``, is judged too (not a target): the seen prompts' and the
held-out tones' labels without a style, each image judged in the style it was drawn in (:func:`label_only_verdicts`).
Diversity is the mean RMS pixel distance (32x32) between images of one prompt across seeds, next to the same figure
between the two real styles of the same emoji.
"""

from __future__ import annotations

import json
import os
import textwrap
import unicodedata
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from galip_core.finite import check_number_in_range

from .emoji import captions, load_held_out
from .emoji_judge import EmojiJudge, check_image_batch, mean_distance_between, mean_pairwise_rms, summarize

Prompt = Tuple[str, int]  # (caption, index of the target real image in the judge)

SETS = ("seen", "held_out_noto", "held_out_tones")
#: issue #24's targets: the share of images each check must reach, per prompt set
TARGETS: Dict[str, Dict[str, float]] = {
    "seen": {"emoji_top1": 0.60, "emoji_top5": 0.80, "style_top1": 0.90},
    "held_out_noto": {"style_top1": 0.70, "emoji_top5": 0.40},
    "held_out_tones": {"tone_among_variants": 0.60, "emoji_top5": 0.60},
}
SET_NAMES = {"seen": "seen captions", "held_out_noto": "held-out Noto images", "held_out_tones": "held-out skin tones"}
CHECK_NAMES = {"emoji_top1": "nearest image is the emoji", "emoji_top5": "emoji among the 5 nearest",
               "style_top1": "nearest image has the style", "tone_among_variants": "nearest tone variant is the tone"}
#: the prompt sets whose bare labels are judged as well (``report["labels_only"]``)
LABEL_ONLY_SETS = ("seen", "held_out_tones")
#: image ``i`` is drawn with ``torch.Generator().manual_seed(seed + i)`` (seeds up to 2**64 - 1) and the seen pairs are
#: picked by ``np.random.default_rng(seed)`` (seeds >= 0): [0, 2**63 - 1] leaves room for every prompt
MAX_SEED = 2**63 - 1


def evaluation_prompts(judge: EmojiJudge, num_seen: int = 1000, seed: int = 0,
                       held_out_path: Optional[str] = None) -> Dict[str, List[Prompt]]:
    """The three prompt sets of the module docstring (``num_seen >= 0``, capped at the number of seen pairs; 0 gives
    no seen prompts; ``seed >= 0``). ``ValueError`` if the judge lacks a held-out image or a held-out set comes out
    empty (:func:`_check_held_out_sets`)."""
    check_number_in_range("`num_seen`", num_seen, low=0, integer=True)
    check_number_in_range("`seed`", seed, low=0, integer=True)
    held_out = load_held_out(held_out_path)
    sets: Dict[str, List[Prompt]] = {"seen": [], "held_out_noto": [], "held_out_tones": []}
    seen = []
    for index in range(len(judge)):
        key = (str(judge.unified[index]), str(judge.style[index]))
        caption = captions(str(judge.label[index]), key[1])[-1]
        if key not in held_out:
            seen.append((caption, index))
        elif len(held_out[key]["styles"]) == 1:
            sets["held_out_noto"].append((caption, index))
        else:
            sets["held_out_tones"].append((caption, index))
    _check_held_out_sets(judge, held_out, sets, held_out_path)
    picks = np.random.default_rng(seed).permutation(len(seen))[: min(num_seen, len(seen))]
    sets["seen"] = [seen[i] for i in sorted(picks)]
    return sets


def _check_held_out_sets(judge: EmojiJudge, held_out: Mapping[Tuple[str, str], Any], sets: Dict[str, List[Prompt]],
                         held_out_path: Optional[str]) -> None:
    """``ValueError`` unless the judge holds every held-out image and both held-out sets have prompts: a judge built
    from the train split alone (``EmojiJudge.from_dataset``) would otherwise give empty held-out sets (reported as
    ``n: 0``) and judge the seen prompts against fewer references than the whole data set."""
    source = repr(held_out_path) if held_out_path is not None else "the shipped held-out list"
    missing = sorted(set(held_out) - set(zip(judge.unified.astype(str), judge.style.astype(str))))
    if missing:
        raise ValueError(f"the judge's reference set lacks {len(missing)} of the {len(held_out)} held-out images of "
                         f"{source} (e.g. {missing[0]}); the judge must hold every real image: use "
                         "EmojiJudge.from_tarballs(), or EmojiJudge.from_dataset on a data set built with split='all'")
    for name in ("held_out_noto", "held_out_tones"):
        if not sets[name]:
            raise ValueError(f"{source} gives the {SET_NAMES[name]} set no prompt: the evaluation needs both "
                             "held-out sets (an entry held out in Noto only, and one held out in both styles)")


def generate_uint8(pipe, prompts: Sequence[str], seed: int = 0, batch_size: int = 128, **kwargs: Any) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images, image ``i`` from ``torch.Generator().manual_seed(seed + i)``
    (:func:`~galip_diffusers.data.shapes_eval.generate`, quantised)."""
    from .shapes_eval import generate

    check_number_in_range("`seed`", seed, low=0, high=MAX_SEED, integer=True)  # torch's seeds end at 2**64 - 1
    if not prompts:
        return np.zeros((0, 0, 0, 3), np.uint8)
    images = generate(pipe, prompts, seed=seed, batch_size=batch_size, **kwargs)
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def seed_diversity(pipe, judge: EmojiJudge, prompts: Sequence[Prompt], num_seeds: int = 8, seed: int = 50_000,
                   **kwargs: Any) -> Dict[str, float]:
    """Mean distance between one prompt's images across ``num_seeds`` seeds, and between the two real styles of
    the same emoji (the scale of a visible difference); needs at least one prompt and two seeds."""
    check_number_in_range("`num_seeds`", num_seeds, low=2, integer=True)
    if not prompts:
        raise ValueError("`prompts` must hold at least one (caption, target) pair to measure diversity on, got none")
    groups = [generate_uint8(pipe, [caption] * num_seeds, seed=seed + 1000 * k, **kwargs)
              for k, (caption, _) in enumerate(prompts)]
    pairs = []
    for _, target in prompts:
        other = "noto" if judge.style[target] == "twemoji" else "twemoji"
        try:
            twin = judge.index_of(str(judge.unified[target]), other)
        except KeyError:
            continue
        pairs.append(judge.pixels[[target, twin]])
    return {"between_seeds": mean_distance_between(groups), "between_real_styles": mean_pairwise_rms(pairs),
            "num_prompts": len(prompts), "num_seeds": num_seeds}


def evaluate_emoji_pipeline(pipe, judge: EmojiJudge, num_seen: int = 1000, seed: int = 0,
                            diversity_prompts: int = 24, held_out_path: Optional[str] = None,
                            **kwargs: Any) -> Dict[str, Any]:
    """Judge one image per prompt of every set; report each set's summary, the diversity and a few verdicts.

    ``kwargs`` go to the pipeline call (e.g. ``truncation``), or ``zero_noise=True`` to draw every image at z = 0
    (:func:`~galip_diffusers.data.shapes_eval.generate`). ``num_seen`` and ``diversity_prompts`` must be >= 1 (the
    diversity is measured on seen prompts) and ``seed`` in [0, :data:`MAX_SEED`]; all are checked before any image is
    drawn."""
    check_number_in_range("`num_seen`", num_seen, low=1, integer=True)
    check_number_in_range("`diversity_prompts`", diversity_prompts, low=1, integer=True)
    sets = evaluation_prompts(judge, num_seen=num_seen, seed=seed, held_out_path=held_out_path)
    judged = f"nearest real image, 32x32 RMS pixels, {len(judge):,} references"
    report: Dict[str, Any] = {"seed": seed, "judge": judged}
    for name, prompts in sets.items():
        images = generate_uint8(pipe, [c for c, _ in prompts], seed=seed, **kwargs)
        verdicts = judge.judge(images, [t for _, t in prompts])
        report[name] = summarize(verdicts)
        report[name + "_examples"] = [{"prompt": c, **v} for (c, _), v in list(zip(prompts, verdicts))[:8]]
    report["labels_only"] = {}
    for name in LABEL_ONLY_SETS:
        labels = [(str(judge.label[target]), target) for _, target in sets[name]]
        images = generate_uint8(pipe, [label for label, _ in labels], seed=seed, **kwargs)
        report["labels_only"][name] = summarize_label_only(label_only_verdicts(judge, images, labels))
    report["diversity"] = seed_diversity(pipe, judge, sets["seen"][:diversity_prompts], **kwargs)
    return report


def label_only_verdicts(judge: EmojiJudge, images: np.ndarray, prompts: Sequence[Prompt]) -> List[Dict[str, Any]]:
    """Verdicts for bare ``"{label}"`` prompts, which ask for no style: each image is judged against its emoji's real
    image *in the style of the image's nearest real image* (either style is right), so ``emoji_top1``/``emoji_top5``
    and ``tone_among_variants`` (among that style's tone variants) mean what they mean for styled prompts. Each verdict
    adds ``drawn_style``; ``style_top1`` is dropped, being true by construction."""
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    if not len(prompts):
        return []
    drawn = [str(judge.style[index]) for index in np.argmin(judge.distances(images), axis=1)]
    verdicts = judge.judge(images, [_in_style(judge, target, style) for (_, target), style in zip(prompts, drawn)])
    for verdict, style in zip(verdicts, drawn):
        del verdict["style_top1"]
        verdict["drawn_style"] = style
    return verdicts


def _in_style(judge: EmojiJudge, target: int, style: str) -> int:
    """The index of ``target``'s emoji (same code, so the same tone) in ``style``; ``target`` itself where the data set
    has no image of it in that style."""
    try:
        return judge.index_of(str(judge.unified[target]), style)
    except KeyError:
        return target


def summarize_label_only(verdicts: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """:func:`~galip_diffusers.data.emoji_judge.summarize` of :func:`label_only_verdicts`, plus ``drawn_twemoji``: the
    share of images drawn in Twemoji style (the rest are Noto)."""
    summary = summarize(verdicts)
    shares = [v["drawn_style"] == "twemoji" for v in verdicts]
    summary["drawn_twemoji"] = float(np.mean(shares)) if shares else float("nan")
    return summary


def prompt_grid(images: np.ndarray, prompts: Sequence[str], columns: int = 8, scale: int = 2):
    """A PIL grid of uint8 ``(N, H, W, 3)`` images (at least one, of at least one pixel: ``generate_uint8`` output),
    each enlarged ``scale`` times (nearest) above its prompt."""
    from PIL import Image, ImageDraw

    check_number_in_range("`columns`", columns, low=1, integer=True)
    check_number_in_range("`scale`", scale, low=1, integer=True)
    if not isinstance(images, np.ndarray):
        raise ValueError(f"`images` must be a uint8 (N, H, W, 3) numpy array, got {type(images).__name__}")
    check_image_batch(images)
    if not images.size:
        raise ValueError(f"`images` must hold at least one image of at least one pixel, got shape {images.shape}")
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    height, width = images.shape[1] * scale, images.shape[2] * scale
    cell_w, text_h, chars = max(width, 150), 36, 26
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell_w, rows * (height + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        x, y = (i % columns) * cell_w, (i // columns) * (height + text_h)
        grid.paste(Image.fromarray(image).resize((width, height), Image.NEAREST), (x + (cell_w - width) // 2, y))
        lines = textwrap.wrap(ascii_label(prompt), chars, break_long_words=True)[:3]
        draw.multiline_text((x + 2, y + height + 1), "\n".join(lines), fill=(0, 0, 0), spacing=0)
    return grid


#: typographic punctuation of CLDR labels ("woman’s hat") and its ASCII spelling
_ASCII_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                                    "\u2014": "-"})


def ascii_label(text: str) -> str:
    """``text`` with its accents dropped (``"flag: Åland Islands"`` -> ``"flag: Aland Islands"``) and typographic
    quotes and dashes made ASCII (``"woman’s hat"`` -> ``"woman's hat"``), for the grid's labels: PIL's default font
    draws every non-ASCII letter as the same box. Letters with no ASCII base become ``?``."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_PUNCTUATION))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).encode("ascii", "replace").decode("ascii")


def missed_targets(report: Dict[str, Any]) -> List[str]:
    """One sentence per check of :data:`TARGETS` that ``report`` (from :func:`evaluate_emoji_pipeline`) misses."""
    return [f"{SET_NAMES[name]}: {CHECK_NAMES[check]} in {100 * report[name][check]:.1f}% of images, below the "
            f"{100 * target:.0f}% target" for name in SETS for check, target in TARGETS[name].items()
            if not report[name][check] >= target]


def meets_seen_targets(report: Dict[str, Any]) -> bool:
    """Whether the seen-caption targets are all met (the condition for being the default model)."""
    return all(report["seen"][check] >= target for check, target in TARGETS["seen"].items())


def report_markdown(report: Dict[str, Any]) -> str:
    """The figures of a report as Markdown: every check with its target, then the seed diversity."""
    lines = ["| prompts | images | check | value | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    for name in SETS:
        for check, value in report[name].items():
            if check == "n":
                continue
            target = TARGETS[name].get(check)
            met = "" if target is None else ("yes" if value >= target else "**no**")
            lines.append(f"| {SET_NAMES[name]} | {report[name]['n']} | {CHECK_NAMES.get(check, check)} | "
                         f"{100 * value:.1f}% | {'' if target is None else f'{100 * target:.0f}%'} | {met} |")
    if "labels_only" in report:
        lines += ["", label_only_markdown(report["labels_only"]).rstrip("\n")]
    d = report["diversity"]
    lines += ["", f"Diversity: {d['between_seeds']:.3f} mean RMS pixel distance (32x32, [0, 1]) between seeds of one "
              f"prompt ({d['num_prompts']} prompts x {d['num_seeds']} seeds), against {d['between_real_styles']:.3f} "
              "between the Twemoji and Noto images of one emoji."]
    if "style_probe" in report:  # an additional, more lenient reader of the style (not the targets' judge)
        lines += ["", "Style probe (a Noto/Twemoji classifier trained on the seen real images; an additional figure, "
                  "not the judge):", "", probe_markdown(report["style_probe"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def label_only_markdown(labels_only: Mapping[str, Mapping[str, float]]) -> str:
    """The bare-label figures of a report (``report["labels_only"]``) as a Markdown table."""
    lines = ['Bare labels (`"{label}"`, no style asked; not a target; judged in the style each image is drawn in):', "",
             "| labels of | images | nearest image is the emoji | emoji among the 5 nearest | asked tone nearest "
             "among its variants | drawn in Twemoji style |", "| --- | --- | --- | --- | --- | --- |"]
    for name, summary in labels_only.items():
        tone = summary.get("tone_among_variants")
        lines.append(f"| {SET_NAMES[name]} | {summary['n']} | {100 * summary['emoji_top1']:.1f}% | "
                     f"{100 * summary['emoji_top5']:.1f}% | {'' if tone is None else f'{100 * tone:.1f}%'} | "
                     f"{100 * summary['drawn_twemoji']:.1f}% |")
    return "\n".join(lines) + "\n"


def probe_markdown(report: Mapping[str, Any]) -> str:
    """The figures of :func:`~galip_diffusers.data.emoji_style_probe.probe_report` as a Markdown table."""
    c, n = report["calibration"], report["n"]
    held = str(c["num_held_out_noto"])
    rows = [("real images it trained on", str(c["num_train"]), "its style", c["train"]),
            ("held-out real Noto images (never trained on)", held, "Noto", c["held_out_noto"]),
            ("their Twemoji images", held, "Twemoji", c["their_twemoji"]),
            ("generated, seen prompts", str(n["seen"]), "the asked style", report["seen"]),
            ("generated, held-out Noto prompts", str(n["held_out_noto"]), "Noto", report["held_out_noto"]),
            ("generated, the same emoji asked in Twemoji style", str(n["held_out_noto"]), "Twemoji",
             report["held_out_noto_asked_twemoji"])]
    lines = ["| images | n | read as | share |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {count} | {style} | {100 * value:.1f}% |" for what, count, style, value in rows]
    return "\n".join(lines) + "\n"


def grid_prompts(sets: Dict[str, List[Prompt]]) -> List[Prompt]:
    """64 prompts for the README grid: 32 seen, 16 held-out Noto and 16 held-out tones, each spread evenly over its
    list (the lists follow the data set's order, which groups keycaps, flags, people and so on)."""
    def spread(items: List[Prompt], n: int) -> List[Prompt]:
        return items[:: max(1, len(items) // n)][:n]

    return spread(sets["seen"], 32) + spread(sets["held_out_noto"], 16) + spread(sets["held_out_tones"], 16)


def nearest_label(judge: EmojiJudge, image: np.ndarray) -> str:
    """``"label (style)"`` of the real image nearest to one uint8 image."""
    return _label(judge, int(np.argmin(judge.distances(image[None])[0])))


def _label(judge: EmojiJudge, index: int) -> str:
    return f"{judge.label[index]} ({judge.style[index]})"


def write_results(pipe, judge: EmojiJudge, report: Dict[str, Any], results_dir: str, num_seen: int, seed: int = 0,
                  held_out_path: Optional[str] = None, **kwargs: Any) -> List[Dict[str, Any]]:
    """Write ``eval.json``, ``eval.md`` and ``grid.png`` (the :func:`grid_prompts` images, seed ``seed + i``) under
    ``results_dir``; return the grid's prompts with the judge's verdict and the label of the nearest real image
    (``nearest_label``), for the docs."""
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "eval.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(results_dir, "eval.md"), "w") as f:
        f.write(f"# Emoji judge: {report.get('source', 'model')}\n\n" + report_markdown(report))
    picks = grid_prompts(evaluation_prompts(judge, num_seen=num_seen, seed=seed, held_out_path=held_out_path))
    prompts = [caption for caption, _ in picks]
    images = generate_uint8(pipe, prompts, seed=seed, **kwargs)
    prompt_grid(images, prompts).save(os.path.join(results_dir, "grid.png"))
    verdicts = judge.judge(images, [target for _, target in picks])
    nearest = [judge.index_of(*verdict["nearest"][0].split("/")) for verdict in verdicts]  # "unified/style"
    return [{"prompt": caption, **verdict, "nearest_label": _label(judge, index)}
            for (caption, _), verdict, index in zip(picks, verdicts, nearest)]


def interpolation(pipe, judge: EmojiJudge, prompts: Sequence[str], num_steps: int = 8, seed: int = 0
                  ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """:func:`~galip_diffusers.data.shapes_eval.interpolation_strip` read by the judge (each frame's nearest real
    image)."""
    from .shapes_eval import interpolation_strip

    return interpolation_strip(pipe, prompts, num_steps=num_steps, seed=seed,
                               reader=lambda frame: nearest_label(judge, np.round(frame * 255).astype(np.uint8)))
