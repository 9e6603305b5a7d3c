"""Unusual but possible inputs to the converter (audit s13): each is converted correctly or refused with an error that
names the flag, before anything is written, and never turned silently into a wrong folder."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from helpers import official_fixtures as fx
from helpers.conversion_helpers import TINY_GEOMETRY, TINY_KWARGS, transformers_clip_folder
from helpers.hub_helpers import hub  # noqa: F401  (the fixture)

import galip_diffusers  # noqa: F401  (registers the GALIP classes with diffusers)
from galip_cli.convert import main
from galip_diffusers.conversion import official as conversion
from galip_diffusers.conversion.keys import KeyRule, map_state_dict, strip_prefix
from galip_diffusers.conversion.official import ConversionError, convert_official_checkpoint, load_official_checkpoint
from galip_diffusers.conversion.openai_clip import load_clip_source, load_openai_state_dict


def _checkpoint(nets, path, net="netG", **changes):
    """The official layout of ``nets`` (no DDP prefix) with ``changes`` to one net (``None``: the entry removed)."""
    nets = {k: dict(v) for k, v in nets.items()}
    for key, value in changes.items():
        nets[net].pop(key) if value is None else nets[net].__setitem__(key, value)
    torch.save(fx.official_checkpoint(nets, ddp=False), path)
    return str(path)


def _no_reading(monkeypatch):
    """Fail the test if the conversion gets as far as reading the checkpoint."""
    monkeypatch.setattr(conversion, "load_official_checkpoint", lambda *a: pytest.fail("read the checkpoint"))


# ------------------------------------------------------------------------------------------------- --clip sources
def test_a_clip_folder_with_one_tower_or_missing_weights_is_refused(tiny_clip, tmp_path):
    """transformers fills a tower that the folder lacks with random weights: the text embeddings would be noise."""
    vision = tmp_path / "vision-only"
    CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_GEOMETRY.vision_config())).save_pretrained(vision)
    with pytest.raises(ConversionError, match=r"--clip: .*vision-only' holds a transformers 'clip_vision_model' "
                                              r"model, not a whole CLIPModel .* Pass a CLIPModel folder"):
        load_clip_source(vision, TINY_GEOMETRY)
    text = tmp_path / "text-only"
    CLIPTextModelWithProjection(CLIPTextConfig(**TINY_GEOMETRY.text_config())).save_pretrained(text)
    with pytest.raises(ConversionError, match=r"'clip_text_model' model, not a whole CLIPModel"):
        load_clip_source(text, TINY_GEOMETRY)
    # a CLIPModel folder whose weights file lacks the text tower
    folder = transformers_clip_folder(tiny_clip, tmp_path / "no-text")
    weights = os.path.join(folder, "model.safetensors")
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("text_model.")}, weights)
    with pytest.raises(ConversionError, match=r"--clip: the CLIPModel in .*no-text' has no weights for \d+ "
                                              r"parameter\(s\), e\.g\. 'text_model\."):
        load_clip_source(folder, TINY_GEOMETRY)


def test_the_clip_vision_head_is_checked_under_its_clip_names(tiny_clip, tmp_path):
    state = tiny_clip.state_dict()

    def load(name, **changes):
        path = tmp_path / name
        torch.save({k: changes.get(k, v) for k, v in state.items() if changes.get(k, v) is not None}, path)
        return load_clip_source(path, TINY_GEOMETRY)

    with pytest.raises(ConversionError, match=r"--clip: 'no-ln.pt' is not an OpenAI CLIP ViT state dict: missing "
                                              r"\['visual.ln_post.bias'\]"):
        load("no-ln.pt", **{"visual.ln_post.bias": None})
    with pytest.raises(ConversionError, match=r"--clip: shape mismatch for 'visual.proj' .* the file has \(16, 128\)"):
        load("proj-t.pt", **{"visual.proj": state["visual.proj"].t()})
    with pytest.raises(ConversionError, match=r"--clip: 'visual.proj' has dtype torch.int64"):
        load("proj-int.pt", **{"visual.proj": state["visual.proj"].long()})
    with pytest.raises(ConversionError, match=r"--clip: 'visual.proj' holds values up to 1e\+300, beyond float32's "
                                              r"range"):
        load("proj-huge.pt", **{"visual.proj": torch.full_like(state["visual.proj"], -1e300, dtype=torch.float64)})


def test_reading_openais_torchscript_file_gives_no_torch_jit_deprecation_warning(tiny_files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        state = load_openai_state_dict(tiny_files[1])
    assert "visual.proj" in state


# ------------------------------------------------------------------------------------------------ --checkpoint
def test_float64_weights_beyond_float32s_range_are_refused(tiny_nets, tiny_files, tmp_path):
    huge = torch.full_like(tiny_nets["netG"]["fc_code.bias"], 1e300, dtype=torch.float64)
    path = _checkpoint(tiny_nets, tmp_path / "f64.pth", **{"fc_code.bias": huge})
    with pytest.raises(ConversionError, match=r"--checkpoint netG: 'fc_code.bias' holds values up to 1e\+300, beyond "
                                              r"float32's range \(3.403e\+38\)"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "out", **TINY_KWARGS)
    assert not (tmp_path / "out").exists()
    # float64 within range maps (to float32 later, in the model)
    rules = [KeyRule("w", "w")]
    mapped = map_state_dict({"w": torch.full((2,), 1e30, dtype=torch.float64)}, rules, {"w": torch.Size([2])}, "t")
    assert mapped["w"].dtype == torch.float64


def test_module_and_plain_copies_of_a_key_are_refused(tiny_nets, tmp_path):
    nets = {k: {f"module.{n}": t for n, t in v.items()} for k, v in tiny_nets.items()}
    nets["netG"]["fc_code.weight"] = torch.zeros_like(tiny_nets["netG"]["fc_code.weight"])
    path = tmp_path / "mixed.pth"
    torch.save({"model": nets}, path)
    with pytest.raises(ConversionError, match=r"--checkpoint netG: both 'module.fc_code.weight' and 'fc_code.weight' "
                                              r"are present"):
        load_official_checkpoint(path)
    with pytest.raises(ConversionError, match=r"--clip: the key 3 is int, not a parameter name"):
        strip_prefix({3: torch.zeros(1)}, what="--clip")


def test_a_generator_only_checkpoint_with_netd_none_converts(tiny_nets, tiny_files, tmp_path):
    nets = {"netG": tiny_nets["netG"], "netD": None, "netC": []}
    path = tmp_path / "slim.pth"
    torch.save({"model": nets}, path)
    with pytest.raises(ConversionError, match=r"--include_discriminator: the checkpoint's 'netD' is NoneType, not a "
                                              r"state dict"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "d", include_discriminator=True, **TINY_KWARGS)
    out = convert_official_checkpoint(path, tiny_files[1], tmp_path / "g", **TINY_KWARGS)
    assert DiffusionPipeline.from_pretrained(out).generator is not None
    assert sorted(os.listdir(tmp_path)) == ["g", "slim.pth"]


def test_tied_tensors_in_the_checkpoint_convert(tiny_nets, tiny_files, tmp_path):
    """Two keys holding one tensor (safetensors refuses to save shared memory): each gets its own copy."""
    nets = {k: dict(v) for k, v in tiny_nets.items()}
    nets["netG"]["GBlocks.0.c2.bias"] = nets["netG"]["GBlocks.0.c1.bias"]
    path = tmp_path / "tied.pth"
    torch.save(fx.official_checkpoint(nets, ddp=False), path)
    out = convert_official_checkpoint(path, tiny_files[1], tmp_path / "out", **TINY_KWARGS)
    block = DiffusionPipeline.from_pretrained(out).generator.blocks[0]
    assert torch.equal(block.conv1.bias, block.conv2.bias)
    assert torch.equal(block.conv2.bias, tiny_nets["netG"]["GBlocks.0.c1.bias"])


def test_inputs_that_are_not_regular_files_are_called_that(tiny_files, tmp_path, monkeypatch):
    _no_reading(monkeypatch)
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    for flag, args in (("--checkpoint", (os.devnull, tiny_files[1])), ("--checkpoint", (fifo, tiny_files[1])),
                       ("--clip", (tiny_files[0], os.devnull))):  # fmt: skip
        with pytest.raises(ConversionError, match=rf"{flag}: '.*' is not a regular file \(a device, pipe or socket\)"):
            convert_official_checkpoint(*args, tmp_path / "out", **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"--bpe: '/dev/null' is not a regular file"):
        convert_official_checkpoint(*tiny_files, tmp_path / "out", bpe_path=os.devnull, **TINY_KWARGS)
    assert os.listdir(tmp_path) == ["pipe"]


# ------------------------------------------------------------------------------------------------ Python options
@pytest.mark.parametrize("flag", ["overwrite", "unsafe_pickle", "include_discriminator", "measure_speed"])
def test_on_off_options_must_be_real_booleans(flag, tiny_files, tmp_path, monkeypatch):
    """``overwrite="no"`` is truthy: it used to replace the folder."""
    _no_reading(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(TypeError, match=rf"`{flag}` \(--{flag}\) must be True or False, got 'no'"):
        convert_official_checkpoint(*tiny_files, out, **{flag: "no"}, **TINY_KWARGS)
    assert os.listdir(out) == ["my_notes.txt"]


def test_clip_preprocess_needs_the_discriminator(tiny_files, tmp_path, capsys, monkeypatch):
    _no_reading(monkeypatch)
    with pytest.raises(ConversionError, match=r"--clip_preprocess .* needs --include_discriminator"):
        convert_official_checkpoint(*tiny_files, tmp_path / "o", clip_preprocess="standard", **TINY_KWARGS)
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(tmp_path / "o"),
              "--clip_preprocess", "official"])
    assert exit_info.value.code == 2
    assert "--clip_preprocess needs --include_discriminator" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------- --output_dir
def test_a_symlinked_output_dir_receives_the_model_and_stays_a_link(tiny_files, tmp_path):
    """As diffusers' save_pretrained: the model goes into the linked folder (on its disk), the link is kept."""
    (tmp_path / "bigdisk" / "models").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    link = tmp_path / "home" / "galip-coco"
    link.symlink_to(tmp_path / "bigdisk" / "models")
    out = convert_official_checkpoint(*tiny_files, link, **TINY_KWARGS)
    assert out == os.path.realpath(tmp_path / "bigdisk" / "models")
    assert os.listdir(tmp_path / "home") == ["galip-coco"] and link.is_symlink()
    assert (tmp_path / "bigdisk" / "models" / "model_index.json").is_file()
    assert os.listdir(tmp_path / "bigdisk") == ["models"]
    assert 'from_pretrained("galip-coco")' in (link / "README.md").read_text()  # the name the user loads it by
    # --overwrite replaces the linked folder's contents, the link stays
    (link / "old.txt").write_text("the old model")
    convert_official_checkpoint(*tiny_files, link, overwrite=True, **TINY_KWARGS)
    assert link.is_symlink() and not (link / "old.txt").exists() and (link / "model_index.json").is_file()
    assert os.listdir(tmp_path / "home") == ["galip-coco"] and os.listdir(tmp_path / "bigdisk") == ["models"]


