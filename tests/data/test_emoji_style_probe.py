"""The Noto/Twemoji style probe: trained on seen real images only, it reads real images it never saw, and its
report reads a pipeline's images per asked style (a stand-in pipeline that returns real images)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from galip_diffusers.data.emoji import load_held_out
from galip_diffusers.data.emoji_eval import evaluation_prompts, probe_markdown, report_markdown
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe, _split, probe_report


@pytest.fixture(scope="module")
def probe(real_emoji):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return EmojiStyleProbe.fit(real_emoji[0], steps=600, seed=0)
    finally:
        torch.set_num_threads(threads)


def test_training_images_exclude_every_held_out_image(real_emoji):
    judge = real_emoji[0]
    held_out = load_held_out()
    train, held_noto, their_twemoji = _split(judge)
    keys = lambda rows: {(str(judge.unified[i]), str(judge.style[i])) for i in rows}  # noqa: E731
    assert len(train) == 6781 and not keys(train) & set(held_out)
    assert len(held_noto) == 159 and keys(held_noto) <= set(held_out)
    assert all(judge.style[i] == "twemoji" for i in their_twemoji) and not keys(their_twemoji) & set(held_out)
    assert [judge.unified[i] for i in their_twemoji] == [judge.unified[i] for i in held_noto]


def test_probe_reads_real_images_it_never_trained_on(probe, real_emoji):
    c = probe.calibration
    assert c["num_train"] == 6781 and c["num_held_out_noto"] == 159
    # far above the 50% of a coin toss on both styles of the held-out emoji
    assert c["train"] > 0.8 and c["held_out_noto"] > 0.7 and c["their_twemoji"] > 0.7
    judge, _, images = real_emoji
    _, held_noto, _ = _split(judge)
    assert np.mean(probe.read([images[i] for i in held_noto]) == "noto") == pytest.approx(c["held_out_noto"])


class RealImagePipe:
    """A stand-in pipeline: for each ``"{label}, {style} style"`` caption, the real image of that label and style."""

    def __init__(self, judge, images):
        self.index = {f"{judge.label[i]}, {judge.style[i]} style": i for i in range(len(judge))}
        self.images = images

    def __call__(self, prompts, output_type="np", **_):
        rows = [np.asarray(self.images[self.index[p]].convert("RGB").resize((64, 64)), np.float32) / 255 for p in prompts]
        return SimpleNamespace(images=np.stack(rows))


def test_report_reads_each_asked_style(probe, real_emoji):
    judge, _, images = real_emoji
    sets = evaluation_prompts(judge, num_seen=40)
    report = probe_report(probe, RealImagePipe(judge, images), sets, judge)
    assert report["n"] == {"seen": 40, "held_out_noto": 159}
    # the stand-in draws the real images, so the generated shares are the probe's reading of those real images
    assert report["held_out_noto"] == pytest.approx(probe.calibration["held_out_noto"])
    assert report["held_out_noto_asked_twemoji"] == pytest.approx(probe.calibration["their_twemoji"])
    assert report["seen"] > 0.8
    table = probe_markdown(report)
    assert "| generated, held-out Noto prompts | 159 | Noto |" in table and table.count("\n") == 8
    summary = {"n": 1, "emoji_top1": 1.0}
    full = {name: summary for name in ("seen", "held_out_noto", "held_out_tones")}
    full["diversity"] = {"between_seeds": 0.1, "between_real_styles": 0.2, "num_prompts": 1, "num_seeds": 2}
    assert "Style probe" not in report_markdown(full)
    assert "Style probe" in report_markdown({**full, "style_probe": report})


def test_bad_arguments_are_named(real_emoji, probe):
    with pytest.raises(ValueError, match="`steps`"):
        EmojiStyleProbe.fit(real_emoji[0], steps=0)
    with pytest.raises(ValueError, match="`style` must be one of"):
        probe.share_read_as(real_emoji[0].pixels[:2], "emoji")
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="`learning_rate` must be a finite number > 0"):
            EmojiStyleProbe.fit(real_emoji[0], learning_rate=bad)
    for bad in (real_emoji[0].pixels[:2, :100], real_emoji[0].pixels[0], np.zeros((2, 32, 32, 3), np.float32)):
        with pytest.raises(ValueError, match=r"`pixels` must be judge pixels of shape \(N, 3072\)"):
            probe.read_pixels(bad)
    assert probe.read_pixels(real_emoji[0].pixels[:0]).shape == (0,)


def test_fit_trains_under_no_grad(real_emoji):
    """Callers that generate under ``torch.no_grad()`` (the packaging script) can fit a probe in the same scope."""
    import torch

    with torch.no_grad():
        probe = EmojiStyleProbe.fit(real_emoji[0], steps=100, seed=0)
    assert probe.calibration["train"] > 0.6  # it learned: the two styles are balanced, chance is 0.5
