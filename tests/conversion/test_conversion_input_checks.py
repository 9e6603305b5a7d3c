"""Bad input to the converter: refused with an error naming the argument, before anything is written or lost."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import official_fixtures as fx  # noqa: E402
from helpers.conversion_helpers import TINY_KWARGS, transformers_clip_folder  # noqa: E402

from galip_cli.convert import main  # noqa: E402
from galip_diffusers.conversion import official as conversion  # noqa: E402
from galip_diffusers.conversion.official import ConversionError, convert_official_checkpoint  # noqa: E402
from galip_diffusers.conversion.tokenizer import find_clip_bpe_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _listing(folder):
    return {os.path.relpath(os.path.join(root, name), folder): os.path.getsize(os.path.join(root, name))
            for root, _, files in os.walk(folder) for name in files}  # fmt: skip


def _checkpoint(tiny_nets, tmp_path, name, net="netG", **changes):
    nets = {k: dict(v) for k, v in tiny_nets.items()}
    nets[net].update(changes)
    path = tmp_path / name
    torch.save(fx.official_checkpoint(nets, ddp=False), path)
    return str(path)


def test_an_input_is_never_the_output_folder_or_inside_it(tiny_clip, tiny_files, tmp_path):
    """``--clip DIR --output_dir DIR --overwrite`` used to replace the CLIP folder with the pipeline."""
    clip_dir = transformers_clip_folder(tiny_clip, tmp_path / "hfclip")
    before = _listing(clip_dir)
    for overwrite in (False, True):
        with pytest.raises(ConversionError, match=r"--output_dir: .*hfclip' is the --clip input .*hfclip'"):
            convert_official_checkpoint(tiny_files[0], clip_dir, clip_dir, overwrite=overwrite, **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"--output_dir: .* is inside the --clip folder"):
        convert_official_checkpoint(tiny_files[0], clip_dir, os.path.join(clip_dir, "galip"), **TINY_KWARGS)
    assert _listing(clip_dir) == before
    # --bpe, and --checkpoint as before, may not live in the folder that the converted one replaces
    out = tmp_path / "out"
    out.mkdir()
    bpe = shutil.copy(find_clip_bpe_file(), out / "bpe.txt.gz")
    with pytest.raises(ConversionError, match=r"--output_dir: .*out' contains the --bpe input"):
        convert_official_checkpoint(*tiny_files, out, overwrite=True, bpe_path=bpe, **TINY_KWARGS)
    ckpt = shutil.copy(tiny_files[0], out / "ckpt.pth")
    with pytest.raises(ConversionError, match=r"contains the --checkpoint input"):
        convert_official_checkpoint(ckpt, tiny_files[1], out, overwrite=True, **TINY_KWARGS)
    assert sorted(os.listdir(out)) == ["bpe.txt.gz", "ckpt.pth"]
    assert sorted(os.listdir(tmp_path)) == ["hfclip", "out"]


def test_non_finite_weights_are_refused_naming_the_key(tiny_nets, tiny_clip, tiny_files, tmp_path):
    nan_g = tiny_nets["netG"]["GBlocks.0.c1.weight"].clone()
    nan_g.view(-1)[:3] = float("nan")
    path = _checkpoint(tiny_nets, tmp_path, "nan.pth", **{"GBlocks.0.c1.weight": nan_g})
    with pytest.raises(ConversionError, match=r"--checkpoint netG: `GBlocks.0.c1.weight` holds 3 non-finite value"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "a", **TINY_KWARGS)
    inf_d = tiny_nets["netD"]["DBlocks.0.conv_r.0.weight"].clone()
    inf_d.view(-1)[0] = float("inf")
    path = _checkpoint(tiny_nets, tmp_path, "infD.pth", net="netD", **{"DBlocks.0.conv_r.0.weight": inf_d})
    with pytest.raises(ConversionError, match=r"--checkpoint netD/netC: `netD.DBlocks.0.conv_r.0.weight` holds 1 non"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "b", include_discriminator=True, **TINY_KWARGS)
    # the CLIP too, whatever its format (a CLIPModel folder's weights are not key-mapped)
    clip_dir = transformers_clip_folder(tiny_clip, tmp_path / "hfclip")
    state_file = os.path.join(clip_dir, "model.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(state_file)
    state["text_projection.weight"][0, 0] = float("nan")
    save_file(state, state_file)
    with pytest.raises(ConversionError, match=r"--clip: `text_projection.weight` holds 1 non-finite"):
        convert_official_checkpoint(tiny_files[0], clip_dir, tmp_path / "c", **TINY_KWARGS)
    # finite but beyond float16's range: the fp16 variant would hold inf
    huge = tiny_nets["netG"]["to_rgb.1.weight"] * 0 + 1e6
    path = _checkpoint(tiny_nets, tmp_path, "huge.pth", **{"to_rgb.1.weight": huge})
    with pytest.raises(ConversionError, match=r"--dtype fp16: generator.conv_out.weight holds values up to 1e\+06"):
        convert_official_checkpoint(path, tiny_files[1], tmp_path / "d", dtype="fp16", **TINY_KWARGS)
    assert sorted(os.listdir(tmp_path)) == ["hfclip", "huge.pth", "infD.pth", "nan.pth"]


def test_bad_values_and_paths_are_named_before_anything_is_read(tiny_nets, tiny_files, tmp_path, monkeypatch):
    ckpt, clip_file = tiny_files
    key = "GBlocks.0.c1.weight"
    with pytest.raises(ConversionError, match=rf"--checkpoint netG: '{key}' is not a tensor but int 3\."):
        convert_official_checkpoint(_checkpoint(tiny_nets, tmp_path, "int.pth", **{key: 3}), clip_file,
                                    tmp_path / "o", **TINY_KWARGS)  # fmt: skip
    long_weight = tiny_nets["netG"][key].long()
    with pytest.raises(ConversionError, match=rf"'{key}' has dtype torch.int64; the weights must be floating point"):
        convert_official_checkpoint(_checkpoint(tiny_nets, tmp_path, "long.pth", **{key: long_weight}), clip_file,
                                    tmp_path / "o", **TINY_KWARGS)  # fmt: skip
    # the checks below come before the checkpoint is even read
    monkeypatch.setattr(conversion, "load_official_checkpoint", lambda *a: pytest.fail("read the checkpoint"))
    with pytest.raises(ConversionError, match=r"--bpe: '.*tiny.pth' is not CLIP's bpe_simple_vocab_16e6.txt.gz"):
        convert_official_checkpoint(ckpt, clip_file, tmp_path / "o", bpe_path=ckpt, **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"--bpe: '.*nope.txt.gz' is no such file"):
        convert_official_checkpoint(ckpt, clip_file, tmp_path / "o", bpe_path=tmp_path / "nope.txt.gz", **TINY_KWARGS)
    short_bpe = tmp_path / "short.txt.gz"
    with gzip.open(short_bpe, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\nh e")
    with pytest.raises(ConversionError, match=r"--bpe: .*short.txt.gz' gives 515 token ids, but the CLIP text encoder"):
        convert_official_checkpoint(ckpt, clip_file, tmp_path / "o", bpe_path=short_bpe, **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"--output_dir: .*tiny.pth' is a file, not a folder, so the folder "
                                              r".*tiny.pth/sub' cannot be created"):
        convert_official_checkpoint(ckpt, clip_file, ckpt + "/sub", **TINY_KWARGS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"--clip: the folder .*empty' is not a transformers CLIPModel folder"):
        convert_official_checkpoint(ckpt, tmp_path / "empty", tmp_path / "o", **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"--output_dir must not be empty"):
        convert_official_checkpoint(ckpt, clip_file, "", overwrite=True, **TINY_KWARGS)
    with pytest.raises(ConversionError, match=r"refusing to use '/'.*not even with --overwrite"):
        convert_official_checkpoint(ckpt, clip_file, "/", **TINY_KWARGS)  # not "pass --overwrite"
    with pytest.raises(ConversionError, match=r"--dtype must be one of \['bf16', 'fp16', 'fp32'\].*got torch.int8"):
        convert_official_checkpoint(ckpt, clip_file, tmp_path / "o", dtype=torch.int8, **TINY_KWARGS)
    assert sorted(os.listdir(tmp_path)) == ["empty", "int.pth", "long.pth", "short.txt.gz"]


@pytest.mark.parametrize("option", [["--hub_model_id", "me/galip"], ["--private"], ["--hub_token", "hf_x"]])
def test_cli_hub_options_need_push_to_hub(option, tiny_files, tmp_path, capsys):
    argv = ["--checkpoint", tiny_files[0], "--clip", tiny_files[1], "--output_dir", str(tmp_path / "o"), *option]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"{option[0]} needs --push_to_hub" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_measure_conversion_script_runs(tmp_path):
    results = tmp_path / "result.json"
    command = [sys.executable, os.path.join(REPO, "scripts", "measure_conversion.py"), "--size", "tiny",
               "--workdir", str(tmp_path / "work"), "--results", str(results), "--dtype", "bf16"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(results.read_text())
    assert result["size"] == "tiny" and result["dtype"] == "bf16" and result["wall_s"] > 0
    assert 100 < result["peak_rss_mb"] < 100_000
    converted = tmp_path / "work" / "converted-tiny-bf16"
    assert (converted / "model_index.json").is_file()
    assert (converted / "generator" / "diffusion_pytorch_model.bf16.safetensors").is_file()
    bad = subprocess.run(command[:-1] + ["fp64"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "--dtype: invalid choice: 'fp64'" in bad.stderr
