"""GALIP losses against hand computations; MA-GP under fp16 loss scaling; one training step on tiny models."""

import pytest
import torch

from galip_diffusers.training.losses import (
    clip_similarity,
    discriminator_hinge_loss,
    discriminator_loss,
    generator_loss,
    ma_gp,
    mismatched_pairs,
    mismatched_text_embeds,
    nearest_mismatched_text_embeds,
)
from galip_diffusers.testing_utils import (
    byte_level_clip_tokenizer,
    tiny_discriminator,
    tiny_generator,
    tiny_image_encoder,
    tiny_text_encoder,
    tiny_train_step_inputs,
)
from galip_diffusers.training.setup import zero_noise_weights
from galip_diffusers.training.step import GALIPLossConfig, frozen, galip_train_step


def test_hinge_loss_matches_hand_computation():
    real = torch.tensor([0.5, 2.0, -1.0])  # relu(1 - x) = 0.5, 0, 2     -> 5/6
    fake = torch.tensor([-2.0, 0.5, 0.0])  # relu(1 + x) = 0, 1.5, 1     -> 5/6
    mismatch = torch.tensor([0.0, -0.5, 3.0])  # relu(1 + x) = 1, 0.5, 4 -> 11/6
    out = discriminator_hinge_loss(real, fake, mismatch)
    assert out["loss_real"].item() == pytest.approx(5 / 6)
    assert out["loss_fake"].item() == pytest.approx(5 / 6)
    assert out["loss_mismatch"].item() == pytest.approx(11 / 6)
    assert out["loss"].item() == pytest.approx(5 / 6 + (5 / 6 + 11 / 6) / 2)


def test_generator_loss_matches_hand_computation():
    logits = torch.tensor([1.0, -3.0])
    image_embeds = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    text_embeds = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0.8
    out = generator_loss(logits, image_embeds, text_embeds, sim_weight=4.0)
    assert out["loss_adversarial"].item() == pytest.approx(1.0)
    assert out["clip_similarity"].item() == pytest.approx(0.9)
    assert out["loss"].item() == pytest.approx(1.0 - 4.0 * 0.9)
    assert torch.allclose(clip_similarity(image_embeds, text_embeds), torch.tensor([1.0, 0.8]))


def test_mismatch_pairs_each_image_with_the_previous_caption():
    s = torch.arange(12.0).view(4, 3).requires_grad_(True)
    mis = mismatched_text_embeds(s)
    assert torch.equal(mis, s.detach()[[3, 0, 1, 2]])
    assert not mis.requires_grad
    assert all(not torch.equal(mis[i], s[i]) for i in range(4))
    with pytest.raises(ValueError, match="at least 2"):
        mismatched_text_embeds(s[:1])


def test_nearest_mismatch_takes_the_most_similar_different_caption():
    # rows 0 and 3 are the same caption (also up to scale); 1 is close to 0; 2 is far from everything.
    s = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    mis = nearest_mismatched_text_embeds(s)
    assert not mis.requires_grad
    # 0 and 3 skip each other (same caption) and take 1; 1 takes 0 (the first of the tied 0 and 3); 2 is orthogonal
    # to every other row, and the three-way tie resolves to the first, 0.
    assert torch.equal(mis[0], s.detach()[1]) and torch.equal(mis[3], s.detach()[1])
    assert torch.equal(mis[1], s.detach()[0])
    assert torch.equal(mis[2], s.detach()[0])
    # a batch of one repeated caption has no different caption: the rolled pairs are used
    same = torch.ones(3, 4)
    assert torch.equal(nearest_mismatched_text_embeds(same), mismatched_text_embeds(same))
    assert torch.equal(mismatched_pairs(s, "roll"), mismatched_text_embeds(s))
    assert torch.equal(mismatched_pairs(s, "nearest"), mis)
    with pytest.raises(ValueError, match=r"`mismatch` must be one of \('roll', 'nearest'\), got 'hard'"):
        mismatched_pairs(s, "hard")
    with pytest.raises(ValueError, match="`mismatch` must be one of"):
        GALIPLossConfig(mismatch="hard")


