"""galip_core's noise, truncation warning and prompt batching: what the memory guards count is what is held (the
truncation's resampling, measured), a truncation warning stays one short line whatever the prompt, and both engines
encode the same prompt batches (galip_core.memory.prompt_runs)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from galip_core.memory import encode_runs, prompt_runs
from galip_core.noise import cpu_normal, noise_peak_bytes, sample_noise
from galip_core.text import truncation_warnings


#: run in a fresh process, as ``galip generate`` draws its noise: a long test process's heap state varies the peak
MEASURE_NOISE = """
import json, sys, torch
from galip_core.noise import cpu_normal, noise_peak_bytes, sample_noise
def status(field):
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0]) * 1024
shape, truncation = (2_000_000, 32), 2.0  # 244 MiB a copy, a 61 MiB mask
generator = torch.Generator().manual_seed(0)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
latents = sample_noise(lambda: cpu_normal(shape, generator), truncation)
print(json.dumps({"peak": status("VmHWM") - base, "estimate": noise_peak_bytes(*shape, truncation),
                  "copy": 4 * shape[0] * shape[1], "inside": bool(latents.abs().max() <= truncation)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs /proc/self/clear_refs (Linux)")
def test_resampling_a_truncation_holds_no_more_than_the_guard_counts():
    """The resample loop once held the noise, a fresh draw, a mask and torch.where's result (3.27 copies, measured)
    while ``galip generate``'s guard counted 2: it let runs through that then failed in an allocation. Measured in a
    fresh process at a size where the guard matters (above ~128 MiB of noise every mask is its own mapping): 2.25
    copies, as after loading a model in ``galip generate``. The guard counts 3 (late in a long test process the
    same draw has read 2.75 to 3.25: the heap's state, not the loop)."""
    result = subprocess.run([sys.executable, "-c", MEASURE_NOISE], capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout)
    peak, estimate = measured["peak"], measured["estimate"]
    assert measured["inside"]
    assert peak <= estimate <= 1.5 * peak, (peak / measured["copy"], estimate / measured["copy"])


def test_the_resampled_noise_is_unchanged_by_resampling_in_place():
    """Replacing and clamping in place draws exactly the values of the earlier out-of-place loop."""
    g = torch.Generator().manual_seed(3)
    latents = sample_noise(lambda: cpu_normal((4000, 8), g), 0.3)
    expected, g = None, torch.Generator().manual_seed(3)
    expected = cpu_normal((4000, 8), g)
    for _ in range(1000):
        outside = expected.abs() > 0.3
        if not outside.any():
            break
        expected = torch.where(outside, cpu_normal((4000, 8), g), expected)
    assert torch.equal(latents, expected.clamp(-0.3, 0.3))


def test_a_long_cut_is_shown_by_its_start_and_length():
    """A 160,000-character prompt once gave a 160 kB warning line (the whole cut text)."""
    ids = [0] + list(range(1, 40001)) + [99]
    decode = lambda cut: " ".join(f"w{i}" for i in cut)  # noqa: E731
    [warning] = truncation_warnings(["w " * 40000], [ids], 16, decode)
    cut_text = decode(ids[15:-1])
    assert len(warning) < 400 and warning.endswith(f"... ({len(cut_text)} characters)")
    assert repr(cut_text[:80]) in warning and "has 40002" in warning
    [short] = truncation_warnings(["x"], [[0, 1, 2, 3, 99]], 4, lambda cut: "yz")
    assert short.endswith(": 'yz'")  # a short cut is still quoted exactly


def test_prompt_runs_encode_each_prompt_of_a_chunk_once():
    assert prompt_runs(["a", "b"], 2) == [([0, 1], [2, 2])]
    assert prompt_runs(["a", "b", "c"], 2, 4) == [([0, 1], [2, 2]), ([2], [2])]
    assert prompt_runs(["a", "b"], 3, 2) == [([0], [2]), ([0, 1], [1, 1]), ([1], [2])]
    # galip generate's batches (the prompts repeated) encode exactly what the call's chunks encode
    def texts(prompts, per, chunk=None):
        return [([prompts[i] for i in indices], counts) for indices, counts in prompt_runs(prompts, per, chunk)]

    assert texts(["a", "a", "b", "b"], 1) == texts(["a", "b"], 2) == [(["a", "b"], [2, 2])]
    assert texts(["a", "a", "b", "b"], 1, 3) == texts(["a", "b"], 2, 3) == [(["a", "b"], [2, 1]), (["b"], [1])]
    assert prompt_runs(["a", "a", "b"], 1) == [([0, 2], [2, 1])]
    with pytest.raises(ValueError, match=r"`max_batch_size` \(None: one pass\) must be an integer >= 1, got 0"):
        prompt_runs(["a"], 1, 0)


def test_encode_runs_repeats_each_embedding_for_its_images():
    prompts = ["a", "b", "c"]
    calls = []

    def encode(indices):
        calls.append(indices)
        return torch.tensor([[float(i)] for i in indices])

    embeds = encode_runs(encode, prompts, 2, 4)
    assert calls == [[0, 1], [2]] and embeds.flatten().tolist() == [0, 0, 1, 1, 2, 2]
