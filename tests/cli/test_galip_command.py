"""The `galip` umbrella command: subcommand dispatch, --help with examples everywhere, one-line errors, and the
`galip train` launcher (printed command, --run)."""

import os
import re
import subprocess
import sys

import pytest

from galip_cli import main as cli
from galip_cli import train as train_launcher
from galip_diffusers.conversion.keys import ConversionError
from galip_diffusers.demo import DemoModelError

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")



def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("generate", "convert", "train", "eval", "benchmark", "demo"):
        summary = re.escape(cli.COMMANDS[name].summary[:30])
        assert re.search(rf"^ +{name}\s+{summary}", out, re.M), out  # listed with its summary
        assert f"\n  galip {name} " in out  # and in the examples


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: galip {name}") and "examples:" in out
    assert f"\n  galip {name} " in out  # the examples use the name they were called with
    assert "--debug" in out


@pytest.mark.parametrize("argv, message", [([], "required: COMMAND"), (["paint"], "invalid choice: 'paint'")])
def test_missing_or_unknown_command_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_generate_through_galip(model_dir, tmp_path, capsys):
    assert cli.main(["generate", "a red circle", "--model", str(model_dir), "--num-images", "3", "--out",
                     str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.split()) == 3 and len(os.listdir(tmp_path)) == 3


@pytest.mark.parametrize("argv, message, error", [
    (["generate", "a red circle", "--model", "/nonexistent/model"], "galip generate: error: ValueError: ", ValueError),
    (["convert", "--checkpoint", "/nonexistent.pth", "--clip", "/nonexistent.pt", "--output_dir", "OUT"],
     "galip convert: error: --checkpoint: ", ConversionError),
    (["demo", "--model", "/nonexistent/model"], "galip demo: error: --model: '/nonexistent/model' is neither", DemoModelError),
])
def test_errors_are_one_line_on_stderr(argv, message, error, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(error):  # --debug re-raises, so the traceback shows
        cli.main(argv + ["--debug"])


def test_bad_arguments_exit_2_with_the_subcommand_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["benchmark", "--dtype", "fp8"])
    assert exit_info.value.code == 2 and "galip benchmark: error: argument --dtype" in capsys.readouterr().err


def test_python_dash_m_runs_the_galip_command():
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "galip_diffusers", "paint"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2 and "invalid choice: 'paint'" in done.stderr


# ------------------------------------------------------------------------------------------------------ galip train
def test_train_prints_the_accelerate_command(capsys):
    argv = ["train", "--train_data_dir", "data/my shapes", "--output_dir", "out", "--seed", "3",
            "--accelerate-args=--num_processes 2 --mixed_precision bf16"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == ("accelerate launch --num_processes 2 --mixed_precision bf16 training/train_galip.py "
                                    "--train_data_dir 'data/my shapes' --output_dir out --seed 3")
    assert "not with the installed package" in captured.err and "--run" in captured.err
    # `--` separates ours from the script's; unknown options are never taken as abbreviations of ours
    assert cli.main(["train", "--", "--ru", "1"]) == 0
    assert capsys.readouterr().out.strip() == "accelerate launch training/train_galip.py --ru 1"


def test_train_accelerate_args_with_an_unbalanced_quote_name_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--accelerate_args=--num_processes \"2", "--output_dir", "out"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--accelerate_args '--num_processes \"2' cannot be split like a shell line" in err


def test_train_run_executes_the_script_through_accelerate(tmp_path):
    script = tmp_path / "train_echo.py"
    record = tmp_path / "argv.txt"
    script.write_text(f"import sys\nopen({str(record)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "galip_diffusers", "train", "--run", "--script", str(script),
         "--accelerate-args=--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no",
         "--output_dir", "out dir", "--max_train_steps", "2"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert record.read_text() == "--output_dir out dir --max_train_steps 2"
    assert "accelerate launch" in done.stderr


def test_a_failing_training_run_ends_in_its_own_one_line_error(tmp_path):
    """`galip train --run` launches quietly: the script's one-line error is not followed by accelerate's traceback."""
    script = tmp_path / "train_fail.py"
    script.write_text("raise SystemExit('train_fail.py: error: --caption_column is wrong')\n")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "galip_diffusers", "train", "--run", "--script", str(script),
         "--accelerate-args=--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "train_fail.py: error: --caption_column is wrong" in done.stderr
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr


def test_train_run_without_the_script_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_launcher, "source_checkout_script", lambda: None)  # as in a wheel install
    assert cli.main(["train", "--run", "--output_dir", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("galip train: error: training/train_galip.py not found") and "--script" in err
    assert len(err.splitlines()) == 1
    assert cli.main(["train", "--run", "--script", "missing.py"]) == 1
    assert "--script: 'missing.py' does not exist" in capsys.readouterr().err


def test_train_run_with_bad_training_arguments_is_one_line_before_anything_launches(tmp_path, capsys, monkeypatch):
    launched = []
    monkeypatch.setattr(train_launcher.subprocess, "call", lambda command: launched.append(command) or 0)
    script = train_launcher.source_checkout_script()
    assert cli.main(["train", "--run", "--script", script, "--output_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "galip train: error: train_galip.py: Need either a dataset name or a training folder."
    assert cli.main(["train", "--run", "--script", script, "--train_data_dir", str(tmp_path), "--seed", "x",
                     "--clip_model_name_or_path", "c"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --seed: invalid int value: 'x'" in err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "checkpoint-3000").mkdir()
    assert cli.main(["train", "--run", "--script", script, "--train_data_dir", str(tmp_path), "--output_dir",
                     str(tmp_path / "used"), "--clip_model_name_or_path", "c", "--generator_config", "g"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not empty (checkpoint-3000): it holds another run" in err
    assert launched == []


def test_source_checkout_script_is_found_in_an_editable_tree():
    found = train_launcher.source_checkout_script()
    assert found is not None and found.endswith(os.path.join("training", "train_galip.py"))


def test_console_scripts_point_at_the_command_mains():
    """setup.cfg's console scripts: `galip` and one `galip-<name>` alias per command except train."""
    import configparser
    import importlib

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(SRC), "setup.cfg"))
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts["galip"] == "galip_cli.main:main"  # outside galip_diffusers: no diffusers import to dispatch
    expected = {f"galip-{name}" for name in cli.COMMANDS if name != "train"} | {"galip"}
    assert set(scripts) == expected
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        if name != "galip":
            assert getattr(importlib.import_module(module), attr) is importlib.import_module(
                cli.COMMANDS[name[len("galip-"):]].module).main


def test_galip_help_and_lite_generate_do_not_import_diffusers(tmp_path):
    """`galip --help` and `galip generate` (lite engine) never load the HF stack, so they start in seconds."""
    code = (
        "import sys\n"
        "from galip_cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        f"assert main(['generate', 'a small red square on a black background', '--out', {str(tmp_path)!r},"
        " '--no-progress']) == 0\n"
        "heavy = sorted(m for m in ('diffusers', 'transformers', 'galip_diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "0000_00_seed0.png").is_file()