def test_hinge_loss_per_head_is_the_sum_of_each_heads_hinge():
    real = torch.tensor([[2.0, 0.5], [0.0, -1.0]])
    fake = torch.tensor([[-3.0, 0.0], [1.0, -0.5]])
    mis = torch.tensor([[-2.0, -2.0], [0.5, 0.5]])
    out = discriminator_hinge_loss(real, fake, mis)
    heads = [discriminator_hinge_loss(real[:, h], fake[:, h], mis[:, h]) for h in range(2)]
    for key in ("loss_real", "loss_fake", "loss_mismatch", "loss"):
        assert out[key].item() == pytest.approx(heads[0][key].item() + heads[1][key].item())
    # the head-0 logit 2.0 does not hide head 1's 0.5 as it would in the summed logit 2.5
    assert out["loss_real"].item() == pytest.approx((0 + 1) / 2 + (0.5 + 2) / 2)
    assert discriminator_hinge_loss(real.sum(1), fake.sum(1), mis.sum(1))["loss_real"].item() == pytest.approx(1.0)


def test_ma_gp_gradient_norm_over_features_and_text():
    torch.manual_seed(0)
    features = torch.randn(3, 2, 4, 5, 5, requires_grad=True)
    text = torch.randn(3, 6, requires_grad=True)
    a = torch.tensor(0.7, requires_grad=True)
    logits = a * (features**2).flatten(1).sum(1) + (text**3).sum(1)  # d/df = 2a f, d/ds = 3 s^2
    penalty = ma_gp(logits, features, text, weight=2.0, power=6)
    grad_f = 2 * a.detach() * features.detach().flatten(1)
    grad_s = 3 * text.detach() ** 2
    norms = torch.cat([grad_f, grad_s], 1).norm(dim=1)
    assert penalty.item() == pytest.approx((2.0 * norms.pow(6).mean()).item(), rel=1e-5)
    # Both inputs count: the text part alone changes the value.
    assert penalty.item() != pytest.approx((2.0 * grad_f.norm(dim=1).pow(6).mean()).item(), rel=1e-3)
    # create_graph: the penalty is differentiable w.r.t. D's parameters (here `a`).
    (grad_a,) = torch.autograd.grad(penalty, a)
    fn = features.detach().flatten(1)
    expected = 2.0 * torch.stack(
        [3 * (4 * a.detach() ** 2 * fn[i].pow(2).sum() + grad_s[i].pow(2).sum()) ** 2 * 8 * a.detach() * fn[i].pow(2).sum()
         for i in range(3)]
    ).mean()
    assert grad_a.item() == pytest.approx(expected.item(), rel=1e-4)


def test_ma_gp_needs_inputs_with_grad():
    f, s = torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(ValueError, match="requires_grad"):
        ma_gp(f.sum(1) + s.sum(1), f, s)


def _d_loss_and_grads(discriminator, features, text, fp16, scale=None, logit_mult=1.0):
    features = features.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    fake = (features.detach() * 0.5).requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        real_logits = discriminator(features, text) * logit_mult
        fake_logits = discriminator(fake, text.detach()) * logit_mult
        mis_logits = discriminator(features, mismatched_text_embeds(text)) * logit_mult
        loss = discriminator_loss(real_logits, fake_logits, mis_logits, features, text, grad_scale=scale)
    return loss


@pytest.mark.parametrize("logit_mult", [1.0, 1e-5])
def test_ma_gp_under_fp16_loss_scaling_matches_fp32(logit_mult):
    """fp16 autocast + GradScaler: MA-GP from the scaled logits, unscaled, and the D gradients after
    ``scaler.unscale_`` match fp32. Without scaling, tiny gradients underflow in fp16 (the second case)."""
    torch.manual_seed(0)
    features, text = 0.1 * torch.randn(4, 3, 32, 5, 5), torch.randn(4, 16)
    discriminator = tiny_discriminator(0)
    weight = discriminator.head[0].weight

    ref = _d_loss_and_grads(discriminator, features, text, fp16=False, logit_mult=logit_mult)
    ref["loss_magp"].backward()
    ref_grad = weight.grad.clone()
    discriminator.zero_grad(set_to_none=True)

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    optimizer = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    out = _d_loss_and_grads(discriminator, features, text, fp16=True, scale=scaler.get_scale(), logit_mult=logit_mult)
    scaler.scale(out["loss_magp"]).backward()
    scaler.unscale_(optimizer)
    assert torch.isfinite(weight.grad).all()
    assert out["loss_magp"].item() == pytest.approx(ref["loss_magp"].item(), rel=2e-2)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-2)
    if logit_mult == 1.0:  # (with tiny logits the penalty's own parameter gradients are below fp16 range anyway)
        assert ref_grad.abs().max() > 0
        assert torch.allclose(weight.grad, ref_grad, rtol=5e-2, atol=5e-2 * ref_grad.abs().max().item())

    unscaled = _d_loss_and_grads(discriminator, features, text, fp16=True, logit_mult=logit_mult)
    if logit_mult < 1:  # the reason for scaling: the unscaled fp16 penalty is far off
        assert abs(unscaled["loss_magp"].item() / ref["loss_magp"].item() - 1) > 0.2


