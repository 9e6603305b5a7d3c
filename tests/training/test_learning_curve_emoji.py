"""training/learning_curve.py --task emoji: the emoji judge's checks per checkpoint, kept in the run folder so that
pruned checkpoints keep their points and a re-run judges only new checkpoints."""

import json
import shutil

import pytest

from galip_diffusers.testing_utils import save_tiny_bridge_clip, tiny_generator
from helpers.training_helpers import training_script


def _script():
    return training_script("learning_curve")


def _checkpoint(run, step, seed):
    tiny_generator(seed).save_pretrained(run / f"checkpoint-{step}" / "generator")


def test_emoji_points_survive_pruned_checkpoints(tmp_path, one_thread, real_emoji):
    script = _script()
    run, results = tmp_path / "run", tmp_path / "curve"
    save_tiny_bridge_clip(tmp_path / "bridge")
    run.mkdir()
    (run / "losses.jsonl").write_text("".join(json.dumps({"step": s, "loss_d": 1.0 + s, "loss_g_adversarial": 0.5,
                                                          "clip_similarity": 0.1}) + "\n" for s in range(1, 7)))
    _checkpoint(run, 2, 0)
    _checkpoint(run, 4, 1)
    argv = ["--task", "emoji", "--run_dir", str(run), "--clip_model_name_or_path", str(tmp_path / "bridge"),
            "--num_images", "4", "--loss_window", "1", "--results_dir", str(results)]
    script.main(argv, judge=real_emoji[0])
    first = json.loads((results / "learning_curve.json").read_text())["points"]
    assert [p["step"] for p in first] == [2, 4]
    assert first[0]["seen"]["n"] == 4 and first[0]["held_out_noto"]["n"] == 159
    assert first[0]["held_out_tones"]["n"] == 632 and 0.0 <= first[0]["held_out_tones"]["tone_among_variants"] <= 1.0

    shutil.rmtree(run / "checkpoint-2")  # what --checkpoints_total_limit does
    _checkpoint(run, 6, 2)
    listed = script.list_checkpoints(str(run))
    # and a checkpoint deleted between the listing and its load is skipped, not a crash
    script.list_checkpoints = lambda run_dir: listed + [(8, str(run / "checkpoint-8"))]
    script.main(argv, judge=real_emoji[0])
    points = json.loads((results / "learning_curve.json").read_text())["points"]
    assert [p["step"] for p in points] == [2, 4, 6] and points[:2] == first
    assert len((run / "learning_curve_points.jsonl").read_text().splitlines()) == 3  # 2 and 4 were not judged again
    table = (results / "learning_curve.md").read_text()
    assert "seen: emoji_top1 / emoji_top5 / style_top1" in table and table.count("\n| 6 | 7.000 |") == 1
    assert (results / "learning_curve.png").stat().st_size > 1000

    with open(run / "learning_curve_points.jsonl", "a") as f:
        f.write('{"checkpoint": "checkpoint-6", "key": {"ta')  # a watcher killed mid-write
    key = {"task": "emoji", "num_images": 4, "seed": 0, "use_ema": False}
    assert sorted(_script().cached_points(str(run), key)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]

    other = _script().parse_args(argv + ["--num_images", "5"])  # other settings: nothing cached applies
    key = {"task": "emoji", "num_images": other.num_images, "seed": 0, "use_ema": False}
    assert _script().cached_points(str(run), key) == {}


def test_watch_needs_a_positive_interval(tmp_path):
    (tmp_path / "losses.jsonl").write_text("")
    for bad in ("0", "-5", "nan"):
        with pytest.raises(SystemExit):
            _script().parse_args(["--run_dir", str(tmp_path), "--clip_model_name_or_path", "c", "--watch", bad])
    with pytest.raises(SystemExit):
        _script().parse_args(["--run_dir", str(tmp_path), "--clip_model_name_or_path", "c", "--task", "faces"])


def test_a_watcher_started_before_the_run_waits_for_it(tmp_path, monkeypatch, capsys):
    """--watch may start before train_galip.py writes losses.jsonl: it waits, polling, instead of failing; without
    --watch a folder that is not a run is still an error."""
    script = _script()
    run = tmp_path / "run"
    with pytest.raises(SystemExit):
        script.parse_args(["--run_dir", str(run), "--clip_model_name_or_path", "c"])
    args = script.parse_args(["--run_dir", str(run), "--clip_model_name_or_path", "c", "--watch", "5"])
    sleeps = []

    def sleep(seconds):  # the run starts while the watcher waits
        sleeps.append(seconds)
        if len(sleeps) == 2:
            run.mkdir()
            (run / "losses.jsonl").write_text("")

    monkeypatch.setattr(script.time, "sleep", sleep)
    script.wait_for_run(args.run_dir, args.watch)
    assert sleeps == [5.0, 5.0] and "Waiting for the run" in capsys.readouterr().out
    script.wait_for_run(args.run_dir, args.watch)  # already there: returns at once
    assert len(sleeps) == 2


def test_zero_noise_points_are_kept_apart_and_have_no_seed_spread(tmp_path, one_thread, real_emoji):
    script = _script()
    run, results = tmp_path / "run", tmp_path / "curve"
    save_tiny_bridge_clip(tmp_path / "bridge")
    run.mkdir()
    (run / "losses.jsonl").write_text(json.dumps({"step": 1, "loss_g": 0.3, "loss_g_reconstruction": 0.3}) + "\n")
    _checkpoint(run, 1, 0)
    argv = ["--task", "emoji", "--run_dir", str(run), "--clip_model_name_or_path", str(tmp_path / "bridge"),
            "--num_images", "4", "--loss_window", "1", "--results_dir", str(results)]
    script.main(argv + ["--zero_noise"], judge=real_emoji[0])
    point = json.loads((results / "learning_curve.json").read_text())["points"][0]
    assert point["diversity_between_seeds"] == 0.0 and point["seen"]["n"] == 4
    zero_key = script.points_key(script.parse_args(argv + ["--zero_noise"]))
    assert zero_key["zero_noise"] is True and list(script.cached_points(str(run), zero_key)) == ["checkpoint-1"]
    assert script.cached_points(str(run), script.points_key(script.parse_args(argv))) == {}
