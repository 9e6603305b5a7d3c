"""Shapes-task evaluation helpers: Fréchet distance, seeding, report structure."""

import numpy as np
import torch

from galip_diffusers.data import shapes_eval
from galip_diffusers.testing_utils import tiny_pipeline


def test_frechet_distance_closed_forms():
    torch.manual_seed(0)
    x = torch.randn(4000, 3)
    assert abs(shapes_eval.frechet_distance(x, x)) < 1e-6
    # Same covariance, shifted mean: the distance is the squared shift.
    assert abs(shapes_eval.frechet_distance(x, x + torch.tensor([2.0, 0.0, 0.0])) - 4.0) < 1e-6
    # Scaled covariance, N(0, I) vs N(0, 4I) in 3-d: 3 * (1 + 4 - 2 * 2) = 3.
    y = torch.randn(200_000, 3)
    assert abs(shapes_eval.frechet_distance(y, 2 * torch.randn(200_000, 3)) - 3.0) < 0.1


def test_generate_is_reproducible_image_by_image():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    captions = shapes_eval.caption_cycle("held_out", 5)
    assert len(set(captions)) == 5 and all("purple triangle" in c or "orange circle" in c for c in captions)
    batch = shapes_eval.generate(pipe, captions, seed=3, batch_size=2)
    alone = shapes_eval.generate(pipe, captions[3:4], seed=6)
    np.testing.assert_allclose(batch[3], alone[0], atol=1e-5)


def test_generate_at_zero_noise_ignores_the_seed():
    pipe = tiny_pipeline()
    captions = ["a red circle", "a blue square", "a red circle"]
    zero = shapes_eval.generate(pipe, captions, seed=3, batch_size=2, zero_noise=True)
    np.testing.assert_allclose(zero, shapes_eval.generate(pipe, captions, seed=9, zero_noise=True), atol=1e-6)
    np.testing.assert_allclose(zero[0], zero[2], atol=1e-6)
    direct = pipe(captions, latents=torch.zeros(3, pipe.generator.config.z_dim), output_type="np").images
    np.testing.assert_allclose(zero, direct, atol=1e-6)
    assert np.abs(zero - shapes_eval.generate(pipe, captions, seed=3)).max() > 1e-3  # random noise differs


def test_evaluate_report_structure_on_tiny_model():
    report = shapes_eval.evaluate_shapes_pipeline(tiny_pipeline(), num_images=6, with_speed=False)
    for split in ("train", "held_out"):
        acc = report[f"accuracy_{split}"]
        assert set(acc) >= {"background", "color", "shape", "size", "mean", "all"}
        assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert report["pairwise_l1_real"] > 0.05
    assert "scorer_clip_score_generated" not in report  # no scorer in the tiny pipeline
