"""The emoji data set builder, on small fixture tarballs laid out like the npm packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galip_diffusers.data import emoji
from galip_diffusers.data.emoji import EmojiDataError
from helpers.emoji_fixtures import make_fixture

def test_builds_every_image_with_captions_tones_and_held_out_flags(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path)
    dataset = emoji.build_dataset(paths, split="all", held_out_path=held_out, packages=packages)
    assert len(dataset) == 5 + 4  # twemoji has the heart, noto does not
    rows = {(r["unified"], r["style"]): r for r in dataset.remove_columns("image").to_list()}
    assert rows[("1F44B-1F3FF", "twemoji")]["text"] == [
        "waving hand: dark skin tone", "waving hand: dark skin tone, twemoji style"]
    assert rows[("1F44B-1F3FF", "noto")]["tone"] == "dark" and rows[("1F44B-1F3FF", "noto")]["concept"] == "1F44B"
    assert rows[("1F436", "noto")]["group"] == "animals-nature" and rows[("1F436", "noto")]["tone"] == ""
    assert rows[("2764-FE0F", "twemoji")]["label"] == "red heart"  # matched without -FE0F
    assert {k for k, r in rows.items() if r["held_out"]} == {
        ("1F436", "noto"), ("1F44B-1F3FF", "twemoji"), ("1F44B-1F3FF", "noto")}
    image = dataset[0]["image"]
    assert image.mode == "RGB" and image.size == (64, 64)
    pixels = np.asarray(image)
    assert (pixels[0, 0] == 255).all()  # transparent corner composited on white
    # half-transparent colour over white: (c + 255) / 2
    assert np.abs(pixels[32, 32].astype(int) - (np.array([0, 200, 100]) + 255) // 2).max() <= 1


def test_train_split_never_holds_a_held_out_pair(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path)
    train = emoji.build_dataset(paths, split="train", held_out_path=held_out, packages=packages)
    held = emoji.build_dataset(paths, split="held_out", held_out_path=held_out, packages=packages)
    assert len(train) == 6 and len(held) == 3
    assert not any(train["held_out"]) and all(held["held_out"])
    assert ("1F436", "twemoji") in set(zip(train["unified"], train["style"]))  # the other style stays seen


def test_bad_hash_is_refused_before_reading(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path)
    with open(paths["noto"], "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(EmojiDataError, match=r"fixture-noto@1.0.0: integrity check failed"):
        emoji.build_dataset(paths, held_out_path=held_out, packages=packages)


def test_pinned_integrity_refuses_an_unpinned_tarball(tmp_path):
    paths, _, held_out = make_fixture(tmp_path)
    with pytest.raises(EmojiDataError, match="emojibase-data@17.0.0: integrity check failed"):
        emoji.build_dataset(paths, held_out_path=held_out)


def test_corrupt_png_names_the_file(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path, corrupt="1f44b-1f3fb.png")
    with pytest.raises(EmojiDataError, match=r"img/twitter/64/1f44b-1f3fb.png \(twemoji\) is not a readable PNG"):
        emoji.build_dataset(paths, held_out_path=held_out, packages=packages)


def test_missing_png_names_the_file(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path, skip="1f436.png")
    with pytest.raises(EmojiDataError, match=r"package/img/twitter/64/1f436.png is missing"):
        emoji.build_dataset(paths, held_out_path=held_out, packages=packages)


def test_missing_tarball_and_bad_arguments_are_clear(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path)
    with pytest.raises(FileNotFoundError, match="tarball .*nope.tgz does not exist"):
        emoji.build_dataset({**paths, "labels": tmp_path / "nope.tgz"}, held_out_path=held_out, packages=packages)
    with pytest.raises(ValueError, match="split must be one of train, held_out, all"):
        emoji.build_dataset(paths, split="test", held_out_path=held_out, packages=packages)
    with pytest.raises(ValueError, match="missing the keys"):
        emoji.read_emoji_images({"twemoji": paths["twemoji"]}, packages)
    with pytest.raises(ValueError, match=r"styles must be a non-empty subset of twemoji, noto without repeats, got "
                                         r"\['noto', 'noto'\]"):
        emoji.read_emoji_images(paths, packages, styles=("noto", "noto"))  # every record came twice
    records, _ = emoji.read_emoji_images(paths, packages, styles="noto")  # one style, not the letters n, o, t, o
    assert records and {r["style"] for r in records} == {"noto"}


def test_saves_atomically_with_card_and_never_overwrites(tmp_path, monkeypatch):
    from datasets import load_from_disk

    paths, packages, held_out = make_fixture(tmp_path)
    dataset = emoji.build_dataset(paths, split="train", held_out_path=held_out, packages=packages)
    out = emoji.save_dataset(dataset, tmp_path / "arrow", split="train")
    assert load_from_disk(str(out))["unified"] == dataset["unified"]
    card = (out / "README.md").read_text()
    assert "CC-BY 4.0" in card and "Twitter, Inc" in card and "Apache License 2.0" in card
    with pytest.raises(FileExistsError, match="already exists"):
        emoji.save_dataset(dataset, out)

    def broken_save(self, path, **kwargs):
        Path(path, "partial").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(type(dataset), "save_to_disk", broken_save)
    with pytest.raises(OSError, match="disk full"):
        emoji.save_dataset(dataset, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]  # no temporary folder left


def test_imagefolder_export_loads_with_datasets_and_training_loader(tmp_path):
    from galip_diffusers.training.data import load_image_text_dataset

    paths, packages, held_out = make_fixture(tmp_path)
    dataset = emoji.build_dataset(paths, split="train", held_out_path=held_out, packages=packages)
    out = emoji.export_imagefolder(dataset, tmp_path / "folder", split="train")
    loaded = load_image_text_dataset(train_data_dir=str(out))
    assert len(loaded) == len(dataset)
    assert sorted(map(tuple, loaded["text"])) == sorted(map(tuple, dataset["text"]))
    assert np.array_equal(np.asarray(loaded[0]["image"].convert("RGB")),
                          np.asarray(dataset[dataset["unified"].index(loaded[0]["unified"])]["image"]))


def test_shipped_held_out_list_matches_the_shared_one():
    shipped = emoji.load_held_out()
    assert len({u for u, _ in shipped}) == 475
    assert sum(1 for _, style in shipped if style == "noto") == 475
    assert sum(1 for _, style in shipped if style == "twemoji") == 316


def test_caption_contract():
    assert emoji.captions("dog face", "noto") == ["dog face", "dog face, noto style"]
    with pytest.raises(ValueError, match="style must be one of twemoji, noto"):
        emoji.captions("dog face", "apple")
