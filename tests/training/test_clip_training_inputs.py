"""train_clip.py's checks of its input folders: each problem ends in one line naming the flag, before training and
before the run is recorded in --output_dir (so the corrected command is not refused)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from galip_diffusers.data.bpe import train_bpe_tokenizer
from galip_diffusers.training.clip_data import (
    CaptionDataError,
    check_caption_lengths,
    evaluate_on_folder,
    load_caption_folder,
    square_image,
)
from helpers.training_helpers import COLORS, make_imagefolder, training_script

REPO = Path(__file__).resolve().parents[2]
TINY = ["--vision_width", "32", "--vision_layers", "1", "--vision_heads", "2", "--text_width", "32",
        "--text_layers", "1", "--text_heads", "2", "--projection_dim", "16", "--image_size", "16", "--patch_size", "8",
        "--train_batch_size", "4", "--max_train_steps", "1", "--report_to", "none", "--patch_init", "random",
        "--lr_warmup_steps", "0", "--logging_steps", "1", "--context_length", "24"]
LONG = "person in lotus position medium dark skin tone and a very long description of it"


def _square(color: str, size=(16, 16)) -> Image.Image:
    return Image.new("RGB", size, COLORS[color])


def _dataset(texts: list, held_out: list | None = None) -> datasets.Dataset:
    columns = {"image": [_square(list(COLORS)[i % 4]) for i in range(len(texts))], "text": texts}
    if held_out is not None:
        columns["held_out"] = held_out
    return datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny save_to_disk folders: 4 usable + 4 held-out rows, a train/validation DatasetDict, long captions, a
    non-square image, and imagefolders with a corrupt image and with an empty caption."""
    root = tmp_path_factory.mktemp("clip_inputs")
    paths = {name: str(root / name) for name in ("heldout", "dict", "long", "wide", "corrupt", "emptycap", "names")}
    _dataset([f"a {c} square" for c in COLORS] + [f"held out {c}" for c in COLORS],
             [False] * 4 + [True] * 4).save_to_disk(paths["heldout"])
    datasets.DatasetDict({"train": _dataset([f"a {c} square" for c in COLORS]),
                          "validation": _dataset([f"a {c} circle" for c in COLORS])}).save_to_disk(paths["dict"])
    _dataset([f"{LONG}, noto style", f"{LONG}, twemoji style"] * 2).save_to_disk(paths["long"])
    wide = np.full((16, 64, 3), 255, np.uint8)
    wide[:, 24:40] = (255, 0, 0)  # a 16x16 red square in the middle of a 64x16 white image
    datasets.Dataset.from_dict({"image": [Image.fromarray(wide)], "text": ["a red square"]}).cast_column(
        "image", datasets.Image()).save_to_disk(paths["wide"])
    make_imagefolder(paths["corrupt"], num_images=6, corrupt=(3,), list_captions=False)
    make_imagefolder(paths["emptycap"], num_images=4, list_captions=False)
    lines = Path(paths["emptycap"], "metadata.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"a blue picture"', '""')
    Path(paths["emptycap"], "metadata.jsonl").write_text("\n".join(lines) + "\n")
    names = _dataset([f"a {c} square" for c in COLORS])
    names.add_column("name", [f"{c}.png" for c in COLORS]).save_to_disk(paths["names"])
    return paths


@pytest.fixture
def script(one_thread):
    """train_clip.py as a module, with accelerate's process-wide state reset after each in-process run."""
    from accelerate.state import AcceleratorState, GradientState

    yield training_script("train_clip")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _run_script(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "training" / "train_clip.py"), *TINY, *flags], env=env,
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------- too few rows (hang)
def test_too_few_usable_rows_end_in_one_line_instead_of_a_hang(folders, tmp_path):
    """4 usable rows (4 held out) and batch 8: the DataLoader (drop_last) yielded nothing and the loop spun forever."""
    out = tmp_path / "clip"
    result = _run_script("--output_dir", str(out), "--train_data_dir", folders["heldout"], "--train_batch_size", "8")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"train_clip.py: error: --train_data_dir {folders['heldout']} has 4 usable rows (4 held-out rows dropped, "
        "0 unreadable images and 0 rows without a caption skipped); --train_batch_size 8 needs at least 8: lower "
        "--train_batch_size or add rows.")
    assert not out.exists()  # nothing recorded: the corrected command is not refused


def test_rows_for_a_batch_on_every_process(script):
    script.check_enough_rows(8, 4, 2, "--train_data_dir d")
    with pytest.raises(CaptionDataError, match=r"has 6 usable rows; --train_batch_size 4 needs at least 4 per "
                                               r"process, 8 on 2 processes"):
        script.check_enough_rows(6, 4, 2, "--train_data_dir d")


