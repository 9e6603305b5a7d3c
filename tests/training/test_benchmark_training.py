"""training/benchmark_training.py: every requested anchor setting is timed in one run and reported as a JSON line
(the figures themselves are the script's output, not asserted here)."""

import json
import sys

from helpers.training_helpers import training_script


def test_each_reconstruction_setting_gets_a_line_against_the_first(tmp_path, monkeypatch, capsys, one_thread):
    script = training_script("benchmark_training")
    with open(script.EMOJI_GENERATOR_CONFIG) as f:  # the benchmark times the recipe's own generator
        assert script.CONFIGS["emoji"]["generator"] == json.load(f)
    assert script.CONFIGS["small"]["generator"]["ngf"] == 16
    out = tmp_path / "bench.jsonl"
    monkeypatch.setattr(sys, "argv", ["benchmark_training.py", "--config", "small", "--batch_size", "2", "--steps",
                                      "2", "--warmup", "0", "--reconstruction", "separate", "in_batch", "off",
                                      "--output", str(out)])
    script.main()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reconstruction"] for r in rows] == ["separate", "in_batch", "off"]
    assert rows[0]["time_vs_first"] == 1.0 and all(r["seconds_per_step"] > 0 for r in rows)
    for r in rows:  # the ratio is against the first setting's median step (figures rounded to 3 decimals)
        ratio = r["seconds_per_step"] / rows[0]["seconds_per_step"]
        assert abs(r["time_vs_first"] - ratio) < 0.01 * ratio + 2e-3
        assert abs(r["images_per_second"] * r["seconds_per_step"] - 2) < 0.01
    assert capsys.readouterr().out.count('"reconstruction"') == 3  # printed as well as appended
