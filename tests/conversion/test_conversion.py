"""Tests of the official-checkpoint converter (``galip-convert``).

Inputs are built, not downloaded: official-format GALIP checkpoints with random values and exactly the released
key/shape layout (``tests/fixtures/*.tsv``), and CLIP models made with the ``clip`` package's own ``clip.model.CLIP``.
Numerical equivalence is checked against ``reference_galip.py``, an independent functional implementation of the
official forward passes written only from the facts of the official code, and against the ``clip`` package's ``encode_text``/``encode_image``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

from helpers import official_fixtures as fx  # noqa: E402
from helpers import reference_galip as ref  # noqa: E402
from helpers.conversion_helpers import TINY_GEOMETRY, TINY_KWARGS, transformers_clip_folder  # noqa: E402
from helpers.hub_helpers import hub  # noqa: E402,F401  (the fixture)
from diffusers import DiffusionPipeline  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

import galip_diffusers  # noqa: E402,F401  (registers the GALIP classes with diffusers)
from galip_diffusers import GALIPDiscriminator  # noqa: E402
from galip_diffusers.conversion import official as conversion  # noqa: E402
from galip_diffusers.conversion.openai_clip import (  # noqa: E402
    VIT_B_32,
    load_clip_source,
    text_encoder_from_openai,
)
from galip_diffusers.conversion.official import (  # noqa: E402
    ConversionError,
    convert_discriminator,
    convert_generator,
    convert_official_checkpoint,
    load_official_checkpoint,
)
from galip_cli.convert import main  # noqa: E402
from galip_diffusers.conversion.keys import KeyRule, map_state_dict, source_name, strip_prefix  # noqa: E402
from galip_diffusers.conversion.tokenizer import build_clip_tokenizer, clip_text_clean  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
ATOL = 1e-4

TRICKY_TEXTS = [
    "", "a", "A PHOTO OF A CAT", "  extra   spaces\tand\nnewlines  ", "Tab\tSeparated\tWords",
    "punctuation!!! ... ??? -- (parens) [brackets] {braces} @#$%^&*", "it's they're we've I'm you'll he'd can't",
    "numbers 1234567890 3.14159 1,000,000 2nd 3rd 1990s", "café naïve résumé Zürich Ünïcödé ÅÆØ ß",
    "cafe\u0301 with a combining accent", "東京の夜景 and a 🌃🚀 emoji", "<|endoftext|> in the middle",
    "hello-world_foo/bar\\baz", "A man riding a wave on top of a surfboard.", "x" * 300,
    " ".join(f"word{i}" for i in range(100)),
    "this bird has a long, pointed bill; its wings are brown & white, with a yellow crown " * 4,
]  # fmt: skip
#: Text that clip's own cleaning (ftfy, html.unescape, str.lower) changes: exact only after ``clip_text_clean``.
DIRTY_TEXTS = ["“curly quotes” and ‘single’", "Tom &amp; Jerry &lt;3", "ﬁne ﬂowers", "ＦＵＬＬＷＩＤＴＨ", "ΟΔΟΣ"]


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def simple_tokenizer():
    return fx.load_clip_module("simple_tokenizer").SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def tiny_converted(tiny_files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny_out") / "galip-tiny")
    return convert_official_checkpoint(*tiny_files, out, include_discriminator=True, **TINY_KWARGS)


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


# ------------------------------------------------------------------------------------------------ equivalence check
#: The equivalence check runs in float64, where the converted models and the reference agree to ~1e-15 (rounding):
#: a real mapping or config bug shows up far above this (a 10x LayerNorm eps in the generator's ViT moves its output
#: by ~1e-5, below float32's noise but 5 orders of magnitude above this).
F64_ATOL = 1e-10


def _float64(state):
    return {k: v.double() for k, v in state.items()}


def assert_matches_official(folder, nets, clip_model, sizes, simple_tokenizer, pipeline_call=True):
    """The converted folder reproduces the official text embeddings, G's images and D's logits (batch 2), to float64
    rounding: the converted models and the reference run in float64. The ``clip`` package's own model, whose
    LayerNorm computes in float32 whatever the input, is a cross-check to float32 precision (``ATOL``)."""
    pipe = DiffusionPipeline.from_pretrained(folder).to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    disc = GALIPDiscriminator.from_pretrained(folder, subfolder="discriminator").double()
    clip32, clip_model = clip_model, copy.deepcopy(clip_model).double()
    nets = {name: _float64(state) for name, state in nets.items()}
    captions = ["a small bird with a red head and a white belly", "A PHOTO of 2 dogs, playing in the snow!"]
    z = torch.randn(2, pipe.generator.config.z_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    openai_text = {k: v for k, v in clip_model.state_dict().items() if not k.startswith("visual.")}
    with torch.no_grad():
        clip_ids = fx.clip_tokenize(simple_tokenizer, captions)
        sent = pipe.encode_prompt(captions, torch.device("cpu"))
        ref_sent = ref.clip_text_embeds(openai_text, clip_ids, heads=sizes.text_heads)
        assert sent.dtype == torch.float64 and (sent - ref_sent).abs().max() <= F64_ATOL
        assert (sent.float() - clip32.encode_text(clip_ids)).abs().max() <= ATOL
        assert ref_sent.std() > 0.05 and (ref_sent[0] - ref_sent[1]).abs().max() > 0.05

        image = pipe.generator(z, sent)
        ref_image = ref.netg_forward(nets["netG"], z, ref_sent, sizes.vision_heads, sizes.output_size)
        assert image.shape == (2, 3, sizes.output_size, sizes.output_size)
        assert (image - ref_image).abs().max() <= F64_ATOL
        assert ref_image.std() > 0.05
        if pipeline_call:  # the whole pipeline, prompt to clamped image
            latents = pipe(prompt=captions, latents=z, output_type="latent").images
            assert (latents - ref_image.clamp(-1, 1)).abs().max() <= F64_ATOL

        images = ref_image.clamp(-1, 1)
        feats, image_embeds = disc.extract_features(pipe.image_encoder, images)
        logits = disc(feats, sent)
        vit = {**fx_vit(nets), "ln_post.weight": clip_model.visual.ln_post.weight,
               "ln_post.bias": clip_model.visual.ln_post.bias, "proj": clip_model.visual.proj}  # fmt: skip
        pixels = ref.official_clip_preprocess(images, sizes.clip["image_resolution"])
        ref_feats, ref_embeds = ref.clip_image_features(vit, pixels, sizes.feature_layers, sizes.vision_heads)
        ref_logits = ref.netc_forward(nets["netC"], ref.netd_forward(nets["netD"], ref_feats), ref_sent)
        assert (feats - ref_feats).abs().max() <= F64_ATOL
        assert (logits - ref_logits).abs().max() <= F64_ATOL
        assert logits.shape == (2,) and (ref_logits[0] - ref_logits[1]).abs() > 1e-3
        # The image encoder against the clip package's own visual tower (same ViT as the checkpoint here).
        assert (image_embeds - ref_embeds).abs().max() <= F64_ATOL
        encoded = pipe.image_encoder(pixel_values=pixels).image_embeds
        assert (encoded.float() - clip32.encode_image(pixels.float())).abs().max() <= ATOL
    return pipe, disc


def fx_vit(nets):
    return {k[len("mapping.CLIP_ViT.") :]: v for k, v in nets["netG"].items() if k.startswith("mapping.CLIP_ViT.")}


# ------------------------------------------------------------------------------------------- layout and key tables
def test_reference_shapes_are_the_released_layout():
    released = fx.read_shapes_tsv(os.path.join(DATA, "official_netG_state_dict.tsv"))
    released.update(fx.read_shapes_tsv(os.path.join(DATA, "official_netD_netC_state_dict.tsv")))
    assert ref.official_netg_shapes() == released["netG"]
    assert ref.official_netd_shapes() == released["netD"]
    assert ref.official_netc_shapes() == released["netC"]


def test_key_tables_cover_every_released_key():
    released = fx.read_shapes_tsv(os.path.join(DATA, "official_netG_state_dict.tsv"))
    released.update(fx.read_shapes_tsv(os.path.join(DATA, "official_netD_netC_state_dict.tsv")))
    nets = {net: strip_prefix({"module." + k: torch.zeros(s) for k, s in shapes.items()}) for net, shapes in released.items()}
    assert strip_prefix(nets["netG"]).keys() == nets["netG"].keys() == released["netG"].keys()
    generator = convert_generator(nets["netG"])
    frozen = sum(p.numel() for p in generator.vision_model.parameters())
    assert sum(p.numel() for p in generator.learnable_parameters()) == 51_830_211
    assert frozen == 87_454_464
    assert not any(p.is_meta for p in generator.parameters())
    disc = convert_discriminator(nets["netD"], nets["netC"])
    assert disc.blocks[0].conv_s is None and disc.main.conv_s is not None  # the two unused 768->768 conv_s dropped
    assert sum(p.numel() for p in disc.parameters()) == sum(math.prod(s) for s in released["netD"].values()) + sum(
        math.prod(s) for s in released["netC"].values()
    ) - 2 * (768 * 768 + 768)


def test_key_rules_map_both_ways():
    rules = [KeyRule("blk.{i}.attn.in_proj_{w}", "layers.{i}.{qkv}_proj.{w}", "split_qkv"),
             KeyRule("proj", "out.weight", "transpose")]  # fmt: skip
    qkv = torch.arange(12.0).view(6, 2)
    expected = {f"layers.3.{n}_proj.weight": torch.Size([2, 2]) for n in "qkv"} | {"out.weight": torch.Size([3, 2])}
    mapped = map_state_dict({"blk.3.attn.in_proj_weight": qkv, "proj": torch.zeros(2, 3)}, rules, expected, "t")
    assert torch.equal(mapped["layers.3.k_proj.weight"], qkv[2:4]) and mapped["out.weight"].shape == (3, 2)
    assert source_name("layers.3.v_proj.bias", rules) == "blk.3.attn.in_proj_bias"
    with pytest.raises(ConversionError, match=r"Missing keys: 'proj'.*Unexpected keys: 'junk'"):
        map_state_dict({"blk.3.attn.in_proj_weight": qkv, "junk": qkv}, rules, expected, "t")


# ------------------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_matches_clip_tokenize(tokenizer, simple_tokenizer):
    ours = tokenizer(TRICKY_TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    theirs = fx.clip_tokenize(simple_tokenizer, TRICKY_TEXTS)
    for text, a, b in zip(TRICKY_TEXTS, ours, theirs):
        end = int((b == 49407).nonzero()[-1]) + 1  # clip.tokenize pads with 0 after <|endoftext|>, we pad with it
        assert a[:end].tolist() == b[:end].tolist(), text
        assert (a[end:] == tokenizer.pad_token_id).all() and (b[end:] == 0).all()
    for text in TRICKY_TEXTS[:-3]:  # the unpadded, untruncated ids too
        assert tokenizer(text).input_ids == [49406, *simple_tokenizer.encode(text), 49407], text
    assert (theirs[-3:, -1] == 49407).all()  # the long ones were truncated, ending with <|endoftext|>


def test_clip_text_clean_gives_parity_on_text_clip_cleans(tokenizer, simple_tokenizer):
    clip_ids = [[49406, *simple_tokenizer.encode(t), 49407] for t in DIRTY_TEXTS]
    assert all(tokenizer(t).input_ids != ids for t, ids in zip(DIRTY_TEXTS, clip_ids))  # the documented difference
    assert [tokenizer(clip_text_clean(t)).input_ids for t in DIRTY_TEXTS] == clip_ids


def test_padding_id_does_not_change_text_embeds(tiny_clip, tokenizer, simple_tokenizer):
    text_encoder = text_encoder_from_openai(tiny_clip.state_dict(), TINY_GEOMETRY)
    texts = TRICKY_TEXTS[:6]
    ours = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    theirs = fx.clip_tokenize(simple_tokenizer, texts)
    with torch.no_grad():
        a, b = text_encoder(ours).text_embeds, text_encoder(theirs).text_embeds
        assert (a - b).abs().max() <= ATOL
        assert (a - tiny_clip.encode_text(theirs)).abs().max() <= ATOL


def test_saved_tokenizer_folder_has_vocab_and_merges(tiny_converted):
    folder = os.path.join(tiny_converted, "tokenizer")
    assert {"vocab.json", "merges.txt"} <= set(os.listdir(folder))
    legacy = os.path.join(os.path.dirname(tiny_converted), "tokenizer-files-only")
    shutil.copytree(folder, legacy)
    os.remove(os.path.join(legacy, "tokenizer.json"))
    text = TRICKY_TEXTS[8]
    assert CLIPTokenizer.from_pretrained(legacy)(text).input_ids == CLIPTokenizer.from_pretrained(folder)(text).input_ids


# ---------------------------------------------------------------------------------------------------- CLIP sources
def test_clip_formats_give_the_same_towers(tiny_clip, tiny_files, tmp_path):
    from safetensors.torch import save_file

    state = tiny_clip.state_dict()
    paths = {
        "torchscript": tiny_files[1],
        "state_dict": _save(state, tmp_path / "clip.pt"),
        "ddp_state_dict": _save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pt"),
        "transformers": transformers_clip_folder(tiny_clip, tmp_path / "hf"),
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "clip.safetensors"))
    paths["safetensors"] = str(tmp_path / "clip.safetensors")
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])
    with torch.no_grad():
        expected = tiny_clip.encode_text(ids)  # argmax finds the first <|endoftext|>
        for kind, path in paths.items():
            source = load_clip_source(path, TINY_GEOMETRY)
            assert (source.text_encoder(ids).text_embeds - expected).abs().max() <= ATOL, kind
            assert torch.allclose(source.vision_head["proj"], tiny_clip.visual.proj, atol=1e-6), kind
            assert torch.allclose(source.vision_head["ln_post.bias"], tiny_clip.visual.ln_post.bias), kind


def test_clip_of_the_wrong_size_is_rejected(tiny_files):
    with pytest.raises(ConversionError, match=r"not ViT-B/32: .*vision_width 128 \(expected 768\)"):
        load_clip_source(tiny_files[1], VIT_B_32)
    # end to end: the generator converts (its ViT is the checkpoint's), then the CLIP is refused
    generator_config = {**fx.TINY.generator_config, "vision_config": TINY_GEOMETRY.vision_config()}
    out = os.path.join(os.path.dirname(tiny_files[0]), "never-written")
    with pytest.raises(ConversionError, match="not ViT-B/32"):
        convert_official_checkpoint(*tiny_files, out, generator_config=generator_config)
    assert not os.path.exists(out)


def test_clip_that_is_not_a_vit_is_rejected(tiny_clip, tmp_path):
    state = {k: v for k, v in tiny_clip.state_dict().items() if k != "visual.proj"}
    with pytest.raises(ConversionError, match="not an OpenAI CLIP ViT state dict.*visual.proj"):
        load_clip_source(_save(state, tmp_path / "novit.pt"), TINY_GEOMETRY)


# ---------------------------------------------------------------------------------------------- tiny end to end
def test_tiny_conversion_matches_the_official_forward(tiny_converted, tiny_nets, tiny_clip, simple_tokenizer):
    _, disc = assert_matches_official(tiny_converted, tiny_nets, tiny_clip, fx.TINY, simple_tokenizer)
    assert disc.config.clip_preprocess == "official"
    index = json.load(open(os.path.join(tiny_converted, "model_index.json")))
    assert index["generator"] == ["diffusers", "GALIPGenerator"] and "discriminator" not in index


def _swap_q_and_k(folder):
    """Swap q/k in one ViT block of the generator."""
    pipe = DiffusionPipeline.from_pretrained(folder)
    attn = pipe.generator.vision_model.encoder.layers[1].self_attn
    with torch.no_grad():
        q = attn.q_proj.weight.clone()
        attn.q_proj.weight.copy_(attn.k_proj.weight)
        attn.k_proj.weight.copy_(q)
    pipe.generator.save_pretrained(os.path.join(folder, "generator"))


def _ten_times_layer_norm_eps(folder):
    """A 10x LayerNorm eps in the generator's ViT: it moves G's output by ~1e-5, which float32 tolerances miss."""
    path = os.path.join(folder, "generator", "config.json")
    config = json.load(open(path))
    config["vision_config"]["layer_norm_eps"] *= 10
    json.dump(config, open(path, "w"))


@pytest.mark.parametrize("mutate", [_swap_q_and_k, _ten_times_layer_norm_eps])
def test_the_equivalence_check_catches_mapping_bugs(mutate, tiny_converted, tiny_nets, tiny_clip, simple_tokenizer,
                                                    tmp_path):
    """A wrong weight or config in the converted folder: the reference comparison must fail."""
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny_converted, broken)
    mutate(broken)
    with pytest.raises(AssertionError):
        assert_matches_official(broken, tiny_nets, tiny_clip, fx.TINY, simple_tokenizer)


def test_model_card_names_source_and_license(tiny_converted, tiny_files):
    card = open(os.path.join(tiny_converted, "README.md"), encoding="utf-8").read()
    sha = hashlib.sha256(open(tiny_files[0], "rb").read()).hexdigest()
    assert "license: cc-by-nc-sa-4.0" in card and "library_name: diffusers" in card
    assert "pipeline_tag: text-to-image" in card and "CC BY-NC-SA 4.0" in card
    assert os.path.basename(tiny_files[0]) in card and sha in card and os.path.basename(tiny_files[1]) in card
    assert "`official`" in card and "`float32`" in card
    for section in ("## Usage", "## Training", "## Evaluation", "## Speed", "## Limitations", "## License"):
        assert section in card
    assert "Not measured; `galip benchmark --galip galip-tiny" in card  # not the official geometry: no reference row


def test_model_card_speed_measured_at_conversion_and_published_figures(tiny_files, tmp_path):
    ckpt = str(tmp_path / "pre_coco.pth")  # the official COCO checkpoint's name: its published figures are listed
    os.symlink(tiny_files[0], ckpt)
    out = convert_official_checkpoint(ckpt, tiny_files[1], tmp_path / "timed", measure_speed=True, **TINY_KWARGS)
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert "MS-COCO 2014" in card.text and "| FID (COCO val, 30k) | 5.01 | released checkpoint" in card.text
    assert "Measured at conversion" in card.text and "| float32, cpu | 1 |" in card.text
    assert "CPU: " in card.text and f"torch {torch.__version__}" in card.text  # the machine of the figures
    assert card.data.base_model is None  # tiny geometry: not OpenAI's ViT-B/32


def test_fp16_conversion_saves_a_variant_beside_the_fp32_weights(tiny_files, tmp_path):
    out = convert_official_checkpoint(*tiny_files, tmp_path / "fp16", dtype="fp16", **TINY_KWARGS)
    assert not os.path.exists(os.path.join(out, "discriminator"))
    for component, name in [("generator", "diffusion_pytorch_model"), ("text_encoder", "model"), ("image_encoder", "model")]:
        for suffix, dtype in ((".safetensors", "F32"), (".fp16.safetensors", "F16")):
            with safe_open(os.path.join(out, component, name + suffix), framework="pt") as f:
                assert {f.get_slice(k).get_dtype() for k in f.keys()} == {dtype}, (component, suffix)
    half = DiffusionPipeline.from_pretrained(out, variant="fp16", torch_dtype=torch.float16)
    full = DiffusionPipeline.from_pretrained(out)
    assert half.generator.dtype == torch.float16 and full.generator.dtype == torch.float32
    for a, b in zip(half.generator.parameters(), full.generator.parameters()):
        torch.testing.assert_close(a, b.half())
    assert "float32, plus a fp16 variant" in open(os.path.join(out, "README.md")).read()
    assert DiffusionPipeline.from_pretrained(out, torch_dtype=torch.bfloat16).generator.dtype == torch.bfloat16


def test_cli_push_to_hub_uploads_weights_variant_card_and_settings(tiny_files, tiny_cli, tmp_path, hub, capsys):
    from galip_core.settings import SETTINGS_NAME, GALIPSettings

    out = tmp_path / "converted"
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(out), "--dtype", "fp16",
                 "--push_to_hub", "--hub_model_id", "me/galip-tiny", "--private", "--quiet"]) == 0
    assert {"README.md", SETTINGS_NAME, "model_index.json", "generator/diffusion_pytorch_model.safetensors",
            "generator/diffusion_pytorch_model.fp16.safetensors"} <= set(hub.files("me/galip-tiny"))
    assert hub.repos["me/galip-tiny"]["private"] is True
    pipe = DiffusionPipeline.from_pretrained(os.path.join(hub.root, "me/galip-tiny"), variant="fp16",
                                             torch_dtype=torch.float16)
    assert pipe.generator.dtype == torch.float16
    assert "built-in defaults" in GALIPSettings.from_folder(str(out)).notes["_comment"]


def test_cli_push_that_fails_keeps_the_folder_and_says_how_to_upload_it(tiny_files, tiny_cli, tmp_path, hub, capsys):
    hub.fail_with = ("create_repo", RuntimeError("401 Unauthorized: invalid token"))
    out = tmp_path / "converted"
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(out),
                 "--push_to_hub", "--hub_model_id", "me/galip-tiny", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("galip-convert: error: pushing ") and len(err.splitlines()) == 1
    assert "'me/galip-tiny' failed (RuntimeError: 401 Unauthorized: invalid token)" in err
    assert f"`hf upload me/galip-tiny {out} --exclude 'step_*' " in err
    assert DiffusionPipeline.from_pretrained(str(out)).generator is not None  # the converted folder is whole


# -------------------------------------------------------------------------------------------- errors and safety
def test_cli_help_lists_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "galip-convert --checkpoint pre_coco.pth --clip ViT-B-32.pt" in capsys.readouterr().out


def test_cli_rejects_a_file_that_is_not_a_galip_checkpoint(tiny_files, tmp_path, capsys):
    bad = _save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    out = tmp_path / "out"
    assert main(["--checkpoint", bad, "--clip", tiny_files[1], "--output_dir", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not a GALIP checkpoint" in err and "'netG'" in err and "state_dict" in err
    assert not out.exists() and os.listdir(tmp_path) == ["other.pth"]
    with pytest.raises(ConversionError):  # --debug shows the traceback (re-raises)
        main(["--checkpoint", bad, "--clip", tiny_files[1], "--output_dir", str(out), "--debug", "--quiet"])


def test_swapped_inputs_are_explained(tiny_files, tmp_path):
    ckpt, clip_file = tiny_files
    with pytest.raises(ConversionError, match="TorchScript archive.*did you swap --checkpoint and --clip"):
        convert_official_checkpoint(clip_file, ckpt, tmp_path / "out", **TINY_KWARGS)
    with pytest.raises(ConversionError, match="did you swap --checkpoint and --clip"):
        load_clip_source(ckpt, TINY_GEOMETRY)
    assert os.listdir(tmp_path) == []


def test_missing_and_unexpected_keys_are_named(tiny_nets):
    netg = dict(tiny_nets["netG"])
    netg["GBlocks.1.c9.weight"] = netg.pop("GBlocks.1.c2.weight")
    del netg["mapping.CLIP_ViT.transformer.resblocks.2.attn.in_proj_bias"]
    with pytest.raises(ConversionError) as info:
        convert_generator(netg, TINY_GEOMETRY, fx.TINY.generator_config)
    message = str(info.value)
    assert "Missing keys: 'GBlocks.1.c2.weight', 'mapping.CLIP_ViT.transformer.resblocks.2.attn.in_proj_bias'" in message
    assert "Unexpected keys: 'GBlocks.1.c9.weight'" in message
    netd = {**tiny_nets["netD"], "DBlocks.0.extra": torch.zeros(1)}
    with pytest.raises(ConversionError, match="Unexpected keys: 'netD.DBlocks.0.extra'"):
        convert_discriminator(netd, tiny_nets["netC"], config=fx.TINY.discriminator_config)


def test_shape_mismatch_names_key_and_shapes(tiny_nets):
    netg = {**tiny_nets["netG"], "to_rgb.1.weight": torch.zeros(3, 5, 3, 3)}
    with pytest.raises(ConversionError, match=r"'to_rgb.1.weight' \(-> 'conv_out.weight'\): the file has \(3, 5, 3, 3\), "
                                              r"the model expects \(3, 4, 3, 3\)"):  # fmt: skip
        convert_generator(netg, TINY_GEOMETRY, fx.TINY.generator_config)


def test_pickled_objects_are_refused_unless_unsafe_pickle(tiny_nets, tiny_files, tmp_path):
    checkpoint = {**fx.official_checkpoint(tiny_nets, ddp=False), "args": argparse.Namespace(lr=1e-4)}
    path = _save(checkpoint, tmp_path / "with-args.pth")
    with pytest.raises(ConversionError, match=r"is a pickle that torch.load\(weights_only=True\) refuses: it holds "
                                              r"argparse.Namespace, .*--unsafe_pickle"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "a", **TINY_KWARGS)
    assert not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match="weights_only=False"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "b", unsafe_pickle=True, **TINY_KWARGS)
    assert (tmp_path / "b" / "model_index.json").is_file()


def test_broken_files_are_not_pytorch_checkpoints_and_get_no_pickle_advice(tiny_nets, tiny_files, tmp_path):
    whole = open(_save(fx.official_checkpoint(tiny_nets, ddp=False), tmp_path / "whole.pth"), "rb").read()
    legacy = tmp_path / "legacy.pth"
    torch.save({"args": argparse.Namespace(lr=1)}, legacy, _use_new_zipfile_serialization=False)
    broken = {"empty.pth": b"", "truncated.pth": whole[: len(whole) // 2], "text.pth": b"model weights, honest\n",
              "truncated-legacy.pth": legacy.read_bytes()[:40]}
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        for unsafe in (False, True):  # --unsafe-pickle does not make a broken file loadable either
            with pytest.raises(ConversionError) as info:
                convert_official_checkpoint(tmp_path / name, tiny_files[1], tmp_path / "out", unsafe_pickle=unsafe,
                                            **TINY_KWARGS)
            message = str(info.value)
            assert f"{name}' is not a PyTorch checkpoint (" in message and "unsafe" not in message, message
    with pytest.raises(ConversionError, match=r"empty.pth' is not a PyTorch checkpoint \(it is empty\)"):
        load_official_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(ConversionError, match=r"legacy.pth' is a pickle .* it holds argparse.Namespace"):
        load_official_checkpoint(legacy)  # the pre-zip torch.save format: still a real pickle, named as one
    assert not (tmp_path / "out").exists()


def test_existing_output_dir_needs_overwrite(tiny_files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="exists and is not empty; pass --overwrite"):
        convert_official_checkpoint(*tiny_files, out, **TINY_KWARGS)
    assert os.listdir(out) == ["keep.txt"]
    convert_official_checkpoint(*tiny_files, out, overwrite=True, **TINY_KWARGS)
    assert not (out / "keep.txt").exists() and (out / "model_index.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folders left behind
    monkeypatch.chdir(out)
    with pytest.raises(ConversionError, match="refusing to use"):
        convert_official_checkpoint(*tiny_files, ".", overwrite=True, **TINY_KWARGS)
    empty = tmp_path / "empty"
    empty.mkdir()
    convert_official_checkpoint(*tiny_files, empty, **TINY_KWARGS)  # an empty folder is fine
    assert (empty / "model_index.json").is_file()


def test_a_file_written_into_the_output_folder_during_the_conversion_is_never_deleted(tiny_files, tmp_path,
                                                                                      monkeypatch):
    from galip_core import swap  # the swap of the conversion (galip_diffusers.conversion.commit)

    out = tmp_path / "out"
    out.mkdir()
    (out / "old-model.txt").write_text("the old model")
    real_check = conversion.check_pipeline_folder

    def check_and_meddle(folder):  # the last step before the swap: someone saves a file into --output_dir
        real_check(folder)
        (out / "written-meanwhile.txt").write_text("not the converter's")

    monkeypatch.setattr(conversion, "check_pipeline_folder", check_and_meddle)
    with pytest.raises(ConversionError, match=r"changed during the conversion \(new written-meanwhile.txt\); nothing "
                                              r"was replaced or deleted"):
        convert_official_checkpoint(*tiny_files, out, overwrite=True, **TINY_KWARGS)
    assert sorted(os.listdir(out)) == ["old-model.txt", "written-meanwhile.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no hidden folder left, the old model only where it was
    # a change in the instant between the re-check and the exchange: swapped back, nothing deleted
    monkeypatch.setattr(conversion, "check_pipeline_folder", real_check)
    real_snapshot, calls = swap.snapshot, []

    def late_write(folder):
        found = real_snapshot(folder)
        # the re-check of --output_dir at the swap (not the pipeline's own save into the conversion's folder): the
        # write lands right after it
        if os.path.abspath(folder) == str(out) and not calls:
            calls.append(folder)
            (out / "late.txt").write_text("also not the converter's")
        return found

    monkeypatch.setattr(swap, "snapshot", late_write)
    with pytest.raises(ConversionError, match=r"changed during the conversion \(new late.txt\)"):
        convert_official_checkpoint(*tiny_files, out, overwrite=True, **TINY_KWARGS)
    assert sorted(os.listdir(out)) == ["late.txt", "old-model.txt", "written-meanwhile.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_leftovers_of_a_killed_conversion_are_cleaned_up_at_the_next_run(tiny_files, tmp_path, caplog):
    from galip_diffusers.conversion.commit import clean_stale

    out = tmp_path / "model"
    stale = tmp_path / ".model.tmp-999999999-abc"  # a process id that is not running
    (stale / "generator").mkdir(parents=True)
    legacy_tmp = tmp_path / ".model.tmp-xyz"  # written before the process id was part of the name
    legacy_tmp.mkdir()
    old = tmp_path / ".model.old-q1"  # killed between moving the old model aside and moving the new one in
    old.mkdir()
    (old / "model_index.json").write_text("{}")
    with caplog.at_level("WARNING"):
        messages = clean_stale(str(out))
    assert sorted(os.listdir(tmp_path)) == ["model"] and (out / "model_index.json").read_text() == "{}"
    assert any("Restored" in m and ".model.old-q1" in m for m in messages)
    assert sum("Removed" in m and "interrupted conversion" in m for m in messages) == 2
    assert "unfinished folder of an interrupted conversion" in caplog.text
    live = tmp_path / f".model.tmp-{os.getppid()}-abc"  # a running process's conversion is left alone
    live.mkdir()
    assert "still running" in clean_stale(str(out))[0] and live.is_dir()
    live.rmdir()
    stale.mkdir()
    convert_official_checkpoint(*tiny_files, out, overwrite=True, **TINY_KWARGS)  # the converter cleans up first
    assert sorted(os.listdir(tmp_path)) == ["model"] and (out / "model_index.json").is_file()


def test_nothing_is_written_when_a_late_step_fails(tiny_files, tmp_path, monkeypatch):
    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(conversion, "write_model_card", broken_card)
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(OSError, match="disk full"):
        convert_official_checkpoint(*tiny_files, out, **TINY_KWARGS)
    assert os.listdir(tmp_path) == []  # not even the parent folders it had to create
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(OSError, match="disk full"):
        convert_official_checkpoint(*tiny_files, existing, overwrite=True, **TINY_KWARGS)
    assert os.listdir(existing) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["existing"]


def test_discriminator_requested_but_absent(tiny_nets, tiny_files, tmp_path):
    path = _save({"model": {"netG": tiny_nets["netG"]}}, tmp_path / "g-only.pth")
    with pytest.raises(ConversionError, match="--include_discriminator: the checkpoint has no netD/netC"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "out", include_discriminator=True, **TINY_KWARGS)


# ------------------------------------------------------------------------------------------------------ full size
@pytest.mark.slow
def test_full_size_conversion_matches_the_official_forward(tmp_path, simple_tokenizer, capsys):
    """The released geometry end to end: CLI on a DDP checkpoint built from the released key/shape list."""
    clip_model = fx.make_openai_clip(fx.FULL, seed=3)
    released = fx.read_shapes_tsv(os.path.join(DATA, "official_netG_state_dict.tsv"))["netG"]
    nets = fx.make_official_nets(clip_model, fx.FULL, seed=4, netg_shapes=released)
    ckpt = _save(fx.official_checkpoint(nets, ddp=True), tmp_path / "pre_random.pth")
    clip_file = _save(clip_model.state_dict(), tmp_path / "ViT-B-32-random.pt")
    out = str(tmp_path / "galip-full")
    argv = ["--checkpoint", ckpt, "--clip", clip_file, "--output_dir", out, "--include_discriminator", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    pipe, disc = assert_matches_official(out, nets, clip_model, fx.FULL, simple_tokenizer, pipeline_call=False)
    assert sum(p.numel() for p in pipe.generator.parameters()) == 51_830_211 + 87_454_464
    assert pipe.generator.config.output_size == 224 and disc.config.grid_size == 7
