"""The fast inference plan computes the same function as the default generator forward."""

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from galip_diffusers import GALIPGenerator
from galip_diffusers.models.fast_inference import PhaseUpsampleConv
from galip_diffusers.testing_utils import tiny_generator, tiny_pipeline


def _inputs(generator, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, generator.config.z_dim, generator=g),
        torch.randn(batch, generator.config.cond_dim, generator=g),
    )


def test_phase_upsample_conv_equals_resize_then_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 7, 3, 1, 1)
    x = torch.randn(2, 5, 6, 9)
    expected = conv(F.interpolate(x, scale_factor=2))
    for fmt in (torch.contiguous_format, torch.channels_last):
        out = PhaseUpsampleConv(conv)(x.contiguous(memory_format=fmt), fmt)
        assert out.shape == expected.shape
        assert out.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_phase_upsample_conv_rejects_other_convs():
    with pytest.raises(ValueError, match="3x3 conv"):
        PhaseUpsampleConv(torch.nn.Conv2d(4, 4, 1))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"upsample_conv": "resize"},
        {"fuse_affine": False},
        {"channels_last": False, "upsample_conv": "resize", "fuse_affine": False},
    ],
)
def test_fast_path_matches_default_in_fp32(options):
    generator = tiny_generator()
    z, s = _inputs(generator)
    with torch.no_grad():
        expected = generator(z, s)
        fast = copy.deepcopy(generator).enable_fast_inference(**options)
        out = fast(z, s)
    assert fast.fast_inference_options is not None
    assert (out - expected).abs().max().item() <= 1e-5
    assert (out - expected).abs().max().item() > 0 or options.get("upsample_conv") == "resize"  # really ran


def test_fast_path_keeps_state_dict_and_is_skipped_with_autograd():
    generator = tiny_generator()
    keys = {k: v.shape for k, v in generator.state_dict().items()}
    generator.enable_fast_inference()
    assert {k: v.shape for k, v in generator.state_dict().items()} == keys
    z, s = _inputs(generator, batch=2)
    out = generator(z, s)  # autograd on: default path, differentiable
    out.mean().backward()
    assert generator.fc_code.weight.grad is not None
    generator.disable_fast_inference()
    assert generator.fast_inference_options is None


def test_fast_path_unsupported_mode_is_rejected():
    with pytest.raises(ValueError, match="upsample_conv"):
        tiny_generator().enable_fast_inference(upsample_conv="bilinear")


def test_fast_path_bf16_is_close():
    generator = tiny_generator()
    z, s = _inputs(generator)
    with torch.no_grad():
        expected = generator(z, s)
        out = copy.deepcopy(generator).enable_fast_inference(dtype=torch.bfloat16)(z, s)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max().item() < 5e-2 * max(1.0, expected.abs().max().item())


def test_pipeline_enable_fast_inference():
    pipe = tiny_pipeline()
    kwargs = {"prompt": ["a red circle", "a blue square"], "output_type": "np"}
    expected = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    pipe.enable_fast_inference()
    out = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert abs(out - expected).max() <= 1e-5
    pipe.disable_fast_inference()
    assert pipe.generator.fast_inference_options is None


def test_pipeline_fast_inference_caches_device_and_dtype_until_they_change(monkeypatch):
    pipe = tiny_pipeline()
    pipe.enable_fast_inference()
    lookups = []
    full_lookup = DiffusionPipeline._execution_device.fget  # diffusers' walk over every submodule
    monkeypatch.setattr(type(pipe), "_execution_device", property(lambda self: lookups.append(1) or full_lookup(self)))
    assert pipe._device_and_dtype() == (torch.device("cpu"), torch.float32)
    assert pipe._device_and_dtype() == (torch.device("cpu"), torch.float32)
    assert len(lookups) == 1  # the second call is served from the cache
    pipe.generator.to(torch.float64)  # a cast changes the key: looked up again
    assert pipe._device_and_dtype() == (torch.device("cpu"), torch.float64)
    assert len(lookups) == 2
    pipe.text_encoder._hf_hook = object()  # e.g. accelerate's CPU-offload hook: looked up again
    pipe._device_and_dtype()
    assert len(lookups) == 3
    del pipe.text_encoder._hf_hook
    pipe.disable_fast_inference()  # without fast inference every call asks diffusers
    pipe._device_and_dtype()
    pipe._device_and_dtype()
    assert len(lookups) == 5


