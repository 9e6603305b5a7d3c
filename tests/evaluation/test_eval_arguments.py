"""galip-eval refuses bad input before the work: output paths, ranges, too many images, junk weight/statistics files;
and it never overwrites a statistics file unless asked."""

import json
import os
import warnings

import numpy as np
import pytest

from galip_cli.eval import main
from galip_diffusers.evaluation.evaluate import evaluation_examples, num_evaluation_images
from galip_diffusers.evaluation.fid import load_fid_statistics, save_fid_statistics


@pytest.fixture(scope="module")
def fx(fx):
    """The shared fixtures plus ``junk``: a file that is not a checkpoint."""
    junk = fx["root"] / "junk.pth"
    junk.write_text("<html>not a checkpoint</html>")
    return {**fx, "junk": str(junk)}


def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_save_stats_never_overwrites_without_overwrite_flag(fx, tmp_path, capsys):
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"precious")
    base = ["--dataset", fx["data"], "--inception_weights", fx["junk"]]
    err = _exit_2(base + ["--save_stats", str(precious)], capsys)
    assert "--save_stats" in err and "already exists" in err and "--overwrite" in err
    assert precious.read_bytes() == b"precious"
    # without .npz numpy would write another name than the one reported
    assert "must end in .npz" in _exit_2(base + ["--save_stats", str(tmp_path / "stats_noext")], capsys)
    (tmp_path / "dir.npz").mkdir()
    assert "is a folder" in _exit_2(base + ["--save_stats", str(tmp_path / "dir.npz")], capsys)
    # the library refuses too, and replaces only when asked (atomically: exactly the given name)
    mu, sigma = np.zeros(2), np.eye(2)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_fid_statistics(str(precious), mu, sigma, 3)
    assert precious.read_bytes() == b"precious"
    save_fid_statistics(str(precious), mu, sigma, 3, overwrite=True)
    assert load_fid_statistics(str(precious))[2] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npz", "precious.npz"]  # no partial file left


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--no_fid", "--fid_stats", "REF"], "--fid_stats only serve FID, which --no_fid turns off"),
        (["--no_fid", "--inception_weights", "JUNK"], "--inception_weights only serve FID"),
        (["--no_fid", "--fid_feature", "64"], "--fid_feature only serve FID"),
        (["--no_fid", "--overwrite"], "--overwrite only replaces an existing --save_stats file"),
    ],
)
def test_flags_that_would_be_ignored_are_refused(fx, tmp_path, capsys, extra, match):
    stats = tmp_path / "ref.npz"
    save_fid_statistics(str(stats), np.zeros(2), np.eye(2), 3)
    extra = [str(stats) if a == "REF" else fx["junk"] if a == "JUNK" else a for a in extra]
    base = ["--model", fx["pipe"], "--dataset", fx["data"], "--cache_dir", fx["cache"], "--output", str(tmp_path / "o.json")]
    assert match in _exit_2(base + extra, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]


def test_save_stats_refuses_the_flags_of_a_model_evaluation(fx, tmp_path, capsys):
    base = ["--dataset", fx["data"], "--inception_weights", fx["junk"], "--save_stats", str(tmp_path / "s.npz")]
    err = _exit_2(base + ["--model", fx["pipe"], "--clip_model", fx["clip"], "--no_fid"], capsys)
    assert "--save_stats computes the FID statistics of --dataset only, so --model, --clip_model, --no_fid" in err


def test_num_images_beyond_the_data_set_is_refused_not_repeated(fx, capsys):
    err = _exit_2(["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--num_images", "9",
                   "--cache_dir", fx["cache"]], capsys)
    assert "--num_images 9" in err and "3 examples" in err
    with pytest.raises(ValueError, match="--num_images 9 is more than the 3"):
        list(evaluation_examples([{"image": None, "text": "a"}] * 3, "image", "text", 9, seed=0))
    with pytest.raises(ValueError, match="--num_images"):
        num_evaluation_images(1, 3)


def test_default_num_images_is_capped_at_the_data_set_with_a_note(fx, tmp_path, capsys):
    out = tmp_path / "clip.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI resolves the number itself: no second warning from the library
        assert main(["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--clip_model", fx["clip"],
                     "--output", str(out), "--cache_dir", fx["cache"]]) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 3 and "30000" in result["num_images_note"]
    assert "note:" in capsys.readouterr().err
    assert num_evaluation_images(None, 3, 30_000) == (3, num_evaluation_images(None, 3, 30_000)[1])
    assert num_evaluation_images(None, 40_000, 30_000) == (30_000, "")


@pytest.mark.parametrize("extra, message", [
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--resolution", "0"], "--resolution must be an integer >= 1"),
    (["--resolution", "-3"], "--resolution must be an integer >= 1"),
    (["--batch_size", "0"], "--batch_size must be an integer >= 1"),
    (["--num_images", "1"], "--num_images must be an integer >= 2"),
])
def test_bad_values_are_argument_errors_naming_the_flag(fx, extra, message, capsys):
    argv = ["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--num_images", "2", *extra]
    assert message in _exit_2(argv, capsys)


def test_a_missing_inception_weights_file_is_named(fx, capsys):
    argv = ["--model", fx["pipe"], "--dataset", fx["data"], "--num_images", "2", "--inception_weights", "missing.pth"]
    assert "--inception_weights 'missing.pth' is not a file" in _exit_2(argv, capsys)


def test_output_folder_is_refused_before_the_evaluation(fx, tmp_path, capsys):
    err = _exit_2(["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--num_images", "2", "--output",
                   str(tmp_path)], capsys)
    assert "--output" in err and "is a folder" in err


def test_junk_inception_weights_and_statistics_name_their_flag(fx, tmp_path, capsys):
    base = ["--model", fx["pipe"], "--dataset", fx["data"], "--num_images", "2", "--cache_dir", fx["cache"]]
    err = _exit_2(base + ["--inception_weights", fx["junk"]], capsys)
    assert "--inception_weights" in err and "InceptionV3" in err and "Traceback" not in err
    json_file = tmp_path / "stats.json"
    json_file.write_text("{}")
    with pytest.raises(ValueError, match="--fid_stats .* is not an .npz file"):
        load_fid_statistics(str(json_file))
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(2))
    with pytest.raises(ValueError, match="--fid_stats .* must hold arrays 'mu' and 'sigma'"):
        load_fid_statistics(str(tmp_path / "wrong.npz"))


@pytest.mark.parametrize("inside", ["data", "pipe"])
def test_output_is_never_written_over_or_into_an_input(fx, capsys, inside):
    """--output naming the data set's metadata.jsonl or the model's model_index.json used to replace it."""
    target = os.path.join(fx[inside], "metadata.jsonl" if inside == "data" else "model_index.json")
    before = open(target, "rb").read()
    err = _exit_2(["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--num_images", "2",
                   "--cache_dir", fx["cache"], "--output", target], capsys)
    assert "--output" in err and "is inside the" in err and open(target, "rb").read() == before
