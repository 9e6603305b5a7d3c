"""What train_galip.py and train_clip.py make of the run's settings (the flag audit): the precision accelerate asks for
and really runs, trackers (known, installed, logged in, never given the Hub token), what --push_to_hub leaves out,
the resolution a reconstruction term needs, validation every N steps, --max_train_samples on a saved data set, the
seed and the step count of a resumed run, --revision / --variant with a CLIP, the images counted, and the help."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from helpers.hub_helpers import hub  # noqa: F401  (the fixture)
from helpers.training_helpers import make_imagefolder, make_tiny_clip, training_script, write_generator_config

from galip_diffusers.testing_utils import byte_level_clip_tokenizer
from galip_diffusers.training.checkpoints import SetupError, resume_message
from galip_diffusers.training.environment import TRACKERS, push_ignore_patterns

CLIP_TINY = ["--vision_width", "32", "--vision_layers", "1", "--vision_heads", "2", "--text_width", "32",
             "--text_layers", "1", "--text_heads", "2", "--projection_dim", "16", "--patch_size", "16",
             "--num_train_images", "8", "--train_batch_size", "4", "--eval_images", "2", "--report_to", "none",
             "--patch_init", "random", "--lr_warmup_steps", "0", "--max_train_steps", "1"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_settings")
    data = make_imagefolder(str(root / "data"), num_images=16)
    saved = str(root / "saved")
    datasets.load_dataset("imagefolder", data_dir=data, cache_dir=str(root / "cache"))["train"].save_to_disk(saved)
    return {"root": root, "data": data, "saved": saved, "clip": make_tiny_clip(str(root / "clip")),
            "gen": write_generator_config(str(root / "generator.json")),
            "gen24": write_generator_config(str(root / "generator24.json"), output_size=24),
            "cache": str(root / "cache")}


@contextlib.contextmanager
def _in_process():
    """One thread, like the launched runs, and accelerate's process-wide state reset afterwards."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


@pytest.fixture()
def galip():
    with _in_process():
        yield training_script("train_galip")


@pytest.fixture()
def clip_script():
    with _in_process():
        yield training_script("train_clip")


def _galip_args(fx, out, *extra, gen="gen"):
    return ["--clip_model_name_or_path", fx["clip"], "--generator_config", fx[gen], "--train_data_dir", fx["data"],
            "--output_dir", str(out), "--cache_dir", fx["cache"], "--train_batch_size", "4", "--report_to", "none",
            "--speed_batch_sizes", "", "--checkpointing_steps", "100", *extra]


def _run(script, argv):
    args = script.parse_args(argv)
    script.main(args)
    return args


def _losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(fx, tmp_path_factory):
    """A 3-step train_galip.py run without --seed (checkpoints 1-3) and a 2-step train_clip.py run with --seed 3
    (checkpoints 1-2): the runs the resume tests continue."""
    root = tmp_path_factory.mktemp("finished")
    galip_out, clip_out = root / "galip", root / "clip"
    with _in_process():
        _run(training_script("train_galip"), _galip_args(fx, galip_out, "--max_train_steps", "3",
                                                         "--checkpointing_steps", "1"))
    with _in_process():
        _run(training_script("train_clip"), [*CLIP_TINY, "--output_dir", str(clip_out), "--seed", "3",
                                             "--max_train_steps", "2", "--checkpointing_steps", "1"])
    return {"galip": galip_out, "clip": clip_out}