# ------------------------------------------------------------------------------------------- folders and splits
def test_eval_data_dir_is_checked_at_parse_time(script, folders, tmp_path, capsys):
    out = str(tmp_path / "clip")
    with pytest.raises(SystemExit):
        script.parse_args([*TINY, "--output_dir", out, "--train_data_dir", folders["heldout"],
                           "--eval_data_dir", str(tmp_path / "nope")])
    assert f"--eval_data_dir {tmp_path / 'nope'} is not a folder" in capsys.readouterr().err
    for flags, message in ((["--eval_data_dir", folders["heldout"]], "--eval_data_dir needs --train_data_dir"),
                           (["--eval_split", "train", "--train_data_dir", folders["heldout"]],
                            "--eval_split needs --eval_data_dir"),
                           (["--train_split", "train"], "--train_split needs --train_data_dir")):
        with pytest.raises(SystemExit):
            script.parse_args([*TINY, "--output_dir", out, *flags])
        assert message in capsys.readouterr().err


def test_load_errors_name_the_flag_of_the_folder(folders, tmp_path):
    with pytest.raises(CaptionDataError, match="^--eval_data_dir .*nope' is not a folder"):
        evaluate_on_folder(None, None, str(tmp_path / "nope"), flag="--eval_data_dir")
    with pytest.raises(CaptionDataError, match="^--eval_data_dir .*: --caption_column 'caption' not found"):
        load_caption_folder(folders["heldout"], caption_column="caption", flag="--eval_data_dir")


def test_a_folder_with_splits_needs_the_split_flag(folders):
    """A DatasetDict folder was read as its `train` split without a word (for --eval_data_dir and --train_data_dir)."""
    with pytest.raises(CaptionDataError, match=r"^--eval_data_dir .* holds the splits \['train', 'validation'\]; "
                                               "choose one with --eval_split"):
        load_caption_folder(folders["dict"], flag="--eval_data_dir", split_flag="--eval_split")
    with pytest.raises(CaptionDataError, match=r"holds the splits .*--train_split"):
        load_caption_folder(folders["dict"])
    pool = load_caption_folder(folders["dict"], split="validation", image_size=16)
    assert sorted(c[0] for c in pool.captions) == sorted(f"a {c} circle" for c in COLORS)
    with pytest.raises(CaptionDataError, match=r"--train_split 'test' not found in .*; its splits: \['train', "):
        load_caption_folder(folders["dict"], split="test")
    with pytest.raises(CaptionDataError, match="holds a single data set without splits; leave out --train_split"):
        load_caption_folder(folders["heldout"], split="train")


def test_eval_split_picks_the_evaluated_split(script, folders, tmp_path):
    out = tmp_path / "clip"
    args = script.parse_args([*TINY, "--output_dir", str(out), "--train_data_dir", folders["heldout"],
                              "--eval_data_dir", folders["dict"]])
    with pytest.raises(CaptionDataError, match="choose one with --eval_split"):
        script.main(args)  # refused before training
    assert not out.exists()
    args = script.parse_args([*TINY, "--output_dir", str(out), "--train_data_dir", folders["heldout"],
                              "--eval_data_dir", folders["dict"], "--eval_split", "validation"])
    data = script.load_training_data(args, num_processes=1)
    assert sorted(c[-1] for c in data.eval_pool.captions) == sorted(f"a {c} circle" for c in COLORS)
    assert len(data.pool.images) == 4 and data.pool.num_held_out == 4


# ------------------------------------------------------------------------------------------- rows and columns
def test_a_corrupt_image_is_skipped_and_counted(folders, caplog):
    """One corrupt PNG stopped train_clip.py with a PIL traceback; train_galip.py skips it."""
    with caplog.at_level(logging.WARNING):
        pool = load_caption_folder(folders["corrupt"], image_size=16)
    assert len(pool.images) == 5 and pool.num_unreadable == 1 and pool.num_held_out == 0
    assert "a green picture" not in [c[0] for c in pool.captions][3:4]  # row 3 (green) is gone, row 4 follows
    assert any("row 3" in r.getMessage() and "003.png" in r.getMessage() for r in caplog.records)


def test_a_row_without_a_caption_is_skipped_and_counted_as_train_galip_skips_it(folders, caplog):
    """train_clip.py stopped at the first empty caption, where train_galip.py skips the row."""
    with caplog.at_level(logging.WARNING):
        pool = load_caption_folder(folders["emptycap"], image_size=16)
    assert pool.num_uncaptioned == 1 and pool.num_unreadable == 0 and all(c and c[0] for c in pool.captions)
    assert any("row 2" in r.getMessage() and "002.png" in r.getMessage() and "no non-empty caption ('')"
               in r.getMessage() for r in caplog.records)


