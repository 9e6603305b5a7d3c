"""The fast-inference precision the docs state is the one measured on the shipped models: model-dependent figures
(the docstrings once claimed ~1e-6 in fp32 and ~1e-2 in bf16 for every model; galip-emoji measures 1.2e-5 and 0.10)."""

import re

import pytest
import torch
from helpers.shipped_helpers import load_quiet

from galip_diffusers import GALIPPipeline
from galip_diffusers.models import fast_inference

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = {
    "galip-emoji": ["grinning face, twemoji style", "red apple, noto style", "rocket, twemoji style",
                    "pizza, noto style", "thumbs up, twemoji style", "rainbow, twemoji style",
                    "flag: Japan, noto style", "waving hand: dark skin tone, twemoji style"],
    "galip-shapes": ["a large red circle on a white background", "a small blue square on a black background",
                     "a green triangle on a white background", "a large yellow square on a gray background",
                     "a small red triangle on a white background", "a blue circle on a black background",
                     "a large green circle on a white background", "a small yellow triangle on a gray background"],
}
NUMBER = r"([0-9.]+e-[0-9]+|[0-9.]+)"


def documented_max_diffs(model: str) -> tuple[str, str]:
    """The fp32 and bf16 max abs diffs of ``model`` in the table of :mod:`galip_diffusers.models.fast_inference`."""
    row = re.search(rf"^{model}\s+{NUMBER} \({NUMBER}\)\s+{NUMBER} \({NUMBER}\)\s*$", fast_inference.__doc__, re.M)
    assert row, f"no row for {model} in the measured table of galip_diffusers.models.fast_inference"
    return row.group(1), row.group(3)


def max_diff(pipe, prompts, **fast_options) -> float:
    pipe.disable_fast_inference()
    kwargs = {"num_images_per_prompt": 2, "output_type": "pt"}
    expected = pipe(prompts, generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.enable_fast_inference(**fast_options)
    fast = pipe(prompts, generator=torch.Generator().manual_seed(0), **kwargs).images
    return (fast.float() - expected).abs().max().item()


@pytest.mark.parametrize("model", sorted(PROMPTS))
def test_documented_fast_inference_differences_are_the_measured_ones(model):
    fp32, bf16 = documented_max_diffs(model)
    pipeline_doc = " ".join(GALIPPipeline.enable_fast_inference.__doc__.split())
    assert fp32 in pipeline_doc and bf16 in pipeline_doc  # the pipeline's docstring quotes the same figures
    pipe = load_quiet(model)
    measured_fp32 = max_diff(pipe, PROMPTS[model])
    # of the stated size (other CPUs round differently: a margin, but not the factor 10 of the old "~1e-6")
    assert float(fp32) / 10 <= measured_fp32 <= 3 * float(fp32)
    pipe = load_quiet(model)  # bf16 casts the weights: a fresh copy
    measured_bf16 = max_diff(pipe, PROMPTS[model], dtype=torch.bfloat16)
    assert float(bf16) / 5 <= measured_bf16 <= 2 * float(bf16)