# ------------------------------------------------------------------------------------------ 1, 7: mixed precision
def test_train_clip_takes_the_precision_accelerate_launch_asks_for(clip_script, tmp_path, monkeypatch):
    """--mixed_precision defaulted to "no" in train_clip.py, which overrode `accelerate launch --mixed_precision`."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    out = tmp_path / "clip"
    _run(clip_script, [*CLIP_TINY, "--output_dir", str(out)])
    assert json.loads((out / "zero_shot_eval.json").read_text())["training"]["mixed_precision"] == "bf16"
    assert training_script("train_galip").parse_args(["--train_data_dir", "d", "--clip_model_name_or_path", "c"]
                                                     ).mixed_precision is None


def test_a_precision_the_device_cannot_run_is_warned_about_and_recorded(galip, fx, tmp_path, monkeypatch, caplog):
    """fp16 on a CPU runs in fp32: the card said fp16, and via ACCELERATE_MIXED_PRECISION nothing warned."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    out = tmp_path / "galip"
    with caplog.at_level(logging.WARNING):
        _run(galip, _galip_args(fx, out, "--max_train_steps", "1", "--seed", "0"))
    assert "fp16 mixed precision was asked for, but accelerate has no fp16 autocast on cpu" in caplog.text
    assert json.loads((out / "training_summary.json").read_text())["mixed_precision"] == "no"
    card = (out / "README.md").read_text()
    assert "| mixed precision | no (fp32; fp16 was asked for, unavailable on cpu) |" in card
    assert "| `mixed_precision` | `no` |" in card


