"""training/eval_emoji.py: a missing model, run or CLIP, a --cache_dir that is a file, and a model or tarball that
cannot be loaded are one line naming the flag, not a traceback; the paths are checked before anything loads."""

from __future__ import annotations

import pytest
from helpers.training_helpers import training_script


@pytest.fixture(scope="module")
def script():
    return training_script("eval_emoji")


@pytest.fixture()
def never_loads(script, monkeypatch):
    """Nothing may load: the checks must come first."""
    def never(*args, **kwargs):
        raise AssertionError("a model or the judge was loaded before the bad flag was refused")

    monkeypatch.setattr(script.GALIPPipeline, "from_pretrained", never)
    for name in ("clip_components", "run_pipeline"):
        monkeypatch.setattr(script, name, never)
    monkeypatch.setattr(script.EmojiJudge, "from_tarballs", never)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def _exit_code(script, argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    return exit_info.value.code


@pytest.mark.parametrize("argv, message", [
    (["--model", "/nonexistent"], "error: --model '/nonexistent' is neither a folder nor a Hub repo id (owner/name), "
                                  "nor a packaged model (packaged models: galip-shapes, galip-emoji)."),
    (["--model", "galip_emoji"], "nor a packaged model (did you mean 'galip-emoji'?"),
    (["--run_dir", "{tmp}", "--clip_model_name_or_path", "galip-emoji"],
     "error: --clip_model_name_or_path 'galip-emoji' is neither a folder nor a Hub repo id (owner/name)."),
    (["--run_dir", "{tmp}/missing", "--clip_model_name_or_path", "openai/clip"], "error: --run_dir '{tmp}/missing' is "
                                                                                 "not a folder"),
    (["--run_dir", "{tmp}", "--checkpoint", "latest", "--clip_model_name_or_path", "openai/clip"],
     "error: --checkpoint latest: no checkpoint-N folder in"),
])
def test_missing_models_and_runs_are_refused_before_loading(script, never_loads, capsys, tmp_path, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert _exit_code(script, argv) == 2
    assert message.replace("{tmp}", str(tmp_path)) in _one_line(capsys)


@pytest.mark.parametrize("where, message", [
    ("afile", "--cache_dir '{path}' is a file; give a folder"),
    ("afile/sub", "--cache_dir: '{base}' is a file, not a folder, so the folder '{path}' cannot be created"),
    ("", "--cache_dir is empty; give a folder."),
])
def test_a_cache_dir_that_cannot_be_a_folder_is_refused_at_parse_time(script, never_loads, capsys, tmp_path, where,
                                                                      message):
    (tmp_path / "afile").write_text("keep me")
    path = str(tmp_path / where) if where else ""
    assert _exit_code(script, ["--model", "galip-emoji", "--cache_dir", path]) == 2
    assert message.format(path=path, base=tmp_path / "afile") in _one_line(capsys)
    assert (tmp_path / "afile").read_text() == "keep me"


def test_existing_folders_packaged_names_and_hub_ids_pass_the_checks(script, tmp_path):
    for argv in (["--model", "galip-emoji", "--cache_dir", str(tmp_path)], ["--model", str(tmp_path)],
                 ["--model", "someone/galip-emoji"],
                 ["--run_dir", str(tmp_path), "--clip_model_name_or_path", "openai/clip-vit-base-patch32"],
                 ["--run_dir", str(tmp_path), "--clip_model_name_or_path", str(tmp_path)]):
        script.check_sources(script.parse_args(argv))


@pytest.mark.parametrize("argv, patch, flag", [
    (["--model", "galip-emoji"], "pipeline", "--model"),
    (["--run_dir", "{tmp}", "--clip_model_name_or_path", "openai/clip"], "clip_components",
     "--clip_model_name_or_path"),
    (["--run_dir", "{tmp}", "--clip_model_name_or_path", "openai/clip"], "run_pipeline", "--run_dir"),
    (["--model", "galip-emoji"], "judge", "--cache_dir (the judge's emoji tarballs)"),
])
def test_what_cannot_be_loaded_is_one_line_naming_the_flag(script, monkeypatch, capsys, tmp_path, argv, patch, flag):
    def fails(*args, **kwargs):
        raise OSError("cannot load it:\nsecond line of the loader's message")

    def loads(*args, **kwargs):
        return object()

    monkeypatch.setattr(script.GALIPPipeline, "from_pretrained", fails if patch == "pipeline" else loads)
    monkeypatch.setattr(script, "clip_components", fails if patch == "clip_components" else loads)
    monkeypatch.setattr(script, "run_pipeline", fails if patch == "run_pipeline" else (lambda *a: (None, None, "run")))
    monkeypatch.setattr(script.EmojiJudge, "from_tarballs", fails)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == f"eval_emoji.py: error: {flag}: cannot load it: second line of the loader's message"
