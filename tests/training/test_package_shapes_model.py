"""training/package_shapes_model.py: a run fine-tuned from a pipeline folder is packaged with that folder's
tokenizer, encoders and scorer (--components_from), in float16 storage that loads in float32."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from galip_diffusers import GALIPPipeline
from helpers.training_helpers import training_script
from galip_diffusers.testing_utils import (save_tiny_bridge_clip, tiny_components, tiny_discriminator,
                                          tiny_generator, tiny_scorer)


def _script():
    return training_script("package_shapes_model")


def test_components_from_a_pipeline_folder(tmp_path, one_thread):
    script = _script()
    base, run, out = tmp_path / "base", tmp_path / "run", tmp_path / "out"
    GALIPPipeline(**{**tiny_components(0, with_image_encoder=True), "scorer": tiny_scorer(1)}).save_pretrained(base)
    trained = GALIPPipeline(**tiny_components(5, with_image_encoder=True))  # "the run": other generator weights
    trained.generator.save_pretrained(run / "generator")
    tiny_discriminator(3).save_pretrained(run / "discriminator")
    script.main(["--run_dir", str(run), "--components_from", str(base), "--output_dir", str(out),
                 "--num_images", "6", "--results_dir", str(tmp_path / "results"), "--skip_speed"])

    shipped = GALIPPipeline.from_pretrained(str(out))
    assert shipped.generator.dtype == torch.float32 and shipped.scorer is not None
    stored = load_file(str(out / "generator" / "diffusion_pytorch_model.safetensors"))
    assert all(t.dtype == torch.float16 for t in stored.values())
    expected = trained.generator.state_dict()
    assert all(torch.equal(v, expected[k].half().float()) for k, v in shipped.generator.state_dict().items())
    base_scorer = GALIPPipeline.from_pretrained(str(base)).scorer.state_dict()
    assert all(torch.equal(v, base_scorer[k].half().float()) for k, v in shipped.scorer.state_dict().items())
    report = json.loads((tmp_path / "results" / "eval.json").read_text())
    assert 0.0 <= report["accuracy_train"]["shape"] <= 1.0 and "README.md" in os.listdir(out)


def test_components_come_from_one_place_only():
    script = _script()
    with pytest.raises(SystemExit):
        script.parse_args(["--run_dir", "r"])
    with pytest.raises(SystemExit):
        script.parse_args(["--run_dir", "r", "--components_from", "galip-shapes", "--clip_model_name_or_path", "c",
                           "--scorer_model_name_or_path", "s"])
    assert script.parse_args(["--run_dir", "r", "--components_from", "galip-shapes"]).components_from == "galip-shapes"


class _Saved(Exception):
    """Raised by the stand-in for save_half_precision: the test only needs the arguments it got."""


@pytest.mark.parametrize("name", ["package_shapes_model", "package_emoji_model"])
def test_both_packaging_scripts_give_the_save_the_shipped_size_limit(name, tmp_path, monkeypatch, one_thread):
    """The limit is enforced inside save_half_precision, before the swap (tests/training/test_packaging_helpers.py);
    here: both scripts hand it the same limit."""
    script = training_script(name)
    assert script.SHIPPED_MODEL_MAX_MB == 25.0

    def save(pipe, discriminator, output_dir, **kwargs):
        raise _Saved(kwargs)

    monkeypatch.setattr(script, "save_half_precision", save)
    run = tmp_path / "run"
    tiny_generator(5).save_pretrained(run / "generator")
    tiny_discriminator(3).save_pretrained(run / "discriminator")
    if name == "package_shapes_model":
        base = tmp_path / "base"
        GALIPPipeline(**{**tiny_components(0, with_image_encoder=True), "scorer": tiny_scorer(1)}).save_pretrained(base)
        sources = ["--components_from", str(base)]
    else:
        save_tiny_bridge_clip(tmp_path / "bridge")
        tiny_scorer(1).save_pretrained(tmp_path / "scorer")
        sources = ["--clip_model_name_or_path", str(tmp_path / "bridge"), "--scorer_model_name_or_path",
                   str(tmp_path / "scorer")]
    with pytest.raises(_Saved) as saved:
        script.main(["--run_dir", str(run), "--output_dir", str(tmp_path / "out"), "--results_dir",
                     str(tmp_path / "results"), "--skip_speed", *sources])
    assert saved.value.args[0] == {"max_size_mb": 25.0}
