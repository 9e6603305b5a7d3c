"""End-to-end tests of training/train_galip.py: accelerate launch with 1 and 2 CPU processes, bit-exact resume, SIGKILL
during a checkpoint save, bad inputs, and the saved pipeline folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from helpers.hub_helpers import hub  # noqa: F401  (the fixture)
from helpers.training_helpers import (make_imagefolder, make_tiny_clip, make_tiny_pipeline_folder, training_script,
                                      write_generator_config)

from galip_diffusers.training.checkpoints import INCOMPLETE_PREFIX, list_checkpoints, resolve_resume_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "training", "train_galip.py")
SRC = os.path.join(ROOT, "src")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {
        "root": root,
        "data": make_imagefolder(str(root / "data"), num_images=16),
        "clip": make_tiny_clip(str(root / "clip")),
        "gen_config": write_generator_config(str(root / "generator.json")),
        "pipe": make_tiny_pipeline_folder(str(root / "pipe")),
        "cache": str(root / "cache"),
    }


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    return env


def _common(fx, output_dir, *extra):
    return ["--train_data_dir", fx["data"], "--output_dir", str(output_dir), "--cache_dir", fx["cache"],
            "--train_batch_size", "4", "--seed", "0", "--report_to", "none", *extra]


def _scratch(fx):
    return ["--clip_model_name_or_path", fx["clip"], "--generator_config", fx["gen_config"]]


def _launch(args, num_processes=1, timeout=150):
    launcher = ["accelerate", "launch", "--num_processes", str(num_processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    launcher += ["--multi_gpu"] if num_processes > 1 else ["--cpu"]
    try:
        proc = subprocess.run(launcher + [SCRIPT, *args], env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"timed out; output tail:\n{(err.stdout or b'')[-3000:]!r}\n{(err.stderr or b'')[-6000:]!r}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _losses(output_dir):
    with open(os.path.join(output_dir, "losses.jsonl")) as f:
        return [json.loads(line) for line in f]


def _load_script():
    return training_script("train_galip")


@pytest.fixture()
def script():
    """The training script as a module, run in this process (cheaper than a subprocess); one thread, like the
    launched runs, so that in-process and launched losses can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _load_script()
    torch.set_num_threads(threads)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_from_scratch_checkpoints_and_resume_bit_exactly(script, fixtures, tmp_path):
    fx = fixtures
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _launch(_scratch(fx) + _common(
        fx, full, "--max_train_steps", "7", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3",
        "--use_ema", "--ema_decay", "0.9", "--mismatch", "nearest",
        "--validation_prompts", "a red picture", "a blue picture", "--validation_steps", "4",
        "--num_validation_images", "2", "--report_to", "tensorboard",
    ))
    # 16 images, batch 4: 4 steps per epoch. Limit 3 keeps checkpoints 5, 6, 7.
    assert [step for step, _ in list_checkpoints(str(full))] == [5, 6, 7]
    # Resume mid-epoch (epoch 1, one batch to skip) in a fresh output folder.
    script.main(script.parse_args(_scratch(fx) + _common(
        fx, resumed, "--max_train_steps", "7", "--checkpointing_steps", "100", "--use_ema", "--ema_decay", "0.9",
        "--mismatch", "nearest", "--resume_from_checkpoint", str(full / "checkpoint-5"))))
    full_losses, resumed_losses = _losses(full), _losses(resumed)
    assert [r["step"] for r in full_losses] == list(range(1, 8))
    assert [r["step"] for r in resumed_losses] == [6, 7]
    assert resumed_losses == full_losses[5:]  # every logged float is bit-identical
    # the training time adds up over resumed segments (the card's figure), images per second is this session's
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["train_seconds"] > summary["session_train_seconds"] > 0
    for sub in ("generator", "discriminator"):
        a = load_file(str(full / sub / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(resumed / sub / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the saved generator is the EMA (restored from the checkpoint on resume), not the raw weights
    raw = load_file(str(full / "checkpoint-7" / "generator" / "diffusion_pytorch_model.safetensors"))
    ema = load_file(str(full / "generator" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(raw["fc_prompt.weight"], ema["fc_prompt.weight"])

    # The output is a pipeline folder (plus discriminator/), with validation grids and a model card.
    import galip_diffusers  # noqa: F401
    from diffusers import DiffusionPipeline

    from galip_diffusers import GALIPDiscriminator, GALIPPipeline

    pipe = DiffusionPipeline.from_pretrained(str(full))
    assert isinstance(pipe, GALIPPipeline) and pipe.image_encoder is not None
    image = pipe("a red picture", generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 32, 32, 3)
    GALIPDiscriminator.from_pretrained(str(full), subfolder="discriminator")
    assert sorted(os.listdir(full / "validation")) == ["step_0000004.png", "step_0000007.png"]
    card = (full / "README.md").read_text()
    assert "library_name: diffusers" in card and "pipeline_tag: text-to-image" in card
    assert "Trained from scratch on the CLIP" in card and "| steps | 7 |" in card
    assert "(resize to ×76/64, random crop, random flip) |" in card
    assert script.augmentation_description(True, False) == "resize the shorter side, centre crop, no flip"
    assert "`a red picture`: row 1 of `validation/step_0000007.png`" in card and "`learning_rate_d` | `0.0004`" in card
    # speed figures with their machine, and the limitations
    assert "| float32, cpu | 1 |" in card and "| float32, cpu | 8 |" in card and "measured on CPU: " in card
    assert "## Limitations" in card and "prompts are cut at 77 tokens" in card
    summary = json.loads((full / "training_summary.json").read_text())
    assert summary["steps"] == 7 and summary["images_seen"] == 28 and summary["images_per_second"] > 0
    events = [f for _, _, files in os.walk(full / "logs") for f in files if f.startswith("events.out")]
    assert events

    # training/learning_curve.py reads this run: losses plus score_images per checkpoint (EMA weights)
    curve = training_script("learning_curve")
    results = tmp_path / "curve"
    curve.main(["--run_dir", str(full), "--clip_model_name_or_path", fx["clip"], "--num_images", "3", "--use_ema",
                "--loss_window", "2", "--results_dir", str(results)])
    report = json.loads((results / "learning_curve.json").read_text())
    assert [p["step"] for p in report["points"]] == [5, 6, 7]
    assert all(0.0 <= p[split][a] <= 1.0 for p in report["points"] for split in ("train", "held_out")
               for a in ("background", "color", "shape", "size"))
    assert report["losses"]["step"] == list(range(1, 8)) and len(report["losses"]["loss_d"]) == 6
    assert np.isclose(report["losses"]["loss_d"][0], (full_losses[0]["loss_d"] + full_losses[1]["loss_d"]) / 2)
    assert (results / "learning_curve.png").stat().st_size > 1000
    assert (results / "learning_curve.md").read_text().count("\n| 7 |") == 1


def test_two_processes_fine_tune_from_pipeline_folder(fixtures, tmp_path):
    fx = fixtures
    out = tmp_path / "ddp"
    proc = _launch(["--pretrained_model_name_or_path", fx["pipe"]] + _common(
        fx, out, "--train_batch_size", "2", "--max_train_steps", "2", "--gradient_accumulation_steps", "2",
        "--use_ema", "--checkpointing_steps", "2",
    ), num_processes=2)
    assert "All 2 processes hold identical weights" in proc.stderr + proc.stdout
    assert [r["step"] for r in _losses(out)] == [1, 2]
    ckpt = out / "checkpoint-2"
    assert {"generator", "discriminator", "generator_ema", "random_states_0.pkl", "random_states_1.pkl"} <= set(
        os.listdir(ckpt))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["images_seen"] == 2 * 2 * 2 * 2  # steps x batch x processes x accumulation
    import galip_diffusers  # noqa: F401
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(out))
    assert pipe.generator.config.output_size == 32
    assert "Fine-tuned from" in (out / "README.md").read_text()


def test_sigkill_during_checkpointing_keeps_the_previous_checkpoint(script, fixtures, tmp_path):
    fx = fixtures
    out = tmp_path / "killed"
    cmd = [sys.executable, SCRIPT, *_scratch(fx), *_common(fx, out, "--max_train_steps", "500",
                                                           "--checkpointing_steps", "1")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            names = os.listdir(out) if out.is_dir() else []
            if len(list_checkpoints(str(out))) >= 2 and any(n.startswith(INCOMPLETE_PREFIX) for n in names):
                break  # a save is in progress
            time.sleep(0.002)
        assert proc.poll() is None, "training ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    checkpoints = list_checkpoints(str(out))
    assert len(checkpoints) >= 2
    if not any(n.startswith(INCOMPLETE_PREFIX) for n in os.listdir(out)):
        # The kill landed between two saves this time: leave what a kill mid-save leaves, so that the checks below
        # (never listed, never resumed from, deleted on resume) always have a partial folder to deal with.
        partial = out / f"{INCOMPLETE_PREFIX}{checkpoints[-1][0] + 1}"
        shutil.copytree(checkpoints[-1][1], partial)
        (partial / "optimizer_1.bin").unlink()
    for _, path in checkpoints:  # every visible checkpoint is complete
        assert {"generator", "discriminator", "optimizer.bin", "optimizer_1.bin", "custom_checkpoint_0.pkl"} <= set(
            os.listdir(path)), path
    latest = resolve_resume_checkpoint("latest", str(out))
    assert latest == checkpoints[-1][1]
    last_step = checkpoints[-1][0]
    # `latest` resumes from it; the incomplete folder is cleaned up.
    script.main(script.parse_args(_scratch(fx) + _common(
        fx, out, "--max_train_steps", str(last_step + 1), "--checkpointing_steps", "1000",
        "--resume_from_checkpoint", "latest")))
    assert not any(n.startswith(INCOMPLETE_PREFIX) for n in os.listdir(out))
    assert _losses(out)[-1]["step"] == last_step + 1


# ------------------------------------------------------------------------------------------- errors before training
def test_bad_inputs_give_clear_errors_before_training(script, fixtures, tmp_path):
    fx = fixtures
    run = lambda *a: script.main(script.parse_args([*a]))  # noqa: E731
    with pytest.raises(ValueError, match=r"--caption_column 'caption' not found; available columns: \['image', 'text'"):
        run(*_scratch(fx), *_common(fx, tmp_path / "a", "--caption_column", "caption", "--max_train_steps", "1"))
    with pytest.raises(ValueError, match=r"--resolution 128 is incompatible with the generator config"):
        run(*_scratch(fx), *_common(fx, tmp_path / "b", "--resolution", "128", "--max_train_steps", "1"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match="The training data set is empty"):
        script.main(script.parse_args(_scratch(fx) + ["--train_data_dir", str(empty), "--output_dir",
                                                      str(tmp_path / "d"), "--report_to", "none"]))
    with pytest.raises(ValueError, match="--train_batch_size must be at least 2"):
        script.parse_args(_scratch(fx) + ["--train_data_dir", fx["data"], "--train_batch_size", "1"])
    with pytest.raises(ValueError, match="Need either a dataset name or a training folder"):
        script.parse_args(_scratch(fx))
    with pytest.raises(ValueError, match=r"`reconstruction_fraction` must be None .* or a fraction in \(0, 1\)"):
        script.parse_args(_scratch(fx) + ["--train_data_dir", fx["data"], "--reconstruction_weight", "1",
                                          "--reconstruction_fraction", "1"])
    with pytest.raises(ValueError, match="only makes sense with `reconstruction_weight` > 0"):
        script.parse_args(_scratch(fx) + ["--train_data_dir", fx["data"], "--reconstruction_fraction", "0.5"])
    with pytest.raises(ValueError, match="--reconstruction_warmup_steps must be an integer >= 0, got -1"):
        script.parse_args(_scratch(fx) + ["--train_data_dir", fx["data"], "--reconstruction_warmup_steps", "-1"])
    with pytest.raises(ValueError, match="--speed_batch_sizes must be comma-separated integers >= 1"):
        script.parse_args(_scratch(fx) + ["--train_data_dir", fx["data"], "--speed_batch_sizes", "1,x"])
    with pytest.raises(ValueError, match="--generator_config: unknown keys \\['ngf_typo'\\]"):
        bad = write_generator_config(str(tmp_path / "bad.json"), ngf_typo=3)
        run("--clip_model_name_or_path", fx["clip"], "--generator_config", bad,
            *_common(fx, tmp_path / "e", "--max_train_steps", "1"))
    assert not any((tmp_path / n / "losses.jsonl").exists() for n in "abde")


def test_output_folder_checkpoint_flags_and_resume_are_checked_before_anything_loads(script, fixtures, tmp_path,
                                                                                   monkeypatch, capsys):
    fx = fixtures
    monkeypatch.setattr(script, "load_models", lambda args: pytest.fail("models loaded before the checks"))
    monkeypatch.setattr(script, "Accelerator", lambda **kw: pytest.fail("accelerator started before the checks"))
    for flag in ("--checkpointing_steps", "--checkpoints_total_limit", "--validation_steps"):
        with pytest.raises(SystemExit):
            script.parse_args(_scratch(fx) + _common(fx, tmp_path / "a", flag, "0"))
        assert f"argument {flag}: must be an integer >= 1, got 0" in capsys.readouterr().err
    out = tmp_path / "used"
    (out / "checkpoint-3000").mkdir(parents=True)
    with pytest.raises(ValueError, match="is not empty .*: it holds another run"):
        script.main(script.parse_args(_scratch(fx) + _common(fx, out)))
    with pytest.raises(FileNotFoundError, match="--resume_from_checkpoint 'checkpoint-7' does not exist"):
        script.main(script.parse_args(_scratch(fx) + _common(fx, out, "--resume_from_checkpoint", "checkpoint-7")))


def test_a_failed_resume_neither_changes_the_run_nor_prints_a_traceback(script, fixtures, tmp_path):
    fx, out = fixtures, tmp_path / "run"
    script.main(script.parse_args(_scratch(fx) + _common(fx, out, "--max_train_steps", "2", "--checkpointing_steps", "1")))
    run_file = (out / "galip_run.json").read_text()
    # a folder that is not a checkpoint is refused before anything starts: the run keeps its id, `latest` still works
    (out / "checkpoint-9").mkdir()
    for bad in (str(fx["data"]), str(out / "checkpoint-9")):
        with pytest.raises(ValueError, match="is not a checkpoint saved by training"):
            script.main(script.parse_args(_scratch(fx) + _common(fx, out, "--resume_from_checkpoint", bad)))
    assert (out / "galip_run.json").read_text() == run_file
    (out / "checkpoint-9").rmdir()
    # a checkpoint with a corrupt file: one line naming it and what to do, nothing deleted
    (out / "checkpoint-2" / "optimizer.bin").write_bytes(b"")
    done = subprocess.run([sys.executable, SCRIPT, *_scratch(fx), *_common(fx, out, "--max_train_steps", "3",
                           "--resume_from_checkpoint", "checkpoint-2")], env=_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train_galip.py: error: cannot resume from") and "Nothing was deleted" in last
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_the_script_run_directly_reports_bad_arguments_in_one_line(fixtures, tmp_path):
    used = tmp_path / "used"
    (used / "checkpoint-5").mkdir(parents=True)
    done = subprocess.run([sys.executable, SCRIPT, *_scratch(fixtures), *_common(fixtures, used)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("train_galip.py: error: --output_dir ")
    assert len([line for line in done.stderr.splitlines() if "error" in line.lower()]) == 1


def test_a_run_in_another_runs_folder_keeps_its_checkpoints_and_a_resume_lists_each_step_once(script, fixtures,
                                                                                              tmp_path):
    fx = fixtures
    out = tmp_path / "shared"
    foreign = [out / "checkpoint-2", out / "checkpoint-5000"]
    for path in foreign:
        path.mkdir(parents=True)
        (path / "galip_run.json").write_text('{"run_id": "an earlier run"}')
    script.main(script.parse_args(_scratch(fx) + _common(
        fx, out, "--max_train_steps", "3", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
        "--overwrite_output_dir", "--speed_batch_sizes", "")))
    assert [step for step, _ in list_checkpoints(str(out))] == [2, 3, 5000]  # this run's last two, the earlier 5000
    assert (out / "checkpoint-5000" / "galip_run.json").is_file()
    assert (out / "checkpoint-2.other-run" / "galip_run.json").is_file()  # moved aside when this run saved step 2
    assert resolve_resume_checkpoint("latest", str(out)) == str(out / "checkpoint-3")
    # resuming from an earlier step cuts the loss log back: no step is listed twice
    script.main(script.parse_args(_scratch(fx) + _common(
        fx, out, "--max_train_steps", "3", "--checkpointing_steps", "100", "--resume_from_checkpoint",
        "checkpoint-2", "--speed_batch_sizes", "")))
    assert [row["step"] for row in _losses(out)] == [1, 2, 3]


def test_corrupt_images_are_skipped_counted_and_logged(script, fixtures, tmp_path):
    fx = fixtures
    data = make_imagefolder(str(tmp_path / "corrupt"), num_images=8, corrupt=(1, 5))
    out = tmp_path / "out"
    args = script.parse_args(_scratch(fx) + ["--train_data_dir", data, "--output_dir", str(out), "--cache_dir",
                                             fx["cache"], "--train_batch_size", "4", "--max_train_steps", "2",
                                             "--seed", "0", "--report_to", "none", "--checkpointing_steps", "100",
                                             "--eval_num_images", "3", "--eval_clip_model_name_or_path", fx["clip"]])
    script.main(args)
    losses = _losses(out)
    assert [r["step"] for r in losses] == [1, 2]
    assert losses[-1]["skipped_images"] == 2  # one epoch of 8 examples: both corrupt ones met once
    assert json.loads((out / "training_summary.json").read_text())["skipped_images"] == 2
    card = (out / "README.md").read_text()
    assert "| unreadable examples skipped (image or caption) | 2 |" in card
    # end-of-training evaluation (CLIP scores with a second CLIP) lands in eval_results.json and the model card
    result = json.loads((out / "eval_results.json").read_text())
    assert result["num_images"] == 3 and result["clip_model"] == fx["clip"] and "fid" not in result
    assert f"| CLIP score | {result['clip_score']:.2f} |" in card and "| CLIP cosine (official) |" in card


def test_streaming_runs_as_many_passes_as_the_steps_need(script, fixtures, tmp_path):
    fx = fixtures
    out = tmp_path / "stream"
    script.main(script.parse_args(_scratch(fx) + _common(fx, out, "--streaming", "--max_train_steps", "6",
                                                         "--checkpointing_steps", "100")))
    assert [r["step"] for r in _losses(out)] == list(range(1, 7))  # 16 examples, batch 4: two passes
    assert json.loads((out / "training_summary.json").read_text())["epochs"] == 2
    with pytest.raises(ValueError, match="--streaming needs --max_train_steps"):
        script.parse_args(_scratch(fx) + _common(fx, out, "--streaming"))


def test_fine_tune_keeps_the_folders_discriminator_unless_a_config_asks_for_a_new_one(script, fixtures):
    from galip_diffusers import GALIPDiscriminator

    base = ["--pretrained_model_name_or_path", fixtures["pipe"], "--train_data_dir", fixtures["data"]]
    saved = GALIPDiscriminator.from_pretrained(fixtures["pipe"], subfolder="discriminator")
    *_, kept, _, init = script.load_models(script.parse_args(base))
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), saved.state_dict().values()))
    assert "with the discriminator of" in init
    *_, new, _, init = script.load_models(script.parse_args(base + ["--discriminator_config", '{"feature_layers": [0, 1]}']))
    assert list(new.config.feature_layers) == [0, 1] and "with a new discriminator" in init
    assert not torch.equal(new.main.conv_r[0].weight, saved.main.conv_r[0].weight)


def test_discriminator_overrides_extend_the_folders_discriminator(script, fixtures):
    """--discriminator_overrides keeps the folder's trained Mate-D and adds what the overrides ask for (a pixel path)."""
    from galip_diffusers import GALIPDiscriminator

    base = ["--pretrained_model_name_or_path", fixtures["pipe"], "--train_data_dir", fixtures["data"]]
    saved = GALIPDiscriminator.from_pretrained(fixtures["pipe"], subfolder="discriminator")
    *_, extended, _, init = script.load_models(script.parse_args(base + ["--discriminator_overrides",
                                                                        '{"pixel_channels": [4, 8]}']))
    assert extended.has_pixel_path and list(extended.config.pixel_channels) == [4, 8]
    new_state = extended.state_dict()
    assert all(torch.equal(new_state[k], v) for k, v in saved.state_dict().items())
    assert "pixel_channels" in init and "new tensors" in init
    with pytest.raises(ValueError, match="--discriminator_overrides .* without --discriminator_config"):
        script.parse_args(base + ["--discriminator_overrides", "{}", "--discriminator_config", "{}"])
    with pytest.raises(ValueError, match="--discriminator_overrides: unknown"):
        script.load_models(script.parse_args(base + ["--discriminator_overrides", '{"pixel_chanels": [4]}']))


def test_push_to_hub_uploads_the_pipeline_card_and_settings_but_no_checkpoints(script, fixtures, tmp_path, hub):
    out = tmp_path / "pushed"
    script.main(script.parse_args(["--pretrained_model_name_or_path", fixtures["pipe"]] + _common(
        fixtures, out, "--max_train_steps", "1", "--checkpointing_steps", "1", "--push_to_hub",
        "--hub_model_id", "me/galip-ft")))
    files = hub.files("me/galip-ft")
    assert {"README.md", "galip_settings.json", "model_index.json", "generator/diffusion_pytorch_model.safetensors",
            "discriminator/diffusion_pytorch_model.safetensors"} <= set(files)
    assert os.path.isdir(out / "checkpoint-1") and not [f for f in files if f.startswith("checkpoint-")]
    assert hub.commits == ["End of training"]
    settings = json.loads((out / "galip_settings.json").read_text())
    assert "train_galip.py" in settings["_comment"] and settings["refinement"]["num_steps"] == 200


def test_a_failed_push_exits_with_the_reason_after_the_run_is_saved(script, fixtures, tmp_path, hub):
    out = tmp_path / "unpushed"
    hub.fail_with = ("upload_folder", ConnectionResetError("connection reset by peer"))
    with pytest.raises(SystemExit) as info:
        script.main(script.parse_args(["--pretrained_model_name_or_path", fixtures["pipe"]] + _common(
            fixtures, out, "--max_train_steps", "1", "--checkpointing_steps", "1", "--push_to_hub",
            "--hub_model_id", "me/galip-ft")))
    message = str(info.value.code)
    assert message.startswith("train_galip.py: pushing ") and "'me/galip-ft' failed (ConnectionResetError" in message
    assert f"`hf upload me/galip-ft {out}" in message  # (the retry command may add --exclude patterns)
    assert os.path.isfile(out / "model_index.json") and os.path.isfile(out / "README.md")  # the run is saved
    assert hub.files("me/galip-ft") == []


def test_diffusers_style_flags_end_to_end(script, fixtures, tmp_path, recwarn):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "flags"
    script.main(script.parse_args(_scratch(fixtures) + _common(
        fixtures, out, "--max_train_steps", "5", "--checkpointing_steps", "100", "--lr_scheduler", "cosine",
        "--lr_warmup_steps", "1", "--scale_lr", "--use_ema", "--foreach_ema", "--offload_ema",
        "--image_interpolation_mode", "bicubic", "--validation_prompts", "a red picture", "--validation_steps", "100",
        "--validation_epochs", "1", "--num_validation_images", "1", "--report_to", "tensorboard",
        "--reconstruction_weight", "2", "--reconstruction_fraction", "0.5", "--reconstruction_warmup_steps", "2",
        "--zero_noise_weights")))
    # 16 images, batch 4: epoch 1 ends at step 4 (--validation_epochs 1), the final sample is at step 5
    assert sorted(os.listdir(out / "validation")) == ["step_0000004.png", "step_0000005.png"]
    events = EventAccumulator(str(out / "logs")).Reload()
    runs = [os.path.join(d, "") for d, _, files in os.walk(out / "logs") if any(f.startswith("events") for f in files)]
    scalars = {}
    for run in runs:
        acc = EventAccumulator(run).Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = {e.step: e.value for e in acc.Scalars(tag)}
        if "validation" in acc.Tags().get("images", []):
            scalars["images"] = [e.step for e in acc.Images("validation")]
    del events
    # --scale_lr: x (batch 4 x accumulation 1 x 1 process); cosine after one warm-up step, per optimiser
    assert scalars["lr_g"][1] == pytest.approx(4e-4) and scalars["lr_d"][1] == pytest.approx(1.6e-3)
    assert scalars["lr_g"][3] == pytest.approx(2e-4) and scalars["lr_g"][5] == pytest.approx(0.0, abs=1e-12)
    assert scalars["images"] == [4, 5]  # the validation images reached TensorBoard
    rows = _losses(out)
    assert all(np.isfinite(r["loss_g_reconstruction"]) for r in rows)
    assert ["loss_d" in r for r in rows] == [False, False, True, True, True]  # 2 warm-up steps without D
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]  # D's schedule runs on, silently
    assert rows[0]["loss_g"] == rows[0]["loss_g_reconstruction"] and np.isfinite(rows[2]["loss_d"])
    assert "| `reconstruction_fraction` | `0.5` |" in (out / "README.md").read_text()
    assert "| `zero_noise_weights` | `True` |" in (out / "README.md").read_text()
