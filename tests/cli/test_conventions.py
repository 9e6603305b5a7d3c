"""The conventions every ``galip`` command follows (issue #25, part 3): ``--help`` shows examples and the documented
underscore spelling only; the dash spelling is accepted as an alias; a bad argument value is one line on stderr and
exit code 1 (``--debug`` re-raises it)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from galip_cli.common import FLAG_STYLE_NOTE, CommandParser, flag_spellings
from galip_cli.main import COMMANDS

#: command -> (a dashed option of it with a value or None for a flag, a documented underscore spelling of it)
ALIASES = {
    "generate": (["x", "--num-images", "3", "--no-progress"], ["x", "--num_images", "3", "--no_progress"]),
    "convert": (["--checkpoint", "a", "--clip", "b", "--output-dir", "o", "--include-discriminator"],
                ["--checkpoint", "a", "--clip", "b", "--output_dir", "o", "--include_discriminator"]),
    "train": (["--accelerate-args=--num_processes 2"], ["--accelerate_args=--num_processes 2"]),
    "eval": (["--dataset", "d", "--save-stats", "s.npz", "--num-images", "5"],
             ["--dataset", "d", "--save_stats", "s.npz", "--num_images", "5"]),
    "benchmark": (["--batch-sizes", "1,2", "--no-plot", "--peer-scale", "tiny"],
                  ["--batch_sizes", "1,2", "--no_plot", "--peer_scale", "tiny"]),
    "demo": (["--max-images", "3", "--concurrency-limit", "2"], ["--max_images", "3", "--concurrency_limit", "2"]),
    "env": (["--json", "--output-file", "env.json"], ["--json", "--output_file", "env.json"]),
}  # fmt: skip


def _module(name: str):
    return importlib.import_module(COMMANDS[name].module)


def _bad_argv(name: str, tmp_path) -> list[str]:
    """Arguments that parse but name something that does not exist: the command fails at run time."""
    missing = str(tmp_path / "missing")
    return {
        "generate": ["a red circle", "--num-images", "0"],
        "convert": ["--checkpoint", missing + ".pth", "--clip", missing + ".pt", "--output_dir", str(tmp_path / "o")],
        "train": ["--run", "--script", missing + ".py"],
        "eval": ["--model", missing, "--dataset", missing, "--no_fid"],
        "benchmark": ["--galip", missing, "--peers", "none", "--out", str(tmp_path / "out"), "--no_plot",
                      "--no_progress", "--batch_sizes", "1", "--repeats", "1", "--warmup", "0"],
        "demo": ["--model", missing],
        "env": ["--output_file", str(tmp_path / "missing" / "env.json")],
    }[name]


def test_flag_spellings():
    assert flag_spellings("--num-images") == flag_spellings("--num_images") == ["--num_images", "--num-images"]
    assert flag_spellings("--seed") == ["--seed"]
    assert flag_spellings("prompt") == ["prompt"] and flag_spellings("-h") == ["-h"]


def test_galip_help_lists_every_command_with_examples(capsys):
    from galip_cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "examples:" in out and " ".join(FLAG_STYLE_NOTE.split()) in " ".join(out.split())
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_examples_and_the_documented_spelling_only(name, capsys):
    parser = _module(name).build_parser(f"galip {name}")
    assert isinstance(parser, CommandParser)
    text = parser.format_help()
    assert "examples:" in text and f"galip {name}" in text
    assert " ".join(FLAG_STYLE_NOTE.split()) in " ".join(text.split())
    dashed, documented = ALIASES[name]
    for alias, canonical in zip(dashed, documented):
        if alias.startswith("--") and alias != canonical:
            option = canonical.split("=")[0]
            assert option in text, option
            assert alias.split("=")[0] + " " not in text and alias.split("=")[0] + "\n" not in text, alias


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_dash_spelling_is_an_alias(name):
    parser = _module(name).build_parser(f"galip {name}")
    dashed, documented = ALIASES[name]
    parse = (lambda argv: parser.parse_known_args(argv)[0]) if name == "train" else parser.parse_args
    assert vars(parse(dashed)) == vars(parse(documented))
    assert isinstance(parse(documented), argparse.Namespace)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bad_argument_is_one_line_and_exit_code_1(name, tmp_path, capsys, one_thread):
    code = _module(name).main(_bad_argv(name, tmp_path), prog=f"galip {name}")
    err = [line for line in capsys.readouterr().err.splitlines() if f"galip {name}: error" in line]
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"galip {name}: error: "), err


@pytest.mark.parametrize("name", ["generate", "convert", "eval"])
def test_debug_shows_the_traceback(name, tmp_path):
    with pytest.raises(Exception):
        _module(name).main(_bad_argv(name, tmp_path) + ["--debug"], prog=f"galip {name}")
