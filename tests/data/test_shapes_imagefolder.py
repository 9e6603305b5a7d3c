"""The captioned-shapes builders as the training scripts see them: every row carries ``held_out`` (so both training
loaders drop the held-out pairs), ``to_imagefolder`` builds beside its folder and swaps the export in (a failure
leaves the earlier export whole; a user's own files are never deleted)."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from galip_diffusers.data import shapes as S


def _listing(folder) -> dict:
    """Every file under ``folder`` with its bytes: a folder left exactly as it was compares equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- the held-out marker
def test_every_row_carries_held_out_and_both_training_loaders_drop_those_rows(tmp_path):
    from galip_diffusers.training.clip_data import load_caption_folder
    from galip_diffusers.training.data import drop_held_out_rows, load_image_text_dataset

    dataset = S.make_dataset(40, seed=3, split="all")
    expected = [S.is_held_out(text) for text in dataset["text"]]
    assert dataset["held_out"] == expected and 0 < sum(expected) < 40
    dataset.save_to_disk(str(tmp_path / "arrow"))
    S.to_imagefolder(40, tmp_path / "png", seed=3, split="all")
    metadata = [json.loads(line) for line in (tmp_path / "png" / "metadata.jsonl").read_text().splitlines()]
    assert [row["held_out"] for row in metadata] == expected

    for folder in ("arrow", "png"):
        kept, dropped = drop_held_out_rows(load_image_text_dataset(train_data_dir=str(tmp_path / folder)))
        assert dropped == sum(expected) and not any(S.is_held_out(text) for text in kept["text"])
        pool = load_caption_folder(str(tmp_path / folder), image_size=16)
        assert pool.num_held_out == sum(expected) and len(pool.captions) == 40 - sum(expected)


def test_a_data_sets_own_held_out_column_is_copied_and_a_foreign_caption_needs_one(tmp_path):
    dataset = S.make_dataset(3, seed=1).map(lambda row: {"held_out": True})  # marked by the user: kept as marked
    S.to_imagefolder(dataset, tmp_path / "marked")
    metadata = (tmp_path / "marked" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["held_out"] for line in metadata] == [True] * 3

    from datasets import Dataset, Features, Image as ImageFeature, Value

    foreign = Dataset.from_dict({"image": [Image.new("RGB", (8, 8))], "text": ["a photo of a cat"]},
                                features=Features({"image": ImageFeature(), "text": Value("string")}))
    with pytest.raises(ValueError, match=r"row 0: caption 'a photo of a cat' does not match the grammar.*held_out"):
        S.to_imagefolder(foreign, tmp_path / "foreign")
    assert not (tmp_path / "foreign").exists()


# ---------------------------------------------------------------------------------------- build beside, swap in
def test_a_failing_export_leaves_the_earlier_one_whole_and_names_the_bad_row(tmp_path):
    from datasets import Dataset, Features, Image as ImageFeature, Value

    out = S.to_imagefolder(5, tmp_path / "shapes", seed=0)
    before = _listing(out)
    caption = "a small red circle on a white background"
    broken = Dataset.from_dict({"image": [Image.new("RGB", (64, 64))] * 2 + [None], "text": [caption] * 3},
                               features=Features({"image": ImageFeature(), "text": Value("string")}))
    with pytest.raises(ValueError, match=r"dataset_or_num_images row 2 needs an image.*got image=NoneType"):
        S.to_imagefolder(broken, out, overwrite=True)
    assert _listing(out) == before  # not 2 new PNGs over a deleted export
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no temporary folder left beside it


def test_overwrite_replaces_an_earlier_export_but_never_deletes_a_users_file(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.new("RGB", (8, 8)).save(mine / "holiday_photo.png")
    (mine / "notes.txt").write_text("mine")
    before = _listing(mine)
    with pytest.raises(ValueError, match=r"holiday_photo.png, notes.txt.*nothing was deleted"):
        S.to_imagefolder(3, mine, overwrite=True)
    assert _listing(mine) == before

    out = S.to_imagefolder(6, tmp_path / "export", seed=1)
    os.chmod(out, 0o750)
    S.to_imagefolder(2, out, seed=2, overwrite=True)  # an earlier export: replaced whole, fewer rows, no leftovers
    assert sorted(os.listdir(out)) == ["00000.png", "00001.png", "metadata.jsonl"]
    assert os.stat(out).st_mode & 0o777 == 0o750  # the folder keeps its own permissions
    (out / "notes.txt").write_text("added later")
    with pytest.raises(ValueError, match=r"\(notes.txt\)"):
        S.to_imagefolder(2, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "added later"