def test_a_dangling_symlink_output_dir_is_refused_before_the_work(tiny_files, tmp_path, monkeypatch):
    _no_reading(monkeypatch)
    dangling = tmp_path / "dangle"
    dangling.symlink_to(tmp_path / "nowhere")
    for path in (dangling, dangling / "sub"):
        with pytest.raises(ConversionError, match=r"--output_dir: '.*dangle' is a symbolic link to '.*nowhere', "
                                                  r"which does not exist"):
            convert_official_checkpoint(*tiny_files, path, **TINY_KWARGS)
    assert os.listdir(tmp_path) == ["dangle"]


# ---------------------------------------------------------------------------------------------------- the CLI's push
def test_the_pushed_card_loads_the_hub_repository(tiny_files, tiny_cli, tmp_path, hub, monkeypatch):
    out = tmp_path / "galip-coco"
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(out), "--push_to_hub",
                 "--hub_model_id", "me/galip-coco-converted", "--quiet"]) == 0
    card = open(os.path.join(hub.root, "me/galip-coco-converted", "README.md"), encoding="utf-8").read()
    assert 'from_pretrained("me/galip-coco-converted")' in card and "--model me/galip-coco-converted" in card
    assert 'from_pretrained("galip-coco")' not in card
    # without an owner, the repository is the logged-in user's, and the card says so
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "whoami", lambda token=None: {"name": "someone"})
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(tmp_path / "bare"),
                 "--push_to_hub", "--quiet"]) == 0
    assert 'from_pretrained("someone/bare")' in open(os.path.join(hub.root, "someone/bare", "README.md")).read()


def test_an_unknown_hub_user_stops_before_the_conversion(tiny_files, tiny_cli, tmp_path, hub, monkeypatch, capsys):
    import huggingface_hub

    def not_logged_in(token=None):
        raise OSError("not logged in")

    monkeypatch.setattr(huggingface_hub, "whoami", not_logged_in)
    _no_reading(monkeypatch)
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(tmp_path / "o"),
                 "--push_to_hub", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--push_to_hub: cannot find out which Hub user the repository 'o' belongs to" in err
    assert "--hub_model_id OWNER/NAME" in err and os.listdir(tmp_path) == []


def test_ctrl_c_during_the_upload_says_the_folder_is_complete(tiny_files, tiny_cli, tmp_path, monkeypatch, capsys):
    import galip_cli.convert

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(galip_cli.convert, "push_folder_to_hub", interrupted)
    out = tmp_path / "o1"
    assert main(["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(out), "--push_to_hub",
                 "--hub_model_id", "me/x", "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was written" not in err
    assert err.startswith("galip-convert: interrupted: pushing ") and "The local folder is complete" in err
    assert f"`hf upload me/x {out} --exclude" in err
    assert DiffusionPipeline.from_pretrained(str(out)).generator is not None
