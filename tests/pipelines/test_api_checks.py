"""Careless and hostile use of the pipeline API, found by the third audit: each case once made a silent wrong output, a
lost file or a bare traceback. Now every one is a clear error naming the argument, or the right result."""

import json
import os

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging
from diffusers.utils.testing_utils import CaptureLogger

from galip_diffusers import GALIPPipeline
from galip_diffusers.pipelines.loading import settings_of_generic_load
from galip_diffusers.testing_utils import tiny_pipeline
from galip_core.settings import SETTINGS_NAME, GALIPSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def pipe():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def saved(tmp_path):
    """A saved tiny pipeline whose galip_settings.json recommends a truncation."""
    pipe = tiny_pipeline()
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.5}})
    pipe.save_pretrained(str(tmp_path / "model"))
    return tmp_path / "model"


# --------------------------------------------------------------------------------------------- settings that travel
def test_diffusion_pipeline_from_pretrained_applies_the_folders_settings_and_saving_back_keeps_them(saved):
    pipe = DiffusionPipeline.from_pretrained(str(saved))
    assert isinstance(pipe, GALIPPipeline)
    assert pipe.settings.defaults("sampling") == {"truncation": 0.5}  # was the built-in None
    pipe.set_progress_bar_config(disable=True)
    z = pipe.prepare_latents(1, torch.float32, torch.device("cpu"), seeded(), truncation=0.5)
    np.testing.assert_array_equal(pipe("a", generator=seeded(), output_type="np").images,
                                  pipe("a", latents=z, output_type="np").images)  # the truncation is applied
    pipe.save_pretrained(str(saved))
    assert json.loads((saved / SETTINGS_NAME).read_text())["sampling"] == {"truncation": 0.5}  # not deleted


def test_a_hub_id_through_diffusers_own_loader_gets_a_warning_not_silence():
    logger = logging.get_logger("galip_diffusers.pipelines.loading")
    with CaptureLogger(logger) as captured:
        settings = settings_of_generic_load("someone/galip-model")
    assert settings.is_empty()
    assert "does not download galip_settings.json" in captured.out and "GALIPPipeline.from_pretrained" in captured.out


def test_settings_are_a_galip_settings_or_a_checked_dict(pipe):
    pipe.settings = {"sampling": {"truncation": 0.7}}
    assert isinstance(pipe.settings, GALIPSettings) and pipe.settings.defaults("sampling") == {"truncation": 0.7}
    with pytest.raises(ValueError, match="truncation"):
        pipe.settings = {"sampling": {"truncation": -1}}
    with pytest.raises(TypeError, match="`settings` must be a GALIPSettings or a dict"):
        pipe.settings = None
    assert pipe.settings.defaults("sampling") == {"truncation": 0.7}  # a refused value changes nothing


# --------------------------------------------------------------------------------------------- saving
def test_save_pretrained_refuses_an_empty_path_before_writing(pipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="`save_directory` must be a folder path"):
        pipe.save_pretrained("")
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        pipe.save_pretrained(str(tmp_path / "file"))


def test_save_pretrained_never_replaces_a_foreign_pipeline_galip_py(pipe, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "pipeline_galip.py").write_text("print('my own script')\n")
    with pytest.raises(FileExistsError, match="is not GALIP's remote-code shim"):
        pipe.save_pretrained(str(folder))
    assert sorted(os.listdir(folder)) == ["pipeline_galip.py"]
    assert (folder / "pipeline_galip.py").read_text() == "print('my own script')\n"


def test_saving_a_pipeline_without_settings_over_a_folder_with_them_says_so(pipe, saved):
    logger = logging.get_logger("galip_diffusers.pipelines.loading")
    with CaptureLogger(logger) as captured:
        pipe.save_pretrained(str(saved))  # the folder now holds this model, which has no recommended settings
    assert not (saved / SETTINGS_NAME).exists()
    assert f"Removed {saved / SETTINGS_NAME}" in captured.out and "Set `pipe.settings`" in captured.out
    pipe.save_pretrained(str(saved))  # an existing shim is rewritten without complaint


def test_from_pretrained_with_a_non_path_names_the_argument():
    with pytest.raises(TypeError, match="`pretrained_model_name_or_path` must be a folder, a Hub id or a packaged"):
        GALIPPipeline.from_pretrained(3)


