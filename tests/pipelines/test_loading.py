"""Save/load round trips: GALIPPipeline, DiffusionPipeline, a repo id in an offline HF cache, remote-code shim."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from galip_diffusers import GALIPGenerator, GALIPPipeline
from galip_diffusers.testing_utils import tiny_pipeline
from galip_diffusers.utils import dtype_kwargs

PROMPTS = ["a red circle", "a blue square"]


def sample(pipe, seed=0):
    return pipe(PROMPTS, num_images_per_prompt=2, generator=torch.Generator().manual_seed(seed), output_type="np").images


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("galip") / "tiny"
    pipe = tiny_pipeline(with_image_encoder=True)
    pipe.save_pretrained(folder)
    return folder, sample(pipe)


def test_saved_folder_layout_is_safetensors_and_hub_loadable(saved):
    folder, _ = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "GALIPPipeline"
    assert index["generator"] == ["diffusers", "GALIPGenerator"]  # a library diffusers' download step accepts
    assert index["text_encoder"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert index["scorer"] == [None, None]
    weights = [f for f in os.listdir(folder / "generator") if "pytorch_model" in f or f.endswith(".bin")]
    assert weights == ["diffusion_pytorch_model.safetensors"]
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    keys = load_file(folder / "generator" / "diffusion_pytorch_model.safetensors")
    assert any(k.startswith("vision_model.encoder.layers.") for k in keys)  # the frozen ViT travels with G


def test_roundtrip_through_galip_pipeline_is_bitwise_identical(saved):
    folder, expected = saved
    loaded = GALIPPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.image_encoder is not None and loaded.scorer is None
    assert np.array_equal(sample(loaded), expected)


def test_roundtrip_through_diffusion_pipeline_is_bitwise_identical(saved):
    folder, expected = saved
    loaded = DiffusionPipeline.from_pretrained(folder)
    assert type(loaded) is GALIPPipeline
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(sample(loaded), expected)


def test_resave_roundtrip(saved, tmp_path):
    folder, expected = saved
    GALIPPipeline.from_pretrained(folder).save_pretrained(tmp_path / "again")
    loaded = GALIPPipeline.from_pretrained(tmp_path / "again")
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(sample(loaded), expected)


def test_generator_loads_from_subfolder(saved):
    folder, _ = saved
    generator = GALIPGenerator.from_pretrained(folder, subfolder="generator")
    assert generator.config.z_dim == 8 and generator.config.output_size == 32


@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_loading_accepts_both_dtype_keywords(saved, key, dtype):
    folder, expected = saved
    loaded = GALIPPipeline.from_pretrained(folder, **{key: dtype})
    loaded.set_progress_bar_config(disable=True)
    assert loaded.generator.dtype == dtype and loaded.text_encoder.dtype == dtype
    if dtype == torch.bfloat16:  # fp16 matmuls on CPU are slow/unsupported in places; bf16 runs everywhere
        assert np.abs(sample(loaded) - expected).mean() < 0.05


def test_dtype_kwargs_matches_installed_diffusers():
    assert dtype_kwargs(None) == {}
    assert list(dtype_kwargs(torch.float16).values()) == [torch.float16]


def _run_offline(code, env_extra, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_load_by_repo_id_from_offline_hf_cache(saved, tmp_path):
    folder, expected = saved
    repo = tmp_path / "hub" / "models--someone--galip-tiny"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import numpy as np, torch, galip_diffusers\n"
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained('someone/galip-tiny')\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "out = pipe(['a red circle', 'a blue square'], num_images_per_prompt=2,"
        " generator=torch.Generator().manual_seed(0), output_type='np').images\n"
        "print(type(pipe).__name__, bool(np.array_equal(out, np.load('expected.npy'))))\n"
    )
    out = _run_offline(code, {"HF_HUB_CACHE": str(tmp_path / "hub")}, tmp_path)
    assert out.strip().splitlines()[-1] == "GALIPPipeline True"


def test_remote_code_shim_loads_without_importing_the_package_first(saved, tmp_path):
    folder, _ = saved
    code = (
        "import sys\n"
        "from diffusers import DiffusionPipeline\n"
        "assert 'galip_diffusers' not in sys.modules\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, custom_pipeline='pipeline_galip', trust_remote_code=True)\n"
        "print(type(pipe).__name__)\n"
    )
    out = _run_offline(code, {"HF_MODULES_CACHE": str(tmp_path / "modules")}, tmp_path)
    assert out.strip().splitlines()[-1] == "GALIPPipeline"


def test_missing_component_folder_is_named(saved, tmp_path):
    folder, _ = saved
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "generator")
    with pytest.raises(FileNotFoundError, match="generator"):
        GALIPPipeline.from_pretrained(broken)


def test_corrupt_weights_file_is_named(saved, tmp_path):
    folder, _ = saved
    broken = tmp_path / "corrupt"
    shutil.copytree(folder, broken)
    weights = broken / "generator" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
        GALIPPipeline.from_pretrained(broken)
    with pytest.raises(OSError, match="diffusion_pytorch_model.safetensors"):  # diffusers' own error names it too
        DiffusionPipeline.from_pretrained(broken)


def test_corrupt_config_and_missing_index_are_named(saved, tmp_path):
    folder, _ = saved
    broken = tmp_path / "badconfig"
    shutil.copytree(folder, broken)
    (broken / "text_encoder" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="text_encoder.*config.json"):
        GALIPPipeline.from_pretrained(broken)
    (broken / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        GALIPPipeline.from_pretrained(broken)


def test_unknown_packaged_name_passes_through_and_missing_packaged_model_is_explained(monkeypatch, tmp_path):
    import galip_core.runtime
    from galip_diffusers import pretrained

    monkeypatch.setattr(galip_core.runtime, "PACKAGED_MODELS", ("galip-shapes", "galip-missing"))
    with pytest.raises(FileNotFoundError, match="galip-missing.*is not part of this installation"):
        pretrained.resolve_pretrained("galip-missing")
    assert pretrained.resolve_pretrained("some/repo") == "some/repo"


@pytest.mark.parametrize("name", ["GALIPPipeline", "GALIPFuseDreamPipeline", "GALIPGenerator", "GALIPDiscriminator"])
def test_classes_are_registered_where_diffusers_tooling_looks(name):
    """``diffusers.<name>`` for loading, and the subpackage diffusers' own tooling reads: its ``ReturnNameVisitor``
    (used by the generic ``test_encode_prompt_works_in_isolation``) looks pipelines up in ``diffusers.pipelines`` and
    models in ``diffusers.models``."""
    import diffusers
    from diffusers.utils.source_code_parsing_utils import ReturnNameVisitor

    import galip_diffusers

    cls = getattr(galip_diffusers, name)
    assert getattr(diffusers, name) is cls
    assert getattr(diffusers.pipelines if "Pipeline" in name else diffusers.models, name) is cls
    if "Pipeline" in name:
        visitor = ReturnNameVisitor()
        visitor.visit(visitor.get_ast_tree(cls))
        assert visitor.return_names == ["prompt_embeds"]  # the name of the `__call__` argument it fills
