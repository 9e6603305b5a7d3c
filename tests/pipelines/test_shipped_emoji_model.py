"""The shipped galip-emoji model: it is packaged with its card and licences, loads every way a user would load it,
stays under 25 MiB, and keeps its measured quality on a small fixed sample judged against the real emoji images (the
issue #24 judge: nearest real image at 32x32 over all 7,572 references)."""

import numpy as np
import pytest
import torch
from helpers.shipped_helpers import check_shipped_folder, load_quiet
from PIL import Image

import galip_diffusers  # noqa: F401  (registers the classes with diffusers)
from galip_cli.generate import main as generate_main
from galip_diffusers import GALIPPipeline
from galip_diffusers.data.emoji_eval import (evaluation_prompts, generate_uint8, label_only_verdicts, seed_diversity,
                                             summarize_label_only)
from galip_diffusers.data.emoji_judge import summarize
from galip_diffusers.pretrained import PRETRAINED_MODELS, resolve_pretrained

FOLDER = PRETRAINED_MODELS["galip-emoji"]
#: regression floor on the fixed sample below: what the shipped model (stage 1 to step 15,000, stage 2 step 500)
#: measured on it, minus a margin of a few images, so that a worse retrain or a broken loader fails here
SHIPPED_MEASURED = {
    "seen": {"emoji_top1": 0.859, "emoji_top5": 0.922, "style_top1": 0.969},
    "held_out_noto": {"style_top1": 0.438, "emoji_top5": 0.656},
    "held_out_tones": {"emoji_top5": 1.0, "tone_among_variants": 0.922},
}
#: the same for bare "{label}" prompts (no style asked): 64 of the sampled seen prompts' labels, 32 held-out tones'
SHIPPED_LABELS_ONLY = {"seen": {"emoji_top1": 0.828, "emoji_top5": 0.891}, "held_out_tones": {"emoji_top5": 0.969}}
LABELS_ONLY_SAMPLE = {"seen": 64, "held_out_tones": 32}
MARGIN = 0.08
SAMPLE = {"seen": 128, "held_out_noto": 32, "held_out_tones": 64}


@pytest.fixture(scope="module")
def pipe():
    return load_quiet("galip-emoji")


def test_packaged_folder_is_complete_licensed_and_under_25_mb():
    card = check_shipped_folder("galip-emoji")
    for needed in ("CC-BY 4.0", "Twemoji", "Apache", "emoji-datasource-twitter@16.0.0",
                   "emoji-datasource-google@16.0.0", "emojibase-data@17.0.0", "meets every seen-caption target"):
        assert needed in card, needed


def test_loads_through_diffusion_pipeline_in_float32():
    from diffusers import DiffusionPipeline

    loaded = DiffusionPipeline.from_pretrained(FOLDER)
    assert isinstance(loaded, GALIPPipeline)
    dtypes = {name: module.dtype for name, module in loaded.components.items() if hasattr(module, "dtype")}
    assert set(dtypes.values()) == {torch.float32}, dtypes


@pytest.fixture(scope="module")
def sample_scores(pipe, real_emoji):
    judge = real_emoji[0]
    sets = evaluation_prompts(judge, num_seen=SAMPLE["seen"], seed=0)
    scores = {}
    for name, count in SAMPLE.items():
        prompts = sets[name][:: max(1, len(sets[name]) // count)][:count]
        images = generate_uint8(pipe, [c for c, _ in prompts], seed=0)
        scores[name] = summarize(judge.judge(images, [t for _, t in prompts]))
    return scores


def test_fixed_sample_keeps_the_shipped_quality(sample_scores, one_thread):
    for name, checks in SHIPPED_MEASURED.items():
        for check, measured in checks.items():
            assert sample_scores[name][check] >= measured - MARGIN, (name, check, sample_scores[name])


def test_bare_labels_draw_their_emoji_in_either_style(pipe, real_emoji, one_thread):
    judge = real_emoji[0]
    sets = evaluation_prompts(judge, num_seen=SAMPLE["seen"], seed=0)
    for name, checks in SHIPPED_LABELS_ONLY.items():
        count = LABELS_ONLY_SAMPLE[name]
        labels = [(str(judge.label[target]), target) for _, target in sets[name][:: len(sets[name]) // count][:count]]
        summary = summarize_label_only(label_only_verdicts(judge, generate_uint8(pipe, [c for c, _ in labels]), labels))
        for check, measured in checks.items():
            assert summary[check] >= measured - MARGIN, (name, check, summary)
        assert 0.2 <= summary["drawn_twemoji"] <= 0.8, summary  # no style asked: both styles come out


def test_seeds_give_different_images(pipe, real_emoji, one_thread):
    judge = real_emoji[0]
    prompts = evaluation_prompts(judge, num_seen=4, seed=1)["seen"]
    diversity = seed_diversity(pipe, judge, prompts, num_seeds=4)
    assert diversity["between_seeds"] > 0.01, diversity


def test_it_is_the_default_of_galip_generate(tmp_path, capsys, real_emoji, one_thread):
    """The seen-caption targets are met, so galip-emoji is the default model: ``galip generate`` without --model draws
    an emoji (the judge reads the prompt's style), and ``from_pretrained(None)`` resolves to this folder."""
    from galip_core.packaged import DEFAULT_MODEL

    assert DEFAULT_MODEL == "galip-emoji" and resolve_pretrained(None) == FOLDER
    assert generate_main(["cat face, noto style", "--out", str(tmp_path), "--seed", "1"]) == 0
    path = capsys.readouterr().out.split()[0]
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (64, 64, 3) and image.std() > 5  # a drawing, not a flat field
    judge = real_emoji[0]
    verdict = judge.judge(image[None], [judge.index_of(judge.unified[judge.label == "cat face"][0], "noto")])[0]
    assert verdict["style_top1"], verdict
