"""Bad numeric and folder flags of the training scripts, and flags that would be ignored, are refused at parse time
(no model, data or judge is loaded), with a message naming the flag and its allowed values: train_galip.py,
train_clip.py, eval_emoji.py and package_emoji_model.py (the ranges:
``galip_diffusers.training.options.FLAG_RANGES``)."""

from __future__ import annotations

import argparse

import pytest
from helpers.training_helpers import training_script

from galip_diffusers.training import options as opts

GALIP_BASE = ["--train_data_dir", "data", "--clip_model_name_or_path", "clip", "--generator_config", "gen.json"]


@pytest.fixture(scope="module")
def scripts():
    return {name: training_script(name) for name in ("train_galip", "train_clip", "eval_emoji", "package_emoji_model")}


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    return path


def _refused(script, argv, capsys) -> str:
    """The one-line error of ``script.parse_args(argv)``: a ``ValueError`` (train_galip.py, whose ``__main__`` prints
    it as ``train_galip.py: error: ...``) or argparse's ``error:`` line (the other scripts)."""
    try:
        script.parse_args(argv)
    except ValueError as error:
        return str(error)
    except SystemExit as exit_:
        assert exit_.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    pytest.fail(f"accepted {argv}")


GALIP_BAD = [
    ("--max_train_steps", "0", "an integer >= 1"), ("--max_train_steps", "-5", "an integer >= 1"),
    ("--num_train_epochs", "0", "an integer >= 1"), ("--gradient_accumulation_steps", "0", "an integer >= 1"),
    ("--max_grad_norm", "-1", "a finite number > 0"), ("--max_grad_norm", "0", "a finite number > 0"),
    ("--ema_decay", "2", "a finite number >= 0 and < 1"), ("--ema_decay", "1", "a finite number >= 0 and < 1"),
    ("--magp_weight", "-1", "a finite number >= 0"), ("--magp_power", "0", "a finite number > 0"),
    ("--sim_weight", "nan", "a finite number >= 0"), ("--sim_weight", "inf", "a finite number >= 0"),
    ("--learning_rate_g", "-1", "a finite number > 0"), ("--learning_rate_g", "nan", "a finite number > 0"),
    ("--learning_rate_d", "inf", "a finite number > 0"), ("--learning_rate_d", "0", "a finite number > 0"),
    ("--adam_beta1", "1.5", "a finite number >= 0 and < 1"), ("--adam_beta2", "-0.1", "a finite number >= 0 and < 1"),
    ("--adam_epsilon", "0", "a finite number > 0"), ("--adam_weight_decay", "-1", "a finite number >= 0"),
    ("--lr_power", "0", "a finite number > 0"), ("--lr_num_cycles", "0", "an integer >= 1"),
    ("--lr_warmup_steps", "-1", "an integer >= 0"), ("--validation_epochs", "0", "an integer >= 1"),
    ("--dataloader_num_workers", "-1", "an integer >= 0"), ("--num_validation_images", "0", "an integer >= 1"),
    ("--max_train_samples", "0", "an integer >= 1"), ("--shuffle_buffer_size", "0", "an integer >= 1"),
    ("--eval_num_images", "-1", "an integer >= 0"), ("--reconstruction_warmup_steps", "-1", "an integer >= 0"),
    ("--seed", "-1", "an integer >= 0"), ("--seed", str(2**32), "an integer >= 0"),
]  # fmt: skip


@pytest.mark.parametrize("flag, value, allowed", GALIP_BAD)
def test_train_galip_refuses_bad_numbers(scripts, capsys, flag, value, allowed):
    message = _refused(scripts["train_galip"], GALIP_BASE + [flag, value], capsys)
    got = repr(float(value)) if "number" in allowed else value
    assert message.startswith(f"{flag} must be {allowed}") and message.endswith(f", got {got}.")


def test_train_galip_polynomial_schedule_needs_learning_rates_above_its_end(scripts, capsys):
    message = _refused(scripts["train_galip"], GALIP_BASE + ["--lr_scheduler", "polynomial", "--learning_rate_d",
                                                             "1e-8"], capsys)
    assert message.startswith("--learning_rate_d (--lr_scheduler polynomial decays to 1e-07) must be")
    scripts["train_galip"].parse_args(GALIP_BASE + ["--lr_scheduler", "polynomial"])


def test_train_galip_defaults_and_edges_still_parse(scripts):
    args = scripts["train_galip"].parse_args(GALIP_BASE)
    assert args.max_grad_norm is None and args.max_train_steps is None and args.seed is None  # left out: not checked
    args = scripts["train_galip"].parse_args(GALIP_BASE + [
        "--max_train_steps", "1", "--num_train_epochs", "1", "--ema_decay", "0", "--adam_beta1", "0", "--sim_weight",
        "0", "--magp_weight", "0", "--max_grad_norm", "1e-3", "--seed", str(2**32 - 1), "--dataloader_num_workers",
        "0", "--num_validation_images", "1", "--validation_prompts", "a"])  # fmt: skip
    assert (args.max_train_steps, args.ema_decay, args.seed) == (1, 0.0, 2**32 - 1)