# --------------------------------------------------------------------------------------------- inputs
def test_prompt_embeds_must_be_floating_point(pipe):
    for dtype in (torch.long, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match="`prompt_embeds` must be a floating-point tensor"):
            pipe(prompt_embeds=torch.ones(1, 16, dtype=dtype))


def test_numpy_integers_are_counts_like_ints(pipe):
    images = pipe("a", num_images_per_prompt=np.int64(2), generator=seeded(), output_type="np").images
    assert images.shape[0] == 2
    frames = pipe.interpolate(["a", "b"], num_steps=np.int64(3), generator=seeded(), output_type="np").images
    assert frames.shape[0] == 3


def test_encode_prompt_checks_its_arguments(pipe):
    assert pipe.encode_prompt("a red circle").shape == (1, 16)
    with pytest.raises(ValueError, match="`prompt` is an empty list"):
        pipe.encode_prompt([])
    with pytest.raises(ValueError, match="`num_images_per_prompt` must be >= 1"):
        pipe.encode_prompt("a", num_images_per_prompt=-1)
    with pytest.raises(TypeError, match="`num_images_per_prompt` must be an int >= 1"):
        pipe.encode_prompt("a", num_images_per_prompt=2.0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"truncation": float("nan")}, ValueError, r"`truncation` \(None or 0: off\) must be a finite number"),
        ({"truncation": -1.0}, ValueError, r"`truncation` \(None or 0: off\) must be a finite number >= 0"),
        ({"truncation": 1.0, "truncation_mode": "resampel"}, ValueError, "`truncation_mode` must be one of"),
        ({"latents": torch.zeros(2, 8)}, ValueError, r"`latents` must be a tensor of shape \(1, 8\)"),
        ({"latents": torch.zeros(1, 8, dtype=torch.long)}, TypeError, "floating-point"),
        ({"max_resample_rounds": 0}, ValueError, "`max_resample_rounds` must be an integer >= 1"),
    ],
)
def test_prepare_latents_refuses_what_would_make_nan_or_constant_noise(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe.prepare_latents(1, torch.float32, torch.device("cpu"), seeded(), **kwargs)


@pytest.mark.parametrize(
    "batch_size,kwargs,error,match",
    [
        (2, {"latents": torch.ones(2, 8), "truncation": 0.5}, ValueError, "`truncation`=0.5 applies to the noise"),
        (2, {"latents": torch.ones(2, 8), "truncation": float("nan")}, ValueError,
         r"`truncation` \(None or 0: off\) must be a finite number >= 0, got nan"),
        (2, {"latents": torch.ones(2, 8), "truncation_mode": "bogus"}, ValueError, "`truncation_mode` must be one of"),
        (2, {"generator": [seeded(0)]}, ValueError, "a list of 1 generators for 2 images"),
        (2, {"generator": [seeded(0), seeded(1), seeded(2)]}, ValueError, "a list of 3 generators for 2 images"),
        (3, {"generator": [seeded(0), seeded(1)]}, ValueError, "a list of 2 generators for 3 images"),
        (2, {"generator": 0}, TypeError, "`generator` must be None, a `torch.Generator` or a list of them"),
    ],
)
def test_prepare_latents_checks_truncation_generators_and_latents_like_the_call(pipe, batch_size, kwargs, error, match):
    """Once: given latents came back untouched with any truncation (even NaN) or mode, a list of generators of the
    wrong length was cut, padded from one generator or an IndexError, and `generator=0` an AttributeError."""
    with pytest.raises(error, match=match):
        pipe.prepare_latents(batch_size, torch.float32, torch.device("cpu"), **kwargs)


def test_the_call_with_latents_ignores_the_models_truncation_setting(pipe):
    z = torch.full((1, 8), 3.0)  # beyond the recommended truncation: used as is
    plain = pipe("a", latents=z, output_type="np").images
    pipe.settings = {"sampling": {"truncation": 0.5}}
    np.testing.assert_array_equal(pipe("a", latents=z, output_type="np").images, plain)
    frames = pipe.interpolate(["a", "b"], latents=z.expand(2, -1), num_steps=2, output_type="np").images
    np.testing.assert_allclose(frames[:1], plain, atol=1e-5)


def test_interpolate_speaks_of_noise_endpoints_for_a_generator_list(pipe):
    with pytest.raises(ValueError, match="a list of 1 generators for 2 noise endpoints; pass one generator per noise "
                                         "endpoint or a single one"):
        pipe.interpolate("a", num_steps=2, generator=[seeded(0)])
    frames = pipe.interpolate("a", num_steps=2, generator=[seeded(0), seeded(1)], output_type="np").images
    np.testing.assert_allclose(frames[1], pipe("a", generator=[seeded(1)], output_type="np").images[0], atol=1e-5)


def test_prepare_latents_refuses_a_batch_size_below_one(pipe):
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1, got 0"):
        pipe.prepare_latents(0, torch.float32, torch.device("cpu"))


@pytest.mark.parametrize(
    "args,kwargs",
    [(("a",), {"latents": torch.randn(1, 8)}), ((["a"],), {"latents": torch.randn(1, 8)}),
     ((), {"prompt_embeds": torch.randn(1, 16), "latents": torch.randn(1, 8)})],
)
def test_interpolate_with_one_endpoint_says_two_are_needed(pipe, args, kwargs):
    with pytest.raises(ValueError, match="`interpolate` needs at least two endpoints"):
        pipe.interpolate(*args, num_steps=4, **kwargs)


def test_interpolate_switches_must_be_bools(pipe):
    with pytest.raises(TypeError, match="`interpolate_noise` must be True or False, got 'no'"):
        pipe.interpolate(["a", "b"], interpolate_noise="no")


# --------------------------------------------------------------------------------------------- missing components
def test_missing_components_are_named(pipe):
    embeds = pipe.encode_prompt("a")
    pipe.text_encoder = None
    with pytest.raises(ValueError, match=r"`__call__` needs the pipeline's text_encoder, but it is None"):
        pipe("a")
    assert pipe(prompt_embeds=embeds, output_type="np").images.shape[0] == 1  # embeddings need no text encoder
    pipe.enable_fast_inference()  # also with the fast path, which caches the device
    assert pipe(prompt_embeds=embeds, output_type="np").images.shape[0] == 1
    pipe.generator = None
    with pytest.raises(ValueError, match=r"`__call__` needs the pipeline's generator"):
        pipe(prompt_embeds=embeds)


# --------------------------------------------------------------------------------------------- fast inference
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"compile": True, "compile_mode": "reduce_overhead"}, ValueError, "`compile_mode` must be one of"),
        ({"compile_mode": "max-autotune"}, ValueError, "only applies with `compile=True`"),
        ({"compile": 0}, TypeError, "`compile` must be True or False"),
        ({"trim_text_padding": "no"}, TypeError, "`trim_text_padding` must be True or False"),
        ({"dtype": torch.float64}, TypeError, "`dtype` must be one of"),
    ],
)
def test_fast_inference_options_are_checked_before_anything_changes(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe.enable_fast_inference(**kwargs)
    assert pipe.generator.fast_inference_options is None and pipe.text_encoder.dtype == torch.float32


def test_float32_fast_inference_logs_no_spurious_cast_warning(pipe):
    """diffusers' `ModelMixin.to(dtype)` warns about "modules that should be kept in float32: []" on every cast."""
    logger = logging.get_logger("diffusers.models.modeling_utils")
    with CaptureLogger(logger) as captured:
        pipe.enable_fast_inference(dtype=torch.float32)  # already float32: nothing to cast
        pipe.enable_fast_inference(dtype=torch.bfloat16)
        pipe.enable_fast_inference(dtype=torch.float32)  # cast back, without diffusers' warning
    assert "should be kept in float32" not in captured.out
    assert pipe.generator.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32


def test_explicit_float32_undoes_an_earlier_half_precision_call(pipe):
    pipe.enable_fast_inference(dtype=torch.bfloat16)
    assert pipe("a", generator=seeded(), output_type="latent").images.dtype == torch.bfloat16
    pipe.enable_fast_inference(dtype=torch.float32)
    assert pipe.generator.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    out = pipe("a", generator=seeded(), output_type="latent").images
    assert out.dtype == torch.float32
    pipe.disable_fast_inference()  # the default path on the same (float32, bf16-rounded) weights
    torch.testing.assert_close(out, pipe("a", generator=seeded(), output_type="latent").images, atol=1e-5, rtol=0)
