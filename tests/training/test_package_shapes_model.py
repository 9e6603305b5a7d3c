"""training/package_shapes_model.py: a run fine-tuned from a pipeline folder is packaged with that folder's
tokenizer, encoders and scorer (--components_from), in float16 storage that loads in float32."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from galip_diffusers import GALIPPipeline
from helpers.training_helpers import training_script
from galip_diffusers.testing_utils import tiny_components, tiny_discriminator, tiny_scorer


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
