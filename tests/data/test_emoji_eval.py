"""evaluate_emoji_pipeline on fixture emoji, with pipelines whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from galip_diffusers.data import emoji
from galip_diffusers.data.emoji_eval import evaluate_emoji_pipeline, evaluation_prompts
from galip_diffusers.data.emoji_judge import EmojiJudge
from helpers.emoji_fixtures import make_fixture


@pytest.fixture(scope="module")
def fixture_judge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emoji")
    paths, packages, held_out = make_fixture(tmp)
    records, images = emoji.read_emoji_images(paths, packages)
    return EmojiJudge.from_records(records, images), {r["unified"] + "/" + r["style"]: np.asarray(i)
                                                      for r, i in zip(records, images)}, str(held_out)


class ReplayPipeline:
    """Answers each prompt with a real image: the prompt's own (``oracle``) or its other style's (``swap``). A bare
    label (no style asked) gets the Twemoji image (``oracle``) or the Noto one where there is one (``swap``)."""

    def __init__(self, judge, images, mode):
        self.judge, self.images, self.mode = judge, images, mode

    def __call__(self, prompts, generator=None, output_type="np"):
        out = []
        for prompt in prompts:
            if prompt.endswith(" style"):
                label, style = prompt.rsplit(", ", 1)[0], prompt.rsplit(" ", 2)[-2]
            else:
                label, style = prompt, "twemoji"
            row = int(np.flatnonzero((self.judge.label == label) & (self.judge.style == style))[0])
            unified = str(self.judge.unified[row])
            other = "noto" if style == "twemoji" else "twemoji"
            key = f"{unified}/{other}" if self.mode == "swap" and f"{unified}/{other}" in self.images else (
                f"{unified}/{style}")
            out.append(self.images[key].astype(np.float32) / 255.0)
        return SimpleNamespace(images=np.stack(out))


def test_prompt_sets_follow_the_held_out_list(fixture_judge):
    judge, _, held_out = fixture_judge
    sets = evaluation_prompts(judge, num_seen=100, held_out_path=held_out)
    assert [c for c, _ in sets["held_out_noto"]] == ["dog face, noto style"]
    assert sorted(c for c, _ in sets["held_out_tones"]) == [
        "waving hand: dark skin tone, noto style", "waving hand: dark skin tone, twemoji style"]
    assert len(sets["seen"]) == 6 and "dog face, twemoji style" in [c for c, _ in sets["seen"]]


def test_an_oracle_scores_full_marks_and_a_style_swap_does_not(fixture_judge):
    judge, images, held_out = fixture_judge
    oracle = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "oracle"), judge, diversity_prompts=3,
                                     held_out_path=held_out)
    for name in ("seen", "held_out_noto", "held_out_tones"):
        assert oracle[name]["emoji_top1"] == 1.0 and oracle[name]["style_top1"] == 1.0
    assert oracle["held_out_tones"]["tone_among_variants"] == 1.0
    assert oracle["diversity"]["between_seeds"] == 0.0 and oracle["diversity"]["between_real_styles"] > 0.05
    swapped = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "swap"), judge, diversity_prompts=3,
                                      held_out_path=held_out)
    assert swapped["held_out_noto"]["style_top1"] == 0.0 and swapped["held_out_tones"]["style_top1"] == 0.0
    assert swapped["seen"]["style_top1"] < 0.5


def test_bare_labels_are_judged_in_the_style_they_are_drawn_in(fixture_judge):
    from galip_diffusers.data.emoji_eval import label_only_markdown, label_only_verdicts

    judge, images, held_out = fixture_judge
    oracle = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "oracle"), judge, diversity_prompts=3,
                                     held_out_path=held_out)["labels_only"]
    assert oracle["seen"]["n"] == 6 and oracle["seen"]["emoji_top1"] == 1.0 and oracle["seen"]["drawn_twemoji"] == 1.0
    assert oracle["held_out_tones"]["tone_among_variants"] == 1.0 and "style_top1" not in oracle["seen"]
    swapped = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "swap"), judge, diversity_prompts=3,
                                      held_out_path=held_out)["labels_only"]
    # Noto images wherever the fixture has one (red heart has none): either style is right for a bare label
    assert swapped["seen"]["emoji_top1"] == 1.0 and 0.0 < swapped["seen"]["drawn_twemoji"] < 1.0
    assert swapped["held_out_tones"]["drawn_twemoji"] == 0.0 and swapped["held_out_tones"]["tone_among_variants"] == 1.0
    table = label_only_markdown(swapped)
    assert "| held-out skin tones | 2 | 100.0% | 100.0% | 100.0% | 0.0% |" in table

    # the same emoji in the wrong tone: the emoji is right, the tone is not (judged among the drawn style's variants)
    dark = judge.index_of("1F44B-1F3FF", "noto")
    light = images["1F44B-1F3FB/noto"][None]
    verdict = label_only_verdicts(judge, light, [("waving hand: dark skin tone", dark)])[0]
    assert verdict["emoji_top1"] and not verdict["tone_among_variants"] and verdict["drawn_style"] == "noto"
    with pytest.raises(ValueError, match="got 1 images for 2 prompts"):
        label_only_verdicts(judge, light, [("waving hand", dark)] * 2)


def test_a_bare_label_is_judged_against_its_emoji_in_the_drawn_style(fixture_judge):
    from galip_diffusers.data.emoji_eval import _in_style

    judge, _, _ = fixture_judge
    dark = {style: judge.index_of("1F44B-1F3FF", style) for style in ("twemoji", "noto")}
    assert _in_style(judge, dark["twemoji"], "noto") == dark["noto"]
    assert _in_style(judge, dark["noto"], "noto") == dark["noto"]
    heart = judge.index_of("2764-FE0F", "twemoji")
    assert _in_style(judge, heart, "noto") == heart  # no Noto image: the target stays


def test_prompt_grid_lays_out_images_with_their_prompts():
    from galip_diffusers.data.emoji_eval import prompt_grid

    images = np.zeros((10, 64, 64, 3), np.uint8)
    images[3] = 255
    grid = prompt_grid(images, [f"prompt {i}, twemoji style" for i in range(10)], columns=4)
    assert grid.size == (4 * 150, 3 * (128 + 36))
    pixels = np.asarray(grid)
    assert (pixels[:128, 450 + 11 : 450 + 139] == 255).all()  # image 3, 2x, centred in its 150-px cell
    assert (pixels[:128, 11:139] == 0).all()
    assert (pixels[128:164, :150] < 128).any()  # its caption is drawn below
    with pytest.raises(ValueError, match="got 10 images for 9 prompts"):
        prompt_grid(images, ["p"] * 9)


def test_prompt_grid_labels_drop_accents_instead_of_drawing_boxes():
    from galip_diffusers.data.emoji_eval import ascii_label, prompt_grid

    assert ascii_label("flag: Åland Islands, noto style") == "flag: Aland Islands, noto style"
    assert ascii_label("flag: Curaçao") == "flag: Curacao" and ascii_label("piñata") == "pinata"
    assert ascii_label("woman\u2019s hat, noto style") == "woman's hat, noto style"
    assert ascii_label("flag: Türkiye ✓") == "flag: Turkiye ?"
    images = np.zeros((2, 64, 64, 3), np.uint8)
    accented = np.asarray(prompt_grid(images, ["flag: Åland Islands", "flag: Curaçao"], columns=2))
    plain = np.asarray(prompt_grid(images, ["flag: Aland Islands", "flag: Curacao"], columns=2))
    assert (accented == plain).all()
    wrapped = np.asarray(prompt_grid(images[:1], ["woman with white cane: light skin tone, facing right, twemoji style"],
                                       columns=1))
    assert (wrapped[128 + 24 : 164] < 128).any()  # a third line ("right, twemoji style"), cut between words


def test_targets_are_checked_and_reported(fixture_judge, tmp_path):
    from galip_diffusers.data.emoji_eval import meets_seen_targets, missed_targets, report_markdown, write_results

    judge, images, held_out = fixture_judge
    oracle = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "oracle"), judge, diversity_prompts=3,
                                     held_out_path=held_out)
    assert meets_seen_targets(oracle) and missed_targets(oracle) == []
    swapped = evaluate_emoji_pipeline(ReplayPipeline(judge, images, "swap"), judge, diversity_prompts=3,
                                      held_out_path=held_out)
    missed = missed_targets(swapped)
    assert not meets_seen_targets(swapped)
    assert "held-out Noto images: nearest image has the style in 0.0% of images, below the 70% target" in missed
    table = report_markdown(swapped)
    assert "| held-out Noto images | 1 | nearest image has the style | 0.0% | 70% | **no** |" in table
    assert "between seeds of one prompt (3 prompts x 8 seeds)" in table
    assert "Bare labels" in table and "| seen captions | 6 |" in table

    # the files a results folder gets, with the grid's verdicts for the docs (the fixture has 9 prompts in all)
    sets = evaluation_prompts(judge, num_seen=100, held_out_path=held_out)
    assert sum(len(v) for v in sets.values()) == 9
    grid = write_results(ReplayPipeline(judge, images, "oracle"), judge, oracle, str(tmp_path), num_seen=100,
                         held_out_path=held_out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "eval.md", "grid.png"]
    assert len(grid) == 9 and all(row["emoji_top1"] for row in grid)
    dog = next(row for row in grid if row["prompt"] == "dog face, noto style")
    assert dog["nearest_label"] == "dog face (noto)" and dog["nearest"][0] == "1F436/noto"


def test_interpolation_frames_are_read_by_the_judge(fixture_judge):
    import torch

    from galip_diffusers import GALIPPipeline
    from galip_diffusers.data.emoji_eval import interpolation
    from galip_diffusers.testing_utils import tiny_components

    judge, _, _ = fixture_judge
    pipe = GALIPPipeline(**tiny_components(0))
    pipe.set_progress_bar_config(disable=True)
    strip, info = interpolation(pipe, judge, ["dog face, twemoji style", "red heart, twemoji style"], num_steps=4)
    height = strip.shape[0]
    assert strip.shape[1] == 4 * height and info["frames"] == 4 and len(info["l1_steps"]) == 3
    labels = set(judge.label.tolist())
    assert all(reading.rsplit(" (", 1)[0] in labels for reading in info["attributes"])
    assert torch.is_tensor(torch.as_tensor(strip))