@pytest.mark.slow
def test_fast_path_matches_default_full_size():
    torch.manual_seed(0)
    generator = GALIPGenerator().eval()
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if "linear2" in name:  # make every modulation non-trivial
                param.add_(0.05 * torch.randn_like(param))
    z, s = _inputs(generator, batch=2)
    with torch.no_grad():
        expected = generator(z, s)
        out = generator.enable_fast_inference()(z, s)
    assert (out - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", ["bf16", torch.float64, torch.int8])
def test_unsupported_dtype_is_refused_before_anything_changes(dtype):
    generator = tiny_generator()
    z, s = _inputs(generator)
    with torch.no_grad():
        expected = generator(z, s)
    with pytest.raises(TypeError, match=r"`dtype` must be one of None, torch.bfloat16, torch.float16"):
        generator.enable_fast_inference(dtype=dtype)
    assert generator.fast_inference_options is None
    with torch.no_grad():
        torch.testing.assert_close(generator(z, s), expected, rtol=0, atol=0)


def test_float32_means_full_precision():
    generator = tiny_generator().enable_fast_inference(dtype=torch.float32)
    assert generator.fast_inference_options.dtype is None


def _default_forward(generator, z, s):
    plan, generator._fast_plan = generator._fast_plan, None
    try:
        with torch.no_grad():
            return generator(z, s)
    finally:
        generator._fast_plan = plan


@pytest.mark.parametrize("assign", [False, True])
def test_plan_follows_weights_loaded_after_it_was_built(assign):
    generator = tiny_generator().enable_fast_inference()
    z, s = _inputs(generator)
    with torch.no_grad():
        before = generator(z, s)
    torch.manual_seed(1)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in generator.state_dict().items()}
    generator.load_state_dict(state, assign=assign)
    with torch.no_grad():
        after = generator(z, s)
    assert (after - before).abs().max().item() > 1e-3  # the new weights are used ...
    torch.testing.assert_close(after, _default_forward(generator, z, s), atol=1e-5, rtol=1e-5)  # ... all of them


def test_plan_follows_an_optimiser_step():
    generator = tiny_generator().enable_fast_inference()
    z, s = _inputs(generator)
    optimizer = torch.optim.SGD(generator.learnable_parameters(), lr=0.5)
    generator(z, s).square().mean().backward()  # autograd on: the default path
    optimizer.step()
    with torch.no_grad():
        fast = generator(z, s)
    torch.testing.assert_close(fast, _default_forward(generator, z, s), atol=1e-5, rtol=1e-5)


def test_fast_inference_inside_inference_mode_keeps_the_weights_usable_by_autograd():
    """Under `torch.inference_mode()`, the channels_last conversion (and any cast) once made the parameters inference
    tensors: a later call with autograd (FuseDream's search, training) failed with "Inference tensors cannot be saved
    for backward". The plan rebuilt inside inference mode after a training step must not do it either."""
    generator = tiny_generator()
    z, s = _inputs(generator)
    with torch.inference_mode():
        generator.enable_fast_inference()
        generator(z, s)
    assert not any(p.is_inference() for p in generator.parameters())
    generator(z, s).square().mean().backward()
    torch.optim.SGD(generator.learnable_parameters(), lr=0.1).step()
    with torch.inference_mode():
        generator(z, s)  # the weights changed: the plan is rebuilt here
    assert not any(p.is_inference() for p in generator.parameters())
    generator(z, s).square().mean().backward()


def test_disable_fast_inference_gives_back_the_default_layout_and_output():
    """channels_last weights once stayed after `disable_fast_inference`, so the default path differed from a fresh
    model's by float rounding (up to 7e-6 on galip-emoji: 1/255 in some PIL pixels against the lite engine)."""
    generator = tiny_generator()
    z, s = _inputs(generator, batch=8)
    with torch.no_grad():
        expected = generator(z, s)
    conv = generator.blocks[0].conv1.weight
    generator.enable_fast_inference()
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    generator.disable_fast_inference()
    assert all(p.is_contiguous() for p in generator.parameters())
    with torch.no_grad():
        assert torch.equal(generator(z, s), expected)
    generator.enable_fast_inference()
    generator.enable_fast_inference(channels_last=False)  # a plan without channels_last: default layout too
    assert all(p.is_contiguous() for p in generator.parameters())