def test_caption_and_image_column_errors_are_one_line(folders):
    with pytest.raises(CaptionDataError, match="--caption_column 'caption' not found"):
        load_caption_folder(folders["names"], caption_column="caption")
    with pytest.raises(CaptionDataError, match=r"--image_column 'held_out' holds bool values, not images"):
        load_caption_folder(folders["heldout"], image_column="held_out")
    with pytest.raises(CaptionDataError, match=r"none of the 4 images could be read \(e.g. row 0.*\); check "
                                               r"--image_column 'name'"):
        load_caption_folder(folders["names"], image_column="name")
    with pytest.raises(CaptionDataError, match="--image_column and --caption_column are both 'text'"):
        load_caption_folder(folders["names"], image_column="text")


def test_a_data_error_leaves_output_dir_unbranded(script, folders, tmp_path):
    """A data error came after galip_run.json was written, so the corrected command was refused."""
    out = tmp_path / "clip"
    with pytest.raises(CaptionDataError, match="--caption_column 'caption' not found"):
        script.main(script.parse_args([*TINY, "--output_dir", str(out), "--train_data_dir", folders["corrupt"],
                                       "--caption_column", "caption"]))
    assert not (out / "galip_run.json").exists()
    report = script.main(script.parse_args([*TINY, "--output_dir", str(out), "--train_data_dir", folders["corrupt"]]))
    assert report["retrieval"]["all"]["n"] == 5  # the corrupt image skipped in the evaluation too
    assert report["training"]["args"]["num_train_images"] == 5 and (out / "galip_run.json").exists()


# ------------------------------------------------------------------------------------------- geometry
def test_non_square_images_are_centre_cropped_not_stretched(folders):
    pool = load_caption_folder(folders["wide"], image_size=16)
    pixels = pool.images[0].permute(1, 2, 0).numpy().astype(int)
    assert (np.abs(pixels - [255, 0, 0]).max(axis=-1) <= 8).all()  # all red: the middle square, kept whole
    tall = square_image(Image.new("RGB", (10, 30)), 5)
    assert tall.size == (5, 5)
    same = _square("red")
    assert square_image(same, 16) is same


# ------------------------------------------------------------------------------------------- caption length
def test_captions_longer_than_the_context_are_refused():
    captions = [f"{LONG}, noto style", f"{LONG}, twemoji style"]
    tokenizer = train_bpe_tokenizer(captions, model_max_length=16)
    with pytest.raises(CaptionDataError, match=r"^2 of the 2 captions of --train_data_dir are longer than "
                                               r"--context_length 16 tokens and would be cut, 2 distinct captions "
                                               r"becoming the same token ids; the longest has 20 tokens \('person "):
        check_caption_lengths(tokenizer, captions, "--train_data_dir")
    check_caption_lengths(train_bpe_tokenizer(captions, model_max_length=20), captions, "--train_data_dir")


def test_long_captions_stop_the_script_before_the_run_is_recorded(script, folders, tmp_path):
    out = tmp_path / "clip"
    with pytest.raises(CaptionDataError, match="pass --context_length 20 or more"):
        script.main(script.parse_args([*TINY, "--output_dir", str(out), "--train_data_dir", folders["long"],
                                       "--context_length", "16"]))
    assert not (out / "galip_run.json").exists()


# ------------------------------------------------------------------------------------------- output folder
@pytest.mark.parametrize("where", ["inside_train", "is_eval", "holds_train"])
def test_output_dir_apart_from_the_data_even_with_overwrite(script, folders, tmp_path, capsys, where):
    data = Path(tmp_path / "parent" / "data")
    data.mkdir(parents=True)
    _dataset([f"a {c} square" for c in COLORS]).save_to_disk(str(data))
    flags = {"inside_train": ["--train_data_dir", str(data), "--output_dir", str(data / "clip")],
             "is_eval": ["--train_data_dir", folders["heldout"], "--eval_data_dir", str(data), "--output_dir",
                         str(data)],
             "holds_train": ["--train_data_dir", str(data), "--output_dir", str(data.parent)]}[where]
    with pytest.raises(SystemExit):
        script.parse_args([*TINY, *flags, "--overwrite_output_dir"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    flag = "--eval_data_dir" if where == "is_eval" else "--train_data_dir"
    assert "error: --output_dir: " in error and flag in error and ("Choose another path" in error or
                                                                   "choose a path outside it" in error)
