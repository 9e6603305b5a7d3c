"""training/noto_style_ceiling.py: the Twemoji -> Noto translator diagnostic never reads a held-out image as a target,
and its report judges all 159 held-out Noto prompts."""

import json

import numpy as np
import pytest
import torch

from galip_diffusers.data.emoji import load_held_out
from helpers.training_helpers import training_script


@pytest.fixture(scope="module")
def script():
    return training_script("noto_style_ceiling")


def test_pairs_keep_held_out_images_out_of_training(script, real_emoji):
    _, records, _ = real_emoji
    held_out = load_held_out()
    train, test = script.translation_pairs(records, held_out)
    key = lambda i: (records[i]["unified"], records[i]["style"])  # noqa: E731
    assert len(test) == 159 and len(train) == 3311
    assert all(key(n) in held_out and key(t) not in held_out for t, n in test)
    assert not any(key(i) in held_out for pair in train for i in pair)
    for twemoji, noto in train + test:
        assert records[twemoji]["style"] == "twemoji" and records[noto]["style"] == "noto"
        assert records[twemoji]["unified"] == records[noto]["unified"]


def test_translator_predicts_a_residual(script):
    net = script.TranslatorUNet(channels=4)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert net(x).shape == x.shape
    torch.nn.init.zeros_(net.up1[-1].weight)
    torch.nn.init.zeros_(net.up1[-1].bias)
    assert torch.equal(net(x), x)


def test_shrink_scales_about_the_centre(script):
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 0, 0))
    assert (script.shrink(image, 1.0) == [200, 0, 0]).all()
    half = script.shrink(image, 0.5)
    assert (half[:16] == 255).all() and (half[:, :16] == 255).all() and (half[16:48, 16:48] == [200, 0, 0]).all()


def test_nearest_other_skips_the_image_itself(script):
    from galip_diffusers.data.emoji_judge import EmojiJudge

    pixels = np.array([[0.0, 0.0], [0.0, 0.3], [1.0, 1.0], [1.0, 0.9]], np.float32)
    names = np.array(["a", "a", "b", "b"])
    judge = EmojiJudge(pixels, names, names, np.array(["noto", "twemoji", "noto", "noto"]), np.array([""] * 4), names)
    row = script.nearest_other(judge, [0, 2])
    # image 0's nearest other is the Twemoji image 1 (0.3 away); image 2's is the Noto image 3 (0.1 away)
    assert row["n"] == 2 and row["same_style"] == 0.5
    assert np.isclose(row["median_distance"], (0.3 / np.sqrt(2) + 0.1 / np.sqrt(2)) / 2)


def test_without_tone_variants_keeps_emoji_with_one_image_per_style(script):
    from galip_diffusers.data.emoji_judge import EmojiJudge

    concept = np.array(["a", "a", "b", "b", "b", "b"])
    style = np.array(["twemoji", "noto", "twemoji", "noto", "twemoji", "noto"])
    judge = EmojiJudge(np.zeros((6, 3), np.float32), concept, concept, style, np.array([""] * 6), concept)
    assert script.without_tone_variants(judge, [(0, 1), (2, 3), (4, 5)]) == [1]


def test_main_writes_the_report(script, real_emoji, tmp_path, one_thread):
    results = tmp_path / "ceiling"
    argv = ["--steps", "2", "--eval_every", "1", "--channels", "4", "--batch_size", "4", "--flip",
            "--results_dir", str(results)]
    report = script.main(argv, judge_data=real_emoji)
    saved = json.loads((results / "noto_style_ceiling.json").read_text())
    assert saved["num_train_pairs"] == 3311 and saved["num_held_out"] == 159
    assert [row["step"] for row in saved["translator"]] == [0, 1, 2]
    assert all(row["n"] == 159 for row in saved["translator"] + saved["shrink"])
    as_is = saved["shrink"][0]
    # the Twemoji image itself is in the reference set: nearest is itself (or an identical image), never Noto
    assert as_is["scale"] == 1.0 and as_is["style_top1"] == 0.0 and as_is["emoji_top1"] > 0.95
    assert np.isclose(report["shrink"][-1]["scale"], 0.8)
    assert "| translator | 2 |" in (results / "noto_style_ceiling.md").read_text()
    others = saved["nearest_other"]
    assert others["held-out"]["n"] == 159 and others["seen, all"]["n"] == 3311
    assert 0 < others["seen, no tone variants"]["n"] < 3311
    # every Noto image is in the reference set, yet none is its own neighbour: the distances are all positive
    assert 0 < others["held-out"]["median_distance"] < 1 and 0 < others["seen, all"]["same_style"] <= 1


@pytest.mark.parametrize("flag, value", [("--resolution", "30"), ("--steps", "0"), ("--channels", "0")])
def test_bad_arguments_are_named(script, flag, value, capsys):
    with pytest.raises(SystemExit):
        script.parse_args([flag, value])
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan."),
    (["--learning_rate", "-1"], "--learning_rate must be a finite number > 0, got -1.0."),
    (["--learning_rate", "inf"], "--learning_rate must be a finite number > 0, got inf."),
    (["--seed", "-1"], "--seed must be an integer >= 0 and <= 4294967295, got -1."),
    (["--eval_every", "0"], "--eval_every must be an integer >= 1, got 0."),
])  # fmt: skip
def test_bad_values_are_refused_before_the_images_load(script, argv, expected, capsys):
    """--learning_rate nan ended in torch.optim.Adam's traceback after the images were read."""
    with pytest.raises(SystemExit):
        script.parse_args(argv)
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {expected}")


def test_a_results_dir_that_cannot_be_a_folder_is_refused_before_the_run(script, tmp_path, capsys):
    """A file as --results_dir failed in os.makedirs only after the whole run, and the results were lost."""
    a_file = tmp_path / "gen.json"
    a_file.write_text("keep me")
    for path, expected in ((a_file, f"--results_dir {str(a_file)!r} is a file"),
                           (a_file / "sub", f"--results_dir: {str(a_file)!r} is a file, not a folder")):
        with pytest.raises(SystemExit):
            script.main(["--steps", "1", "--results_dir", str(path)], judge_data=("no judge", [], []))
        assert f"error: {expected}" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
