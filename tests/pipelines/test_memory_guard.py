"""GALIPPipeline's up-front memory guard (galip_core.memory): what it counts is what a call holds at its peak (the
process's RSS high-water mark), chunked calls hold one chunk's worth of work, and a refusal names the real cause (the
number of prompts times ``num_images_per_prompt``) and the ``max_batch_size`` that would fit."""

import re

import pytest
import torch

import galip_core.machine as machine
from galip_core.memory import estimate_call_bytes
from galip_diffusers.pipelines.call_checks import check_call_memory
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline


@pytest.fixture
def pipe(model_dir):
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_chunked_call_holds_no_more_than_the_guard_counts(pipe, peak_rss):
    """With ``max_batch_size`` the call once kept a list of chunk outputs, their concatenation, a clamped copy and
    diffusers' whole-batch float copies, and encoded all prompts in one pass: 2.2x what the guard counted, so calls it
    let through died in an allocation. Now one chunk's work is alive at a time (0.65 of the estimate at 20,000 prompts)."""
    prompts = [f"prompt {i}, a red circle" for i in range(10000)]
    pipe(prompts[:2])  # warm up: one-time allocations are not the call's
    images, peak = peak_rss(lambda: pipe(prompts, max_batch_size=64).images)
    estimate = estimate_call_bytes(pipe.generator.config, len(prompts), 64, text_config=pipe.text_encoder.config,
                                   num_prompts=len(prompts))  # fmt: skip
    assert len(images) == len(prompts)
    assert peak <= estimate <= 2.5 * peak, (peak / 2**20, estimate / 2**20)  # the old code: 2.5x this estimate


def test_chunks_give_the_images_of_one_pass(pipe):
    prompts = ["a red circle", "a blue square", "a red circle", "a green triangle", "a green triangle"]

    def call(max_batch_size):
        return pipe(prompts, num_images_per_prompt=3, max_batch_size=max_batch_size, output_type="np",
                    generator=torch.Generator().manual_seed(4)).images  # fmt: skip

    one_pass = call(None)
    for chunk in (1, 2, 4, 7, 15):
        torch.testing.assert_close(torch.from_numpy(call(chunk)), torch.from_numpy(one_pass), atol=1e-6, rtol=0)


def test_a_refusal_names_the_prompt_count_and_a_max_batch_size_that_fits(pipe, monkeypatch):
    """It once blamed ``num_images_per_prompt=1`` for 20,000 prompts and said "make fewer images" when chunking cut
    the need 35-fold."""
    prompts = ["a red circle"] * 20000
    chunked = estimate_call_bytes(pipe.generator.config, 20000, 64, text_config=pipe.text_encoder.config,
                                  num_prompts=20000)  # fmt: skip
    free = int(1.2 * chunked)
    monkeypatch.setattr(machine, "available_bytes", lambda device: free)
    with pytest.raises(ValueError) as error:
        pipe(prompts)
    message = str(error.value)
    assert message.startswith("20000 prompt(s) x `num_images_per_prompt`=1 asks for 20000 images of 32 px, which "
                              "need about ")  # fmt: skip
    fits = int(re.search(r"Pass `max_batch_size`=(\d+) \(about", message).group(1))
    assert fits >= 64 and fits & (fits - 1) == 0  # a round number
    check_call_memory(pipe, prompts, None, 20000, fits, "pil", torch.device("cpu"), torch.float32)  # it fits
    with pytest.raises(ValueError, match=r"^`prompt_embeds` \(20000 rows\) x `num_images_per_prompt`=1 asks"):
        pipe(prompt_embeds=torch.zeros(20000, pipe.generator.config.cond_dim))
    monkeypatch.setattr(machine, "available_bytes", lambda device: 2**20)  # nothing fits: no chunk size to suggest
    with pytest.raises(ValueError, match=r"with `max_batch_size`=8; cpu has 1 MiB free\. Make fewer images per "
                                         r"call\.$"):
        pipe(prompts, max_batch_size=8)
