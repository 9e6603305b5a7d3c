"""GALIPPipeline behaviour: outputs, seeding, batching, interpolation, dtypes and bad input."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.utils import logging
from diffusers.utils.testing_utils import CaptureLogger

from galip_diffusers import GALIPPipeline
from galip_diffusers.testing_utils import tiny_pipeline

PROMPTS = ["a red circle", "a blue square on gray"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "output_type,check",
    [
        ("pil", lambda x: isinstance(x, list) and isinstance(x[0], PIL.Image.Image) and x[0].size == (32, 32)),
        ("np", lambda x: isinstance(x, np.ndarray) and x.shape == (4, 32, 32, 3) and 0 <= x.min() and x.max() <= 1),
        ("pt", lambda x: torch.is_tensor(x) and x.shape == (4, 3, 32, 32) and 0 <= x.min() and x.max() <= 1),
        ("latent", lambda x: torch.is_tensor(x) and x.shape == (4, 3, 32, 32) and -1 <= x.min() and x.max() <= 1),
    ],
)
def test_output_types(pipe, output_type, check):
    images = pipe(PROMPTS, num_images_per_prompt=2, generator=seeded(), output_type=output_type).images
    assert check(images)
    if output_type == "pil":
        assert len(images) == 4


def test_pt_equals_rescaled_latent_output(pipe):
    latent = pipe(PROMPTS, generator=seeded(), output_type="latent").images
    pt = pipe(PROMPTS, generator=seeded(), output_type="pt").images
    torch.testing.assert_close(pt, (latent * 0.5 + 0.5).clamp(0, 1))
    assert latent.std() > 0.01  # not a constant image


def test_same_seed_same_images_and_different_seed_differs(pipe):
    a = pipe(PROMPTS, generator=seeded(1), output_type="np").images
    b = pipe(PROMPTS, generator=seeded(1), output_type="np").images
    c = pipe(PROMPTS, generator=seeded(2), output_type="np").images
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_num_images_per_prompt_keeps_each_prompts_images_adjacent(pipe):
    embeds = pipe.encode_prompt(PROMPTS, num_images_per_prompt=3)
    assert embeds.shape == (6, 16)
    torch.testing.assert_close(embeds[0], embeds[2])
    torch.testing.assert_close(embeds[3], embeds[5])
    assert not torch.allclose(embeds[2], embeds[3])


def test_batch_with_generator_list_equals_single_calls(pipe):
    gens = [seeded(s) for s in (10, 11)]
    batch = pipe(PROMPTS, generator=gens, output_type="np").images
    for i, (prompt, seed) in enumerate(zip(PROMPTS, (10, 11))):
        single = pipe(prompt, generator=seeded(seed), output_type="np").images
        np.testing.assert_allclose(batch[i], single[0], atol=1e-5)


def test_chunked_generation_equals_one_pass(pipe):
    full = pipe(PROMPTS, num_images_per_prompt=3, generator=seeded(), output_type="np").images
    chunked = pipe(PROMPTS, num_images_per_prompt=3, generator=seeded(), max_batch_size=4, output_type="np").images
    np.testing.assert_allclose(full, chunked, atol=1e-5)


def test_prompt_embeds_and_latents_reproduce_prompt_call(pipe):
    z = torch.randn(2, 8, generator=seeded(3))
    by_prompt = pipe(PROMPTS, latents=z, output_type="np").images
    embeds = pipe.encode_prompt(PROMPTS)
    by_embeds = pipe(prompt_embeds=embeds, latents=z, output_type="np").images
    np.testing.assert_allclose(by_prompt, by_embeds, atol=1e-6)


@pytest.mark.parametrize("mode", ["resample", "clamp"])
def test_truncation_bounds_noise_and_is_deterministic(pipe, mode):
    a = pipe.prepare_latents(64, torch.float32, torch.device("cpu"), seeded(), truncation=0.5, truncation_mode=mode)
    b = pipe.prepare_latents(64, torch.float32, torch.device("cpu"), seeded(), truncation=0.5, truncation_mode=mode)
    assert a.abs().max() <= 0.5 and torch.equal(a, b)
    if mode == "resample":  # a truncated normal has few values at the bound; clamping piles them up there
        assert (a.abs() == 0.5).float().mean() < 0.01
    else:
        assert (a.abs() == 0.5).float().mean() > 0.3


def test_return_dict_false_gives_tuple(pipe):
    out = pipe("a", generator=seeded(), output_type="np", return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 32, 32, 3)


def test_interpolate_endpoints_match_plain_calls(pipe):
    z = torch.randn(3, 8, generator=seeded(4))
    frames = pipe.interpolate(["a", "b", "c"], num_steps=4, latents=z, output_type="np").images
    assert frames.shape[0] == 2 * 3 + 1
    ends = pipe(["a", "b", "c"], latents=z, output_type="np").images
    np.testing.assert_allclose(frames[0], ends[0], atol=1e-5)
    np.testing.assert_allclose(frames[3], ends[1], atol=1e-5)
    np.testing.assert_allclose(frames[-1], ends[2], atol=1e-5)
    # Consecutive frames are closer than the endpoints are to each other (a smooth path).
    step = np.abs(np.diff(frames[:4], axis=0)).mean()
    assert step < np.abs(frames[3] - frames[0]).mean()


def test_interpolate_single_prompt_moves_only_noise(pipe):
    frames = pipe.interpolate("a", num_steps=3, generator=seeded(), output_type="pt").images
    assert frames.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="num_steps"):
        pipe.interpolate("a", num_steps=1)


def test_half_precision_and_to(pipe):
    bf16 = tiny_pipeline().to(dtype=torch.bfloat16)
    assert bf16.generator.dtype == torch.bfloat16 and bf16.text_encoder.dtype == torch.bfloat16
    images = bf16(PROMPTS, generator=seeded(), output_type="np").images
    ref = pipe(PROMPTS, generator=seeded(), output_type="np").images
    assert images.dtype == np.float32 and np.abs(images - ref).mean() < 0.05


def test_model_cpu_offload_sequence_runs():
    offloaded = tiny_pipeline()
    offloaded.enable_model_cpu_offload(device="cpu")
    ref = tiny_pipeline()(PROMPTS, generator=seeded(), output_type="np").images
    np.testing.assert_allclose(offloaded(PROMPTS, generator=seeded(), output_type="np").images, ref, atol=1e-6)


def test_long_prompts_are_truncated_with_a_warning(pipe):
    logger = logging.get_logger("galip_diffusers.pipelines.pipeline_galip")
    logger.setLevel(logging.WARNING)
    with CaptureLogger(logger) as cap:
        pipe("word " * 40, generator=seeded(), output_type="np")
    assert "truncated" in cap.out and "77 tokens" in cap.out


@pytest.mark.parametrize("extra,cut", [("", None), (" y", "y"), (" yz", "yz"), (" y z", "y z")])
def test_the_truncation_warning_names_exactly_the_cut_text(pipe, extra, cut):
    """The byte-level tokenizer makes one token per character and, like the shipped ones, pads with the end-of-text
    token: 75 x's are 77 tokens with the start and end tokens, the limit. Filtering the padding by id once dropped
    the end-of-text token too, so one cut token gave no warning and longer cuts lost their last token."""
    logger = logging.get_logger("galip_diffusers.pipelines.pipeline_galip")
    logger.setLevel(logging.WARNING)
    with CaptureLogger(logger) as cap:
        pipe.encode_prompt(["a red circle", "x" * 75 + extra])
    if cut is None:
        assert cap.out == ""
    else:
        assert cap.out.count("truncated") == 1 and "up to 77 tokens" in cap.out
        assert cap.out.rstrip().endswith(f"has {77 + len(cut.replace(' ', ''))}: {cut!r}")


def test_truncation_mode_without_a_truncation_changes_nothing_as_documented(pipe):
    plain = pipe(PROMPTS, generator=seeded(), output_type="np").images
    np.testing.assert_array_equal(pipe(PROMPTS, generator=seeded(), truncation_mode="clamp", output_type="np").images,
                                  plain)
    doc = " ".join(GALIPPipeline.__call__.__doc__.split())
    assert "only matters when a truncation applies" in doc


def test_pt_and_np_are_float32_in_a_bf16_pipeline_as_documented():
    half = tiny_pipeline().to(torch.bfloat16)
    assert half(PROMPTS, generator=seeded(), output_type="latent").images.dtype == torch.bfloat16
    assert half(PROMPTS, generator=seeded(), output_type="pt").images.dtype == torch.float32
    assert half(PROMPTS, generator=seeded(), output_type="np").images.dtype == np.float32
    for doc in (GALIPPipeline.__call__.__doc__, GALIPPipeline._postprocess.__doc__ or ""):
        assert "float32 whatever the pipeline's dtype" in " ".join(doc.split())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"prompt": []}, ValueError, "empty list"),
        ({"prompt": 3}, TypeError, "`prompt` has to be of type"),
        ({"prompt": ["a", 3]}, TypeError, "list of `str`"),
        ({"prompt": "a", "num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
        ({"prompt": "a", "num_images_per_prompt": 1.5}, TypeError, "num_images_per_prompt"),
        ({"prompt": ["a", "b"], "generator": [torch.Generator()]}, ValueError, "list of 1 generators"),
        ({"prompt": "a", "latents": torch.randn(1, 9)}, ValueError, r"`latents` must be a tensor of shape \(1, 8\)"),
        ({"prompt": "a", "prompt_embeds": torch.randn(1, 16)}, ValueError, "Cannot forward both"),
        ({"prompt_embeds": torch.randn(1, 15)}, ValueError, r"`prompt_embeds` must have shape"),
        ({}, ValueError, "Provide either `prompt` or `prompt_embeds`"),
        ({"prompt": "a", "output_type": "jpg"}, ValueError, "`output_type` must be one of"),
        ({"prompt": "a", "truncation": -1.0}, ValueError, "truncation"),
        ({"prompt": "a", "truncation_mode": "wrap"}, ValueError, "truncation_mode"),
        ({"prompt": "a", "max_batch_size": 0}, ValueError, "max_batch_size"),
        ({"prompt": "a", "max_batch_size": True}, ValueError, r"`max_batch_size` .* must be an integer >= 1"),
        ({"prompt": "a", "generator": 0}, TypeError, r"`generator` must be None, a `torch.Generator`"),
        ({"prompt": ["a", "b"], "generator": [torch.Generator(), "cpu"]}, TypeError, r"list of \['Generator', 'str'\]"),
        ({"prompt": "a", "latents": torch.zeros(1, 8, dtype=torch.bool)}, TypeError, "floating-point"),
        ({"prompt": "a", "latents": torch.zeros(1, 8), "truncation": 0.5}, ValueError, "used as they are"),
    ],
)
def test_bad_input_is_rejected_with_clear_errors(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(**kwargs)


def test_explicit_truncation_off_is_allowed_with_latents(pipe):
    z = torch.randn(1, 8, generator=seeded())
    plain = pipe("a", latents=z, output_type="np").images
    np.testing.assert_array_equal(pipe("a", latents=z, truncation=0, output_type="np").images, plain)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"latents": [[0.0] * 8]}, ValueError, r"`latents` must be a 2-D tensor"),
        ({"max_batch_size": -1}, ValueError, "max_batch_size"),
        ({"max_batch_size": 1.5}, ValueError, "max_batch_size"),
        ({"latents": torch.zeros(2, 8), "truncation": 1.0}, ValueError, "used as they are"),
        ({"num_steps": True}, ValueError, "num_steps"),
    ],
)
def test_interpolate_bad_input_is_rejected(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe.interpolate(PROMPTS, **kwargs)


def test_interpolate_from_the_zero_noise_is_finite_and_starts_there(pipe):
    z = torch.cat([torch.zeros(1, 8), torch.randn(1, 8, generator=seeded())])
    frames = pipe.interpolate(PROMPTS, latents=z, num_steps=4, output_type="np").images
    assert np.isfinite(frames).all()
    np.testing.assert_allclose(frames[0], pipe(PROMPTS[0], latents=z[:1], output_type="np").images[0], atol=1e-6)


def test_non_finite_output_names_the_inputs_size(pipe):
    with pytest.raises(RuntimeError, match=r"largest \|latents\| 1e\+30"):
        pipe("a", latents=torch.full((1, 8), 1e30))