# ------------------------------------------------------------------------------------------------ one training step
def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_train_step_updates_learnable_and_keeps_frozen_parameters(accelerator):
    torch.manual_seed(0)
    generator, discriminator = tiny_generator(0).train(), tiny_discriminator(0).train()
    image_encoder, text_encoder = tiny_image_encoder(0), tiny_text_encoder(0)
    for m in (image_encoder, text_encoder):
        m.requires_grad_(False)
    tokenizer = byte_level_clip_tokenizer()
    opt_g = torch.optim.Adam(generator.learnable_parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    before = {name: _snapshot(m) for name, m in [("g", generator), ("d", discriminator), ("img", image_encoder),
                                                 ("txt", text_encoder)]}
    ids = tokenizer(["a red", "a blue", "green", "a cat"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    for _ in range(2):
        logs = galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d,
                                images, ids, torch.randn(4, 8), GALIPLossConfig())
    assert set(logs) >= {"loss_d", "loss_d_real", "loss_d_fake", "loss_d_mismatch", "loss_d_magp", "loss_g",
                         "loss_g_adversarial", "clip_similarity", "grad_norm_d", "grad_norm_g"}
    assert all(torch.isfinite(v) for v in logs.values())
    assert _same(before["img"], _snapshot(image_encoder))
    assert _same(before["txt"], _snapshot(text_encoder))
    after_g = _snapshot(generator)
    vit = [k for k in after_g if k.startswith("vision_model.")]
    assert vit and all(torch.equal(before["g"][k], after_g[k]) for k in vit)
    # fc_prompt only reaches the output through the frozen ViT: it changes only if G's gradient flows through it.
    assert not torch.equal(before["g"]["fc_prompt.weight"], after_g["fc_prompt.weight"])
    learnable = [k for k in after_g if not k.startswith("vision_model.")]
    assert sum(not torch.equal(before["g"][k], after_g[k]) for k in learnable) > len(learnable) // 2
    after_d = _snapshot(discriminator)
    assert sum(not torch.equal(before["d"][k], after_d[k]) for k in after_d) == len(after_d)
    assert all(p.requires_grad for p in discriminator.parameters())  # restored after the G step


def test_train_step_d_loss_equals_separate_discriminator_calls(accelerator):
    """The step batches real/mismatched/fake pairs into one D call; the loss equals three separate calls."""
    t = tiny_train_step_inputs(1, ["one", "two", "three"])
    generator, discriminator, image_encoder, text_encoder = t.generator, t.discriminator, t.image_encoder, t.text_encoder
    ids, images, noise = t.ids, t.images, t.noise
    with torch.no_grad():
        s = text_encoder(ids).text_embeds
        real, _ = discriminator.extract_features(image_encoder, images)
        fake, _ = discriminator.extract_features(image_encoder, generator(noise, s))
    f = real.clone().requires_grad_(True)
    s_ = s.clone().requires_grad_(True)
    expected = discriminator_loss(discriminator(f, s_), discriminator(fake, s), discriminator(f, s.roll(1, 0)), f, s_)
    opt_g = torch.optim.SGD(generator.learnable_parameters(), lr=0.0)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    logs = galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d,
                            images, ids, noise)
    for key in ("loss_real", "loss_fake", "loss_mismatch", "loss_magp", "loss"):
        assert logs["loss_d" if key == "loss" else key.replace("loss_", "loss_d_")].item() == pytest.approx(
            expected[key].item(), rel=1e-5, abs=1e-7
        )


def test_frozen_context_restores_requires_grad():
    module = torch.nn.Linear(2, 2)
    module.bias.requires_grad_(False)
    with frozen(module):
        assert not any(p.requires_grad for p in module.parameters())
    assert module.weight.requires_grad and not module.bias.requires_grad


def test_reconstruction_anchor_is_l1_of_the_zero_noise_sample(accelerator):
    """``reconstruction_weight`` adds ``w * mean|G(0, s) - x|`` to G's loss; 0 (GALIP's loss) leaves it out."""
    t = tiny_train_step_inputs(2, ["one", "two", "three"])
    generator, discriminator, image_encoder, text_encoder = t.generator, t.discriminator, t.image_encoder, t.text_encoder
    ids, images, noise = t.ids, t.images, t.noise
    with torch.no_grad():
        expected = (generator(torch.zeros_like(noise), text_encoder(ids).text_embeds) - images).abs().mean()
    opt_g = torch.optim.SGD(generator.learnable_parameters(), lr=0.0)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    run = lambda weight: galip_train_step(  # noqa: E731
        accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d, images, ids, noise,
        GALIPLossConfig(reconstruction_weight=weight))
    plain, anchored = run(0.0), run(2.5)
    assert "loss_g_reconstruction" not in plain
    assert anchored["loss_g_reconstruction"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert (anchored["loss_g"] - plain["loss_g"]).item() == pytest.approx(2.5 * expected.item(), rel=1e-4)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`reconstruction_weight` must be a finite number >= 0"):
            GALIPLossConfig(reconstruction_weight=bad)
    with pytest.raises(ValueError, match="reconstruction needs real images of the generator's size"):
        galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d,
                         torch.rand(3, 3, 16, 16), ids, noise, GALIPLossConfig(reconstruction_weight=1.0))


def test_in_batch_anchor_runs_g_once_and_anchors_the_zero_noise_samples(accelerator):
    """``reconstruction_fraction`` draws the first samples of the one G pass at z = 0 and anchors only those."""
    t = tiny_train_step_inputs(3, ["one", "two", "three", "four"])
    generator, discriminator, image_encoder, text_encoder = t.generator, t.discriminator, t.image_encoder, t.text_encoder
    ids, images, noise = t.ids, t.images, t.noise
    with torch.no_grad():
        s = text_encoder(ids).text_embeds
        expected = (generator(torch.zeros(2, 8), s[:2]) - images[:2]).abs().mean()
    calls = []
    generator.register_forward_hook(lambda module, args, out: calls.append(args[0].clone()))
    opt_g = torch.optim.SGD(generator.learnable_parameters(), lr=0.0)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    config = GALIPLossConfig(reconstruction_weight=1.0, reconstruction_fraction=0.5)
    logs = galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d,
                            images, ids, noise, config)
    assert len(calls) == 1  # one G pass (the separate anchor pass would make it 2)
    assert (calls[0][:2] == 0).all() and torch.equal(calls[0][2:], noise[2:])
    assert logs["loss_g_reconstruction"].item() == pytest.approx(expected.item(), rel=1e-5)
    calls.clear()
    galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder, opt_g, opt_d, images, ids,
                     noise, GALIPLossConfig(reconstruction_weight=1.0))
    assert len(calls) == 2 and torch.equal(calls[0], noise) and (calls[1] == 0).all()
    # at least one anchored and one free sample, whatever the fraction
    assert [GALIPLossConfig(reconstruction_weight=1.0, reconstruction_fraction=f).anchored_count(b)
            for f, b in ((0.5, 32), (0.01, 8), (0.99, 2), (0.3, 10))] == [16, 1, 1, 3]
    assert GALIPLossConfig(reconstruction_weight=1.0).anchored_count(8) == 0
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="`reconstruction_fraction` must be None"):
            GALIPLossConfig(reconstruction_weight=1.0, reconstruction_fraction=bad)
    with pytest.raises(ValueError, match="only makes sense with `reconstruction_weight` > 0"):
        GALIPLossConfig(reconstruction_fraction=0.5)


