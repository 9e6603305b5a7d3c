"""The held-out guarantee of both training loaders: no model trains on a held-out pair, whatever the user did to the
data set on the way (a saved format, a non-boolean or renamed ``held_out`` column)."""

from __future__ import annotations

import json
import logging

import datasets
import pytest
from PIL import Image

from galip_diffusers.training.clip_data import CaptionDataError, load_caption_folder
from galip_diffusers.training.data import drop_held_out_rows, load_image_text_dataset

FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string")),
                              "held_out": datasets.Value("bool")})
# rows 1 and 3 are marked held out
PLAIN = {"image": [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(4)], "text": [["a"], ["b"], ["c"], ["d"]],
         "held_out": [False, True, False, True]}
# (unified, style) pairs: 1F436 noto and 1F44B-1F3FB twemoji are in the shipped emoji_held_out.json, the others not
EMOJI = {"image": [Image.new("RGB", (8, 8), (0, 60 * i, 0)) for i in range(4)],
         "text": [["dog face"], ["dog face"], ["waving hand: light skin tone"], ["waving hand"]],
         "unified": ["1F436", "1F436", "1F44B-1F3FB", "1F44B"], "style": ["noto", "twemoji", "twemoji", "twemoji"],
         "label": ["dog face", "dog face", "waving hand: light skin tone", "waving hand"],
         "held_out": [True, False, False, False]}
FORMATS = [("numpy", None), ("torch", None), ("pandas", None), ("arrow", None), ("torch", ["image", "text"])]


def _saved(tmp_path, dataset: datasets.Dataset, name: str = "saved") -> str:
    dataset.save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


def _kept_texts(dataset) -> list:
    return [row["text"] for row in dataset.with_format(None)] if hasattr(dataset, "with_format") else list(dataset)


# ----------------------------------------------------------------- a data set saved with a format (findings 1 and 5)
@pytest.mark.parametrize("fmt,columns", FORMATS, ids=["numpy", "torch", "pandas", "arrow", "torch-columns"])
def test_a_saved_format_is_reset_so_both_loaders_drop_the_held_out_rows(tmp_path, fmt, columns):
    folder = _saved(tmp_path, datasets.Dataset.from_dict(PLAIN, features=FEATURES).with_format(fmt, columns=columns))
    loaded = load_image_text_dataset(train_data_dir=folder)
    assert loaded.format["type"] is None and loaded.column_names == ["image", "text", "held_out"]
    kept, dropped = drop_held_out_rows(loaded)
    assert dropped == 2 and kept["text"] == [["a"], ["c"]]
    pool = load_caption_folder(folder)  # was a KeyError / AttributeError traceback for torch-columns / arrow
    assert pool.captions == [["a"], ["c"]] and pool.num_held_out == 2
    stream = load_image_text_dataset(train_data_dir=folder, streaming=True)  # was NotImplementedError (columns)
    kept, dropped = drop_held_out_rows(stream)
    assert [row["text"] for row in kept] == [["a"], ["c"]] and dropped is None


@pytest.mark.parametrize("fmt", ["numpy", "torch", "pandas", "arrow"])
def test_drop_held_out_rows_reads_values_whatever_the_format_and_keeps_it(fmt):
    dataset = datasets.Dataset.from_dict(PLAIN, features=FEATURES).with_format(fmt)
    kept, dropped = drop_held_out_rows(dataset)
    assert dropped == 2 and len(kept) == 2 and kept.format["type"] == fmt
    assert _kept_texts(kept) == [["a"], ["c"]]
    stream = datasets.Dataset.from_dict(PLAIN, features=FEATURES).to_iterable_dataset().with_format(
        "torch" if fmt == "torch" else None)  # a stream's values as 0-d tensors
    assert [row["text"] for row in drop_held_out_rows(stream)[0].with_format(None)] == [["a"], ["c"]]


def test_only_the_small_columns_are_read_never_the_images(monkeypatch):
    dataset = datasets.Dataset.from_dict(EMOJI, features=datasets.Features(
        {**FEATURES, **{c: datasets.Value("string") for c in ("unified", "style", "label")}}))

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(datasets.Image, "decode_example", no_decoding)
    assert drop_held_out_rows(dataset)[1] == 2


