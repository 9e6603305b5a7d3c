"""The discriminator's optional pixel path (``pixel_channels``): model, MA-GP over pixels, train step, extension."""

import pytest
import torch
from accelerate import Accelerator

from galip_diffusers import GALIPDiscriminator
from galip_diffusers.training.losses import discriminator_loss, ma_gp, nearest_mismatched_text_embeds
from galip_diffusers.testing_utils import (
    byte_level_clip_tokenizer,
    tiny_discriminator,
    tiny_generator,
    tiny_image_encoder,
    tiny_text_encoder,
    tiny_train_step_inputs,
)
from galip_diffusers.training.setup import extend_discriminator
from galip_diffusers.training.step import GALIPLossConfig, galip_train_step


def test_pixel_path_adds_its_conditional_logit_to_the_clip_logit():
    d = tiny_discriminator(3, pixel_channels=[4, 8])
    plain = tiny_discriminator(3)
    feats, s = torch.randn(2, 3, 32, 5, 5), torch.randn(2, 16)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    # Same seed and construction order: the CLIP part is the plain discriminator's.
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in plain.state_dict().items())
    pixel = d.pixel_features(images)
    assert pixel.shape == (2, 8, 5, 5)  # 32 -> 16 -> 8 px, then average-pooled to the 5x5 grid
    expected = plain(feats, s) + d.head_logits(pixel, s, d.pixel_head)
    torch.testing.assert_close(d(feats, s, images), expected)
    per_head = d(feats, s, images, per_head=True)
    assert per_head.shape == (2, 2)
    torch.testing.assert_close(per_head[:, 0], plain(feats, s))
    torch.testing.assert_close(per_head.sum(1), expected)
    assert plain(feats, s, per_head=True).shape == (2, 1)
    # The pixels matter, and so does the sentence in the pixel head.
    assert not torch.allclose(d(feats, s, images), d(feats, s, images.flip(-1)))
    assert not torch.allclose(d.head_logits(pixel, s, d.pixel_head), d.head_logits(pixel, s.flip(0), d.pixel_head))


def test_pixel_path_config_and_input_errors(tmp_path):
    d = tiny_discriminator(0, pixel_channels=[4, 8])
    feats, s, images = torch.randn(2, 3, 32, 5, 5), torch.randn(2, 16), torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="has a pixel path .*pass `pixel_values`"):
        d(feats, s)
    with pytest.raises(ValueError, match="`pixel_values` has batch 1"):
        d(feats, s, images[:1])
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(batch, 3, height, width\)"):
        d.pixel_features(images[:, :1])
    with pytest.raises(ValueError, match="no pixel path"):
        tiny_discriminator(0)(feats, s, images)
    for bad in ([], [4, 0]):
        with pytest.raises(ValueError, match="`pixel_channels` must be None or a non-empty list"):
            tiny_discriminator(0, pixel_channels=bad)
    d.save_pretrained(tmp_path)
    loaded = GALIPDiscriminator.from_pretrained(tmp_path)
    assert loaded.config.pixel_channels == [4, 8] and loaded.has_pixel_path
    torch.testing.assert_close(loaded(feats, s, images), d(feats, s, images))
    assert not tiny_discriminator(0).has_pixel_path


def test_ma_gp_includes_the_pixel_gradient():
    torch.manual_seed(0)
    f = torch.randn(3, 2, 4, 5, 5, requires_grad=True)
    s = torch.randn(3, 6, requires_grad=True)
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    logits = (f**2).flatten(1).sum(1) + s.sum(1) + 0.5 * (x**2).flatten(1).sum(1)  # grads 2f, 1, x
    penalty = ma_gp(logits, f, s, weight=1.0, power=2, pixel_values=x)
    norms2 = (2 * f.detach()).flatten(1).pow(2).sum(1) + 6 + x.detach().flatten(1).pow(2).sum(1)
    assert penalty.item() == pytest.approx(norms2.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="pixel_values"):
        ma_gp(logits, f, s, pixel_values=x.detach())


def test_train_step_trains_the_pixel_path_and_extension_keeps_weights():
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    base = tiny_discriminator(0)
    d, fresh = extend_discriminator(base, {"pixel_channels": [4, 8]})
    assert fresh and all(k.startswith("pixel_") for k in fresh)
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in base.state_dict().items())
    generator, image_encoder, text_encoder = tiny_generator(0).train(), tiny_image_encoder(0), tiny_text_encoder(0)
    for m in (image_encoder, text_encoder):
        m.requires_grad_(False)
    opt_g = torch.optim.Adam(generator.learnable_parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    generator, d, opt_g, opt_d = accelerator.prepare(generator, d.train(), opt_g, opt_d)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    ids = byte_level_clip_tokenizer()(["a red", "a blue", "green"], padding="max_length", max_length=77,
                                      return_tensors="pt").input_ids
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    logs = galip_train_step(accelerator, generator, d, image_encoder, text_encoder, opt_g, opt_d, images, ids,
                            torch.randn(3, 8))
    assert all(torch.isfinite(v) for v in logs.values()) and logs["loss_d_magp"] > 0
    after = d.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in fresh)
    assert not images.requires_grad  # the batch itself is left alone
    with pytest.raises(ValueError, match="--discriminator_overrides: unknown keys"):
        extend_discriminator(base, {"pixel": [4]})


def test_train_step_gives_each_head_its_hinge_and_uses_nearest_mismatches():
    """With a pixel path and ``mismatch="nearest"`` the D loss equals separate per-head calls on hard negatives."""
    accelerator = Accelerator(cpu=True)
    t = tiny_train_step_inputs(2, ["a red", "a red", "a blue", "green"], pixel_channels=[4, 8])
    generator, d, image_encoder, text_encoder = t.generator, t.discriminator, t.image_encoder, t.text_encoder
    ids, images, noise = t.ids, t.images, t.noise
    with torch.no_grad():
        s = text_encoder(ids).text_embeds
        real, _ = d.extract_features(image_encoder, images)
        fake_images = generator(noise, s)
        fake, _ = d.extract_features(image_encoder, fake_images)
    s_mis = nearest_mismatched_text_embeds(s)
    assert not torch.equal(s_mis[0], s[1])  # the repeated caption is never its own mismatch
    f, s_, x = real.clone().requires_grad_(True), s.clone().requires_grad_(True), images.clone().requires_grad_(True)
    expected = discriminator_loss(
        d(f, s_, x, per_head=True), d(fake, s, fake_images, per_head=True), d(f, s_mis, x, per_head=True), f, s_,
        pixel_values=x,
    )
    opt_g = torch.optim.SGD(generator.learnable_parameters(), lr=0.0)
    opt_d = torch.optim.SGD(d.parameters(), lr=0.0)
    logs = galip_train_step(accelerator, generator, d, image_encoder, text_encoder, opt_g, opt_d, images, ids, noise,
                            GALIPLossConfig(mismatch="nearest"))
    for key in ("loss_real", "loss_fake", "loss_mismatch", "loss_magp", "loss"):
        assert logs["loss_d" if key == "loss" else key.replace("loss_", "loss_d_")].item() == pytest.approx(
            expected[key].item(), rel=1e-5, abs=1e-7
        )
