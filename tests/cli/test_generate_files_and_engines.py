"""galip generate: PNGs written safely (a failed write never leaves a broken file or destroys an old one, links are
never written through), one set of pixels whichever engine runs (``--dtype auto`` resolved once; a fallback is
said), each batch made exactly as one pipeline call with ``max_batch_size=--batch_size``, and the flags that refuse
what would silently go wrong (--seed that torch would wrap, --out named like an image, a --batch_size too large)."""

import argparse
import errno
import os
import shutil

import PIL.Image
import pytest
import torch

import galip_core.machine as machine
from galip_cli import generate as generate_module
from galip_cli.generate import main as generate
from galip_cli.generate import resolve_dtype, save_png
from galip_core.noise import SEED_RANGE, check_seed

XEON_AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


def _png(color=(200, 10, 10)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (8, 8), color)


# ------------------------------------------------------------------ save_png: never a broken or clobbered file
class _DiskFull(PIL.Image.Image):
    """An image whose encoding stops half-way with ENOSPC, as on a full disk."""

    def save(self, fp, format=None, **params):  # noqa: A002  (PIL's own argument name)
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        fp.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_write_keeps_the_old_png_and_leaves_no_partial_file(tmp_path, overwrite):
    old = tmp_path / "0000_00_seed0.png"
    _png().save(old)
    before = old.read_bytes()
    with pytest.raises(OSError, match=r"cannot write .*0000_00_seed0\.png: No space left on device"):
        save_png(_DiskFull(), str(tmp_path / "0000_00_seed0"), overwrite=overwrite)
    assert old.read_bytes() == before  # the user's image is whole
    assert sorted(os.listdir(tmp_path)) == ["0000_00_seed0.png"]  # no empty, partial or temporary file
    with pytest.raises(OSError):
        save_png(_DiskFull(), str(tmp_path / "0001_00_seed0"))
    assert sorted(os.listdir(tmp_path)) == ["0000_00_seed0.png"]


def test_overwrite_replaces_a_link_in_out_not_the_file_it_points_to(model_dir, tmp_path, capsys):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious notes")
    (out / "0000_00_seed0.png").symlink_to(victim)
    assert generate(["a red circle", "--model", str(model_dir), "--out", str(out), "--overwrite",
                     "--no_progress"]) == 0
    assert victim.read_text() == "precious notes"
    written = out / "0000_00_seed0.png"
    assert not written.is_symlink() and PIL.Image.open(written).size == (32, 32)
    assert capsys.readouterr().out.split() == [str(written)]


def test_a_taken_name_is_never_written_through_even_a_dangling_link(tmp_path):
    (tmp_path / "0000_00_seed0.png").symlink_to(tmp_path / "missing.png")
    path = save_png(_png(), str(tmp_path / "0000_00_seed0"))
    assert path.endswith("0000_00_seed0-1.png") and not (tmp_path / "missing.png").exists()


def test_the_png_gets_the_mode_of_a_plain_open_and_file_systems_without_links_work(tmp_path, monkeypatch):
    from galip_core.staging import umask

    path = save_png(_png(), str(tmp_path / "a"))
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask()  # not the 0600 of a temporary file

    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # FAT, some network shares
    assert save_png(_png(), str(tmp_path / "a")).endswith("a-1.png")
    assert sorted(os.listdir(tmp_path)) == ["a-1.png", "a.png"]


# ------------------------------------------------------------------ one dtype, one set of pixels, whichever engine
def test_auto_dtype_is_fp32_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: XEON_AMX)
    assert machine.auto_dtype_name("cpu") == "bf16"  # the general rule (galip demo, galip env)
    assert resolve_dtype("auto", "cpu") == "fp32"  # galip generate on a CPU: both engines' precision
    assert resolve_dtype("bf16", "cpu") == "bf16"


