"""Tests for the small shapes CLIPs: the BPE tokenizer, the multi-positive loss, evaluation and train_clip.py."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from galip_diffusers.training.clip import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    jitter_brightness_contrast,
    whiten_patch_embedding,
    build_clip_config,
    evaluate_clip,
    linear_probe_accuracy,
    multi_positive_contrastive_loss,
    multi_positive_targets,
    pixel_values_from_uint8,
    zero_shot_attribute_accuracy,
)
from galip_diffusers.data.bpe import (
    NUM_BASE_TOKENS,
    learn_bpe_merges,
    pretokenize,
    save_bpe_tokenizer,
    train_bpe_tokenizer,
)
from galip_diffusers.data.shapes import all_captions, generate_shapes, parse_caption, render_shape
from galip_core.vit import CLIP_MEAN, CLIP_STD

REPO = Path(__file__).resolve().parents[2]
CAPTION_WORDS = {w for c in all_captions("all") for w in c.split()}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(all_captions("train"), model_max_length=16)


@pytest.fixture(scope="module")
def tiny_clip(tokenizer):
    torch.manual_seed(0)
    config = build_clip_config(tokenizer, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                               text_layers=1, text_heads=2, projection_dim=16)
    return CLIPModel(config).eval()


# ----------------------------------------------------------------------------- BPE tokenizer
def test_learn_bpe_merges_classic_example():
    # Sennrich et al.'s toy corpus: "es" (9) ties with "st</w>" (9) and wins lexicographically, then "est</w>".
    merges = learn_bpe_merges({"low": 5, "lower": 2, "newest": 6, "widest": 3}, num_merges=3)
    assert merges[:2] == [("e", "s"), ("es", "t</w>")]
    assert merges[2] == ("l", "o")  # 7 occurrences
    assert len(learn_bpe_merges({"ab": 1}, num_merges=None)) == 1  # "a" + "b</w>" -> one token


def test_pretokenize_uses_clip_normalisation():
    counts = pretokenize(["A  Small, red  circle", "a small"])
    assert counts == {"a": 2, "small": 2, ",": 1, "red": 1, "circle": 1}


def test_tokenizer_layout_and_whole_words(tokenizer):
    vocab = tokenizer.get_vocab()
    merges = learn_bpe_merges(pretokenize(all_captions("train")))
    assert len(tokenizer) == NUM_BASE_TOKENS + len(merges)
    assert vocab["<|startoftext|>"] == len(tokenizer) - 2 and vocab["<|endoftext|>"] == len(tokenizer) - 1
    assert tokenizer.model_max_length == 16
    for word in CAPTION_WORDS:  # every caption word (held-out ones use the same 17 words) is one token
        assert word + "</w>" in vocab
    for caption in all_captions("all"):
        ids = tokenizer(caption).input_ids
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert tokens == ["<|startoftext|>"] + [w + "</w>" for w in caption.split()] + ["<|endoftext|>"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption


def test_tokenizer_byte_fallback_for_unseen_words(tokenizer):
    text = "a pink hexagon on a café background!"
    ids = tokenizer(text).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.unk_token_id not in ids[1:-1]  # nothing becomes <|endoftext|> (the unk token)
    assert "hexagon</w>" not in tokenizer.get_vocab() and len(tokens) > len(text.split()) + 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a pink hexagon on a café background !"


def test_tokenizer_size_arguments():
    captions = all_captions("train")
    assert len(train_bpe_tokenizer(captions, num_merges=5)) == NUM_BASE_TOKENS + 5
    assert len(train_bpe_tokenizer(captions, vocab_size=NUM_BASE_TOKENS + 7)) == NUM_BASE_TOKENS + 7
    with pytest.raises(ValueError, match="either vocab_size or num_merges"):
        train_bpe_tokenizer(captions, vocab_size=600, num_merges=3)
    with pytest.raises(ValueError, match="vocab_size must be at least 514"):
        train_bpe_tokenizer(captions, vocab_size=100)


def test_tokenizer_save_load(tokenizer, tmp_path):
    files = {Path(f).name for f in save_bpe_tokenizer(tokenizer, tmp_path)}
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= files
    assert (tmp_path / "merges.txt").read_text().startswith("#version")
    (tmp_path / "tokenizer.json").unlink()  # the OpenAI-style files alone are enough
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tokenizer) and loaded.model_max_length == 16
    for text in all_captions("held_out")[:3] + ["a pink hexagon"]:
        assert loaded(text, padding="max_length", max_length=16).input_ids == tokenizer(
            text, padding="max_length", max_length=16).input_ids


# ----------------------------------------------------------------------------- loss
def test_multi_positive_targets_share_mass_equally():
    targets = multi_positive_targets(torch.tensor([0, 0, 1, 0]))
    assert torch.allclose(targets[0], torch.tensor([1 / 3, 1 / 3, 0, 1 / 3]))
    assert torch.allclose(targets[2], torch.tensor([0.0, 0, 1, 0]))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="no positive"):
        multi_positive_targets(torch.tensor([0, 1]), torch.tensor([1, 1]))


def test_multi_positive_loss_hand_computed():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])  # images 0 and 1 share a caption

    def log_softmax(row, j):
        return row[j] - math.log(sum(math.exp(v) for v in row))

    rows, cols = logits.tolist(), logits.t().tolist()
    i2t = -(0.5 * log_softmax(rows[0], 0) + 0.5 * log_softmax(rows[0], 1)
            + 0.5 * log_softmax(rows[1], 0) + 0.5 * log_softmax(rows[1], 1) + log_softmax(rows[2], 2)) / 3
    t2i = -(0.5 * log_softmax(cols[0], 0) + 0.5 * log_softmax(cols[0], 1)
            + 0.5 * log_softmax(cols[1], 0) + 0.5 * log_softmax(cols[1], 1) + log_softmax(cols[2], 2)) / 3
    loss = multi_positive_contrastive_loss(logits, labels)
    assert loss.item() == pytest.approx(0.5 * (i2t + t2i), abs=1e-6)
    # plain CLIP loss would count the shared caption as a negative: a different number
    plain = 0.5 * (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.t(), torch.arange(3)))
    assert abs(plain.item() - loss.item()) > 0.1


def test_multi_positive_loss_reduces_to_clip_loss_and_handles_extra_texts():
    torch.manual_seed(0)
    logits = torch.randn(5, 5)
    plain = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5)))
    assert torch.allclose(multi_positive_contrastive_loss(logits, torch.arange(5)), plain)
    # texts = every caption id 0..5, images carry ids [3, 1, 3]: texts 0, 2, 4, 5 are only negatives
    logits = torch.randn(3, 6)
    image_labels, text_labels = torch.tensor([3, 1, 3]), torch.arange(6)
    i2t = F.cross_entropy(logits, image_labels)
    t2i = -(0.5 * (F.log_softmax(logits.t()[3], 0)[0] + F.log_softmax(logits.t()[3], 0)[2])
            + F.log_softmax(logits.t()[1], 0)[1]) / 2
    loss = multi_positive_contrastive_loss(logits, image_labels, text_labels)
    assert loss.item() == pytest.approx(0.5 * (i2t + t2i).item(), abs=1e-6)
    with pytest.raises(ValueError, match="expected"):
        multi_positive_contrastive_loss(logits, image_labels)


def test_images_no_caption_describes_are_negatives_for_every_text():
    """Label -1 (a near-miss shape): no image -> text row, but a column of every text -> image softmax."""
    torch.manual_seed(1)
    logits = torch.randn(4, 3)  # images 0..2 carry captions 0..2, image 3 is a near miss
    labels = torch.tensor([0, 1, 2, -1])
    i2t = F.cross_entropy(logits[:3], torch.arange(3))
    t2i = F.cross_entropy(logits.t(), torch.arange(3))  # every text's softmax runs over all four images
    loss = multi_positive_contrastive_loss(logits, labels, torch.arange(3))
    assert loss.item() == pytest.approx(0.5 * (i2t + t2i).item(), abs=1e-6)
    # pulling the near miss towards a text raises the loss; without it the loss is the 3x3 CLIP loss
    closer = logits.clone()
    closer[3, 1] += 3.0
    assert multi_positive_contrastive_loss(closer, labels, torch.arange(3)) > loss
    assert multi_positive_contrastive_loss(logits[:3], labels[:3]).item() < loss.item()
    with pytest.raises(ValueError, match="no image label occurs among the text labels"):
        multi_positive_contrastive_loss(logits[3:], labels[3:], torch.arange(3))


def test_identical_captions_get_equal_gradient_pull():
    # Two images with the same caption and identical text columns: the loss is minimised by matching both.
    text = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 0, 1])
    good = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    bad = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), dim=-1)
    loss_good = multi_positive_contrastive_loss(10 * good @ text.t(), labels)
    loss_bad = multi_positive_contrastive_loss(10 * bad @ text.t(), labels)
    assert loss_good.item() < loss_bad.item() - 1.0
    # rows of the shared caption keep log(2) (two equally likely positives), the third row ~0
    assert loss_good.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-3)


# ----------------------------------------------------------------------------- preprocessing and targets
def test_pixel_values():
    image = render_shape(16, "red", "square", "white", center=(8, 8), as_array=True)
    pixels = pixel_values_from_uint8(image[None])
    assert pixels.shape == (1, 3, 64, 64)
    expected = (245 / 255 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert pixels[0, 0, 63, 63].item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(pixel_values_from_uint8(torch.from_numpy(image[None]).permute(0, 3, 1, 2)), pixels)
    with pytest.raises(ValueError, match="uint8"):
        pixel_values_from_uint8(image[None].astype(np.float32))


def test_brightness_contrast_jitter_keeps_hues():
    image = torch.from_numpy(render_shape(30, "purple", "triangle", "gray", as_array=True)).permute(2, 0, 1)[None]
    images = image.repeat(16, 1, 1, 1)
    assert torch.equal(jitter_brightness_contrast(images, contrast=0.0, brightness=0.0), images)
    raw = jitter_brightness_contrast(images, generator=torch.Generator().manual_seed(0))
    assert raw.dtype == torch.uint8 and raw.shape == images.shape and not torch.equal(raw, images)
    out = raw.int()
    background, obj = out[:, :, 0, 0], out[:, :, 32, 32]  # gray stays neutral, purple keeps B > R > G
    assert (background.max(1).values - background.min(1).values).le(1).all()
    assert (obj[:, 2] > obj[:, 0]).all() and (obj[:, 0] > obj[:, 1]).all()


def test_whitened_patch_embedding(tiny_clip):
    model = CLIPModel(tiny_clip.config)
    pairs = generate_shapes(64, seed=0, as_array=True)
    pixels = pixel_values_from_uint8(np.stack([p[0] for p in pairs]))
    eigenvalues = whiten_patch_embedding(model, pixels, eps=1e-3)
    assert eigenvalues.shape == (32,) and (eigenvalues[:-1] >= eigenvalues[1:]).all()
    with torch.no_grad():
        tokens = model.vision_model.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2).reshape(-1, 32)
    variance = tokens.double().var(dim=0)  # whitened: ~1 along the components well above eps
    assert torch.allclose(variance[:8], torch.ones(8, dtype=torch.float64), atol=0.02)
    assert variance[0] / eigenvalues[0] < 1  # the dominant (colour) direction is scaled down


# ----------------------------------------------------------------------------- evaluation
def test_linear_probe_on_factorised_and_shuffled_features():
    train, held = all_captions("train"), all_captions("held_out")

    def one_hot(captions):  # additive attribute codes: a probe fitted on train captions must transfer
        return torch.tensor([[float(parse_caption(c)[a] == v) for a in ATTRIBUTES for v in ATTRIBUTE_VALUES[a]]
                             for c in captions])

    result = linear_probe_accuracy(one_hot(train), train, one_hot(held), held)
    assert all(result[a] == 1.0 for a in ATTRIBUTES)
    # features that only identify the caption (no attribute structure) cannot be read out on unseen captions
    torch.manual_seed(0)
    codes, every = torch.randn(108, 200), all_captions("all")
    result = linear_probe_accuracy(codes[[every.index(c) for c in train]], train,
                                   codes[[every.index(c) for c in held]], held)
    assert result["mean"] < 0.9


def test_zero_shot_evaluation_on_tiny_random_model(tokenizer, tiny_clip):
    report = evaluate_clip(tiny_clip, tokenizer, num_images=12)
    for split in ("train_split", "held_out"):
        for mode in ("caption", "marginal"):
            numbers = report["zero_shot"][split][mode]
            assert set(numbers) == set(ATTRIBUTES) | {"mean", "all"}
            assert all(0.0 <= v <= 1.0 for v in numbers.values())
        assert report["zero_shot"][split]["n"] == 12
    for probe in ("text_linear_probe", "image_linear_probe"):
        assert set(report[probe]) == {"ridge=0.01", "ridge=0.1", "ridge=1"}
        assert set(report[probe]["ridge=0.1"]) == set(ATTRIBUTES) | {"mean"}
        assert all(0.0 <= v <= 1.0 for v in report[probe]["ridge=1"].values())


def test_zero_shot_accuracy_reads_attributes_from_the_best_caption(tokenizer, tiny_clip, monkeypatch):
    # With a model whose similarities are rigged, the evaluation must read the attributes of the argmax caption.
    import galip_diffusers.training.clip as ct

    pairs = generate_shapes(4, seed=3, split="held_out", as_array=True)
    images, captions = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
    candidates = all_captions("all")
    wrong = "a large red square on a black background"
    picks = [captions[0], captions[1], wrong, wrong]
    monkeypatch.setattr(ct, "encode_texts", lambda m, t, texts: torch.eye(len(texts)))
    monkeypatch.setattr(ct, "encode_images", lambda m, ims, batch_size=256: torch.eye(len(candidates))[
        [candidates.index(p) for p in picks]])
    report = zero_shot_attribute_accuracy(tiny_clip, tokenizer, images, captions)
    for attr in ATTRIBUTES:
        expected = (2 + sum(ct.parse_caption(wrong)[attr] == ct.parse_caption(c)[attr] for c in captions[2:])) / 4
        assert report["caption"][attr] == pytest.approx(expected)
    assert report["caption"]["all"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lengths must match"):
        zero_shot_attribute_accuracy(tiny_clip, tokenizer, images, captions[:2])


# ----------------------------------------------------------------------------- training script
def test_train_clip_smoke_run(tmp_path):
    out = tmp_path / "clip"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "training" / "train_clip.py"), "--output_dir", str(out), "--seed", "1",
           "--vision_width", "32", "--vision_layers", "2", "--text_width", "32", "--text_layers", "1",
           "--projection_dim", "16", "--num_train_images", "48", "--train_batch_size", "16",
           "--max_train_steps", "3", "--learning_rate", "1e-3", "--eval_images", "8", "--logging_steps", "1",
           "--validation_steps", "3", "--caption_split", "all"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    model = CLIPModel.from_pretrained(out)
    text_model = CLIPTextModelWithProjection.from_pretrained(out)
    vision_model = CLIPVisionModelWithProjection.from_pretrained(out)
    tokenizer = CLIPTokenizer.from_pretrained(out)
    assert vision_model.config.image_size == 64 and vision_model.config.patch_size == 8
    assert vision_model.config.num_hidden_layers == 2 and text_model.config.hidden_size == 32
    assert text_model.config.max_position_embeddings == tokenizer.model_max_length == 16
    assert text_model.config.vocab_size == len(tokenizer) and text_model.config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer(["a small red circle on a white background"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        embeds = text_model(ids.input_ids).text_embeds
        full = model.get_text_features(input_ids=ids.input_ids)
    assert torch.allclose(embeds, getattr(full, "pooler_output", full), atol=1e-5)
    assert (out / "vocab.json").exists() and (out / "merges.txt").exists()
    # --caption_split all trains on held-out captions too, but the tokenizer is still the training captions' BPE
    # (the generator's), so the scorer reads the pipeline's token ids.
    assert tokenizer.get_vocab() == train_bpe_tokenizer(all_captions("train")).get_vocab()
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(out)
    image = render_shape(20, "blue", "circle", "black", as_array=True)
    assert torch.allclose(processor(images=[image], return_tensors="pt").pixel_values,
                          pixel_values_from_uint8(image[None]), atol=1e-5)

    report = json.loads((out / "zero_shot_eval.json").read_text())
    assert report["training"]["args"]["max_train_steps"] == 3 and len(report["training"]["history"]) == 3
    assert report["model"]["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert 0.0 <= report["zero_shot"]["held_out"]["caption"]["shape"] <= 1.0


def test_train_clip_trackers_checkpoints_and_resume(tmp_path):
    out = tmp_path / "clip"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(REPO / "training" / "train_clip.py"), "--output_dir", str(out), "--seed", "1",
            "--vision_width", "32", "--vision_layers", "1", "--text_width", "32", "--text_layers", "1",
            "--projection_dim", "16", "--num_train_images", "32", "--train_batch_size", "16", "--eval_images", "4",
            "--logging_steps", "1", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2"]
    first = subprocess.run(base + ["--max_train_steps", "5"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-4"]
    events = [f for _, _, files in os.walk(out / "logs") for f in files if f.startswith("events.out")]
    assert events  # TensorBoard is the default tracker, as in train_galip.py
    full = json.loads((out / "zero_shot_eval.json").read_text())["training"]["history"]
    resumed = subprocess.run(base + ["--max_train_steps", "5", "--resume_from_checkpoint", "latest", "--report_to",
                                     "none"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr and "checkpoint-4 (step 4)" in resumed.stderr
    history = json.loads((out / "zero_shot_eval.json").read_text())["training"]["history"]
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in history[:4]] == [r["loss"] for r in full[:4]]  # restored from the checkpoint
    assert history[4]["lr"] == full[4]["lr"]  # the LR schedule resumed at its step


TINY_RUN = ["--vision_width", "32", "--vision_layers", "1", "--vision_heads", "2", "--text_width", "32",
            "--text_layers", "1", "--text_heads", "2", "--projection_dim", "16", "--patch_size", "16",
            "--num_train_images", "8", "--train_batch_size", "4", "--eval_images", "2", "--report_to", "none",
            "--patch_init", "random", "--lr_warmup_steps", "0", "--checkpointing_steps", "1",
            "--checkpoints_total_limit", "1"]


def test_train_clip_keeps_the_checkpoint_limit_and_another_runs_checkpoints(tmp_path, one_thread):
    """--checkpoints_total_limit was ignored (save_checkpoint got no run id, so nothing was ever deleted)."""
    from accelerate.state import AcceleratorState, GradientState
    from helpers.training_helpers import training_script

    script = training_script("train_clip")
    out = tmp_path / "clip"
    checkpoints = lambda: sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))  # noqa: E731
    try:
        script.main(script.parse_args([*TINY_RUN, "--output_dir", str(out), "--max_train_steps", "3"]))
        assert checkpoints() == ["checkpoint-3"]
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        # a second run into the same folder, allowed explicitly: its limit never deletes the first run's checkpoint
        script.main(script.parse_args([*TINY_RUN, "--output_dir", str(out), "--max_train_steps", "2",
                                       "--overwrite_output_dir"]))
        assert checkpoints() == ["checkpoint-2", "checkpoint-3"]
        assert json.loads((out / "galip_run.json").read_text()) == json.loads(
            (out / "checkpoint-2" / "galip_run.json").read_text()) != json.loads(
            (out / "checkpoint-3" / "galip_run.json").read_text())
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
