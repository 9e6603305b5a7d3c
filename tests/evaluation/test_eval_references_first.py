"""galip eval checks its reference data (--dataset and what depends on it) before it loads any model: the GALIP
pipeline, CLIP and Inception take tens of seconds to load on a CPU, so a missing, unreadable, empty or corrupt data
set, a missing column or too few rows is refused first, in one line naming the flag."""

import json
import os

import datasets
import pytest
from helpers.training_helpers import make_imagefolder

from galip_cli.eval import main
from galip_diffusers.evaluation import evaluate
from galip_diffusers.evaluation.clip_score import CLIPScorer
from galip_diffusers.evaluation.evaluate import dataset_fid_statistics
from galip_diffusers.evaluation.fid import random_inception_weights
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

FEATURE = 64  # the cheapest Inception feature (as in test_evaluation.py)


class ModelLoaded(BaseException):
    """Raised by the patched loaders where a test expects the models to load (run_cli catches only Exception)."""


def _patch_loaders(monkeypatch, loader) -> None:
    """Every model load of galip eval: the pipeline, the CLIP scorer, and Inception (FID metric)."""
    monkeypatch.setattr(GALIPPipeline, "from_pretrained", loader)
    monkeypatch.setattr(CLIPScorer, "from_pretrained", loader)
    monkeypatch.setattr(evaluate, "load_fid_metric", loader)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model is loaded: the checks of the references must come first."""
    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the bad reference input was refused")

    _patch_loaders(monkeypatch, refuse)


@pytest.fixture
def models_load(monkeypatch):
    """A model load ends the run with ModelLoaded: the references passed their checks."""
    def loaded(*args, **kwargs):
        raise ModelLoaded

    _patch_loaders(monkeypatch, loaded)


@pytest.fixture(scope="module")
def refs(fx):
    """The shared fixtures plus a weights file (never loaded here), an all-corrupt folder and save_to_disk folders."""
    root = fx["root"]
    weights = root / "weights.pth"
    weights.write_bytes(b"not loaded: the loaders are patched")
    datasets.Dataset.from_dict({"image": [], "text": []}).save_to_disk(str(root / "no_rows"))
    broken = root / "broken_saved"
    broken.mkdir()
    (broken / "dataset_dict.json").write_text("{not json")
    return {**fx, "weights": str(weights), "no_rows": str(root / "no_rows"), "broken": str(broken),
            "corrupt": make_imagefolder(str(root / "corrupt"), num_images=3, corrupt=(0, 1, 2), list_captions=False),
            "mostly_corrupt": make_imagefolder(str(root / "mostly"), num_images=20, corrupt=range(19),
                                               list_captions=False)}


def _run(argv, capsys) -> tuple[int, list[str]]:
    """Exit code and the error lines on stderr (not datasets' progress bars)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith("galip-eval: error: ")]


def _eval_argv(refs, dataset, *extra):
    return ["--model", refs["pipe"], "--dataset", dataset, "--inception_weights", refs["weights"],
            "--fid_feature", str(FEATURE), "--cache_dir", refs["cache"], *extra]


@pytest.mark.parametrize("case, code, expected", [
    ("missing", 1, "--dataset '{path}' does not exist: give an imagefolder"),
    ("missing_below_local_folder", 1, "--dataset '{path}' does not exist"),
    ("file", 1, "--dataset '{path}' is a file, not a data set"),
    ("empty_folder", 1, "--dataset '{path}' holds no image files"),
    ("unreadable_folder", 1, "--dataset '{path}' cannot be read (permission denied)."),
    ("broken_saved", 1, "--dataset '{path}' cannot be opened as a data set: "),
    ("no_rows", 1, "--dataset '{path}' cannot be opened as a data set: IndexError: "),  # datasets' own failure
])
def test_a_bad_dataset_is_refused_naming_it_before_any_model_loads(refs, tmp_path, monkeypatch, capsys, no_model,
                                                                   case, code, expected):
    monkeypatch.chdir(tmp_path)
    path = {"missing": str(tmp_path / "missing"), "missing_below_local_folder": "here/coco_val",
            "file": str(tmp_path / "data.parquet"), "empty_folder": str(tmp_path / "empty"),
            "unreadable_folder": str(tmp_path / "locked"), "broken_saved": refs["broken"],
            "no_rows": refs["no_rows"]}[case]
    (tmp_path / "here").mkdir()  # "here/coco_val" is then a local path, not a Hub name to look up
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    locked = make_imagefolder(str(tmp_path / "locked"), num_images=2, list_captions=False)
    access = os.access  # root reads anything, so the permission is refused by patching os.access for this folder
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != locked and access(p, mode, **kw))
    result, errors = _run(_eval_argv(refs, path), capsys)
    assert result == code and len(errors) == 1 and expected.format(path=path) in errors[0]