def test_auto_falls_back_to_diffusers_with_a_note_and_the_same_pixels(model_dir, tmp_path, capsys, monkeypatch):
    """A folder the lite engine cannot read (.bin weights) goes to GALIPPipeline: on a CPU with native bf16, --dtype
    auto once meant bf16 there (pixels up to 15/255 off) and fp32 in the lite engine, without a word."""
    monkeypatch.setattr(machine, "_cpuinfo", lambda: XEON_AMX)
    binary = tmp_path / "bin_model"
    shutil.copytree(model_dir, binary)
    weights = binary / "generator" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), str(weights.with_suffix(".bin")))
    weights.unlink()
    common = ["a red circle", "a blue square", "--num_images", "2", "--seed", "5", "--no_progress"]
    assert generate(common + ["--model", str(model_dir), "--out", str(tmp_path / "lite")]) == 0
    capsys.readouterr()
    assert generate(common + ["--model", str(binary), "--out", str(tmp_path / "auto")]) == 0
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("note: --engine auto: using the diffusers engine")]
    assert len(notes) == 1 and "generator/ has no diffusion_pytorch_model.safetensors" in notes[0]
    for name in sorted(os.listdir(tmp_path / "lite")):
        assert (tmp_path / "lite" / name).read_bytes() == (tmp_path / "auto" / name).read_bytes(), name


def test_no_progress_hides_the_diffusers_loading_bars_for_that_call_only(model_dir, tmp_path, capfd):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    argv = ["a red circle", "--model", str(model_dir), "--engine", "diffusers", "--out", str(tmp_path)]
    assert generate(argv + ["--no_progress"]) == 0
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()
    assert generate(argv) == 0
    assert "Loading pipeline components" in capfd.readouterr().err  # shown when not asked to hide them


