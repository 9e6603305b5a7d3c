"""galip_core: the diffusers-free runtime of galip-generate makes the same images as GALIPPipeline, refuses what it
cannot run with a clear message, and never imports diffusers or transformers."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.testing_utils import byte_level_clip_tokenizer, tiny_generator
from galip_core import runtime
from galip_cli.generate import main as generate
from galip_core.runtime import LitePipeline, LiteUnsupportedError, lite_support_problem
from galip_core.text import LiteTokenizer, clip_text_clean

PROMPTS = ["a red circle", "A  BLUE square &amp; more", "a green triangle on a white background, very very long"]



def _weights(module):
    return {k: v.detach() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("overrides", [{}, {"prompt_layers": [0, 2], "output_size": 24, "num_mapping_blocks": 1},
                                       {"mapping_mid_channels": 8, "ngf": 8}])
def test_generator_function_matches_the_module(overrides):
    generator = tiny_generator(seed=3, **overrides)
    with torch.no_grad():
        for param in generator.parameters():  # every weight random, biases and norms included
            param.add_(0.05 * torch.randn_like(param))
    z, text = torch.randn(3, generator.config.z_dim), torch.randn(3, generator.config.cond_dim)
    with torch.no_grad():
        expected = generator(z, text)
    with torch.no_grad():
        got = runtime.RuntimeGenerator.from_weights(dict(generator.config), _weights(generator))(z, text)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("eos_token_id", [2, 513])  # the legacy argmax pooling and the first-EOS pooling
@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_text_tower_matches_transformers(eos_token_id, hidden_act):
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=514, bos_token_id=512, eos_token_id=eos_token_id, pad_token_id=513,
                            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=20, projection_dim=16, hidden_act=hidden_act)
    model = CLIPTextModelWithProjection(config).eval()
    ids = byte_level_clip_tokenizer(20)(["a red circle", "a much longer blue square"], padding="max_length",
                                        max_length=20, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model(ids).text_embeds
    torch.testing.assert_close(runtime.clip_text_embeds(_weights(model), config.to_dict(), ids), expected,
                               atol=2e-6, rtol=1e-5)


def test_unsupported_activation_is_named():
    with pytest.raises(ValueError, match="hidden_act 'relu'.*supported: \\['gelu', 'quick_gelu'\\]"):
        runtime.activation("relu")


@pytest.mark.parametrize("max_length", [77, 12])  # 12: the long prompt is truncated, still ending with EOT
def test_tokenizer_matches_transformers(max_length, tmp_path, capsys):
    reference = byte_level_clip_tokenizer(max_length)
    reference.save_pretrained(tmp_path)
    cleaned = [clip_text_clean(p) for p in PROMPTS]
    expected = reference(cleaned, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    assert torch.equal(LiteTokenizer(tmp_path)(PROMPTS), expected.input_ids)
    warned = "truncated because CLIP can only handle sequences up to 12 tokens" in capsys.readouterr().err
    assert warned == (max_length == 12)


def test_both_engines_warn_about_exactly_the_cut_text(model_dir, capsys):
    """One truncation warning (`galip_core.text.truncation_warnings`) for both engines: the byte-level tokenizer makes
    one token per character, so 75 x's fill the 77 tokens; the diffusers engine once said nothing about one cut token
    and dropped the last cut token from longer cuts (the tokenizers pad with the end-of-text token)."""
    from diffusers.utils import logging
    from diffusers.utils.testing_utils import CaptureLogger

    pipe, lite = GALIPPipeline.from_pretrained(str(model_dir)), LitePipeline.from_pretrained(str(model_dir))
    logger = logging.get_logger("galip_diffusers.pipelines.pipeline_galip")
    for extra, cut in [("", None), (" y", "y"), (" yz", "yz"), (" y z", "y z")]:
        prompts = ["a red circle", "X" * 75 + extra]
        with CaptureLogger(logger) as cap:
            pipe.encode_prompt(prompts)
        torch.testing.assert_close(lite.encode_prompt(prompts), pipe.encode_prompt(prompts), atol=2e-6, rtol=1e-5)
        lite_warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        if cut is None:
            assert cap.out == "" and lite_warnings == []
        else:
            assert cap.out.rstrip().endswith(f": {cut!r}")
            assert lite_warnings == [f"warning: {cap.out.strip()}"]  # the same text


def test_prepare_latents_refuses_the_same_arguments_in_both_engines(model_dir):
    pipe, lite = GALIPPipeline.from_pretrained(str(model_dir)), LitePipeline.from_pretrained(str(model_dir))
    seeded = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    for kwargs in ({"generator": [seeded(0)]}, {"generator": [seeded(0), seeded(1), seeded(2)]}, {"generator": 0},
                   {"truncation": float("nan")}, {"truncation": -1}, {"truncation_mode": "bogus"}):
        with pytest.raises((TypeError, ValueError)) as expected:
            lite.prepare_latents(2, **kwargs)
        with pytest.raises(expected.type, match=re.escape(str(expected.value))):
            pipe.prepare_latents(2, torch.float32, "cpu", **kwargs)


def test_images_noise_and_embeddings_match_the_pipeline(model_dir):
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    lite = LitePipeline.from_pretrained(str(model_dir))
    torch.testing.assert_close(lite.encode_prompt(PROMPTS), pipe.encode_prompt(PROMPTS, "cpu"), atol=2e-6, rtol=1e-5)
    for truncation, mode in [(None, "resample"), (0.5, "resample"), (0.5, "clamp")]:
        expected = pipe.prepare_latents(6, torch.float32, "cpu", torch.Generator().manual_seed(4), truncation=truncation,
                                        truncation_mode=mode)
        got = lite.prepare_latents(6, torch.Generator().manual_seed(4), truncation, mode)
        assert torch.equal(got, expected)
    images = lite(PROMPTS, generator=torch.Generator().manual_seed(5))
    expected = pipe(PROMPTS, generator=torch.Generator().manual_seed(5)).images
    diff = np.abs(np.stack([np.asarray(i, np.int16) for i in images]) - np.stack([np.asarray(i, np.int16) for i in expected]))
    assert diff.max() <= 1 and diff.mean() < 1e-3


def test_a_string_prompt_is_one_prompt_and_generator_lists_match_the_diffusers_pipeline(model_dir):
    lite, pipe = LitePipeline.from_pretrained(str(model_dir)), GALIPPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    one = lite.encode_prompt("a large red circle on a white background")
    assert one.shape == (1, 16)  # not one row per character
    torch.testing.assert_close(one, lite.encode_prompt(["a large red circle on a white background"]))
    generators = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731  (one per image)
    images = lite(["a", "b"], generator=generators())
    expected = pipe(["a", "b"], generator=generators()).images
    diff = np.abs(np.stack([np.asarray(i, np.int16) for i in images]) - np.stack([np.asarray(i, np.int16) for i in expected]))
    assert diff.max() <= 1
    torch.testing.assert_close(lite.prepare_latents(2, generators())[1:], lite.prepare_latents(1, generators()[1:]))
    with pytest.raises(ValueError, match="a list of 2 generators for 3 images"):
        lite(["a", "b", "c"], generator=generators())


def test_bad_input(model_dir, tmp_path):
    lite = LitePipeline.from_pretrained(str(model_dir))
    with pytest.raises(ValueError, match="`latents` must be a floating-point tensor of shape \\(2, 8\\)"):
        lite(["a", "b"], latents=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="`latents` must be a floating-point tensor of shape .* got list"):
        lite(["a"], latents=[[0.0] * 8])
    with pytest.raises(TypeError, match="`prompts` has to be of type `str` or a list of `str`, but is int"):
        lite(5)
    with pytest.raises(TypeError, match="`generator` must be None, a `torch.Generator`"):
        lite("a", generator=0)
    with pytest.raises(ValueError, match=r"`truncation` \(None or 0: off\) must be a finite number >= 0, got -1"):
        lite.prepare_latents(1, truncation=-1)
    torch.testing.assert_close(lite.prepare_latents(2, torch.Generator().manual_seed(0), truncation=0),
                               lite.prepare_latents(2, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="`prompts` is an empty list"):
        lite([])
    with pytest.raises(ValueError, match="`prompts` is an empty list"):
        lite.encode_prompt([])
    for bad in (-1, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"`num_images` must be an integer >= 1"):
            lite.prepare_latents(bad)
    with pytest.raises(TypeError, match="`settings` must be a GALIPSettings or a dict"):
        lite.settings = None
    with pytest.raises(ValueError, match="`truncation_mode` must be one of"):
        lite.prepare_latents(2, truncation=1.0, truncation_mode="wrap")
    assert "no model_index.json" in lite_support_problem(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    os.remove(broken / "generator" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(LiteUnsupportedError, match="generator/ has no diffusion_pytorch_model.safetensors"):
        LitePipeline.from_pretrained(str(broken))
    index = json.loads((model_dir / "model_index.json").read_text())
    index["text_encoder"] = ["transformers", "T5EncoderModel"]
    (broken / "model_index.json").write_text(json.dumps(index))
    assert "text_encoder is ['transformers', 'T5EncoderModel']" in lite_support_problem(broken)
    shutil.copytree(model_dir, tmp_path / "old_config")
    config = json.loads((model_dir / "text_encoder" / "config.json").read_text())
    del config["num_attention_heads"]
    (tmp_path / "old_config" / "text_encoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LiteUnsupportedError, match="text_encoder/config.json has no num_attention_heads"):
        LitePipeline.from_pretrained(str(tmp_path / "old_config"))
    # galip-generate: --engine lite reports it, auto falls back to GALIPPipeline (which has the CLIP defaults)
    argv = ["a red circle", "--model", str(tmp_path / "old_config"), "--no-progress", "--out"]
    assert generate(argv + [str(tmp_path / "lite"), "--engine", "lite"]) == 1
    assert generate(argv + [str(tmp_path / "auto")]) == 0
    assert (tmp_path / "auto" / "0000_00_seed0.png").is_file()


def test_cli_engines_write_the_same_pngs(model_dir, tmp_path):
    args = ["a red circle", "a blue square", "--model", str(model_dir), "--num-images", "2", "--seed", "2",
            "--truncation", "1.5", "--batch-size", "3", "--no-progress", "--dtype", "fp32"]  # (auto: bf16 on AMX)
    assert generate(args + ["--engine", "lite", "--out", str(tmp_path / "lite")]) == 0
    assert generate(args + ["--engine", "diffusers", "--out", str(tmp_path / "diffusers")]) == 0
    lite_paths = sorted((tmp_path / "lite").iterdir())
    assert len(lite_paths) == 4
    for path in lite_paths:
        a = np.asarray(PIL.Image.open(path), np.int16)
        b = np.asarray(PIL.Image.open(tmp_path / "diffusers" / path.name), np.int16)
        assert np.abs(a - b).max() <= 1


def test_cli_engine_choice_and_errors(model_dir, tmp_path, capsys, monkeypatch):
    import galip_core.machine
    from galip_cli.generate import build_parser, choose_engine

    monkeypatch.setattr(galip_core.machine, "check_device", lambda device, flag="--device": None)  # as if on a GPU

    parse = build_parser().parse_args
    assert choose_engine(parse(["x", "--model", str(model_dir)])) == "lite"
    assert choose_engine(parse(["x", "--model", str(model_dir), "--dtype", "bf16"])) == "diffusers"
    assert choose_engine(parse(["x", "--model", "someone/galip-coco"])) == "diffusers"  # a Hub id
    code = generate(["x", "--model", str(model_dir), "--engine", "lite", "--device", "cuda", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "--engine lite cannot be used: it runs on cpu only (--device cuda)" in err and "--engine diffusers" in err
    with pytest.raises(SystemExit) as exit_info:
        generate(["x", "--engine", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_lite_generation_imports_neither_diffusers_nor_transformers(tmp_path):
    """The point of galip_core: the packaged model's images without importing the HF stack (checked in a fresh
    process, which also writes the PNG)."""
    code = (
        "import sys\n"
        "from galip_cli.generate import main\n"
        f"assert main(['a large red circle on a white background', '--out', {str(tmp_path)!r}, '--no-progress']) == 0\n"
        "heavy = sorted(m for m in ('diffusers', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert PIL.Image.open(tmp_path / "0000_00_seed0.png").size == (64, 64)
