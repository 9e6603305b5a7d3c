"""galip-eval: CLIP scores (both conventions), FID with a random-weight Inception from a local file, statistics files."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from galip_cli.eval import main
from galip_diffusers.evaluation.clip_score import CLIPScorer, clip_score_from_cosines
from galip_diffusers.evaluation.fid import (
    clean_resize,
    fid_statistics,
    inception_input,
    load_fid_metric,
    load_fid_statistics,
    random_inception_weights,
    save_fid_statistics,
    set_real_statistics,
)
from galip_core.vit import CLIP_MEAN, CLIP_STD

FEATURE = 64  # the first Inception pooling features: a much cheaper forward and covariance than 2048 (same code path)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return random_inception_weights(str(tmp_path_factory.mktemp("inception") / "inception.pth"))


def test_clean_resize_is_per_channel_float_bicubic():
    images = np.random.default_rng(0).integers(0, 255, (2, 17, 23, 3), dtype=np.uint8)
    out = clean_resize(images, 29)
    assert out.shape == (2, 29, 29, 3) and out.dtype == np.float32
    channel = Image.fromarray(images[1, :, :, 2].astype(np.float32), mode="F").resize((29, 29), Image.BICUBIC)
    assert np.allclose(out[1, :, :, 2], np.clip(np.asarray(channel), 0, 255))
    constant = np.full((1, 10, 10, 3), 77, np.uint8)
    assert np.allclose(clean_resize(constant, 31), 77, atol=1e-3)
    batch = inception_input(images, "clean")
    assert batch.shape == (2, 3, 299, 299) and batch.dtype == torch.uint8
    bilinear = inception_input(images, "bilinear")
    assert not torch.equal(batch, bilinear)
    with pytest.raises(ValueError, match="resize must be one of"):
        inception_input(images, "lanczos")


def test_clip_scores_match_hand_computation(fx):
    scorer = CLIPScorer.from_pretrained(fx["clip"])
    torch.manual_seed(0)
    images = torch.rand(2, 3, 48, 48)
    prompts = ["a red picture", "a blue picture"]
    text = scorer.text_embeds(prompts)
    # official: nearest resize of x*0.5+0.5 (x in [-1,1]), then (x+1)*0.5 again, then CLIP normalisation
    x = F.interpolate(images, size=(40, 40))
    x = (x + 1) * 0.5
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    expected_official = F.cosine_similarity(scorer.image_encoder(pixel_values=x).image_embeds, text)
    assert torch.allclose(scorer.official_cosine(images, prompts), expected_official, atol=1e-5)
    # standard: PIL bicubic shorter side + centre crop of the uint8 image, CLIP normalisation
    pil = Image.fromarray(np.rint(images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((40, 40),
                                                                                                   Image.BICUBIC)
    pixels = (torch.from_numpy(np.asarray(pil, np.float32) / 255).permute(2, 0, 1)
              - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    expected_standard = F.cosine_similarity(scorer.image_encoder(pixel_values=pixels[None]).image_embeds, text[:1])
    assert scorer.standard_cosine(images, prompts)[0].item() == pytest.approx(expected_standard.item(), abs=1e-4)
    assert clip_score_from_cosines(torch.tensor([0.3, -0.2, 0.5])) == pytest.approx(100 * 0.8 / 3)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_fid_statistics_roundtrip_and_identity(inception, tmp_path):
    metric = load_fid_metric(inception, feature=FEATURE)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    b = a // 3
    metric.update(inception_input(a, "clean"), real=True)
    metric.update(inception_input(b, "clean"), real=False)
    fid = float(metric.compute())
    assert fid > 1
    mu, sigma, n = fid_statistics(metric, real=True)
    assert n == 3 and mu.shape == (FEATURE,) and sigma.shape == (FEATURE, FEATURE) and np.abs(sigma).sum() > 0
    path = str(tmp_path / "stats.npz")
    save_fid_statistics(path, mu, sigma, n, protocol="coco30k")
    mu2, sigma2, n2 = load_fid_statistics(path)
    assert n2 == 3 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    def from_stats(fake_prefix):
        other = load_fid_metric(inception, feature=FEATURE)
        set_real_statistics(other, mu2, sigma2, n2)
        for key in ("sum", "cov_sum", "num_samples"):
            setattr(other, f"fake_features_{key}", getattr(metric, f"{fake_prefix}_features_{key}").clone())
        return float(other.compute())

    assert from_stats("fake") == pytest.approx(fid, rel=1e-6)
    assert abs(from_stats("real")) < 1e-6 * fid  # same distribution on both sides: FID 0
    with pytest.raises(FileNotFoundError, match="--inception_weights"):
        load_fid_metric(str(tmp_path / "missing.pth"))


def test_cli_clip_only_writes_json(fx, tmp_path, capsys):
    out = tmp_path / "clip.json"
    assert main(["--model", fx["pipe"], "--dataset", fx["data"], "--num_images", "3", "--batch_size", "2",
                 "--no_fid", "--clip_model", fx["clip"], "--output", str(out), "--cache_dir", fx["cache"]]) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 3 and result["protocol"] == "coco30k" and "fid" not in result
    assert 0 <= result["clip_score"] <= 100 and -1 <= result["clip_cosine_official"] <= 1
    assert result["clip_model"] == fx["clip"] and result["clip_cosine_official_quirk"] is True
    assert "double shift" in result["clip_cosine_official_preprocessing"]
    printed = capsys.readouterr().out
    assert "clip_score" in printed and "wrote" in printed
    # Default CLIP: the pipeline's own (flagged as biased).
    main(["--model", fx["pipe"], "--dataset", fx["data"], "--num_images", "2", "--no_fid", "--output", str(out),
          "--cache_dir", fx["cache"], "--protocol", "official"])
    result = json.loads(out.read_text())
    assert "biased" in result["clip_model"] and result["headline"] == ["clip_cosine_official"]  # no FID computed


def test_cli_argument_errors(fx, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", fx["pipe"], "--dataset", fx["data"]])  # FID without --inception_weights
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--dataset", fx["data"], "--no_fid"])  # neither --model nor --save-stats
    capsys.readouterr()
    bad_column = ["--model", fx["pipe"], "--dataset", fx["data"], "--no_fid", "--caption_column", "caption",
                  "--cache_dir", fx["cache"]]
    assert main(bad_column) == 1  # a run-time error: one line on stderr, exit code 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("galip-eval: error: ") and "--caption_column 'caption' not found" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ValueError, match="--caption_column 'caption' not found"):
        main(bad_column + ["--debug"])  # --debug re-raises


def test_cli_fid_against_dataset_and_against_saved_statistics(fx, inception, tmp_path):
    common = ["--dataset", fx["data"], "--num_images", "3", "--batch_size", "3", "--inception_weights", inception,
              "--fid_feature", str(FEATURE), "--cache_dir", fx["cache"]]
    direct = tmp_path / "direct.json"
    main(["--model", fx["pipe"], *common, "--output", str(direct)])
    stats = tmp_path / "ref.npz"
    main(["--save-stats", str(stats), *common])
    with np.load(stats) as data:
        assert int(data["num_images"]) == 3 and "clean" in json.loads(str(data["meta"]))["resize"]
    via_stats = tmp_path / "stats.json"
    main(["--model", fx["pipe"], *common, "--fid_stats", str(stats), "--output", str(via_stats)])
    a, b = json.loads(direct.read_text()), json.loads(via_stats.read_text())
    assert a["fid"] > 0 and b["fid"] == pytest.approx(a["fid"], rel=1e-5)
    assert "clean resize" in a["fid_resize"] and a["inception_weights"] == inception
    assert b["fid_reference"] == str(stats) and os.path.isfile(stats)


class _FixedEmbeddingCLIP(torch.nn.Module):
    """A stand-in CLIP for torchmetrics' ``CLIPScore``: image i and caption i get the given embeddings, so both
    formulas see exactly the same vectors."""

    def __init__(self, image_embeds, text_embeds):
        super().__init__()
        self.image_embeds, self.text_embeds = image_embeds, text_embeds
        self.config = type("Config", (), {})()

    def get_image_features(self, pixel_values):
        return self.image_embeds[pixel_values[:, 0, 0, 0].long()]

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text_embeds[input_ids[:, 0]]


def _fixed_processor(images=None, text=None, **_):
    if images is not None:  # image i is a constant tensor of value i
        return {"pixel_values": torch.stack([torch.as_tensor(i, dtype=torch.float32) for i in images])}
    ids = torch.tensor([[int(t)] for t in text])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("with_negative", [False, True])
def test_clip_score_is_hessels_per_image_clamp_and_torchmetrics_clamps_the_mean(with_negative):
    from torchmetrics.multimodal.clip_score import CLIPScore

    gen = torch.Generator().manual_seed(0)
    text = torch.randn(6, 8, generator=gen)
    image = text + 0.8 * torch.randn(6, 8, generator=gen)  # positively correlated: every cosine > 0
    if with_negative:
        image[:2] = -text[:2] + 0.1 * torch.randn(2, 8, generator=gen)  # two images far from their captions
    cosines = F.cosine_similarity(image, text, dim=-1)
    assert (cosines < 0).any() == with_negative
    metric = CLIPScore(model_name_or_path=lambda: (_FixedEmbeddingCLIP(image, text), _fixed_processor))
    metric.update([torch.full((3, 2, 2), float(i)) for i in range(6)], [str(i) for i in range(6)])
    theirs = float(metric.compute())
    assert theirs == pytest.approx(max(float((100 * cosines).mean()), 0.0), abs=1e-4)
    ours = clip_score_from_cosines(cosines)
    assert ours == pytest.approx(float((100 * cosines.clamp_min(0)).mean()), abs=1e-5)
    if with_negative:
        assert ours > theirs + 1.0  # the negative cosines count as 0 per image in Hessel et al.'s CLIP-S
    else:
        assert ours == pytest.approx(theirs, abs=1e-4)