# ------------------------------------------------------------------ each batch = one call with max_batch_size
@pytest.mark.parametrize("engine", ["lite", "diffusers"])
def test_each_batch_encodes_the_texts_of_one_call_with_max_batch_size(engine, model_dir, tmp_path, capsys,
                                                                      monkeypatch):
    """The text encoder's float rounding depends on its batch, so the CLI must encode what one
    ``pipe(prompts, num_images_per_prompt=2, max_batch_size=4)`` encodes: each prompt once per chunk, not the
    repeated prompts of a batch (which once changed embeddings by 1e-6 and a pixel by 1/255)."""
    from galip_core import runtime
    from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

    batches = []
    if engine == "lite":
        real = runtime.clip_text_embeds
        monkeypatch.setattr(runtime, "clip_text_embeds", lambda w, c, ids: batches.append(ids) or real(w, c, ids))
    prompts = ["a red circle", "a blue square", "a green triangle"]
    argv = [*prompts, "--model", str(model_dir), "--num_images", "2", "--batch_size", "4", "--seed", "7",
            "--truncation", "1.5", "--engine", engine, "--out", str(tmp_path / "out"), "--no_progress"]
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    forward = pipe.text_encoder.forward
    if engine == "diffusers":
        monkeypatch.setattr(GALIPPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
        monkeypatch.setattr(pipe.text_encoder, "forward", lambda ids, **k: batches.append(ids) or forward(ids, **k))
    assert generate(argv) == 0
    paths = capsys.readouterr().out.split()
    cli_batches, batches[:] = list(batches), []
    monkeypatch.setattr(pipe.text_encoder, "forward", lambda ids, **k: batches.append(ids) or forward(ids, **k))
    images = pipe(prompts, num_images_per_prompt=2, truncation=1.5, generator=torch.Generator().manual_seed(7),
                  max_batch_size=4).images
    assert [b.tolist() for b in cli_batches] == [b.tolist() for b in batches]
    assert [len(b) for b in batches] == [2, 1]  # prompts 0-1 for images 0-3, prompt 2 for images 4-5
    assert [PIL.Image.open(p).tobytes() for p in paths] == [image.tobytes() for image in images]


# ------------------------------------------------------------------ flags that would silently go wrong
def test_seeds_torch_would_wrap_are_refused():
    assert SEED_RANGE == (0, 2**64 - 1) and check_seed("--seed", 2**64 - 1) == 2**64 - 1
    for seed in (-1, -(2**63), 2**64, 0.5, True):
        with pytest.raises(ValueError, match=r"^--seed must be an integer from 0 to 2\*\*64 - 1"):
            check_seed("--seed", seed)
    # what the range guards against: torch takes -1 and draws exactly what 2**64 - 1 draws
    assert torch.equal(torch.randn(4, generator=torch.Generator().manual_seed(-1)),
                       torch.randn(4, generator=torch.Generator().manual_seed(2**64 - 1)))


def test_out_named_like_an_image_is_refused_unless_it_is_a_folder(tmp_path):
    for name in ("cat.png", "cat.JPG", "cat.jpeg", "cat.webp"):
        with pytest.raises(ValueError, match=rf"^--out '.*{name}' looks like an image file, but --out is a folder"):
            generate_module.check_out_folder(str(tmp_path / name))
        assert not (tmp_path / name).exists()
    (tmp_path / "old.png").mkdir()  # a folder made by an earlier version: unambiguous
    generate_module.check_out_folder(str(tmp_path / "old.png"))


def test_a_batch_too_large_is_refused_before_the_model_loads_naming_batch_size(model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device: 2**30)
    monkeypatch.setattr(generate_module, "_lite_engine", lambda *a: pytest.fail("the model was loaded"))
    code = generate(["a red circle", "--model", str(model_dir), "--num_images", "300000", "--batch_size", "300000",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "--batch_size 300000: a batch of 300000 images of 32 px needs about" in err and "cpu has 1.0 GiB free" in err
    fits = int(err.split("give --batch_size ")[1].split()[0])
    config = generate_module.local_model_configs(str(model_dir))
    args = argparse.Namespace(batch_size=fits, device="cpu")
    generate_module.check_run_memory(args, 300000, config[0], config[1], None, 4)  # the suggestion fits


def test_the_noise_check_counts_the_copies_a_truncation_holds(model_dir, tmp_path, capsys, monkeypatch):
    """Resampling a truncation holds the noise, a fresh draw and a mask: 2 copies' worth of free memory is refused
    (it was let through, and the run then failed in an allocation), naming --num_images."""
    from galip_core.noise import noise_peak_bytes

    total, z_dim = 100000, 8
    assert noise_peak_bytes(total, z_dim, 0.5) > 2 * 4 * total * z_dim
    monkeypatch.setattr(machine, "available_bytes", lambda device: int(2.1 * 4 * total * z_dim))
    argv = ["a red circle", "--model", str(model_dir), "--num_images", str(total), "--out", str(tmp_path / "out")]
    assert generate(argv + ["--truncation", "0.5"]) == 1
    err = capsys.readouterr().err
    assert f"{total} images (prompts x --num_images) need" in err and "of noise drawn up front" in err


def test_a_small_run_is_not_refused_on_a_machine_with_little_free_memory(model_dir, tmp_path, capsys, monkeypatch):
    """The allocator slack (256 MiB, measured on calls of hundreds of MiB) was added to every call, so one image was
    refused with 200 MiB free, and told to "make fewer images"."""
    from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

    monkeypatch.setattr(machine, "available_bytes", lambda device: 200 * 2**20)
    argv = ["a red circle", "--model", str(model_dir), "--batch_size", "1", "--out", str(tmp_path / "out")]
    assert generate(argv + ["--no_progress"]) == 0
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe("a red circle").images) == 1
    capsys.readouterr()
    monkeypatch.setattr(machine, "available_bytes", lambda device: 2**16)  # 64 kB: nothing fits
    assert generate(argv) == 1
    assert capsys.readouterr().err.strip().endswith("even one image does not fit: free some memory.")
    with pytest.raises(ValueError, match=r"asks for 1 image of 32 px, which need about \d+ MiB; cpu has 0 MiB free\. "
                                         r"Even one image does not fit: free some memory\.$"):
        pipe("a red circle")


def test_a_hidden_folder_named_like_an_extension_is_a_folder(tmp_path):
    generate_module.check_out_folder(str(tmp_path / ".png"))  # a dot-folder, as os.path.splitext reads it
    assert (tmp_path / ".png").is_dir()
