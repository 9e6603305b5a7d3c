"""Careless or hostile input to galip generate and galip benchmark is refused (or skipped) up front, naming the flag:
prompt-file lines with no text CLIP would see, a --threads count torch cannot run, and --batch_sizes too large for
the memory, all before any model is built."""

import os

import PIL.Image
import pytest

from galip_cli import benchmark as benchmark_cli
from galip_cli.generate import main as generate
from galip_cli.generate import read_prompts
from galip_diffusers.benchmark.peers import galip_generator_config, galip_spec
from galip_diffusers.benchmark.runner import check_batch_memory


# ------------------------------------------------------------------ galip generate --prompt_file
def test_prompt_file_lines_that_clean_to_nothing_are_skipped_and_counted(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    # a BOM before the first prompt (utf-8-sig), a BOM-only line, a control character, a zero-width no-break space
    prompts.write_bytes("\ufeffa red circle\n\ufeff\n\x07\n \n\ufeff \ufeff\na blue square\n".encode("utf-8"))
    assert read_prompts([], str(prompts)) == ["a red circle", "a blue square"]
    err = capsys.readouterr().err
    assert f"--prompt_file {str(prompts)!r}: skipped 3 line(s) with no text left after CLIP's text cleaning" in err


def test_prompt_file_of_plain_blank_lines_gives_no_warning(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\n   \n")
    assert read_prompts(["a blue square"], str(prompts)) == ["a blue square", "a red circle"]
    assert capsys.readouterr().err == ""


def test_a_prompt_file_of_only_boms_is_no_prompt(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"\xef\xbb\xbf\n\xef\xbb\xbf\n\x00\n")
    out = tmp_path / "out"
    code = generate(["--prompt_file", str(prompts), "--model", str(model_dir), "--out", str(out), "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].endswith("no prompt given: pass prompts as arguments or with --prompt_file.")
    assert "skipped 2 line(s)" in err[0] and not out.exists()  # refused before the model loads or anything is written


def test_invisible_lines_make_no_image_and_a_bom_changes_nothing(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("\ufeffa red circle\n\ufeff\n\x07\na blue square\n".encode("utf-8"))
    common = ["--model", str(model_dir), "--seed", "3", "--no_progress"]
    assert generate(["--prompt_file", str(prompts), "--out", str(tmp_path / "file"), *common]) == 0
    from_file = capsys.readouterr().out.split()
    assert generate(["a red circle", "a blue square", "--out", str(tmp_path / "args"), *common]) == 0
    from_args = capsys.readouterr().out.split()
    assert [os.path.basename(p) for p in from_file] == ["0000_00_seed3.png", "0001_00_seed3.png"]
    for a, b in zip(from_file, from_args):
        assert PIL.Image.open(a).tobytes() == PIL.Image.open(b).tobytes()


@pytest.mark.parametrize("text", ["\ufeff", "\x07", " \ufeff "])
def test_a_prompt_argument_that_cleans_to_nothing_is_refused_like_a_blank_one(text):
    with pytest.raises(ValueError, match=r"^prompt argument 2 is blank"):
        read_prompts(["a red circle", text], None)


# ------------------------------------------------------------------ galip benchmark --threads
def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        benchmark_cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("threads", [99999, benchmark_cli.max_threads() + 1])
def test_too_many_threads_are_refused_before_anything_runs(threads, capsys, monkeypatch):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    err = _exit_2(["--galip", "tiny", "--peers", "none", "--threads", str(threads)], capsys)
    assert f"--threads must be an integer >= 1 and <= {benchmark_cli.max_threads()}, got {threads}." in err


def test_the_thread_cap_follows_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert benchmark_cli.max_threads() == 3 * benchmark_cli.MAX_THREADS_PER_CPU
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: still at least MAX_THREADS_PER_CPU
    assert benchmark_cli.max_threads() == benchmark_cli.MAX_THREADS_PER_CPU
    monkeypatch.undo()
    args = benchmark_cli.parse_args(["--galip", "tiny", "--threads", str(benchmark_cli.max_threads())])
    assert args.threads == benchmark_cli.max_threads()


# ------------------------------------------------------------------ galip benchmark --batch_sizes
def test_a_batch_too_large_for_the_memory_fails_before_any_model_is_built(tmp_path, capsys, monkeypatch,
                                                                          known_memory):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    argv = ["--galip", "tiny", "--peers", "none", "--batch_sizes", "1,100000000", "--out", str(tmp_path / "out"),
            "--no_plot"]
    assert benchmark_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--batch_sizes: one GALIP call of 100000000 images of 32 px in fp32 needs about" in err
    assert "cpu has 16.0 GiB free. Give smaller --batch_sizes." in err


@pytest.mark.parametrize("source", ["tiny", "default-config", "folder"])
def test_the_memory_check_reads_each_kind_of_galip_without_building_it(source, model_dir, known_memory):
    galip = str(model_dir) if source == "folder" else source
    spec = galip_spec(galip)
    config = galip_generator_config(spec)
    assert config["output_size"] == (spec.resolution if source == "default-config" else 32)  # 224: official size
    args = benchmark_cli.parse_args(["--galip", galip, "--peers", "none", "--batch_sizes", "1,8,32"])
    check_batch_memory(args)  # ordinary batches pass
    args.batch_sizes = [10**9]
    with pytest.raises(ValueError, match=r"^--batch_sizes: one GALIP call of 1000000000 images"):
        check_batch_memory(args)


def test_an_unreadable_galip_config_leaves_the_check_to_the_row(tmp_path, known_memory):
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "config.json").write_text("{not json")
    assert galip_generator_config(galip_spec(str(tmp_path))) is None
    args = benchmark_cli.parse_args(["--galip", str(tmp_path), "--peers", "none", "--batch_sizes", "100000000"])
    check_batch_memory(args)
