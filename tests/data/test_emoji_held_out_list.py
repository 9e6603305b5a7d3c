"""The held-out list is checked when it is read: a malformed list is a clear error, never a list that quietly holds
out nothing (finding 3)."""

from __future__ import annotations

import json

import pytest

from galip_diffusers.data import emoji
from galip_diffusers.data.emoji import EmojiDataError
from helpers.emoji_fixtures import make_fixture

ALLOWED_STYLES = r"'styles' must be a non-empty list drawn from \['twemoji', 'noto'\]"
CODE = r"'unified' must be an emoji-data code in upper-case hex such as '1F436'"
LIST = r"expected a JSON object whose 'held_out' is a list of entries"


@pytest.mark.parametrize("content,message", [
    ({"held_out": [{"unified": "1F436", "styles": "noto"}]}, rf"held_out\[0\] \(1F436\): {ALLOWED_STYLES}, got 'noto'"),
    ({"held_out": [{"unified": "1F436", "styles": ["Noto"]}]}, rf"held_out\[0\] \(1F436\): {ALLOWED_STYLES}"),
    ({"held_out": [{"unified": "1F436", "styles": []}]}, ALLOWED_STYLES),
    ({"held_out": [{"unified": "1F436", "styles": ["noto"]}, {"unified": "1F436"}]},
     rf"held_out\[1\] \(1F436\): {ALLOWED_STYLES}, got None"),
    ({"held_out": [{"unified": "1f436", "styles": ["noto"]}]}, rf"held_out\[0\]: {CODE}"),
    ({"held_out": [{"code": "1F436", "styles": ["noto"]}]}, rf"held_out\[0\]: {CODE}"),
    ({"held_out": [{"unified": 128054, "styles": ["noto"]}]}, CODE),
    ({"held_out": ["1F436"]}, CODE),
    ({"held_out": {"unified": "1F436", "styles": ["noto"]}}, LIST),
    ([{"unified": "1F436", "styles": ["noto"]}], LIST),
    ({"pairs": []}, LIST),
], ids=["styles-string", "style-capital", "styles-empty", "no-styles", "lower-case", "no-unified", "number",
        "entry-string", "object", "top-level-list", "no-held_out"])
def test_a_malformed_list_names_the_file_the_entry_and_the_allowed_values(tmp_path, content, message):
    path = tmp_path / "held.json"
    path.write_text(json.dumps(content))
    with pytest.raises(EmojiDataError, match=rf"held-out list {path}.*{message}"):
        emoji.load_held_out(path)


def test_an_unreadable_list_is_an_emoji_data_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EmojiDataError, match="cannot read the held-out list .*bad.json"):
        emoji.load_held_out(tmp_path / "bad.json")


def test_a_listed_pair_that_matches_no_image_is_refused_by_the_builder(tmp_path):
    paths, packages, _ = make_fixture(tmp_path)
    for name, entry, pair in [("typo", {"unified": "1F437", "styles": ["noto"]}, r"\('1F437', 'noto'\)"),
                              ("no-image", {"unified": "2764-FE0F", "styles": ["noto"]}, r"\('2764-FE0F', 'noto'\)"),
                              ("no-fe0f", {"unified": "2764", "styles": ["twemoji"]}, r"\('2764', 'twemoji'\)")]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"held_out": [{"unified": "1F436", "styles": ["noto"]}, entry]}))
        with pytest.raises(EmojiDataError, match=rf"held-out list {path}: 1 \(unified, style\) pair\(s\) match no "
                                                 rf"image, e.g. {pair}"):
            emoji.build_dataset(paths, split="held_out", held_out_path=path, packages=packages)


def test_a_well_formed_list_holds_out_its_pairs(tmp_path):
    paths, packages, held_out = make_fixture(tmp_path)
    assert set(emoji.load_held_out(held_out)) == {("1F436", "noto"), ("1F44B-1F3FF", "twemoji"),
                                                   ("1F44B-1F3FF", "noto")}
    held = emoji.build_dataset(paths, split="held_out", held_out_path=held_out, packages=packages)
    assert sorted(zip(held["unified"], held["style"])) == [("1F436", "noto"), ("1F44B-1F3FF", "noto"),
                                                           ("1F44B-1F3FF", "twemoji")]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"held_out": []}))  # holding out nothing is a choice, not a malformed list
    assert len(emoji.build_dataset(paths, split="held_out", held_out_path=empty, packages=packages)) == 0
