"""The emoji judge, evaluation and style probe refuse what would give a silent wrong figure: a reference set without
the held-out images (a judge built from ``split="train"``), judge pixels that are NaN or 0..255, images without pixels,
a seed torch cannot take, and grids of no image or of float images (on the small fixture emoji)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from galip_diffusers.data import emoji
from galip_diffusers.data.emoji_eval import MAX_SEED, evaluate_emoji_pipeline, evaluation_prompts, prompt_grid
from galip_diffusers.data.emoji_judge import EmojiJudge, to_judge_pixels
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe
from helpers.emoji_fixtures import make_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """``(paths, packages, held_out_path, records, images)`` of the fixture's 9 images."""
    paths, packages, held_out = make_fixture(tmp_path_factory.mktemp("emoji"))
    records, images = emoji.read_emoji_images(paths, packages)
    return paths, packages, str(held_out), records, images


@pytest.fixture(scope="module")
def judge(fixture):
    return EmojiJudge.from_records(*fixture[3:])


class NeverCalled:
    """A pipeline that fails the test if an image is drawn: arguments must be refused before any work."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the pipeline was called before the bad argument was refused")


# ----------------------------------------------------------------------------- finding 4: held-out images
@pytest.mark.parametrize("split, holds", [("train", "none"), ("held_out", "only")])
def test_a_judge_from_one_split_is_refused(fixture, split, holds):
    paths, packages, held_out = fixture[:3]
    dataset = emoji.build_dataset(paths, split=split, held_out_path=held_out, packages=packages)
    with pytest.raises(ValueError, match=rf"`dataset` holds {holds} of the held-out images .*split={split!r}.*build "
                                         r"the data set with split='all'"):
        EmojiJudge.from_dataset(dataset)


def test_a_judge_from_every_image_gives_every_prompt_set(fixture):
    paths, packages, held_out = fixture[:3]
    judge = EmojiJudge.from_dataset(emoji.build_dataset(paths, split="all", held_out_path=held_out, packages=packages))
    sets = evaluation_prompts(judge, held_out_path=held_out)
    assert len(judge) == 9 and {name: len(prompts) for name, prompts in sets.items()} == {
        "seen": 6, "held_out_noto": 1, "held_out_tones": 2}


def _judge_without_held_out(fixture) -> EmojiJudge:
    """A judge of the 6 trainable images only, built from records (``from_dataset``'s check does not apply)."""
    held = emoji.load_held_out(fixture[2])
    keep = [i for i, r in enumerate(fixture[3]) if (r["unified"], r["style"]) not in held]
    return EmojiJudge.from_records([fixture[3][i] for i in keep], [fixture[4][i] for i in keep])


def test_evaluation_refuses_a_judge_without_the_held_out_images(fixture):
    judge, held_out = _judge_without_held_out(fixture), fixture[2]
    message = r"the judge's reference set lacks 3 of the 3 held-out images of .*EmojiJudge.from_tarballs\(\)"
    with pytest.raises(ValueError, match=message):
        evaluation_prompts(judge, held_out_path=held_out)
    with pytest.raises(ValueError, match=message):
        evaluate_emoji_pipeline(NeverCalled(), judge, num_seen=6, diversity_prompts=2, held_out_path=held_out)
    with pytest.raises(ValueError, match=message):  # its calibration was NaN
        EmojiStyleProbe.fit(judge, held_out_path=held_out, steps=2)


def test_a_held_out_list_without_tone_entries_is_refused(fixture, judge, tmp_path):
    only_noto = tmp_path / "held_out.json"
    only_noto.write_text('{"held_out": [{"unified": "1F436", "concept": "1F436", "label": "dog face", '
                         '"styles": ["noto"]}]}')
    with pytest.raises(ValueError, match=r"gives the held-out skin tones set no prompt: the evaluation needs both "
                                         r"held-out sets"):
        evaluation_prompts(judge, held_out_path=str(only_noto))


def test_the_report_counts_the_judge_references(judge, fixture):
    class White:
        def __call__(self, prompts, output_type="np", **_):
            return type("Out", (), {"images": np.ones((len(prompts), 8, 8, 3), np.float32)})()

    report = evaluate_emoji_pipeline(White(), judge, num_seen=6, diversity_prompts=2, held_out_path=fixture[2])
    assert report["judge"].endswith(", 9 references")
    assert report["held_out_noto"]["n"] == 1 and report["held_out_tones"]["n"] == 2


# ----------------------------------------------------------------------------- finding 9: judge pixels and images
BAD_PIXELS = [
    (lambda p: np.full_like(p, np.nan), r"got 6144 non-finite value\(s\) \(NaN or inf\)"),
    (lambda p: p * 255, r"got values from [\d.]+ to [\d.]+ \(0\.\.255 values\? divide them by 255\)"),
    (lambda p: p - 0.5, r"got values from -[\d.]+ to [\d.]+$"),
    (lambda p: (p * 255).astype(np.uint8), r"floats in \[0, 1\] \(to_judge_pixels\), got dtype uint8"),
]


@pytest.mark.parametrize("make, message", BAD_PIXELS)
def test_judge_pixels_outside_0_1_are_refused(judge, make, message):
    bad = make(judge.pixels[:2])
    with pytest.raises(ValueError, match=r"`x` must be judge pixels: .*" + message):
        judge.pixel_distances(bad)
    probe = EmojiStyleProbe(net=_tiny_net(judge), calibration={})
    with pytest.raises(ValueError, match=r"`pixels` must be judge pixels: .*" + message):
        probe.read_pixels(bad)
    assert judge.pixel_distances(judge.pixels[:2]).shape == (2, 9)
    assert list(probe.read_pixels(judge.pixels[:2])) == list(probe.read_pixels(judge.pixels[:2].astype(np.float64)))


def _tiny_net(judge):
    from torch import nn

    return nn.Sequential(nn.Linear(judge.pixels.shape[1], 2), nn.ReLU(), nn.Linear(2, 1))


@pytest.mark.parametrize("images", [[Image.new("RGB", (0, 0))], [Image.new("RGBA", (5, 0))],
                                    np.zeros((1, 0, 0, 3), np.uint8), [np.zeros((4, 0, 3), np.uint8)]],
                         ids=["pil-0x0", "pil-5x0", "array-batch", "array-in-list"])
def test_images_without_pixels_are_refused(judge, images):
    with pytest.raises(ValueError, match=r"`images\[0\]` has no pixels \(width x height \d+x\d+\); every image needs"):
        judge.judge(images, [0])
    with pytest.raises(ValueError, match=r"`images\[0\]` has no pixels"):
        to_judge_pixels(images)


def test_a_one_pixel_image_is_still_judged(judge):
    assert len(judge.judge([Image.new("RGB", (1, 1), (255, 255, 255))], [0])) == 1


# ----------------------------------------------------------------------------- finding 15: seed and grid
@pytest.mark.parametrize("seed", [2**64, 2**64 - 3, MAX_SEED + 1])
def test_a_seed_beyond_what_torch_takes_is_refused_before_drawing(judge, fixture, seed):
    with pytest.raises(ValueError, match=rf"`seed` must be an integer >= 0 and <= {MAX_SEED}, got {seed}"):
        evaluate_emoji_pipeline(NeverCalled(), judge, num_seen=6, diversity_prompts=2, held_out_path=fixture[2],
                                seed=seed)


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, 8, 8, 3), np.float32), r"`images` as a numpy array must be uint8 of shape \(N, H, W, 3\), got "
                                         r"float32"),
    (np.zeros((0, 8, 8, 3), np.uint8), r"`images` must hold at least one image of at least one pixel, got shape "
                                       r"\(0, 8, 8, 3\)"),
    (np.zeros((1, 0, 8, 3), np.uint8), r"`images` must hold at least one image of at least one pixel"),
    ([np.zeros((8, 8, 3), np.uint8)], r"`images` must be a uint8 \(N, H, W, 3\) numpy array, got list"),
])
def test_prompt_grid_refuses_float_and_empty_batches(images, message):
    with pytest.raises(ValueError, match=message):
        prompt_grid(images, ["a"] * len(images))


def test_prompt_grid_draws_one_image():
    assert prompt_grid(np.zeros((1, 8, 8, 3), np.uint8), ["a"]).size == (8 * 150, 8 * 2 + 36)
