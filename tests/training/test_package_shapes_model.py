"""training/package_shapes_model.py: a run fine-tuned from a pipeline folder is packaged with that folder's
tokenizer, encoders and scorer (--components_from), in float16 storage that loads in float32."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from galip_diffusers import GALIPPipeline
from helpers.training_helpers import training_script
from galip_diffusers.testing_utils import (save_tiny_bridge_clip, tiny_components, tiny_discriminator,
                                          tiny_generator, tiny_scorer)


def _script():
    return training_script("package_shapes_model")


def test_components_from_a_pipeline_folder(tmp_path, one_thread):
    script = _script()
    base, run, out = tmp_path / "base", tmp_path / "run", tmp_path / "out"
    GALIPPipeline(**{**tiny_components(0, with_image_encoder=True), "scorer": tiny_scorer(1)}).save_pretrained(base)
    trained = GALIPPipeline(**tiny_components(5, with_image_encoder=True))  # "the run": other generator weights
    trained.generator.save_pretrained(run / "generator")
    tiny_discriminator(3).save_pretrained(run / "discriminator")
    script.main(["--run_dir", str(run), "--components_from", str(base), "--output_dir", str(out),
                 "--num_images", "6", "--results_dir", str(tmp_path / "results"), "--skip_speed"])

    shipped = GALIPPipeline.from_pretrained(str(out))
    assert shipped.generator.dtype == torch.float32 and shipped.scorer is not None
    stored = load_file(str(out / "generator" / "diffusion_pytorch_model.safetensors"))
    assert all(t.dtype == torch.float16 for t in stored.values())
    expected = trained.generator.state_dict()
    assert all(torch.equal(v, expected[k].half().float()) for k, v in shipped.generator.state_dict().items())
    base_scorer = GALIPPipeline.from_pretrained(str(base)).scorer.state_dict()
    assert all(torch.equal(v, base_scorer[k].half().float()) for k, v in shipped.scorer.state_dict().items())
    report = json.loads((tmp_path / "results" / "eval.json").read_text())
    assert 0.0 <= report["accuracy_train"]["shape"] <= 1.0 and "README.md" in os.listdir(out)


def test_components_come_from_one_place_only(tmp_path, capsys):
    script = _script()
    with pytest.raises(SystemExit):
        script.parse_args(["--run_dir", "r"])
    with pytest.raises(SystemExit):
        script.parse_args(["--run_dir", "r", "--components_from", "galip-shapes", "--clip_model_name_or_path", "c",
                           "--scorer_model_name_or_path", "s"])
    (tmp_path / "run").mkdir()
    # the documented fine-tuning case: components and settings from the shipped folder, packaged over it
    args = script.parse_args(["--run_dir", str(tmp_path / "run"), "--components_from", "galip-shapes", "--overwrite"])
    assert args.components_from == "galip-shapes" and args.output_dir == script.PRETRAINED_MODELS["galip-shapes"]
    with pytest.raises(SystemExit):  # read only after the models have loaded: checked first
        script.parse_args(["--run_dir", str(tmp_path / "run"), "--components_from", "galip-shapes", "--overwrite",
                           "--settings_file", str(tmp_path / "missing.json")])
    assert "missing.json' is not a file; give a galip_settings.json." in capsys.readouterr().err


class _Saved(Exception):
    """Raised by the stand-in for write_half_precision: the test only needs the arguments it got."""


def _run_and_sources(name, tmp_path):
    """A tiny run folder, and the flags that name its CLIP components for script ``name``."""
    run = tmp_path / "run"
    tiny_generator(5).save_pretrained(run / "generator")
    tiny_discriminator(3).save_pretrained(run / "discriminator")
    if name == "package_shapes_model":
        base = tmp_path / "base"
        GALIPPipeline(**{**tiny_components(0, with_image_encoder=True), "scorer": tiny_scorer(1)}).save_pretrained(base)
        return run, ["--components_from", str(base)]
    save_tiny_bridge_clip(tmp_path / "bridge")
    tiny_scorer(1).save_pretrained(tmp_path / "scorer")
    return run, ["--clip_model_name_or_path", str(tmp_path / "bridge"), "--scorer_model_name_or_path",
                 str(tmp_path / "scorer")]


@pytest.mark.parametrize("name", ["package_shapes_model", "package_emoji_model"])
def test_both_packaging_scripts_give_the_save_the_shipped_size_limit(name, tmp_path, monkeypatch, one_thread):
    """The limit is enforced inside write_half_precision, before the swap (tests/training/test_packaging_helpers.py);
    here: both scripts hand it the same limit, and a failure there leaves nothing behind."""
    script = training_script(name)
    assert script.SHIPPED_MODEL_MAX_MB == 25.0

    def save(pipe, discriminator, folder, name, **kwargs):
        raise _Saved(kwargs)

    monkeypatch.setattr(script, "write_half_precision", save)
    run, sources = _run_and_sources(name, tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(_Saved) as saved:
        script.main(["--run_dir", str(run), "--output_dir", str(tmp_path / "out"), "--results_dir",
                     str(tmp_path / "results"), "--skip_speed", *sources])
    assert saved.value.args[0] == {"max_size_mb": 25.0}
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["results"])  # no "out", no hidden temporary folder


@pytest.mark.parametrize("name", ["package_shapes_model", "package_emoji_model"])
def test_the_output_is_never_an_input_and_a_full_folder_needs_overwrite(name, tmp_path, capsys):
    """Both scripts replaced any --output_dir without asking, the training run they read from included."""
    script = training_script(name)
    run, sources = _run_and_sources(name, tmp_path)
    (run / "NOTES.txt").write_text("my notes")
    (run / "checkpoint-1").mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    before = {p: sorted(os.listdir(p)) for p in (tmp_path, run, notes)}
    base = ["--run_dir", str(run), "--results_dir", str(tmp_path / "results"), *sources]
    run_it = script.main if name == "package_shapes_model" else script.parse_args  # (emoji: no judge in this test)
    with pytest.raises(SystemExit):  # what the audit ran: the run folder was replaced by the packaged model
        run_it([*base, "--output_dir", str(run), "--num_images" if "shapes" in name else "--num_seen", "2"])
    assert f"error: --output_dir: {str(run)!r} is the --run_dir input" in capsys.readouterr().err
    assert {p: sorted(os.listdir(p)) for p in (tmp_path, run, notes)} == before
    clip = sources[1]
    cases = [
        (["--output_dir", str(run), "--overwrite"], f"--output_dir: {str(run)!r} is the --run_dir input"),
        (["--output_dir", str(run / "sub")], f"--output_dir: {str(run / 'sub')!r} is inside the --run_dir folder"),
        (["--output_dir", str(tmp_path), "--overwrite"], f"--output_dir: {str(tmp_path)!r} contains the --run_dir"),
        (["--output_dir", clip + "/x"], f"--output_dir: {clip + '/x'!r} is inside the {sources[0]} folder {clip!r}"),
        (["--output_dir", str(notes)], f"--output_dir: {str(notes)!r} exists and is not empty; pass --overwrite to "
                                       "replace it (it holds todo.txt)"),
        (["--output_dir", str(notes), "--overwrite", "--results_dir", str(notes / "results")],
         f"--output_dir: {str(notes)!r} contains the --results_dir output"),
        ([], f"--output_dir: {script.parse_args([*base, '--overwrite']).output_dir!r} exists and is not empty; pass "
             "--overwrite"),  # the default, the shipped folder, too
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit):
            script.parse_args([*base, *extra])
        assert f"error: {expected}" in capsys.readouterr().err, extra
    assert {p: sorted(os.listdir(p)) for p in (tmp_path, run, notes)} == before


def test_fewer_than_two_images_are_refused_before_anything_is_written(tmp_path, capsys):
    """--num_images 1 passed the check, replaced the output folder, then failed in the Fréchet distance."""
    script = _script()
    run, sources = _run_and_sources("package_shapes_model", tmp_path)
    with pytest.raises(SystemExit):
        script.main(["--run_dir", str(run), "--output_dir", str(tmp_path / "out"), "--num_images", "1",
                     "--results_dir", str(tmp_path / "results"), *sources])
    assert "error: --num_images must be an integer >= 2, got 1." in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["base", "run"]


def test_a_failed_evaluation_replaces_nothing_and_a_run_is_packaged_over_its_own_components(tmp_path, monkeypatch,
                                                                                              one_thread):
    """The folder is built and evaluated beside --output_dir and swapped in at the end: a run that fails halfway
    leaves the old folder (card included) as it was; --components_from may be the folder being replaced."""
    script = _script()
    run, sources = _run_and_sources("package_shapes_model", tmp_path)
    out = tmp_path / "out"
    argv = ["--run_dir", str(run), "--output_dir", str(out), "--num_images", "2", "--results_dir",
            str(tmp_path / "results"), "--skip_speed"]
    script.main([*argv, *sources])
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "README.md" in os.listdir(out)

    def broken(*args, **kwargs):
        raise RuntimeError("killed during the evaluation")

    real = script.evaluate_shapes_pipeline
    monkeypatch.setattr(script, "evaluate_shapes_pipeline", broken)
    with pytest.raises(RuntimeError, match="killed during the evaluation"):
        script.main([*argv, "--overwrite", "--components_from", str(out)])
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert sorted(os.listdir(tmp_path)) == ["base", "out", "results", "run"]  # no hidden temporary folder

    monkeypatch.setattr(script, "evaluate_shapes_pipeline", real)
    trained = tiny_generator(6)  # the run trained on
    trained.save_pretrained(run / "generator")
    script.main([*argv, "--overwrite", "--components_from", str(out)])
    shipped = GALIPPipeline.from_pretrained(str(out))
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k].half().float()) for k, v in shipped.generator.state_dict().items())
    assert shipped.scorer is not None and (out / "README.md").read_bytes() != files[Path("README.md")]
    assert sorted(os.listdir(tmp_path)) == ["base", "out", "results", "run"]
