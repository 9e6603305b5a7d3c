"""A folder's files and a pipeline's components must fit together, in both engines (fourth audit): the weights checked
are those a load reads (a variant's, every shard), two sets of weights in one component folder are refused, the
tokenizer, text encoder and generator agree, and from_pipe neither casts nor keeps what no longer applies."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from galip_core.folder import FolderError
from galip_core.runtime import LitePipeline
from galip_diffusers import GALIPFuseDreamPipeline, GALIPPipeline
from galip_diffusers.pipelines import loading
from galip_diffusers.pretrained import PRETRAINED_MODELS
from galip_diffusers.testing_utils import (
    byte_level_clip_tokenizer, tiny_components, tiny_fusedream_pipeline, tiny_pipeline, tiny_text_encoder,
)

ENGINES = {"diffusers": GALIPPipeline.from_pretrained, "lite": LitePipeline.from_pretrained}
TEXT_WEIGHTS = "text_encoder/model.safetensors"


@pytest.fixture()
def folder(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


def _edit_json(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


# ------------------------------------------------------------------ finding 4: the weights a load reads
@pytest.mark.parametrize("component, name, key", [
    ("text_encoder", "model", "text_projection.weight"),
    ("generator", "diffusion_pytorch_model", "conv_out.weight"),
])  # fmt: skip
def test_a_tensor_missing_from_the_variant_that_loads_is_named(folder, component, name, key):
    from diffusers import DiffusionPipeline

    weights = load_file(str(folder / component / f"{name}.safetensors"))
    variant = {k: v.to(torch.bfloat16) for k, v in weights.items() if k != key}
    save_file(variant, str(folder / component / f"{name}.bf16.safetensors"), metadata={"format": "pt"})
    for load in (GALIPPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        with pytest.raises(ValueError, match=rf"{component}/{name}.bf16.safetensors.*{re.escape(key)}"):
            load(str(folder), variant="bf16", torch_dtype=torch.bfloat16)
    GALIPPipeline.from_pretrained(str(folder))  # the default weights are complete


def _shard(component_folder, name):
    """Split ``name.safetensors`` into two shards and an index, as a sharded save writes them."""
    weights = load_file(str(component_folder / f"{name}.safetensors"))
    keys = sorted(weights)
    halves = {f"{name}-00001-of-00002.safetensors": keys[: len(keys) // 2],
              f"{name}-00002-of-00002.safetensors": keys[len(keys) // 2:]}  # fmt: skip
    for shard, shard_keys in halves.items():
        save_file({k: weights[k] for k in shard_keys}, str(component_folder / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, ks in halves.items() for k in ks}}
    (component_folder / f"{name}.safetensors.index.json").write_text(json.dumps(index))
    (component_folder / f"{name}.safetensors").unlink()
    return halves


def test_a_sharded_checkpoint_is_checked_over_all_its_shards(folder):
    reference = GALIPPipeline.from_pretrained(str(folder)).encode_prompt(["a red circle"])
    halves = _shard(folder / "text_encoder", "model")
    torch.testing.assert_close(GALIPPipeline.from_pretrained(str(folder)).encode_prompt(["a red circle"]), reference,
                               rtol=0, atol=0)  # the union of the shards is complete: loads as before
    shard, keys = next((s, ks) for s, ks in halves.items() if "text_projection.weight" in ks)
    weights = load_file(str(folder / "text_encoder" / shard))
    weights.pop("text_projection.weight")
    save_file(weights, str(folder / "text_encoder" / shard), metadata={"format": "pt"})
    index_path = folder / "text_encoder" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"].pop("text_projection.weight")
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model.safetensors.index.json \(and its shards\)' lacks weights its "
                                         r"CLIPTextModelWithProjection needs \(text_projection.weight\)"):
        GALIPPipeline.from_pretrained(str(folder))


def test_a_bin_beside_safetensors_is_not_ambiguous_every_engine_reads_the_safetensors(folder):
    (folder / "text_encoder" / "pytorch_model.bin").write_bytes(b"not a pickle: a load that read it would fail")
    for load in ENGINES.values():
        assert load(str(folder)) is not None  # a Hub CLIP snapshot often holds both files


@pytest.mark.parametrize("extra", ["model.safetensors.index.json"], ids=["index"])
def test_two_sets_of_weights_in_one_component_folder_are_refused_by_both_engines(folder, extra):
    shutil.copy(folder / TEXT_WEIGHTS, folder / "text_encoder" / extra)
    errors = {}
    for engine, load in ENGINES.items():
        with pytest.raises(FolderError, match=r"text_encoder' holds two sets of default weights: "
                                              rf"{re.escape(', '.join(sorted(['model.safetensors', extra])))}") as info:
            load(str(folder))
        errors[engine] = str(info.value)
    assert errors["diffusers"] == errors["lite"]


def test_default_weights_missing_beside_a_variant_name_the_variant_in_both_engines(folder):
    for component, name in (("text_encoder", "model"), ("generator", "diffusion_pytorch_model")):
        (folder / component / f"{name}.safetensors").rename(folder / component / f"{name}.fp16.safetensors")
    for load in ENGINES.values():
        with pytest.raises(FileNotFoundError, match=r"has no default weights; it holds .*fp16.safetensors: load it "
                                                    r"with variant='fp16'"):
            load(str(folder))
    assert GALIPPipeline.from_pretrained(str(folder), variant="fp16").generator is not None


# ------------------------------------------------------------------ finding 5: tokenizer, text encoder, generator
FOLDER_MISMATCHES = {
    "foreign vocabulary": (lambda f: shutil.copytree(PRETRAINED_MODELS["galip-emoji"] + "/tokenizer", f / "tokenizer",
                                                     dirs_exist_ok=True),
                           r"tokenizer makes token ids up to 4131, but .*text_encoder/config.json has vocab_size 514"),
    "end-of-text id": (lambda f: _edit_json(f / "text_encoder" / "config.json", eos_token_id=512),
                       r"tokenizer's end-of-text token has id 513, but .*text_encoder/config.json has eos_token_id 512"),
    "model_max_length": (lambda f: _edit_json(f / "tokenizer" / "tokenizer_config.json", model_max_length=100),
                         r"tokenizer has model_max_length 100, but .*text_encoder/config.json has "
                         r"max_position_embeddings 77"),
    "projection_dim": (lambda f: tiny_text_encoder(projection_dim=32).save_pretrained(f / "text_encoder"),
                       r"text_encoder/config.json has projection_dim 32, but .*generator/config.json has cond_dim 16"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_MISMATCHES))
def test_both_engines_refuse_components_that_do_not_fit_naming_the_files(folder, case):
    change, message = FOLDER_MISMATCHES[case]
    change(folder)
    errors = {}
    for engine, load in ENGINES.items():
        with pytest.raises(FolderError, match=message) as info:
            load(str(folder))
        errors[engine] = str(info.value)
    assert errors["diffusers"] == errors["lite"]


def test_components_in_memory_that_do_not_fit_are_refused_naming_them():
    from transformers import CLIPTokenizer

    pipe = tiny_pipeline()
    emoji_tokenizer = CLIPTokenizer.from_pretrained(PRETRAINED_MODELS["galip-emoji"] + "/tokenizer")
    cases = [
        ({"tokenizer": emoji_tokenizer}, r"`tokenizer` \(.*galip-emoji/tokenizer\) makes token ids up to 4131, but "
                                         r"`text_encoder` has vocab_size 514"),
        ({"tokenizer": byte_level_clip_tokenizer(100)}, r"`tokenizer` has model_max_length 100, but `text_encoder` "
                                                        r"has max_position_embeddings 77"),
        ({"text_encoder": tiny_text_encoder(projection_dim=32)}, r"`text_encoder` has projection_dim 32, but "
                                                                 r"`generator` has cond_dim 16"),
    ]
    for change, message in cases:
        with pytest.raises(FolderError, match=message):
            GALIPPipeline.from_pipe(pipe, **change)
        with pytest.raises(FolderError, match=message):
            GALIPPipeline(**{**tiny_components(), **change})


def test_a_tokenizer_with_another_end_of_text_id_is_refused_not_one_embedding_for_every_prompt():
    emoji = GALIPPipeline.from_pretrained("galip-emoji")
    with pytest.raises(FolderError, match=r"`tokenizer`'s end-of-text token has id 513, but `text_encoder` "
                                          r"\(.*galip-emoji/text_encoder\) has eos_token_id 4131 \(pooled"):
        GALIPPipeline.from_pipe(emoji, tokenizer=byte_level_clip_tokenizer(32))


# ------------------------------------------------------------------ finding 7 and 11d: from_pipe
@pytest.mark.parametrize("cls, make", [(GALIPPipeline, tiny_pipeline), (GALIPFuseDreamPipeline, tiny_fusedream_pipeline)])
def test_from_pipe_keeps_the_dtypes_and_never_changes_the_original(cls, make, capfd):
    source = make().to(torch.bfloat16)
    capfd.readouterr()
    kept = cls.from_pipe(source)
    assert kept.generator is source.generator and kept.generator.dtype == kept.text_encoder.dtype == torch.bfloat16
    assert "should be kept in float32" not in capfd.readouterr().err
    cast = cls.from_pipe(source, dtype=torch.float32)
    assert cast.generator.dtype == cast.text_encoder.dtype == torch.float32
    assert source.generator.dtype == source.text_encoder.dtype == torch.bfloat16  # copies were cast
    assert "to" not in vars(kept)  # later casts work as usual
    kept.to(torch.float32)
    assert kept.generator.dtype == torch.float32


def test_from_pipe_drops_the_settings_when_the_generator_is_replaced(monkeypatch):
    from galip_diffusers.testing_utils import tiny_generator

    warnings = []
    monkeypatch.setattr(loading.logger, "warning", warnings.append)
    pipe = tiny_pipeline()
    pipe.settings = {"composition": {"layer": 4}, "sampling": {"truncation": 0.5}}
    assert GALIPPipeline.from_pipe(pipe).settings == pipe.settings and not warnings
    other = GALIPPipeline.from_pipe(pipe, generator=tiny_generator(seed=5))
    assert other.settings.is_empty()
    assert len(warnings) == 1 and "`generator` replaces the pipeline's generator" in warnings[0]
    kept = GALIPPipeline.from_pipe(pipe, generator=tiny_generator(seed=5), settings=pipe.settings)
    assert kept.settings == pipe.settings


# ------------------------------------------------------------------ finding 13: FuseDream without a scorer
def test_fusedream_without_a_scorer_says_what_is_missing_and_how_to_add_one(model_dir):
    from galip_diffusers.testing_utils import tiny_scorer

    with pytest.raises(ValueError, match=r"GALIPFuseDreamPipeline needs a `scorer` CLIP .* but .*model_index.json lists "
                                         r"none .* GALIPFuseDreamPipeline.from_pipe\(GALIPPipeline.from_pretrained"
                                         r"\(folder\), scorer=") as info:
        GALIPFuseDreamPipeline.from_pretrained(str(model_dir))
    assert "expected [" not in str(info.value)
    with pytest.raises(ValueError, match=r"needs a `scorer` CLIP .* the GALIPPipeline given has none.*from_pipe\(pipe, "
                                         r"scorer="):
        GALIPFuseDreamPipeline.from_pipe(tiny_pipeline())
    assert GALIPFuseDreamPipeline.from_pretrained(str(model_dir), scorer=tiny_scorer()).scorer is not None