def test_reconstruction_warmup_step_fits_g_at_zero_noise_and_leaves_d_alone(accelerator):
    """``adversarial=False``: one step of ``mean|G(0, s) - x|`` on G; D, its optimiser and the noise are not used."""
    t = tiny_train_step_inputs(4, ["one", "two", "three"])
    with torch.no_grad():
        expected = (t.generator(torch.zeros(3, 8), t.text_encoder(t.ids).text_embeds) - t.images).abs().mean()
    before_g, before_d = _snapshot(t.generator), _snapshot(t.discriminator)
    opt_g = torch.optim.Adam(t.generator.learnable_parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(t.discriminator.parameters(), lr=1e-3)
    logs = galip_train_step(accelerator, t.generator, t.discriminator, t.image_encoder, t.text_encoder, opt_g, opt_d,
                            t.images, t.ids, t.noise, GALIPLossConfig(), adversarial=False)
    assert set(logs) == {"loss_g", "loss_g_reconstruction", "grad_norm_g"}
    assert logs["loss_g"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert _same(before_d, _snapshot(t.discriminator)) and not opt_d.state
    after_g = _snapshot(t.generator)
    changed = [k for k in after_g if not torch.equal(before_g[k], after_g[k])]
    assert "fc_prompt.weight" in changed and not any(k.startswith("vision_model.") for k in changed)
    with torch.no_grad():
        after = (t.generator(torch.zeros(3, 8), t.text_encoder(t.ids).text_embeds) - t.images).abs().mean()
    assert after < expected  # the step moved G towards the images


def test_zero_noise_weights_make_every_noise_the_zero_noise_image_and_still_learn(accelerator):
    """``zero_noise_weights`` (``--zero_noise_weights``): afterwards G ignores z, keeps G(0, s) exactly, and a GAN
    step grows the zeroed weights again (their gradient is delta z^T, not zero)."""
    t = tiny_train_step_inputs(5, ["one", "two", "three"])
    g = t.generator
    embeds = t.text_encoder(t.ids).text_embeds.detach()
    with torch.no_grad():
        at_zero = g(torch.zeros(3, 8), embeds)
        assert (g(t.noise, embeds) - at_zero).abs().max() > 1e-3  # a random-init generator does read z
    zeroed = zero_noise_weights(g)
    z_dim = g.config.z_dim
    assert zeroed > 0 and g.fc_code.weight.abs().sum() == 0 and g.fc_prompt.weight[:, :z_dim].abs().sum() == 0
    assert g.fc_prompt.weight[:, z_dim:].abs().sum() > 0  # the text columns are kept
    with torch.no_grad():
        assert torch.equal(g(torch.zeros(3, 8), embeds), at_zero)
        assert torch.allclose(g(t.noise, embeds), at_zero, atol=1e-6)
    opt_g = torch.optim.Adam(g.learnable_parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(t.discriminator.parameters(), lr=1e-3)
    galip_train_step(accelerator, g, t.discriminator, t.image_encoder, t.text_encoder, opt_g, opt_d, t.images, t.ids,
                     t.noise, GALIPLossConfig())
    assert g.fc_code.weight.abs().sum() > 0 and g.fc_prompt.weight[:, :z_dim].abs().sum() > 0


def test_condition_noise_perturbs_what_g_reads_and_nothing_else(accelerator):
    """``condition_noise`` (``--condition_noise``): G reads ``s + n`` with ``|n|`` about ``condition_noise * |s|``;
    D still reads the clean ``s``; 0 (GALIP's) hands G the exact embeddings."""
    t = tiny_train_step_inputs(6, ["one", "two", "three", "four"])
    with torch.no_grad():
        s = t.text_encoder(t.ids).text_embeds
    g_reads, d_reads = [], []
    t.generator.register_forward_hook(lambda module, args, out: g_reads.append(args[1].clone()))
    t.discriminator.register_forward_hook(lambda module, args, out: d_reads.append(args[1].clone()))
    opt_g = torch.optim.SGD(t.generator.learnable_parameters(), lr=0.0)
    opt_d = torch.optim.SGD(t.discriminator.parameters(), lr=0.0)
    run = lambda config: galip_train_step(  # noqa: E731
        accelerator, t.generator, t.discriminator, t.image_encoder, t.text_encoder, opt_g, opt_d, t.images, t.ids,
        t.noise, config)
    run(GALIPLossConfig())
    assert torch.equal(g_reads[0], s)
    g_reads.clear(), d_reads.clear()
    torch.manual_seed(0)
    run(GALIPLossConfig(condition_noise=0.5))
    relative = ((g_reads[0] - s).norm(dim=-1) / s.norm(dim=-1)).mean().item()
    assert 0.3 < relative < 0.7, relative
    assert torch.equal(d_reads[0][-4:], s) and torch.equal(d_reads[1], s)  # fake pairs in D's step and in G's
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`condition_noise` must be a finite number >= 0"):
            GALIPLossConfig(condition_noise=bad)
