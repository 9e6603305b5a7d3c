"""train_clip.py on an image-caption folder (the emoji data set's layout, from fixture tarballs)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from galip_diffusers.training.clip_data import load_caption_pool, retrieval_accuracy, sample_batch_captions
from galip_diffusers.data import emoji
from helpers.emoji_fixtures import make_fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emoji_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emoji")
    paths, packages, held_out = make_fixture(tmp)
    dataset = emoji.build_dataset(paths, split="all", held_out_path=held_out, packages=packages)
    return emoji.save_dataset(dataset, tmp / "all", split="all")


def test_caption_pool_drops_held_out_rows_unless_asked(emoji_folder):
    images, captions, extras = load_caption_pool(str(emoji_folder))
    # the fixture's own list marks 3 rows; the shipped list also holds out 1F44B-1F3FB in both styles (the list wins)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert not any(e["held_out"] or e["unified"] == "1F44B-1F3FB" for e in extras)
    assert ["dog face", "dog face, twemoji style"] in captions
    _, all_captions, all_extras = load_caption_pool(str(emoji_folder), image_size=32, drop_held_out=False)
    assert len(all_captions) == 9 and sum(e["held_out"] for e in all_extras) == 3
    with pytest.raises(ValueError, match="--caption_column .caption. not found"):
        load_caption_pool(str(emoji_folder), caption_column="caption")


def test_batch_captions_share_a_column_when_identical():
    lists = [["dog face", "dog face, noto style"], ["dog face"], ["red heart"]]
    texts, columns = sample_batch_captions(lists, random.Random(0))
    picked = [texts[c] for c in columns]
    assert picked[1] == "dog face" and picked[2] == "red heart" and picked[0] in lists[0]
    assert len(texts) == len(set(picked)) and texts == sorted(texts)


def test_retrieval_accuracy_counts_the_target_rank(monkeypatch):
    import galip_diffusers.training.clip_data as cdt

    candidates = ["a", "b", "c"]
    monkeypatch.setattr(cdt, "encode_texts", lambda model, tok, texts: torch.eye(3)[[candidates.index(t) for t in texts]])
    # image 0 is closest to "a" then "b"; image 1 to "c" then "a"
    monkeypatch.setattr(cdt, "encode_images", lambda model, images, bs: torch.tensor([[1.0, 0.5, 0.0], [0.3, 0.0, 1.0]]))
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    report = retrieval_accuracy(None, None, images, ["b", "c"], candidates, top_k=(1, 2))
    assert report == {"top1": 0.5, "top2": 1.0, "n": 2}
    with pytest.raises(ValueError, match="not among the candidates"):
        retrieval_accuracy(None, None, images, ["z", "c"], candidates)


def test_train_clip_on_a_folder_smoke_run(emoji_folder, tmp_path):
    out = tmp_path / "clip"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "training" / "train_clip.py"), "--output_dir", str(out), "--seed", "1",
           "--train_data_dir", str(emoji_folder), "--vision_width", "32", "--vision_layers", "1",
           "--text_width", "32", "--text_layers", "1", "--projection_dim", "16", "--train_batch_size", "4",
           "--max_train_steps", "2", "--logging_steps", "1", "--context_length", "24"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "zero_shot_eval.json").read_text())
    retrieval = report["retrieval"]
    assert retrieval["candidates"] == 9  # every "{label}, {style} style" caption of the folder
    assert retrieval["held_out=False"]["n"] == 6 and retrieval["held_out=True"]["n"] == 3
    assert report["training"]["args"]["num_train_images"] == 4  # no held-out row (fixture's or shipped list's)
    tokenizer = CLIPTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == 24
    ids = tokenizer("waving hand, twemoji style").input_ids  # a training caption: whole-word BPE tokens
    assert len(ids) <= 2 + 5
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "wavinghand,twemojistyle"