# ------------------------------------------------------------- one check of the held_out column's type (finding 6)
@pytest.mark.parametrize("dtype", ["string", "int64"])
def test_train_clip_refuses_a_held_out_column_of_strings_or_numbers_like_train_galip(tmp_path, dtype):
    table = datasets.Dataset.from_dict(PLAIN, features=FEATURES).cast_column("held_out", datasets.Value(dtype))
    folder = _saved(tmp_path, table)
    message = rf"'held_out' column holds Value\('{dtype}'\), not booleans"
    with pytest.raises(ValueError, match=message):
        drop_held_out_rows(load_image_text_dataset(train_data_dir=folder))
    with pytest.raises(CaptionDataError, match=rf"--train_data_dir '{folder}': The data set's {message}"):
        load_caption_folder(folder)


def test_an_imagefolder_with_true_false_strings_is_refused_by_train_clip(tmp_path):
    with open(tmp_path / "metadata.jsonl", "w") as metadata:
        for i in range(4):  # "false" is a non-empty string: it was read as held out
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(tmp_path / f"{i}.png")
            metadata.write(json.dumps({"file_name": f"{i}.png", "text": "x", "held_out": ["false", "true"][i % 2]})
                           + "\n")
    with pytest.raises(CaptionDataError, match=r"'held_out' column holds Value\('string'\), not booleans"):
        load_caption_folder(str(tmp_path))


# ------------------------------------------------ the shipped list, whatever became of the column (finding 11)
def _emoji(**changes) -> datasets.Dataset:
    dataset = datasets.Dataset.from_dict(EMOJI)
    for how, argument in changes.items():
        dataset = getattr(dataset, how)(*argument)
    return dataset


@pytest.mark.parametrize("changes", [
    {"rename_column": ("held_out", "is_held_out")},
    {"remove_columns": ("held_out",)},
    {"select_columns": (["image", "text", "unified", "style"],)},
    {"select_columns": (["image", "text", "label", "style"],)},  # no code: the CLDR label names the image too
], ids=["renamed", "removed", "selected", "label"])
def test_listed_pairs_are_dropped_without_a_held_out_column(tmp_path, caplog, changes):
    folder = _saved(tmp_path, _emoji(**changes))
    with caplog.at_level(logging.WARNING):
        kept, dropped = drop_held_out_rows(load_image_text_dataset(train_data_dir=folder))
        pool = load_caption_folder(folder)
    kept_keys = [(row["style"], row["text"]) for row in kept.remove_columns("image")]
    assert dropped == 2 and kept_keys == [("twemoji", ["dog face"]), ("twemoji", ["waving hand"])]
    assert pool.captions == [["dog face"], ["waving hand"]] and pool.num_held_out == 2
    assert "2 row(s) of" in caplog.text and "no 'held_out' column (renamed or removed?)" in caplog.text
    stream, _ = drop_held_out_rows(load_image_text_dataset(train_data_dir=folder, streaming=True))
    assert [row["text"] for row in stream] == [["dog face"], ["waving hand"]]


def test_the_list_wins_over_a_false_held_out_flag_and_says_so(tmp_path, caplog):
    folder = _saved(tmp_path, _emoji())  # 1F44B-1F3FB twemoji is listed but its flag is false
    with caplog.at_level(logging.WARNING):
        kept, dropped = drop_held_out_rows(load_image_text_dataset(train_data_dir=folder))
        pool = load_caption_folder(folder)
    assert dropped == 2 and kept["unified"] == ["1F436", "1F44B"] and kept["style"] == ["twemoji"] * 2
    assert pool.num_held_out == 2 and len(pool.captions) == 2
    assert "1 row(s) of" in caplog.text and "'held_out' column is false there; the list wins" in caplog.text
    # evaluation reads every row, held-out ones included
    assert len(load_caption_folder(folder, drop_held_out=False).captions) == 4


def test_a_data_set_without_identifying_columns_is_left_to_its_held_out_column():
    table = datasets.Dataset.from_dict({"text": ["dog face", "b"], "style": ["noto", "noto"]})
    assert drop_held_out_rows(table) == (table, 0)  # a style without a code or label identifies nothing
