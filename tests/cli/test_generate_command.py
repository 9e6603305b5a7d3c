"""The galip-generate command: PNGs and their paths, prompt files, a progress bar, one-line errors with non-zero
exit codes; the same images as one pipeline call."""

import os

import numpy as np
import PIL.Image
import pytest
import torch

from galip_cli.generate import main as generate
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline



def test_generate_writes_pngs_and_prints_paths(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = generate(["a red circle", "a blue square", "--model", str(model_dir), "--num-images", "2",
                          "--seed", "3", "--out", str(out)])
    assert code == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 4 and all(p.endswith(".png") for p in paths)
    assert PIL.Image.open(paths[0]).size == (32, 32)
    # Same seed, same pixels.
    generate(["a red circle", "a blue square", "--model", str(model_dir), "--num-images", "2", "--seed", "3",
                   "--out", str(tmp_path / "again")])
    again = capsys.readouterr().out.split()
    assert PIL.Image.open(paths[3]).tobytes() == PIL.Image.open(again[3]).tobytes()


@pytest.mark.parametrize("engine", ["lite", "diffusers"])
def test_earlier_images_in_out_are_never_overwritten_unless_asked(model_dir, tmp_path, capsys, engine):
    out = tmp_path / "out"
    argv = ["a red circle", "--model", str(model_dir), "--num-images", "2", "--out", str(out), "--engine", engine]
    assert generate(argv) == 0
    first = capsys.readouterr().out.split()
    before = {p: open(p, "rb").read() for p in first}
    assert generate(argv[:-2] + ["--seed", "1"]) == 0 and generate(argv) == 0  # same names again
    assert generate(argv) == 0
    second = capsys.readouterr().out.split()
    assert [os.path.basename(p) for p in second] == [
        "0000_00_seed1.png", "0000_01_seed1.png", "0000_00_seed0-1.png", "0000_01_seed0-1.png", "0000_00_seed0-2.png",
        "0000_01_seed0-2.png"]
    assert all(open(p, "rb").read() == content for p, content in before.items())  # the first run's files untouched
    # --overwrite reuses the names (different pixels: truncated noise), no new files
    assert generate(argv + ["--overwrite", "--truncation", "0.5"]) == 0
    assert [os.path.basename(p) for p in capsys.readouterr().out.split()][-2:] == ["0000_00_seed0.png",
                                                                                    "0000_01_seed0.png"]
    assert open(first[0], "rb").read() != before[first[0]] and len(os.listdir(out)) == 8


def test_help_says_what_happens_to_existing_files(capsys):
    with pytest.raises(SystemExit):
        generate(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Files already in OUT are never overwritten" in help_text and "--overwrite" in help_text


def test_prompt_file(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na green triangle\n")
    assert generate(["--prompt-file", str(prompts), "--model", str(model_dir), "--out", str(tmp_path / "o")]) == 0
    assert len(capsys.readouterr().out.split()) == 2


def test_batches_match_one_pipeline_call_and_show_a_progress_bar(model_dir, tmp_path, capsys):
    """Written --batch-size images at a time (5 images, batches of 2), with truncation: the same pixels as one call."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    argv = ["a green triangle", "--prompt-file", str(prompts), "--model", str(model_dir), "--num-images", "2",
            "--seed", "7", "--truncation", "1.5", "--batch-size", "4", "--out", str(tmp_path / "b")]
    assert generate(argv) == 0
    captured = capsys.readouterr()
    paths = captured.out.split()
    assert len(paths) == 6 and paths[-1].endswith("0002_01_seed7.png")
    assert "6/6" in captured.err  # the progress bar (stderr), over images
    pipe = GALIPPipeline.from_pretrained(str(model_dir))
    expected = pipe(["a green triangle", "a red circle", "a blue square"], num_images_per_prompt=2, truncation=1.5,
                    generator=torch.Generator().manual_seed(7), output_type="np").images
    written = np.stack([np.asarray(PIL.Image.open(p), dtype=np.float32) / 255 for p in paths])
    assert np.abs(written - expected).max() <= 1 / 255 + 1e-6
    assert generate(argv[:-2] + ["--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "6/6" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--num-images", "0"], "--num_images must be >= 1"),
        (["--batch-size", "0"], "--batch_size must be >= 1"),
        (["--truncation", "-1"], "--truncation must be a finite number >= 0 (0: off), got -1.0"),
        (["--truncation", "nan"], "--truncation must be a finite number >= 0 (0: off), got nan"),
        (["--truncation", "inf"], "--truncation must be a finite number >= 0 (0: off), got inf"),
        (["--seed", str(2**64)], "--seed must be an integer from 0 to 2**64 - 1 (torch.Generator.manual_seed wraps "
                                 "a negative seed onto a large one, so -1 would repeat 2**64 - 1), got 18446744073709551616."),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**64 - 1"),
        (["--out", "cat.png"], "--out 'cat.png' looks like an image file, but --out is a folder"),
        (["--out", __file__], "is a file; give a folder"),
        (["--prompt-file", "/nonexistent/prompts.txt"], "--prompt_file: '/nonexistent/prompts.txt' does not exist"),
        ([], "no prompt given"),
        (["--model", "/nonexistent/folder"], "'/nonexistent/folder' is not a local folder or a packaged model"),
        (["--model", "galip_shapes"], "did you mean 'galip-shapes'? packaged models: galip-shapes, galip-emoji"),
        (["--device", "foo"], "--device 'foo' is not a torch device; use e.g. cpu, cuda, cuda:1 or mps."),
        (["--prompt-file", os.path.dirname(__file__)], "is a folder; give a text file"),
        (["--out", "/proc/galip-out"], "--out '/proc/galip-out': cannot create this folder"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(model_dir, tmp_path, capsys, argv, message):
    base = ["a red circle"] if argv != [] else []
    if "--model" not in argv:
        argv = argv + ["--model", str(model_dir)]
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "x")]
    code = generate(base + argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_prompt_file_that_is_not_text_is_named(model_dir, tmp_path, capsys):
    binary = tmp_path / "prompts.bin"
    binary.write_bytes(bytes([0xFF, 0xFE, 0x00, 0x81]) * 8)
    code = generate(["--prompt_file", str(binary), "--model", str(model_dir), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and f"--prompt_file {str(binary)!r} is not UTF-8 text" in err and len(err.splitlines()) == 1


def test_blank_prompt_argument_is_refused(model_dir, tmp_path, capsys):
    code = generate(["a red circle", "  ", "--model", str(model_dir), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "prompt argument 2 is blank" in err
    assert not (tmp_path / "x").exists()  # refused before anything is written


@pytest.mark.parametrize("engine", ["lite", "diffusers"])
def test_noise_too_large_for_the_memory_is_refused_before_drawing(model_dir, tmp_path, capsys, monkeypatch, engine):
    import galip_core.machine

    monkeypatch.setattr(galip_core.machine, "available_bytes", lambda device: 2**20)  # a 1 MiB machine
    code = generate(["a red circle", "--model", str(model_dir), "--num_images", "100000", "--engine", engine,
                     "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "100000 images (prompts x --num_images) need" in err and "make fewer images" in err
    assert not any((tmp_path / "x").iterdir())


def test_names_sort_in_order_past_99_images(model_dir, tmp_path, capsys):
    argv = ["a red circle", "--model", str(model_dir), "--num_images", "101", "--out", str(tmp_path / "out"),
            "--no_progress"]
    assert generate(argv) == 0
    names = [os.path.basename(p) for p in capsys.readouterr().out.split()]
    assert names[0] == "0000_000_seed0.png" and names[-1] == "0000_100_seed0.png"
    assert sorted(names) == names


def test_cold_start_is_timed_in_fresh_processes(model_dir):
    import sys

    from galip_diffusers.benchmark.cold_start import cold_start_seconds

    timing = cold_start_seconds(str(model_dir), repeats=1, command=[sys.executable, "-m", "galip_diffusers", "generate"])
    assert len(timing["runs_s"]) == 1 and timing["median_s"] > 0
    with pytest.raises(RuntimeError, match="galip-generate failed"):
        cold_start_seconds(str(model_dir / "missing"), repeats=1,
                           command=[sys.executable, "-m", "galip_diffusers", "generate"])


def test_an_interrupted_save_leaves_no_empty_png(tmp_path):
    from PIL import Image

    from galip_cli.generate import save_png

    class Interrupted(Image.Image):
        def save(self, fp, format=None, **params):  # noqa: A002  (PIL's own argument name)
            fp.write(b"\x89PNG")  # a partial encoding, then the interrupt
            raise KeyboardInterrupt

    image = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        save_png(image, str(tmp_path / "0000_00_seed0"))
    assert list(tmp_path.iterdir()) == []
    path = save_png(Image.new("RGB", (4, 4)), str(tmp_path / "0000_00_seed0"))
    assert Image.open(path).size == (4, 4)