def test_a_data_set_without_rows_is_refused_before_any_model_loads(refs, monkeypatch, capsys, no_model):
    """(A save_to_disk folder of no rows fails in datasets itself, above; a loader may also return no rows.)"""
    import galip_diffusers.training.data as data

    monkeypatch.setattr(data, "load_image_text_dataset",
                        lambda **kwargs: datasets.Dataset.from_dict({"image": [], "text": []}))
    result, errors = _run(_eval_argv(refs, refs["data"], "--split", "test"), capsys)
    assert result == 1 and errors == [f"galip-eval: error: ValueError: --dataset {refs['data']!r} (--split 'test') "
                                      "has no rows: there is nothing to evaluate."]


@pytest.mark.parametrize("extra, code, expected", [
    (["--split", "validation"], 1, "(--split 'validation') cannot be opened as a data set: Split 'validation' not"),
    (["--image_column", "picture"], 1, "--image_column 'picture' not found; available columns:"),
    (["--caption_column", "caption"], 1, "--caption_column 'caption' not found; available columns:"),
    (["--num_images", "4"], 2, "--num_images 4 is more than the 3 examples of the data set"),
])
def test_a_bad_column_split_or_row_count_is_refused_before_any_model_loads(refs, capsys, no_model, extra, code,
                                                                           expected):
    result, errors = _run(_eval_argv(refs, refs["data"], *extra), capsys)
    assert result == code and len(errors) == 1 and expected in errors[0]


@pytest.mark.parametrize("mode", ["evaluate", "save_stats"])
def test_unreadable_reference_images_are_refused_before_any_model_loads(refs, tmp_path, capsys, no_model, mode):
    """They used to be found by the lazy decoding, after Inception, the pipeline and CLIP had loaded."""
    argv = _eval_argv(refs, refs["corrupt"]) if mode == "evaluate" else [
        "--save_stats", str(tmp_path / "s.npz"), "--dataset", refs["corrupt"], "--inception_weights", refs["weights"]]
    result, errors = _run(argv, capsys)
    hint = ", or pass --fid_stats" if mode == "evaluate" else ""
    assert result == 1 and errors == [
        "galip-eval: error: ValueError: 0 of 3 reference images readable (unreadable: 000.png, 001.png, 002.png); "
        f"FID needs at least 2. Check the images of --dataset and --image_column 'image'{hint}."]
    assert not os.path.exists(tmp_path / "s.npz")


def test_only_the_first_reference_images_are_decoded_up_front(refs, monkeypatch, capsys, no_model):
    """19 of 20 corrupt: the probe decodes 16 rows (the seeded sample holds 1 readable image) and refuses, without
    decoding the other 4, which the evaluation would decode lazily."""
    import galip_diffusers.training.data as data

    decoded, decode = [], data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda value: decoded.append(value) or decode(value))
    result, errors = _run(_eval_argv(refs, refs["mostly_corrupt"]), capsys)
    assert result == 1 and len(errors) == 1 and len(decoded) == 16
    assert "1 of the first 16 reference images readable (unreadable: " in errors[0]
    assert "Check the images of --dataset and --image_column 'image', or pass --fid_stats." in errors[0]


@pytest.mark.parametrize("extra", [["--no_fid"], ["--fid_stats", "stats.npz"]])
def test_images_that_fid_does_not_read_are_not_probed(refs, tmp_path, monkeypatch, capsys, models_load, extra):
    """Without FID against the data set its images are never read, so corrupt ones are no reason to refuse."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stats.npz").write_bytes(b"only checked to be a file before the (patched) Inception load")
    argv = ["--model", refs["pipe"], "--dataset", refs["corrupt"], "--cache_dir", refs["cache"], *extra]
    if extra != ["--no_fid"]:
        argv += ["--inception_weights", refs["weights"]]
    with pytest.raises(ModelLoaded):
        main(argv)


def test_a_smaller_data_set_is_noted_before_the_models_load(refs, capsys, models_load):
    """coco30k's default 30,000 images on a 3-image data set: all 3 are used, said in a note, as before."""
    with pytest.raises(ModelLoaded):
        main(_eval_argv(refs, refs["data"]))
    err = capsys.readouterr().err
    assert "galip-eval: note: the data set has 3 examples, fewer than the 30000 of the default --num_images: all 3 " \
           "are used." in err


def test_an_unreadable_image_found_later_is_named_with_the_flags(refs, tmp_path):
    """Past the probe an unreadable image is skipped, as before, but no longer only counted: a warning names it."""
    folder = make_imagefolder(str(tmp_path / "data"), num_images=3, corrupt=(1,), list_captions=False)
    rows = [{"image": os.path.join(folder, f"{i:03d}.png")} for i in range(3)]
    inception = random_inception_weights(str(tmp_path / "inception.pth"))
    with pytest.warns(UserWarning, match=r"^1 of 3 reference images left out of FID \(unreadable: 001.png\); "
                      r"check the images of --dataset and --image_column 'image'.$"):
        _, _, n, meta = dataset_fid_statistics(rows, inception, fid_feature=FEATURE)
    assert n == 2 and meta["unreadable_images"] == 1
    json.dumps(meta)  # still what --save_stats writes