def test_train_clip_warns_about_and_records_the_precision_it_really_runs(clip_script, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    out = tmp_path / "clip"
    with caplog.at_level(logging.WARNING):
        _run(clip_script, [*CLIP_TINY, "--output_dir", str(out)])
    assert "fp16 mixed precision was asked for, but accelerate has no fp16 autocast on cpu" in caplog.text
    assert json.loads((out / "zero_shot_eval.json").read_text())["training"]["mixed_precision"] == "no"


# ------------------------------------------------------------------------------------------ 2-4: trackers, the Hub
def test_the_hub_token_reaches_no_tracker_and_the_push_leaves_out_logs_and_run_records(galip, fx, tmp_path, hub):
    out = tmp_path / "pushed"
    _run(galip, _galip_args(fx, out, "--max_train_steps", "1", "--seed", "0", "--checkpointing_steps", "1",
                            "--report_to", "tensorboard", "--logging_dir", "tb", "--hub_token", "hf_SECRET123",
                            "--push_to_hub", "--hub_model_id", "me/galip"))
    written = [os.path.join(base, name) for base, _, names in os.walk(out) for name in names]
    assert any(os.sep + "tb" + os.sep in path for path in written)  # the tracker wrote its logs (and hparams)
    assert not [path for path in written if b"hf_SECRET123" in open(path, "rb").read()]
    files = hub.files("me/galip")
    assert {"model_index.json", "README.md", "galip_settings.json"} <= set(files)
    assert not [f for f in files if f.startswith(("tb/", "checkpoint-")) or f in (
        "losses.jsonl", "galip_run.json", "training_summary.json")], files
    assert hub.repos["me/galip"]["token"] == "hf_SECRET123"  # the token is for the Hub alone
    for tracker in ("wandb", "all"):  # wandb records the command line: refused, as diffusers does
        with pytest.raises(ValueError, match=f"--report_to {tracker} and --hub_token .* `hf auth login`"):
            galip.parse_args(_galip_args(fx, out, "--report_to", tracker, "--hub_token", "hf_x"))


def test_push_ignore_patterns_extend_the_default_and_follow_the_logging_dir(tmp_path):
    from galip_diffusers.hub import DEFAULT_IGNORE_PATTERNS

    out = str(tmp_path / "run")
    patterns = push_ignore_patterns(out, "logs", "galip-train")
    assert patterns[:len(DEFAULT_IGNORE_PATTERNS)] == list(DEFAULT_IGNORE_PATTERNS)
    assert {"losses.jsonl", "galip_run.json", "training_summary.json"} <= set(patterns)
    assert "runs/tb/*" in push_ignore_patterns(out, os.path.join("runs", "tb"), "p")
    assert "p/*" in push_ignore_patterns(out, ".", "p")  # the trackers' run folder straight inside the output
    outside = push_ignore_patterns(out, str(tmp_path / "elsewhere"), "p")
    assert not [p for p in outside if "elsewhere" in p or p.startswith("..")]


@pytest.fixture()
def no_wandb_login(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / "netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "home"))


@pytest.mark.parametrize("report_to", ["wandb", "all"])
def test_a_tracker_without_its_login_is_one_line_before_the_folder_is_claimed(galip, clip_script, fx, tmp_path,
                                                                              no_wandb_login, report_to):
    """wandb without a login failed in init_trackers after galip_run.json was written: the corrected command was
    then refused ("it holds another run")."""
    pytest.importorskip("wandb")
    out = tmp_path / "galip"
    message = f"--report_to {report_to} logs to wandb, which is not logged in .*wandb login"
    with pytest.raises(SetupError, match=message):
        galip.main(galip.parse_args(_galip_args(fx, out, "--max_train_steps", "1", "--report_to", report_to)))
    assert not out.exists()
    out = tmp_path / "clip"
    with pytest.raises(SetupError, match="which is not logged in"):
        clip_script.main(clip_script.parse_args([*CLIP_TINY, "--output_dir", str(out), "--report_to", report_to]))
    assert not out.exists()


def test_a_tracker_that_is_not_installed_is_named_before_anything_loads(galip, fx, tmp_path, monkeypatch):
    from accelerate.tracking import get_available_trackers

    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    missing = [t for t in TRACKERS if t not in available and t not in ("all", "none")]
    if not missing:
        pytest.skip("every accelerate tracker is installed")
    monkeypatch.setattr(galip, "load_models", lambda args: pytest.fail("models loaded before the tracker check"))
    out = tmp_path / "galip"
    with pytest.raises(SetupError, match=f"--report_to {missing[0]} needs the {missing[0]} package"):
        galip.main(galip.parse_args(_galip_args(fx, out, "--report_to", missing[0])))
    assert not out.exists()


def test_report_to_is_one_of_accelerates_trackers_in_both_scripts(galip, clip_script, fx, tmp_path, capsys):
    """train_galip.py --report_to foo ended in accelerate's traceback."""
    assert {"tensorboard", "wandb", "mlflow", "comet_ml", "all", "none"} <= set(TRACKERS)
    with pytest.raises(SystemExit):
        galip.parse_args(_galip_args(fx, tmp_path / "a", "--report_to", "foo"))
    assert "argument --report_to: invalid choice: 'foo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        clip_script.parse_args([*CLIP_TINY, "--output_dir", str(tmp_path / "b"), "--report_to", "foo"])
    assert "argument --report_to: invalid choice: 'foo'" in capsys.readouterr().err
    assert galip.parse_args(_galip_args(fx, tmp_path / "a", "--report_to", "mlflow")).report_to == "mlflow"


# ------------------------------------------------------------------------------------------ 5: resolution
def test_a_reconstruction_term_crops_real_images_to_the_generators_size(galip, fx, tmp_path):
    """A 24 px generator with the default --resolution (32) failed at step 1, after the folder was claimed."""
    out = tmp_path / "rec"
    args = _run(galip, _galip_args(fx, out, "--max_train_steps", "1", "--seed", "0", "--reconstruction_weight", "1",
                                   "--reconstruction_fraction", "0.5", gen="gen24"))
    assert args.resolution == 24 and "loss_g_reconstruction" in _losses(out)[0]
    refused = tmp_path / "refused"
    with pytest.raises(SetupError, match="--resolution 32 differs from the generator's output_size 24"):
        _run(galip, _galip_args(fx, refused, "--max_train_steps", "1", "--reconstruction_warmup_steps", "1",
                                "--resolution", "32", gen="gen24"))
    assert not refused.exists()


# ------------------------------------------------------------------------------------------ 6: clip validation
def test_train_clip_validates_every_n_steps_whatever_the_logging_steps(clip_script, tmp_path):
    out = tmp_path / "shapes"
    _run(clip_script, [*CLIP_TINY, "--output_dir", str(out), "--max_train_steps", "4", "--logging_steps", "3",
                       "--validation_steps", "2"])
    history = json.loads((out / "zero_shot_eval.json").read_text())["training"]["history"]
    assert [row["step"] for row in history if "val" in row] == [2, 4]
    assert [row["step"] for row in history if "loss" in row] == [3, 4]


def test_train_clip_validates_on_its_own_data_too(clip_script, fx, tmp_path):
    """With --train_data_dir --validation_steps did nothing, silently."""
    out = tmp_path / "own"
    _run(clip_script, [*CLIP_TINY, "--output_dir", str(out), "--train_data_dir", fx["saved"], "--image_size", "32",
                       "--max_train_steps", "2", "--validation_steps", "1", "--context_length", "24"])
    history = json.loads((out / "zero_shot_eval.json").read_text())["training"]["history"]
    assert [row["step"] for row in history if "val" in row] == [1, 2]
    assert set(history[0]["val"]["all"]) == {"top1", "top5"}


# ------------------------------------------------------------------------------------------ 8: cache files
def test_max_train_samples_writes_nothing_into_a_saved_data_set(galip, fx, tmp_path):
    before = sorted(os.listdir(fx["saved"]))
    args = galip.parse_args(_galip_args(fx, tmp_path / "out", "--max_train_samples", "8", "--seed", "0") +
                            ["--train_data_dir", fx["saved"]])
    dataset, _, loader = galip.build_train_dataloader(args, byte_level_clip_tokenizer(), 32,
                                                      SimpleNamespace(num_processes=1))
    assert len(dataset) == 8 and len(loader) == 2
    assert sorted(os.listdir(fx["saved"])) == before  # no cache-*.arrow in the user's folder


# ------------------------------------------------------------------------------------------ 9, 10: resuming
def test_a_resumed_run_keeps_its_seed(galip, clip_script, fx, finished, tmp_path, capsys):
    """Resuming without --seed drew a new random seed: another data order and other noise than the run's."""
    first = finished["galip"]
    seed = json.loads((first / "galip_run.json").read_text())["seed"]
    assert json.loads((first / "checkpoint-1" / "galip_run.json").read_text())["seed"] == seed
    out = tmp_path / "resumed"
    args = _run(galip, _galip_args(fx, out, "--max_train_steps", "2", "--resume_from_checkpoint",
                                   str(first / "checkpoint-1")))
    assert args.seed == seed and _losses(out) == [_losses(first)[1]]  # step 2, bit for bit
    with pytest.raises(ValueError, match=f"--seed {seed + 1} differs from the seed {seed} of the run"):
        galip.preflight(galip.parse_args(_galip_args(fx, tmp_path / "other", "--max_train_steps", "2", "--seed",
                                                     str(seed + 1), "--resume_from_checkpoint",
                                                     str(first / "checkpoint-1"))))
    # train_clip.py: the seed also draws the shapes pool, so a resume with another one trained on other images
    clip_run = ["--output_dir", str(finished["clip"]), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]
    assert clip_script.parse_args([*CLIP_TINY, *clip_run]).seed == 3
    with pytest.raises(SystemExit):
        clip_script.parse_args([*CLIP_TINY, *clip_run, "--seed", "4"])
    assert "--seed 4 differs from the seed 3 of the run" in capsys.readouterr().err


def test_resuming_past_max_train_steps_is_refused_before_anything_changes(galip, clip_script, fx, finished, capsys):
    """checkpoint-3 and --max_train_steps 2 trained a step 4."""
    out = finished["galip"]
    before = {name: (out / name).read_bytes() for name in ("losses.jsonl", "galip_run.json")}
    with pytest.raises(ValueError, match="the checkpoint .*checkpoint-3 is at step 3, past --max_train_steps 2: a run "
                                         "cannot go back. Pass --max_train_steps 3 to save the final model from it"):
        galip.main(galip.parse_args(_galip_args(fx, out, "--max_train_steps", "2", "--resume_from_checkpoint",
                                                "latest")))
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    with pytest.raises(SystemExit):
        clip_script.parse_args([*CLIP_TINY, "--output_dir", str(finished["clip"]), "--max_train_steps", "1",
                                "--resume_from_checkpoint", "latest"])
    assert "is at step 2, past --max_train_steps 1" in capsys.readouterr().err


def _killed_before_the_final_save(run: Path, to: Path) -> Path:
    """A copy of a finished run as a run killed after its last checkpoint, before its final save, left it."""
    shutil.copytree(run, to)
    for path in to.iterdir():
        if not (path.name.startswith("checkpoint-") or path.name in ("galip_run.json", "losses.jsonl")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return to


def test_resuming_at_max_train_steps_saves_the_final_model_without_training(galip, clip_script, fx, finished,
                                                                           tmp_path, capsys):
    """A run killed between its last checkpoint and its final save is finished by rerunning its command: the final
    model is the one the uninterrupted run saved, bit for bit, and no step is trained (before: one extra step, then
    an error that asked for a higher --max_train_steps)."""
    out = _killed_before_the_final_save(finished["galip"], tmp_path / "galip")
    losses = (out / "losses.jsonl").read_bytes()
    galip.main(galip.parse_args(_galip_args(fx, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")))
    assert "no step is left to train; saving the final model from it" in capsys.readouterr().out
    assert (out / "losses.jsonl").read_bytes() == losses
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    summary, uninterrupted = (json.loads((run / "training_summary.json").read_text())
                              for run in (out, finished["galip"]))
    assert (summary["steps"], summary["epochs"]) == (uninterrupted["steps"], uninterrupted["epochs"]) == (3, 1)
    for name in ("generator/diffusion_pytorch_model.safetensors", "discriminator/diffusion_pytorch_model.safetensors"):
        assert (out / name).read_bytes() == (finished["galip"] / name).read_bytes(), name
    # train_clip.py: the same
    clip_out = _killed_before_the_final_save(finished["clip"], tmp_path / "clip")
    clip_script.main(clip_script.parse_args([*CLIP_TINY, "--output_dir", str(clip_out), "--max_train_steps", "2",
                                             "--resume_from_checkpoint", "latest"]))
    assert "no step is left to train" in capsys.readouterr().out
    assert (clip_out / "model.safetensors").read_bytes() == (finished["clip"] / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------ 11: --revision / --variant
def test_revision_and_variant_reach_the_clip_of_a_run_from_scratch(galip, fx, tmp_path, monkeypatch):
    from transformers import CLIPModel

    folder = make_tiny_clip(str(tmp_path / "clip"), seed=0)
    torch.manual_seed(1)
    variant = CLIPModel(CLIPModel.from_pretrained(folder).config)
    variant.save_pretrained(folder, variant="fp16")
    argv = ["--clip_model_name_or_path", folder, "--generator_config", fx["gen"], "--train_data_dir", fx["data"]]
    text_encoder = galip.load_models(galip.parse_args(argv + ["--variant", "fp16"]))[1]
    expected = variant.text_projection.weight
    assert torch.equal(text_encoder.text_projection.weight, expected)  # the variant's weights, not model.safetensors
    calls = []
    loader = galip.CLIPModel.from_pretrained
    monkeypatch.setattr(galip.CLIPModel, "from_pretrained",
                        lambda path, **kw: calls.append(kw) or loader(path, **{**kw, "revision": None}))
    galip.load_models(galip.parse_args(argv + ["--revision", "v1"]))
    assert calls and calls[0]["revision"] == "v1"


# ------------------------------------------------------------------------------------------ 12: images counted
def test_images_seen_counts_the_micro_batches_really_trained(galip, fx, tmp_path):
    """16 images, batch 4, accumulation 3: an epoch is 3 + 1 micro-batches, counted as 2 x 12 = 24 images."""
    out = tmp_path / "accumulated"
    _run(galip, _galip_args(fx, out, "--max_train_steps", "2", "--seed", "0", "--gradient_accumulation_steps", "3"))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["images_seen"] == 16
    assert summary["images_per_second"] == pytest.approx(16 / summary["session_train_seconds"], rel=0.05)


# ------------------------------------------------------------------------------------------ 13-15: help, messages
def test_the_help_says_how_random_flip_and_max_train_samples_behave(galip, capsys):
    with pytest.raises(SystemExit):
        galip.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "On by default, unlike diffusers' --random_flip: pass --no-random_flip to turn it off" in text
    assert "a random N (drawn with --seed) of a map-style data set; with --streaming, the first N of the stream" in text


def test_train_clip_says_when_latest_finds_no_checkpoint(clip_script, tmp_path, capsys):
    """train_clip.py --resume_from_checkpoint latest without a checkpoint started afresh without a word."""
    _run(clip_script, [*CLIP_TINY, "--output_dir", str(tmp_path / "clip"), "--resume_from_checkpoint", "latest"])
    line = resume_message("latest", None)
    assert line == "Checkpoint 'latest' does not exist. Starting a new training run."
    assert line in capsys.readouterr().out
