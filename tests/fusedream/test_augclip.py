"""AugCLIP augmentations and scores: they change images as specified, are differentiable and seeded."""

import pytest
import torch

from galip_diffusers.fusedream import augclip
from galip_diffusers.testing_utils import tiny_scorer

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def blob(n=1, size=SIZE, cx=0.5, cy=0.5, sigma=0.08):
    """Images in [-1, 1] that are 0 (the fill value) except a bright Gaussian blob."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    g = torch.exp(-((coords[None, :] - cx) ** 2 + (coords[:, None] - cy) ** 2) / (2 * sigma**2))
    return g.expand(n, 3, size, size).clone()


def centroid(images):
    w = images[:, 0].clamp_min(0)
    coords = torch.arange(images.shape[-1], dtype=torch.float32) + 0.5
    total = w.sum((1, 2))
    return torch.stack([(w.sum(1) * coords).sum(1) / total, (w.sum(2) * coords).sum(1) / total], dim=1)


def spread(images):
    w = images[:, 0].clamp_min(0)
    coords = torch.arange(images.shape[-1], dtype=torch.float32) + 0.5
    mx = centroid(images)[:, 0]
    return ((w.sum(1) * (coords[None] - mx[:, None]) ** 2).sum(1) / w.sum((1, 2))).sqrt()


def test_affine_resample_moves_and_zooms_content_exactly():
    x = blob()
    shifted = augclip.affine_resample(x, torch.ones(1), torch.tensor([[0.125, -0.0625]]))
    torch.testing.assert_close(centroid(shifted) - centroid(x), torch.tensor([[4.0, -2.0]]), atol=0.05, rtol=0)
    zoomed = augclip.affine_resample(x, torch.tensor([1.2]), torch.zeros(1, 2))
    assert spread(zoomed).item() == pytest.approx(1.2 * spread(x).item(), rel=0.03)
    identity = augclip.affine_resample(x, torch.ones(1), torch.zeros(1, 2))
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


def test_translation_shifts_content_by_at_most_one_eighth():
    x = blob(256, sigma=0.05)
    moved = centroid(augclip.random_translate(x, seeded(), 0.125)) - centroid(x)
    assert moved.abs().max() <= SIZE / 8 + 0.1
    assert moved.abs().max() > SIZE / 8 * 0.9  # the range is used, not just tiny shifts
    assert moved[:, 0].std() > 1.0 and moved[:, 1].std() > 1.0  # per image, per axis


def test_resize_scale_stays_within_range():
    x = blob(256, size=64, sigma=0.1)
    ratio = spread(augclip.random_resize(x, seeded(), (0.8, 1.2))) / spread(x)
    assert 0.78 <= ratio.min() < 0.85 and 1.15 < ratio.max() <= 1.22  # (+ a little bilinear blur)
    torch.testing.assert_close(centroid(augclip.random_resize(x, seeded(), (0.8, 1.2))), centroid(x), atol=0.05, rtol=0)


def test_cutout_zeroes_one_half_size_square():
    x = torch.rand(64, 3, SIZE, SIZE, generator=seeded(1)) + 0.5  # no zeros
    out = augclip.random_cutout(x, seeded(), 0.5)
    zero = out[:, 0] == 0
    assert (zero.sum((1, 2)) == (SIZE // 2) ** 2).all()
    for mask in zero[:8]:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert rows.max() - rows.min() + 1 == SIZE // 2 and cols.max() - cols.min() + 1 == SIZE // 2
    torch.testing.assert_close(out[out != 0], x[out != 0])
    assert len({tuple(m.nonzero()[0].tolist()) for m in zero}) > 10  # random positions


def test_color_changes_statistics_per_image():
    x = torch.rand(32, 3, SIZE, SIZE, generator=seeded(2)) * 1.6 - 0.8
    out = augclip.random_color(x, seeded())
    assert (out.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs().max() > 0.05  # brightness
    assert (out.std((1, 2, 3)) / x.std((1, 2, 3)) - 1).abs().max() > 0.05  # contrast / saturation
    assert out.mean((1, 2, 3)).std() > 0.01
    no_jitter = augclip.random_color(x, seeded(), brightness=0, contrast=0, saturation=0)
    torch.testing.assert_close(no_jitter, x, atol=1e-6, rtol=0)


def test_augment_is_differentiable_seeded_and_ordered():
    x = (torch.rand(2, 3, SIZE, SIZE, generator=seeded(3)) * 2 - 1).requires_grad_()
    views = augclip.augment(x, 5, seeded(7))
    assert views.shape == (10, 3, SIZE, SIZE)
    (views * torch.linspace(0, 1, views.numel()).view_as(views)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(views, augclip.augment(x, 5, seeded(7)))
    assert not torch.allclose(views, augclip.augment(x, 5, seeded(8)))
    only_first = augclip.augment(torch.stack([x[0].detach(), torch.zeros_like(x[0])]), 5, seeded(7))
    assert only_first[5:].abs().max() < 0.5  # views of image 1 are rows 5..9 (only colour jitter of a flat image)
    with pytest.raises(ValueError, match="num_augmentations"):
        augclip.augment(x, 0, seeded())


def test_augclip_score_gradients_and_measure():
    scorer = tiny_scorer()
    text = torch.nn.functional.normalize(torch.randn(2, 16, generator=seeded(4)), dim=-1)
    x = (torch.rand(2, 3, SIZE, SIZE, generator=seeded(5)) * 2 - 1).requires_grad_()
    score = augclip.augclip_score(scorer, x, text, 4, seeded())
    assert score.shape == (2,) and (score.abs() <= 1).all()
    score.sum().backward()
    assert x.grad.abs().sum() > 0
    # one view with every augmentation off is the plain CLIP score
    off = augclip.AugmentationConfig(brightness=0, contrast=0, saturation=0, translate=0, scale=(1, 1), cutout=0)
    plain = augclip.clip_score(scorer, x.detach(), text)
    torch.testing.assert_close(augclip.augclip_score(scorer, x.detach(), text, 1, seeded(), off), plain, atol=1e-5, rtol=0)
    m1 = augclip.measure_augclip(scorer, x.detach(), text, 10, seed=3, chunk_size=6)
    m2 = augclip.measure_augclip(scorer, x.detach(), text, 10, seed=3, chunk_size=64)
    assert m1.shape == (2,) and not m1.requires_grad
    torch.testing.assert_close(m1, augclip.measure_augclip(scorer, x.detach(), text, 10, seed=3, chunk_size=6))
    assert (m1 - m2).abs().max() < 0.1  # other chunking = other views, similar mean


def test_scorer_text_gets_the_generators_cleaning_and_truncation_warning(pipe):
    """The scorer's text path once skipped CLIP's text cleaning ("white&#160;background" scored 0.983 against the
    plain prompt on galip-shapes) and truncated without a word. Now it is the generator's (one implementation)."""
    from diffusers.utils import logging
    from diffusers.utils.testing_utils import CaptureLogger

    plain = pipe.encode_scorer_text(["a red circle on a white background"])
    for variant in ("A  RED circle on a white background", "a red circle on a white&#160;background",
                    "a red circle on a white&amp;nbsp;background"):
        assert torch.equal(pipe.encode_scorer_text([variant]), plain), variant
    long = "x" * 75 + " y z"
    captured = {}
    paths = (("fusedream.augclip", pipe.encode_scorer_text), ("pipelines.pipeline_galip", pipe.encode_prompt))
    for name, encode in paths:
        with CaptureLogger(logging.get_logger(f"galip_diffusers.{name}")) as cap:
            encode([long])
        captured[name] = cap.out
    assert captured["fusedream.augclip"] == captured["pipelines.pipeline_galip"]
    assert "up to 77 tokens" in captured["fusedream.augclip"]
    assert captured["fusedream.augclip"].rstrip().endswith(": 'y z'")
