"""The galip-generate command: PNGs and their paths, prompt files, one-line errors with non-zero exit codes."""

import PIL.Image
import pytest

from galip_diffusers.cli import generate_main
from galip_diffusers.testing_utils import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "model"
    tiny_pipeline().save_pretrained(folder)
    return folder


def test_generate_writes_pngs_and_prints_paths(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = generate_main(["a red circle", "a blue square", "--model", str(model_dir), "--num-images", "2",
                          "--seed", "3", "--out", str(out)])
    assert code == 0
    paths = capsys.readouterr().out.split()
    assert len(paths) == 4 and all(p.endswith(".png") for p in paths)
    assert PIL.Image.open(paths[0]).size == (32, 32)
    # Same seed, same pixels.
    generate_main(["a red circle", "a blue square", "--model", str(model_dir), "--num-images", "2", "--seed", "3",
                   "--out", str(tmp_path / "again")])
    again = capsys.readouterr().out.split()
    assert PIL.Image.open(paths[3]).tobytes() == PIL.Image.open(again[3]).tobytes()


def test_prompt_file(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na green triangle\n")
    assert generate_main(["--prompt-file", str(prompts), "--model", str(model_dir), "--out", str(tmp_path / "o")]) == 0
    assert len(capsys.readouterr().out.split()) == 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--num-images", "0"], "--num-images must be >= 1"),
        ([], "no prompt given"),
        (["--model", "/nonexistent/folder"], "error"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(model_dir, tmp_path, capsys, argv, message):
    base = ["a red circle"] if argv != [] else []
    if "--model" not in argv:
        argv = argv + ["--model", str(model_dir)]
    code = generate_main(base + argv + ["--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
