"""galip-benchmark and the measuring scripts refuse bad arguments before anything runs (exit code 2, the flag named),
so that no work is lost at the end and nothing is timed twice or by mistake."""

import importlib.util
import os

import pytest

from galip_cli import benchmark as benchmark_cli

SCRIPTS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "scripts")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exit_2(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--peers", "none,sd-1.5"], "'none' cannot be combined"),
    (["--peers", ","], "--peers is empty"),
    (["--device", "cpu,cpu"], "cpu given more than once"),
    (["--dtype", "fp32,fp32"], "fp32 given more than once"),
    (["--batch_sizes", "1,2,1"], "1 given more than once"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0"),
])
def test_benchmark_arguments_checked_before_running(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    assert message in _exit_2(benchmark_cli.main, ["--galip", "tiny", *argv], capsys)


def test_a_peer_folder_with_peers_none_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    err = _exit_2(benchmark_cli.main, ["--galip", "tiny", "--peers", "none", "--sd", "/nope/sd"], capsys)
    assert "--peers none runs GALIP alone, but --sd adds its peer" in err


def test_a_missing_peer_folder_fails_before_any_row_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    assert benchmark_cli.main(["--galip", "tiny", "--peers", "sd-1.5", "--sd", str(tmp_path / "missing"),
                               "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--sd '{tmp_path / 'missing'}' is not a folder (a local diffusers pipeline folder).")
    assert len(err.splitlines()) == 1


def test_a_missing_galip_model_fails_before_any_row_runs(capsys, monkeypatch):
    """Like a missing model in the other commands: a run-time error (exit 1) in one line, before the peers run."""
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    assert benchmark_cli.main(["--galip", "/nope/galip", "--peers", "none"]) == 1
    assert "--galip: '/nope/galip' is neither" in capsys.readouterr().err


def test_benchmark_out_file_is_refused_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    existing = tmp_path / "results.txt"
    existing.write_text("mine")
    err = _exit_2(benchmark_cli.main, ["--galip", "tiny", "--peers", "none", "--out", str(existing)], capsys)
    assert "--out" in err and "is a file" in err and existing.read_text() == "mine"


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--threads", "-2"], "--threads must be an integer >= 1"),
    (["--warmup", "-3"], "--warmup must be an integer >= 0"),
    (["--batch-sizes", "1", "0"], "--batch_sizes must be an integer >= 1"),
    (["--batch_sizes", "1", "1"], "--batch_sizes: 1 given more than once"),
    (["--model", "/nope/galip"], "--model: '/nope/galip' is neither"),
])
def test_measure_fast_inference_ranges(argv, message, capsys, monkeypatch):
    script = _script("measure_fast_inference")
    monkeypatch.setattr(script, "build_galip_pipeline", lambda spec: pytest.fail("a model was built"))
    assert message in _exit_2(script.main, ["--model", "tiny", *argv], capsys)


def test_measure_fast_inference_out_folder_refused_before_the_model(tmp_path, capsys, monkeypatch):
    script = _script("measure_fast_inference")
    monkeypatch.setattr(script, "build_galip_pipeline", lambda spec: pytest.fail("a model was built"))
    err = _exit_2(script.main, ["--model", "tiny", "--out", str(tmp_path)], capsys)
    assert "--out" in err and "is a folder" in err


def test_measure_fast_inference_never_writes_into_its_model(tmp_path, capsys, monkeypatch):
    from galip_diffusers.testing_utils import tiny_pipeline

    script = _script("measure_fast_inference")
    monkeypatch.setattr(script, "build_galip_pipeline", lambda spec: pytest.fail("a model was built"))
    tiny_pipeline().save_pretrained(str(tmp_path / "model"))
    before = (tmp_path / "model" / "model_index.json").read_text()
    err = _exit_2(script.main, ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "model" / "model_index.json")],
                  capsys)
    assert "--out" in err and "is inside the --model folder" in err
    assert (tmp_path / "model" / "model_index.json").read_text() == before


def test_measure_cold_start_checks_its_model_before_timing(tmp_path, capsys, monkeypatch):
    script = _script("measure_cold_start")
    monkeypatch.setattr(script, "cold_start_seconds", lambda *a, **k: pytest.fail("something was timed"))
    err = _exit_2(script.main, ["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys)
    assert "--model" in err and "is not a pipeline folder (no model_index.json) or a packaged model" in err


def test_measure_conversion_checks_its_results_path_before_converting(tmp_path):
    import subprocess
    import sys

    (tmp_path / "results_dir").mkdir()
    command = [sys.executable, os.path.join(SCRIPTS, "measure_conversion.py"), "--size",
               "tiny", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results_dir")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--results" in done.stderr and "is a folder" in done.stderr
    assert not (tmp_path / "work").exists()  # nothing was built or converted


def test_measure_cold_start_checks_repeats_and_out(tmp_path, capsys, monkeypatch):
    script = _script("measure_cold_start")
    monkeypatch.setattr(script, "cold_start_seconds", lambda *a, **k: pytest.fail("something was timed"))
    assert "--repeats must be an integer >= 1" in _exit_2(script.main, ["--repeats", "0"], capsys)
    existing = tmp_path / "cold_start"
    existing.write_text("mine")
    err = _exit_2(script.main, ["--out", str(existing)], capsys)
    assert "--out" in err and "is a file" in err and existing.read_text() == "mine"
