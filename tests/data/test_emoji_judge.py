"""The nearest-neighbour emoji judge, on the real emoji images (npm tarballs, fetched once into the user cache)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from galip_diffusers.data.emoji_judge import EmojiJudge, mean_distance_between, summarize, to_judge_pixels


@pytest.fixture(scope="module")
def real(real_emoji):
    """The judge over all 7,572 real images, plus the images and records it was built from (tests/conftest.py)."""
    return real_emoji


def test_reference_set_is_the_whole_data_set(real):
    judge, records, _ = real
    assert len(judge) == 7572
    assert {s: int((judge.style == s).sum()) for s in ("twemoji", "noto")} == {"twemoji": 3786, "noto": 3786}


def test_real_images_are_judged_right(real):
    judge, records, images = real
    rows = list(range(0, len(records), 9))
    summary = summarize(judge.judge([images[i] for i in rows], rows))
    assert summary["style_top1"] == 1.0 and summary["tone_among_variants"] == 1.0
    # a few distinct emoji share identical artwork (e.g. some flags), so the nearest may be the twin
    assert summary["emoji_top1"] >= 0.99 and summary["emoji_top5"] >= 0.995


def test_the_other_style_is_the_right_emoji_in_the_wrong_style(real):
    judge, records, images = real
    rows = [i for i in range(0, len(records), 5) if records[i]["style"] == "twemoji"][:300]
    targets = [judge.index_of(records[i]["unified"], "noto") for i in rows]
    summary = summarize(judge.judge([images[i] for i in rows], targets))
    assert summary["style_top1"] == 0.0
    assert summary["emoji_top1"] >= 0.9


def test_blurred_images_keep_their_emoji_and_flat_blobs_do_not(real):
    judge, records, images = real
    rows = list(range(3, len(records), 37))
    blurred = [images[i].filter(ImageFilter.GaussianBlur(1.0)) for i in rows]
    assert summarize(judge.judge(blurred, rows))["emoji_top1"] >= 0.8
    # a flat square of the image's mean colour on white: right colours, no drawing
    blobs = []
    for i in rows:
        mean = tuple(int(v) for v in np.asarray(images[i]).reshape(-1, 3).mean(0))
        blob = Image.new("RGB", (64, 64), (255, 255, 255))
        blob.paste(Image.new("RGB", (40, 40), mean), (12, 12))
        blobs.append(blob)
    assert summarize(judge.judge(blobs, rows))["emoji_top5"] <= 0.1


def test_a_tone_prompt_answered_with_another_tone_is_wrong(real):
    judge, records, images = real
    toned = [i for i, r in enumerate(records) if r["tone"] == "dark"][:40]
    base = [judge.index_of(records[i]["concept"], records[i]["style"]) for i in toned]
    verdicts = judge.judge([images[b] for b in base], toned)  # the base (no tone) image for a dark-tone prompt
    assert all(v["tone_candidates"] == 6 for v in verdicts)
    assert not any(v["tone_among_variants"] for v in verdicts)
    assert all(v["emoji_top1"] for v in verdicts)


def test_distances_and_pixels():
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    black = np.zeros((64, 64, 3), np.uint8)
    pixels = to_judge_pixels([white, black])
    assert pixels.shape == (2, 32 * 32 * 3) and pixels[0].min() == 1.0 and pixels[1].max() == 0.0
    assert mean_distance_between([[white, black], [white, white]]) == pytest.approx(0.5)
    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert to_judge_pixels([transparent]).min() == 1.0  # composited on white
    with pytest.raises(ValueError, match="uint8"):
        to_judge_pixels([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="at least two images"):
        mean_distance_between([[white]])