CLIP_BAD = [
    ("--max_train_steps", "-3", "an integer >= 1"), ("--max_train_steps", "0", "an integer >= 1"),
    ("--learning_rate", "nan", "a finite number > 0"), ("--learning_rate", "-1", "a finite number > 0"),
    ("--adam_beta2", "1", "a finite number >= 0 and < 1"), ("--weight_decay", "-0.5", "a finite number >= 0"),
    ("--max_grad_norm", "-1", "a finite number >= 0"), ("--max_grad_norm", "inf", "a finite number >= 0"),
    ("--lr_warmup_steps", "-1", "an integer >= 0"), ("--logging_steps", "0", "an integer >= 1"),
    ("--eval_images", "0", "an integer >= 1"), ("--validation_steps", "-1", "an integer >= 0"),
    ("--checkpointing_steps", "0", "an integer >= 1"), ("--checkpoints_total_limit", "0", "an integer >= 1"),
    ("--seed", "-1", "an integer >= 0"), ("--vision_heads", "0", "an integer >= 1"),
    ("--text_layers", "0", "an integer >= 1"), ("--context_length", "0", "an integer >= 1"),
]  # fmt: skip


@pytest.mark.parametrize("flag, value, allowed", CLIP_BAD)
def test_train_clip_refuses_bad_numbers(scripts, capsys, tmp_path, flag, value, allowed):
    message = _refused(scripts["train_clip"], ["--output_dir", str(tmp_path / "out"), flag, value], capsys)
    assert f"error: {flag} must be {allowed}" in message


@pytest.mark.parametrize("argv, expected", [
    (["--vision_heads", "5"], "--vision_width (128) must be divisible by --vision_heads (5)."),
    (["--patch_size", "7"], "--image_size (64) must be a multiple of --patch_size (7)."),
    (["--lr_scheduler", "bogus"], "argument --lr_scheduler: invalid choice: 'bogus'"),
])  # fmt: skip
def test_train_clip_refuses_bad_sizes_and_schedules(scripts, capsys, tmp_path, argv, expected):
    assert expected in _refused(scripts["train_clip"], ["--output_dir", str(tmp_path / "out"), *argv], capsys)


def test_train_clip_defaults_and_no_clipping_still_parse(scripts, tmp_path, capsys, a_file):
    args = scripts["train_clip"].parse_args(["--output_dir", str(tmp_path / "out")])
    assert (args.max_train_steps, args.max_grad_norm, args.lr_scheduler) == (1600, 1.0, "cosine")
    args = scripts["train_clip"].parse_args(["--output_dir", str(tmp_path / "o"), "--max_grad_norm", "0"])
    assert args.max_grad_norm == 0
    message = _refused(scripts["train_clip"], ["--output_dir", str(a_file)], capsys)
    assert f"error: --output_dir {str(a_file)!r} is a file" in message and a_file.read_text() == "keep me"


