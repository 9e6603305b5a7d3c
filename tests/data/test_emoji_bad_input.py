"""Bad input to the emoji judge, evaluation, style probe and data set CLI: a clear error naming the argument and the
allowed values, never a silent wrong answer (on the small fixture emoji: no real artwork needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from galip_diffusers.data import emoji, emoji_cli
from galip_diffusers.data.emoji_eval import evaluate_emoji_pipeline, evaluation_prompts, prompt_grid, seed_diversity
from galip_diffusers.data.emoji_judge import EmojiJudge, to_judge_pixels
from galip_diffusers.data.emoji_style_probe import EmojiStyleProbe
from helpers.emoji_fixtures import make_fixture

WHITE = Image.new("RGB", (64, 64), (255, 255, 255))


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """``(judge, images, held_out_path)`` over the fixture's 9 images."""
    tmp = tmp_path_factory.mktemp("emoji")
    paths, packages, held_out = make_fixture(tmp)
    records, images = emoji.read_emoji_images(paths, packages)
    return EmojiJudge.from_records(records, images), images, str(held_out)


class NeverCalled:
    """A pipeline that fails the test if an image is drawn: arguments must be refused before any work."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the pipeline was called before the bad argument was refused")


# ----------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("bad", [-1, -5000, 1.5, None, True, "10"])
def test_negative_or_non_integer_num_seen_is_refused(fixture, bad):
    judge, _, held_out = fixture
    with pytest.raises(ValueError, match=r"`num_seen` must be an integer >= 0, got"):
        evaluation_prompts(judge, num_seen=bad, held_out_path=held_out)


def test_zero_num_seen_gives_no_seen_prompts(fixture):
    judge, _, held_out = fixture
    none, some = (evaluation_prompts(judge, num_seen=n, held_out_path=held_out) for n in (0, 100))
    assert none["seen"] == [] and len(some["seen"]) == 6
    assert none["held_out_noto"] == some["held_out_noto"] and none["held_out_tones"] == some["held_out_tones"]


@pytest.mark.parametrize("kwargs, name", [({"seed": -1}, "seed"), ({"seed": 0.5}, "seed")])
def test_bad_prompt_seed_is_refused(fixture, kwargs, name):
    judge, _, held_out = fixture
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= 0"):
        evaluation_prompts(judge, held_out_path=held_out, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_seen": 0}, r"`num_seen` must be an integer >= 1"),
    ({"num_seen": -1}, r"`num_seen` must be an integer >= 1"),
    ({"diversity_prompts": 0}, r"`diversity_prompts` must be an integer >= 1"),
    ({"diversity_prompts": -3}, r"`diversity_prompts` must be an integer >= 1"),
])
def test_evaluation_refuses_before_drawing(fixture, kwargs, message):
    judge, _, held_out = fixture
    with pytest.raises(ValueError, match=message):
        evaluate_emoji_pipeline(NeverCalled(), judge, held_out_path=held_out, **kwargs)


def test_seed_diversity_needs_prompts_and_two_seeds(fixture):
    judge, _, _ = fixture
    with pytest.raises(ValueError, match=r"`num_seeds` must be an integer >= 2, got 1"):
        seed_diversity(NeverCalled(), judge, [("dog face, noto style", 0)], num_seeds=1)
    with pytest.raises(ValueError, match=r"`prompts` must hold at least one"):
        seed_diversity(NeverCalled(), judge, [])


@pytest.mark.parametrize("kwargs, name", [({"columns": 0}, "columns"), ({"scale": 0}, "scale"),
                                          ({"scale": 1.5}, "scale")])
def test_prompt_grid_layout_is_checked(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= 1"):
        prompt_grid(np.zeros((1, 8, 8, 3), np.uint8), ["a"], **kwargs)


# ----------------------------------------------------------------------------- judge targets and k
@pytest.mark.parametrize("bad", [-1, 9, 100, 1.0, np.float64(0), True, "0", None])
def test_targets_outside_the_reference_set_are_refused(fixture, bad):
    judge, _, _ = fixture
    assert len(judge) == 9
    with pytest.raises(ValueError, match=r"`targets\[1\]` \(an index into the 9 reference images\) must be an "
                                         r"integer >= 0 and < 9, got"):
        judge.judge([WHITE, WHITE], [0, bad])


def test_numpy_integer_targets_are_accepted(fixture):
    judge, images, _ = fixture
    verdicts = judge.judge(images[:3], np.arange(3))
    assert [v["emoji_top1"] for v in verdicts] == [True] * 3


def test_targets_must_be_a_sequence(fixture):
    judge, _, _ = fixture
    with pytest.raises(ValueError, match="`targets` must be a sequence of integer indices"):
        judge.judge([WHITE], 0)


@pytest.mark.parametrize("bad", [0, -1, 10, 2.0, None])
def test_k_outside_one_to_the_number_of_references_is_refused(fixture, bad):
    judge, _, _ = fixture
    with pytest.raises(ValueError, match=r"`k` \(the number of nearest real images\) must be an integer >= 1 and "
                                         r"<= 9, got"):
        judge.judge([WHITE], [0], k=bad)


@pytest.mark.parametrize("missing", ["concept", "label"])
def test_a_record_missing_a_key_is_named_with_its_index(fixture, missing):
    judge, images, _ = fixture
    records = [{name: str(getattr(judge, name)[i]) for name in ("unified", "concept", "style", "tone", "label")}
               for i in range(2)]
    del records[1][missing]
    with pytest.raises(ValueError, match=rf"`records\[1\]` has no '{missing}': every record needs the keys "
                                         r"unified, concept, style, tone, label"):
        EmojiJudge.from_records(records, images[:2])


@pytest.mark.parametrize("shape", [(2, 10), (2, 32 * 32 * 3 + 1), (32 * 32 * 3,), (1, 2, 32 * 32 * 3)])
def test_pixel_distances_of_the_wrong_width_name_the_expected_shape(fixture, shape):
    judge, _, _ = fixture
    with pytest.raises(ValueError, match=r"`x` must be judge pixels of shape \(N, 3072\) \(to_judge_pixels at "
                                         r"size 32"):
        judge.pixel_distances(np.zeros(shape, np.float32))
    assert judge.pixel_distances(judge.pixels[:2]).shape == (2, 9)


# ----------------------------------------------------------------------------- image batches
def test_one_array_without_a_batch_axis_says_so(fixture):
    judge, _, _ = fixture
    single = np.full((32, 32, 3), 255, np.uint8)
    for call in (lambda: judge.judge(single, [0]), lambda: to_judge_pixels(single), lambda: judge.distances(single)):
        with pytest.raises(ValueError, match=r"uint8 of shape \(N, H, W, 3\), got uint8 \(32, 32, 3\): one image "
                                             r"without a batch axis, pass image\[None\]"):
            call()
    assert judge.judge(single[None], [0])[0]["distance"] == judge.judge([WHITE], [0])[0]["distance"]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8, 3), np.float32), r"`images` as a numpy array must be uint8 of shape \(N, H, W, 3\)"),
    (np.zeros((2, 8, 8), np.uint8), r"`images` as a numpy array must be uint8 of shape \(N, H, W, 3\)"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"`images` as a numpy array must be uint8 of shape \(N, H, W, 3\)"),
    ([np.zeros((8, 8), np.uint8)], r"`images\[0\]` must be a uint8 \(H, W, 3\) array or a PIL image"),
    ([WHITE, np.zeros((8, 8, 3), np.float64)], r"`images\[1\]` must be a uint8 \(H, W, 3\) array or a PIL image"),
    ([WHITE, "white.png"], r"`images\[1\]` must be a uint8 \(H, W, 3\) array or a PIL image, got str"),
    (WHITE, r"got one PIL image: pass \[image\]"),
])
def test_bad_image_batches_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        to_judge_pixels(bad)


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_modes_with_no_colour_reading_are_refused(mode):
    with pytest.raises(ValueError, match=rf"`images\[0\]` is a PIL image of mode '{mode}'.*accepted modes: 1, L, P, "
                                         r"RGB"):
        to_judge_pixels([Image.new(mode, (8, 8))])


@pytest.mark.parametrize("bad", [0, -2, 2.5])
def test_judge_size_is_checked(bad):
    with pytest.raises(ValueError, match=r"`size` must be an integer >= 1"):
        to_judge_pixels([WHITE], size=bad)


def _palette(alpha_in_palette: bool) -> Image.Image:
    """A black palette image whose only colour is transparent (tRNS info, or an RGBA palette)."""
    image = Image.new("P", (64, 64), 0)
    if alpha_in_palette:
        image.putpalette([0, 0, 0, 0], rawmode="RGBA")
    else:
        image.putpalette([0, 0, 0])
        image.info["transparency"] = 0
    return image


def _keyed(mode: str, colour) -> Image.Image:
    image = Image.new(mode, (64, 64), colour)
    image.info["transparency"] = colour
    return image


TRANSPARENT = {
    "LA": lambda: Image.new("LA", (64, 64), (0, 0)),
    "La": lambda: Image.new("La", (64, 64), (0, 0)),
    "PA": lambda: Image.new("PA", (64, 64), (0, 0)),
    "RGBa": lambda: Image.new("RGBa", (64, 64), (0, 0, 0, 0)),
    "RGBA": lambda: Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    "P+transparency": lambda: _palette(alpha_in_palette=False),
    "P+RGBA palette": lambda: _palette(alpha_in_palette=True),
    "L+transparency": lambda: _keyed("L", 0),
    "RGB+transparency": lambda: _keyed("RGB", (0, 0, 0)),
}


@pytest.mark.parametrize("name", sorted(TRANSPARENT))
def test_fully_transparent_images_are_white(fixture, name):
    judge, _, _ = fixture
    image = TRANSPARENT[name]()
    np.testing.assert_array_equal(to_judge_pixels([image]), to_judge_pixels([WHITE]))
    np.testing.assert_array_equal(judge.distances([image]), judge.distances([WHITE]))


def test_half_transparent_grey_is_composited_like_rgba():
    la = to_judge_pixels([Image.new("LA", (8, 8), (0, 128))])
    rgba = to_judge_pixels([Image.new("RGBA", (8, 8), (0, 0, 0, 128))])
    np.testing.assert_array_equal(la, rgba)
    assert 0.45 < la.mean() < 0.55


@pytest.mark.parametrize("mode, colour, rgb", [("HSV", (0, 255, 255), (255, 0, 0)), ("CMYK", (0, 0, 0, 0), (255,) * 3),
                                               ("YCbCr", (255, 128, 128), (255,) * 3), ("1", 1, (255,) * 3)])
def test_other_colour_modes_read_as_their_colour(mode, colour, rgb):
    pixels = to_judge_pixels([Image.new(mode, (8, 8), colour)]).reshape(-1, 3)
    np.testing.assert_allclose(pixels, np.broadcast_to(np.array(rgb) / 255.0, pixels.shape), atol=2 / 255)


# ----------------------------------------------------------------------------- style probe
@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 1.5}, r"`steps` must be an integer >= 1, got 1.5"),
    ({"steps": 0}, r"`steps` must be an integer >= 1, got 0"),
    ({"steps": "100"}, r"`steps` must be an integer >= 1"),
    ({"hidden": None}, r"`hidden` must be an integer >= 1, got None"),
    ({"hidden": 0}, r"`hidden` must be an integer >= 1"),
    ({"batch_size": None}, r"`batch_size` must be an integer >= 1, got None"),
    ({"batch_size": 32.0}, r"`batch_size` must be an integer >= 1"),
    ({"learning_rate": "x"}, r"`learning_rate` must be a finite number > 0, got 'x'"),
    ({"learning_rate": float("inf")}, r"`learning_rate` must be a finite number > 0"),
    ({"learning_rate": float("nan")}, r"`learning_rate` must be a finite number > 0"),
    ({"learning_rate": 0}, r"`learning_rate` must be a finite number > 0"),
    ({"learning_rate": None}, r"`learning_rate` must be a finite number > 0"),
    ({"seed": -1}, r"`seed` must be an integer >= 0, got -1"),
    ({"seed": 0.5}, r"`seed` must be an integer >= 0"),
    ({"seed": None}, r"`seed` must be an integer >= 0"),
])
def test_probe_fit_arguments_are_named(fixture, kwargs, message):
    judge, _, held_out = fixture
    with pytest.raises(ValueError, match=message):
        EmojiStyleProbe.fit(judge, held_out_path=held_out, **kwargs)


# ----------------------------------------------------------------------------- data set CLI
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_cli_refuses_an_existing_folder_before_building(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(emoji, "build_dataset", NeverCalled())
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        emoji_cli.main([str(tmp_path / "out")])
    assert exit_info.value.code == 2
    line = _one_line_error(capsys)
    assert "error: output_dir" in line and "already exists" in line and "nothing was overwritten" in line


@pytest.mark.parametrize("where,message", [("", "output_dir is empty"), ("file/sub", "is a file, not a folder")])
def test_cli_checks_the_output_path_before_building(tmp_path, monkeypatch, capsys, where, message):
    monkeypatch.setattr(emoji, "build_dataset", NeverCalled())
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        emoji_cli.main([str(tmp_path / where) if where else ""])
    assert exit_info.value.code == 2 and message in _one_line_error(capsys)


def test_cli_interrupted_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(emoji, "build_dataset", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        emoji_cli.main([str(tmp_path / "out")])
    assert exit_info.value.code == 130 and "interrupted; nothing was written" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_missing_tarball_in_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope.tgz")
    with pytest.raises(SystemExit) as exit_info:
        emoji_cli.main([str(tmp_path / "out"), "--twemoji_tarball", missing, "--noto_tarball", missing,
                    "--labels_tarball", missing])
    assert exit_info.value.code == 1
    line = _one_line_error(capsys)
    assert "error:" in line and "nope.tgz does not exist" in line
    assert not (tmp_path / "out").exists()
