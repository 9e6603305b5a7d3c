"""train_galip.py on a user's own data set: held-out rows are never trained on, transparency is read on white, a
split, column or model flag that does not apply is an error (never ignored), the output folder is never an input, and
a data or model error is one line that leaves --output_dir as it was, so that the corrected command runs at once."""

import io
import json
import logging
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from helpers.training_helpers import make_imagefolder, make_tiny_clip, make_tiny_pipeline_folder, training_script
from helpers.training_helpers import write_generator_config
from PIL import Image

from galip_diffusers.training.checkpoints import SetupError
from galip_diffusers.training.data import (
    check_columns, check_imagefolder_metadata, decode_image, drop_held_out_rows, load_image_text_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "training", "train_galip.py")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_data")
    data = make_imagefolder(str(root / "data"), num_images=8)
    flagged = datasets.load_dataset("imagefolder", data_dir=data, cache_dir=str(root / "cache"))["train"]
    flagged = flagged.add_column("held_out", [i % 2 == 1 for i in range(len(flagged))])
    flagged.save_to_disk(str(root / "flagged"))
    return {"root": root, "data": data, "flagged": str(root / "flagged"), "clip": make_tiny_clip(str(root / "clip")),
            "gen_config": write_generator_config(str(root / "generator.json")),
            "pipe": make_tiny_pipeline_folder(str(root / "pipe")), "cache": str(root / "cache")}


@pytest.fixture()
def script():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield training_script("train_galip")
    torch.set_num_threads(threads)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _args(fx, out, data=None, *extra, model=None):
    model = model or ["--clip_model_name_or_path", fx["clip"], "--generator_config", fx["gen_config"]]
    return [*model, "--train_data_dir", data or fx["data"], "--output_dir", str(out), "--cache_dir", fx["cache"],
            "--train_batch_size", "4", "--seed", "0", "--report_to", "none", "--speed_batch_sizes", "",
            "--max_train_steps", "1", *extra]


# ------------------------------------------------------------------------------------------------------ the data
def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("image", [
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)),
    Image.new("LA", (4, 4), (0, 0)),
    Image.new("P", (4, 4), 0),  # with a transparent palette entry, below
], ids=["RGBA", "LA", "P"])
def test_transparent_pixels_are_read_on_white_not_black(image):
    if image.mode == "P":
        image.info["transparency"] = 0
    for value in (image, {"bytes": _png(image), "path": None}):
        assert np.asarray(decode_image(value)).tolist() == [[[255, 255, 255]] * 4] * 4


def test_a_16_bit_image_is_refused_by_name_not_read_as_white():
    image = Image.fromarray(np.full((4, 4), 1000, np.uint16))
    with pytest.raises(ValueError, match="mode 'I;16'.*convert it to 8 bits"):
        decode_image({"bytes": _png(image), "path": None})


def test_held_out_rows_are_dropped_and_counted():
    table = datasets.Dataset.from_dict({"text": list("abcd"), "held_out": [False, True, False, True]})
    kept, dropped = drop_held_out_rows(table)
    assert kept["text"] == ["a", "c"] and dropped == 2
    kept, dropped = drop_held_out_rows(table.to_iterable_dataset())
    assert [row["text"] for row in kept] == ["a", "c"] and dropped is None
    unmarked = datasets.Dataset.from_dict({"text": ["a"]})
    assert drop_held_out_rows(unmarked) == (unmarked, 0)
    with pytest.raises(ValueError, match="'held_out' column holds .*string.*not booleans"):
        drop_held_out_rows(datasets.Dataset.from_dict({"text": ["a"], "held_out": ["no"]}))


def test_a_caption_column_without_text_is_named():
    table = datasets.Dataset.from_dict({"image": ["x.png"], "text": [["a", "b"]], "label": [3]})
    check_columns(table, "image", "text")  # lists of strings are captions
    with pytest.raises(ValueError, match=r"--caption_column 'label' holds Value\('int64'\), not text"):
        check_columns(table, "image", "label")


def test_a_split_that_a_single_data_set_does_not_have_is_refused(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "single"))
    for split in ("train", None):
        assert len(load_image_text_dataset(train_data_dir=str(tmp_path / "single"), split=split)) == 2
    with pytest.raises(ValueError, match="Split 'validation' not found .* a single data set without splits"):
        load_image_text_dataset(train_data_dir=str(tmp_path / "single"), split="validation")


def test_images_missing_from_the_metadata_are_reported(tmp_path, caplog):
    folder = make_imagefolder(str(tmp_path / "data"), num_images=2)
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "extra.png")
    with caplog.at_level(logging.WARNING):
        check_imagefolder_metadata(folder)
    assert "1 image file(s) under" in caplog.text and "not listed in a metadata.jsonl" in caplog.text
    assert "extra.png" in caplog.text


# ------------------------------------------------------------------------------------------------------ the script
def test_held_out_rows_are_never_trained_on(script, fx, tmp_path, caplog):
    with pytest.raises(SetupError, match=r"has 4 example\(s\) \(4 held-out rows dropped\); one batch needs "
                                         r"--train_batch_size x processes = 8"):
        script.main(script.parse_args(_args(fx, tmp_path / "big", fx["flagged"], "--train_batch_size", "8")))
    with caplog.at_level(logging.INFO):
        script.main(script.parse_args(_args(fx, tmp_path / "run", fx["flagged"])))
    assert "never trained on: 4 dropped" in caplog.text
    assert "Num examples = 4" in caplog.text


def test_the_output_folder_is_never_an_input(script, fx, tmp_path):
    for out, flag in ((fx["data"], "--train_data_dir"), (os.path.join(fx["data"], "model"), "--train_data_dir"),
                      (fx["clip"], "--clip_model_name_or_path")):
        with pytest.raises(ValueError, match=f"--output_dir: .* the {flag}"):
            script.preflight(script.parse_args(_args(fx, out, None, "--overwrite_output_dir")))
    pipe_args = ["--pretrained_model_name_or_path", fx["pipe"]]
    with pytest.raises(ValueError, match="--output_dir: .* the --pretrained_model_name_or_path"):
        script.preflight(script.parse_args(_args(fx, fx["pipe"], None, "--overwrite_output_dir", model=pipe_args)))


def test_a_clip_flag_that_a_pipeline_folder_would_ignore_is_refused(script, fx, tmp_path):
    model = ["--pretrained_model_name_or_path", fx["pipe"], "--clip_model_name_or_path", "no/such/clip"]
    with pytest.raises(SetupError, match="--clip_model_name_or_path is only used when .* has no image_encoder"):
        script.main(script.parse_args(_args(fx, tmp_path / "out", None, model=model)))
    assert not (tmp_path / "out" / "galip_run.json").exists()


def test_a_stream_shorter_than_one_batch_is_one_clear_error(script, fx, tmp_path):
    with pytest.raises(SetupError, match=r"yields 8 readable example\(s\); one batch needs --train_batch_size"):
        script.main(script.parse_args(_args(fx, tmp_path / "out", None, "--streaming", "--train_batch_size", "16")))


def test_a_data_error_is_one_line_and_the_corrected_command_runs_at_once(fx, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, SCRIPT, *_args(fx, out, None, "--caption_column", "caption")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "train_galip.py: error: --caption_column 'caption' not found; available columns: ['image', 'text'].")
    assert not out.exists() or os.listdir(out) == []
    done = subprocess.run([sys.executable, SCRIPT, *_args(fx, out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "galip_run.json").read_text())["run_id"]