def test_train_clip_refuses_another_runs_folder_as_train_galip_does(scripts, capsys, tmp_path):
    """A new run into a non-empty --output_dir replaced the earlier run's final CLIP without a word."""
    out = tmp_path / "clip1"
    out.mkdir()
    (out / "model.safetensors").write_text("the first run's CLIP")
    for extra in ([], ["--resume_from_checkpoint", "latest"]):  # "latest" with no checkpoint starts a new run
        message = _refused(scripts["train_clip"], ["--output_dir", str(out), *extra], capsys)
        assert f"error: --output_dir {str(out)!r} is not empty (model.safetensors): it holds another run" in message
        assert "--overwrite_output_dir" in message
    assert (out / "model.safetensors").read_text() == "the first run's CLIP"
    assert scripts["train_clip"].parse_args(["--output_dir", str(out), "--overwrite_output_dir"]).overwrite_output_dir
    (out / "checkpoint-3").mkdir()
    assert scripts["train_clip"].parse_args(["--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    message = _refused(scripts["train_clip"], ["--output_dir", str(out), "--resume_from_checkpoint", "checkpoint-9"],
                       capsys)
    assert "error: --resume_from_checkpoint 'checkpoint-9' does not exist" in message
    message = _refused(scripts["train_clip"], ["--output_dir", ""], capsys)
    assert "error: --output_dir is empty; give a folder." in message


def test_train_galip_refuses_an_empty_output_dir_before_anything_loads(scripts):
    """``--output_dir ""`` ended in a FileNotFoundError traceback from os.makedirs('')."""
    args = scripts["train_galip"].parse_args(GALIP_BASE + ["--output_dir", ""])
    with pytest.raises(ValueError, match=r"^--output_dir is empty; give a folder.$"):
        scripts["train_galip"].preflight(args)


@pytest.mark.parametrize("extra", [[], ["--validation_epochs", "1"], ["--num_validation_images", "2"]])
def test_train_galip_refuses_validation_flags_without_prompts(scripts, capsys, extra):
    """--validation_steps without --validation_prompts made no validation image and said nothing."""
    argv = GALIP_BASE + ["--validation_steps", "1", *extra]
    message = _refused(scripts["train_galip"], argv, capsys)
    given = " and ".join(["--validation_steps", *extra[:1]])
    assert message.startswith(f"{given} need") and "--validation_prompts" in message
    args = scripts["train_galip"].parse_args(argv + ["--validation_prompts", "a red picture"])
    assert args.validation_steps == 1 and args.num_validation_images == (2 if "2" in extra else 4)
    args = scripts["train_galip"].parse_args(GALIP_BASE)  # left out: the defaults, without prompts too
    assert (args.validation_steps, args.num_validation_images, args.validation_epochs) == (500, 4, None)


EMOJI_BAD = [
    (["--truncation", "-1"], "--truncation must be a finite number > 0, got -1.0."),
    (["--truncation", "nan"], "--truncation must be a finite number > 0, got nan."),
    (["--truncation", "0"], "--truncation must be a finite number > 0, got 0.0."),
    (["--seed", "99999999999999999999999"], "--seed must be an integer >= 0 and <= 9223372036854775807, got 9999"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--num_seen", "0"], "--num_seen must be an integer >= 1, got 0."),
]  # fmt: skip


@pytest.mark.parametrize("argv, expected", EMOJI_BAD)
def test_eval_emoji_refuses_bad_values(scripts, capsys, argv, expected):
    assert f"error: {expected}" in _refused(scripts["eval_emoji"], ["--model", "m", *argv], capsys)


def test_eval_emoji_refuses_a_file_as_results_dir_and_takes_the_defaults(scripts, capsys, a_file, tmp_path):
    for path, expected in ((a_file, f"--results_dir {str(a_file)!r} is a file; give a folder"),
                           (a_file / "sub", f"--results_dir: {str(a_file)!r} is a file, not a folder, so the folder "
                                            f"{str(a_file / 'sub')!r} cannot be created")):
        message = _refused(scripts["eval_emoji"], ["--model", "m", "--results_dir", str(path)], capsys)
        assert f"error: {expected}" in message
    assert a_file.read_text() == "keep me"
    args = scripts["eval_emoji"].parse_args(["--model", "m", "--seed", str(2**63 - 1), "--truncation", "0.8",
                                             "--results_dir", str(tmp_path / "new" / "folder")])
    assert (args.seed, args.truncation) == (2**63 - 1, 0.8)
    assert scripts["eval_emoji"].parse_args(["--model", "m"]).seed == 0


@pytest.mark.parametrize("extra, ignored", [(["--checkpoint", "checkpoint-99"], "--checkpoint goes"),
                                            (["--clip_model_name_or_path", "nope"], "--clip_model_name_or_path goes"),
                                            (["--checkpoint", "latest", "--clip_model_name_or_path", "nope"],
                                             "--checkpoint and --clip_model_name_or_path go")])
def test_eval_emoji_refuses_run_flags_with_a_model(scripts, capsys, extra, ignored):
    """--model judged the final pipeline although --checkpoint named another model (or one that does not exist)."""
    message = _refused(scripts["eval_emoji"], ["--model", "m", *extra], capsys)
    assert f"error: {ignored} with --run_dir, not with --model" in message
    args = scripts["eval_emoji"].parse_args(["--run_dir", "r", "--clip_model_name_or_path", "c", *extra[:2]])
    assert args.run_dir == "r"


@pytest.mark.parametrize("flag", ["--results_dir", "--output_dir"])
def test_package_emoji_model_refuses_a_file_as_folder(scripts, capsys, a_file, tmp_path, flag):
    (tmp_path / "run").mkdir()
    base = ["--run_dir", str(tmp_path / "run"), "--clip_model_name_or_path", "c", "--scorer_model_name_or_path", "s"]
    message = _refused(scripts["package_emoji_model"], [*base, flag, str(a_file)], capsys)
    assert f"error: {flag} {str(a_file)!r} is a file" in message and a_file.read_text() == "keep me"


def test_check_flag_ranges_skips_flags_left_out_or_absent():
    opts.check_flag_ranges(argparse.Namespace(max_train_steps=None, seed=None, unrelated=-1))
    with pytest.raises(ValueError, match=r"^--ema_decay must be a finite number >= 0 and < 1, got 1.0.$"):
        opts.check_flag_ranges(argparse.Namespace(ema_decay=1.0))
    opts.check_flag_ranges(argparse.Namespace(max_grad_norm=0.0), {"max_grad_norm": dict(low=0)})  # an override
