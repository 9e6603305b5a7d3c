"""Both engines check a pipeline folder the same way before allocating anything, and name the file, the field and
what was expected; non-finite values never become images (issue #27, items 4, 5, 6 and 11)."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from galip_core import machine
from galip_diffusers.pipelines import call_checks
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_core.runtime import LitePipeline

ENGINES = {"diffusers": GALIPPipeline.from_pretrained, "lite": LitePipeline.from_pretrained}
GENERATOR_WEIGHTS = "generator/diffusion_pytorch_model.safetensors"


def _edit_json(folder, name, change):
    path = folder / name
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


def _set(**fields):
    return lambda config: {**config, **fields}


CASES = {
    "ngf is a string": ("generator/config.json", _set(ngf="sixteen"),
                        r"generator/config.json: ngf must be an integer >= 1, got 'sixteen'"),
    "ngf too large": ("generator/config.json", _set(ngf=10**6),
                      r"generator/config.json: ngf does not fit .*diffusion_pytorch_model.safetensors: "
                      r"conv_bridge_out.weight has shape \(32, 32, 5, 5\), the config needs \(8000000, 32, 5, 5\)"),
    "z_dim is a string": ("generator/config.json", _set(z_dim="32"),
                          r"generator/config.json: z_dim must be an integer >= 1, got '32'"),
    "z_dim huge": ("generator/config.json", _set(z_dim=250000000),
                   r"generator/config.json: z_dim / code_channels does not fit .*fc_code.weight has shape \(200, 8\), "
                   r"the config needs \(200, 250000000\)"),
    "prompt_layers not a list": ("generator/config.json", _set(prompt_layers=3),
                                 r"prompt_layers must be a list of ViT block indices \(integers >= 0\), got 3"),
    "vision_config a string": ("generator/config.json", _set(vision_config="none"),
                               r"vision_config must be an object .*, got 'none'"),
    "output_size off the weights": ("generator/config.json", _set(output_size=31),
                                    r"output_size=31 does not fit .*: its 3 G-blocks make 32-px images \(expected "
                                    r"output_size 32, or the ViT's image_size 40\)"),
    "output_size beyond the blocks": ("generator/config.json", _set(output_size=64),
                                      r"output_size=64 does not fit .*, whose 3 G-blocks make images of 17 to 32 px"),
    "code_channels mismatch": ("generator/config.json", _set(code_channels=9),
                               r"z_dim / code_channels does not fit .*fc_code.weight"),
    "config.json a list": ("generator/config.json", lambda config: [config],
                           r"generator/config.json' holds a JSON list; expected a JSON object"),
    "model_index.json a list": ("model_index.json", lambda index: list(index.items()),
                                r"model_index.json' holds a JSON list; expected a JSON object"),
}


@pytest.fixture()
def folder(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_engines_refuse_a_bad_config_with_the_same_message(folder, case):
    name, change, message = CASES[case]
    _edit_json(folder, name, change)
    errors = {}
    for engine, load in ENGINES.items():
        with pytest.raises(ValueError, match=message) as info:
            load(str(folder))
        errors[engine] = str(info.value)
    assert errors["diffusers"] == errors["lite"]
    assert "ignore_mismatched_sizes" not in errors["diffusers"] and "huggingface.co" not in errors["diffusers"]


def test_corrupt_files_are_named(folder, model_dir):
    (folder / "tokenizer" / "tokenizer.json").write_text('{"model": ')
    for load in ENGINES.values():
        with pytest.raises(ValueError, match=r"Corrupt JSON file '.*tokenizer/tokenizer.json'"):
            load(str(folder))
    shutil.copy(model_dir / "tokenizer" / "tokenizer.json", folder / "tokenizer" / "tokenizer.json")
    (folder / GENERATOR_WEIGHTS).write_bytes((folder / GENERATOR_WEIGHTS).read_bytes()[:100])
    for load in ENGINES.values():
        with pytest.raises(ValueError, match=r"Corrupt safetensors file '.*generator/diffusion_pytorch_model"):
            load(str(folder))


TEXT_WEIGHTS = "text_encoder/model.safetensors"


def _edit_weights(folder, name, change):
    weights = load_file(str(folder / name))
    change(weights)
    save_file(weights, str(folder / name))


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_weights_stored_as_bool_or_int_are_named_not_cast(folder, engine):
    _edit_weights(folder, GENERATOR_WEIGHTS, lambda w: w.update({"conv_out.bias": w["conv_out.bias"] > 0}))
    with pytest.raises(ValueError, match=r"the weight 'conv_out.bias' is stored as BOOL; weights must be floating "
                                         r"point \(F16, BF16, F32, F64\)"):
        ENGINES[engine](str(folder))


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("layers", [-1, 1])
def test_a_text_config_that_skips_layers_is_refused(folder, engine, layers):
    _edit_json(folder, "text_encoder/config.json", _set(num_hidden_layers=layers))
    message = ("num_hidden_layers must be an integer >= 1" if layers < 1 else
               r"num_hidden_layers is 1, but .*text_encoder/model.safetensors holds 2 layers")
    with pytest.raises(ValueError, match=message):
        ENGINES[engine](str(folder))


@pytest.mark.parametrize("weights,key", [(GENERATOR_WEIGHTS, "conv_out.bias"), (TEXT_WEIGHTS, "text_projection.weight")])
def test_a_missing_tensor_is_named_not_filled_with_random_values(folder, weights, key):
    from diffusers import DiffusionPipeline

    _edit_weights(folder, weights, lambda w: w.pop(key))
    for load in (GALIPPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        with pytest.raises(ValueError, match=rf"lacks weights its \w+ needs \({re.escape(key)}\)"):
            load(str(folder))


def test_a_tokenizer_without_its_vocabulary_is_refused_not_rebuilt(folder, tmp_path):
    from diffusers import DiffusionPipeline

    from galip_cli.generate import main as generate

    (folder / "tokenizer" / "tokenizer.json").unlink()  # tokenizer_config.json alone: another vocabulary
    for load in (GALIPPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        with pytest.raises(FileNotFoundError, match=r"No tokenizer vocabulary in .*tokenizer': it needs tokenizer.json, "
                                                    r"or vocab.json and merges.txt"):
            load(str(folder))
    assert generate(["a red picture", "--model", str(folder), "--out", str(tmp_path / "png")]) == 1
    assert not (tmp_path / "png").exists() or not list((tmp_path / "png").iterdir())  # no image from a wrong tokenizer


@pytest.fixture()
def nan_folder(folder):
    weights = load_file(str(folder / GENERATOR_WEIGHTS))
    weights["conv_out.weight"][0, 0, 0, 0] = float("nan")
    save_file(weights, str(folder / GENERATOR_WEIGHTS))
    return folder


def test_non_finite_output_names_the_component_in_both_engines(nan_folder):
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    message = r"The generator \(.*model/generator\) produced \d+ non-finite value\(s\) .* its weights are probably corrupt"
    with pytest.raises(RuntimeError, match=message):
        GALIPPipeline.from_pretrained(str(nan_folder))("a red circle", latents=z)
    with pytest.raises(RuntimeError, match=message):
        LitePipeline.from_pretrained(str(nan_folder))(["a red circle"], latents=z)


def test_non_finite_inputs_are_refused(model_dir):
    pipe, lite = GALIPPipeline.from_pretrained(str(model_dir)), LitePipeline.from_pretrained(str(model_dir))
    z = torch.randn(1, 8)
    z[0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`latents` holds 1 non-finite value\(s\) \(NaN or inf\) out of 8"):
        pipe("a red circle", latents=z)
    with pytest.raises(ValueError, match=r"`latents` holds 1 non-finite value"):
        lite(["a red circle"], latents=z)
    embeds = torch.zeros(2, 16)
    embeds[1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"`prompt_embeds` holds 1 non-finite value"):
        pipe(prompt_embeds=embeds)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match=r"`truncation` \(None or 0: off\) must be a finite number >= 0"):
            pipe("a red circle", truncation=bad)
        with pytest.raises(ValueError, match=r"`truncation` \(None or 0: off\) must be a finite number >= 0"):
            lite.prepare_latents(1, truncation=bad)
    with pytest.raises(ValueError, match=r"`latents` holds 1 non-finite value"):
        pipe.interpolate(["a", "b"], latents=torch.cat([z, torch.zeros(1, 8)]), num_steps=3)


def test_calls_too_large_for_the_memory_are_refused_up_front(model_dir, monkeypatch):
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    config = pipe.generator.config
    one = call_checks.estimate_call_bytes(config, 1, None)
    assert call_checks.estimate_call_bytes(config, 1000, 10) < 1000 * one  # chunking bounds the activations
    monkeypatch.setattr(machine, "available_bytes", lambda device: 2**30)  # a 1 GiB machine
    with pytest.raises(ValueError, match=r"`num_images_per_prompt`=1000000 asks for 1000000 images of 32 px, which "
                                         r"need about \d+\.\d GiB; cpu has 1.0 GiB free"):
        pipe("a red circle", num_images_per_prompt=10**6)
    with pytest.raises(ValueError, match=r"`num_steps`=1000000 asks for 1999999 images of 32 px"):
        pipe.interpolate(["a", "b", "c"], num_steps=10**6)
    assert len(pipe("a red circle", num_images_per_prompt=2).images) == 2  # what fits still runs
    lite = LitePipeline.from_pretrained(str(model_dir))  # the fast runtime makes the same estimate
    with pytest.raises(ValueError, match=r"`prompts`=\[1000000 prompts\] asks for 1000000 images of 32 px"):
        lite(["a red circle"] * 10**6)
    assert len(lite(["a red circle"] * 2)) == 2
