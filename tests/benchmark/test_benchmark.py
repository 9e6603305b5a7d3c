"""galip-benchmark: end to end on tiny configs (--quick), the JSON schema, the packaged peer configs, bad input.

No timing thresholds are asserted: only that timings exist, are positive and are combined consistently."""

import json
import math
import statistics

import pytest
import torch

from galip_cli import benchmark as benchmark_cli
from galip_diffusers.benchmark import runner as benchmark
from galip_diffusers.benchmark.peers import PEERS, PROMPT, build_module, clip_tokenizer, load_config
from galip_diffusers.benchmark.report import add_speedups

TINY = ["--galip", "tiny", "--peer-scale", "tiny", "--quick", "--repeats", "2", "--peer-repeats", "1",
        "--warmup", "1", "--threads", "1", "--no-progress"]
ROW_KEYS = {
    "name": str, "model": str, "kind": str, "variant": str, "mode": str, "source": str, "device": str, "dtype": str,
    "status": str, "resolution": int, "steps": int, "timing": str, "throughput": dict, "params": dict,
    "gflops_per_image": dict, "latency_s": dict, "tokenizer": str, "prompt_tokens": int, "peak_memory_mb": float, "peak_memory_kind": str, "options": dict,
}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = benchmark_cli.main(TINY + ["--batch-sizes", "1,2", "--out", str(out)])
    with open(out / "benchmark.json") as f:
        return code, json.load(f), out


def test_quick_end_to_end_writes_all_outputs(tiny_report):
    code, report, out = tiny_report
    assert code == 0
    assert (out / "benchmark.md").read_text().startswith("# galip-benchmark")
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["schema_version"] == 1
    assert {"environment", "settings", "notes", "rows", "speedups", "created"} <= set(report)
    assert [row["model"] for row in report["rows"]] == ["galip", *PEERS]  # one row per model


def test_rows_follow_the_schema(tiny_report):
    _, report, _ = tiny_report
    for row in report["rows"]:
        assert row["status"] == "ok", row["error"]
        for key, kind in ROW_KEYS.items():
            assert isinstance(row[key], kind), (row["name"], key)
        assert row["mode"].startswith("tiny test config")
        assert 0 < row["params"]["learnable"] <= row["params"]["total"] == sum(row["params"]["components"].values())
        lat = row["latency_s"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"]
        assert row["cpu_time_per_image_s"] > 0
        for batch, entry in row["throughput"].items():
            assert entry["batch_size"] == int(batch)
            assert math.isclose(entry["images_per_s"] * statistics.median(entry["call_s"]), int(batch))
            assert math.isclose(entry["pixels_per_s"], entry["images_per_s"] * row["resolution"] ** 2)
    galip = report["rows"][0]
    assert set(galip["throughput"]) == {"1", "2"} and galip["timing"] == "measured"
    assert galip["numerics"]["max_abs_diff_vs_fp32_default"] <= 1e-5  # fast path, fp32


def test_quick_rows_are_extrapolated_and_flops_add_up(tiny_report):
    _, report, _ = tiny_report
    rows = {row["model"]: row for row in report["rows"]}
    assert rows["sd-1.5"]["unet_evals"] == 51  # PNDM (skip_prk_steps) runs steps + 1
    assert rows["ldm-256"]["unet_evals"] == 50
    assert rows["sd-turbo"]["unet_evals"] == 1 and rows["sd-turbo"]["steps"] == 1
    assert rows["sd-turbo"]["timing"] == "measured" and rows["sd-turbo"]["extrapolation"] is None
    for name in ("sd-1.5", "ldm-256"):
        row = rows[name]
        assert row["timing"] == "extrapolated"
        assert "--quick" in row["extrapolation"] and str(row["unet_evals"]) in row["extrapolation"]
        entry = row["throughput"]["1"]
        assert math.isclose(entry["call_s"][0], entry["fixed_s"] + row["unet_evals"] * entry["unet_eval_s"],
                            rel_tol=1e-6)
        flops = row["gflops_per_image"]
        assert math.isclose(flops["total"], flops["text_encoder"] + row["unet_evals"] * flops["unet_per_eval"]
                            + flops["vae_decode"], rel_tol=1e-9)
        assert row["classifier_free_guidance"] is True
    assert rows["sd-turbo"]["classifier_free_guidance"] is False


def test_speedups_are_consistent_with_latencies(tiny_report):
    _, report, _ = tiny_report
    rows = {row["name"]: row for row in report["rows"]}
    assert len(report["speedups"]) == 3
    for s in report["speedups"]:
        galip, peer = rows[s["galip"]], rows[s["peer"]]
        expected = peer["latency_s"]["median"] / galip["latency_s"]["median"]
        assert math.isclose(s["per_image"], expected)
        assert math.isclose(s["per_image_cpu_time"], peer["cpu_time_per_image_s"] / galip["cpu_time_per_image_s"])
        assert math.isclose(s["per_pixel"], expected * (galip["resolution"] / peer["resolution"]) ** 2)
        assert math.isclose(galip["speedup_over"][peer["model"]], expected)
        assert math.isclose(peer["galip_speedup"][galip["name"]], expected)
        assert set(s["throughput"]) == {"1"}


def test_add_speedups_uses_same_device_and_dtype_only():
    def row(name, kind, dtype, latency, res):
        return {"name": name, "model": name, "kind": kind, "device": "cpu", "dtype": dtype, "status": "ok",
                "resolution": res, "latency_s": {"median": latency}, "timing": "measured",
                "throughput": {"1": {"images_per_s": 1 / latency}}}

    report = {"rows": [row("GALIP", "galip", "fp32", 0.5, 224), row("sd", "peer", "fp32", 500.0, 512),
                       row("turbo", "peer", "bf16", 7.0, 512)]}
    add_speedups(report)
    assert len(report["speedups"]) == 1
    s = report["speedups"][0]
    assert s["per_image"] == pytest.approx(1000.0)
    assert s["per_pixel"] == pytest.approx(1000.0 * (224 / 512) ** 2)
    assert "galip_speedup" not in report["rows"][2]


def test_bad_input_rows_report_errors_and_others_still_run(tmp_path, capsys):
    args = TINY + ["--batch-sizes", "1", "--peers", "foo", "--device", "cpu,cuda", "--out", str(tmp_path)]
    code = benchmark_cli.main(args)
    assert code == 1
    rows = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    by_key = {(r["model"], r["device"]): r for r in rows}
    assert by_key[("galip", "cpu")]["status"] == "ok"
    assert "unknown peer 'foo'" in by_key[("foo", "cpu")]["error"] and "sd-1.5" in by_key[("foo", "cpu")]["error"]
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in by_key[("galip", "cuda")]["error"]
    err = capsys.readouterr().err
    assert "unknown peer 'foo'" in err and "Traceback" not in err


def test_unsupported_dtype_is_a_row_error(tmp_path, monkeypatch):
    real = benchmark.check_dtype

    def check(device, name):
        if name == "fp16":
            raise benchmark.BenchmarkError("dtype fp16 is not supported on cpu by this torch build: test")
        return real(device, name)

    monkeypatch.setattr(benchmark, "check_dtype", check)
    code = benchmark_cli.main(TINY + ["--batch-sizes", "1", "--peers", "none", "--dtype", "fp32,fp16",
                                  "--out", str(tmp_path), "--no-plot"])
    rows = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert code == 1
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert "fp16" in rows[1]["error"]
    assert benchmark.check_dtype(torch.device("cpu"), "fp32") is torch.float32


@pytest.mark.parametrize("argv, message", [
    (["--dtype", "fp8"], "--dtype"), (["--batch-sizes", "1,x"], "--batch_sizes"), (["--device", "tpu"], "--device"),
    (["--quick-steps", "1"], "--quick_steps"),  # errors name the documented (underscore) spelling
])
def test_invalid_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark_cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", PEERS)
def test_packaged_peer_configs_match_published_sizes(name):
    """Parameter counts of the shipped architecture configs (built on the meta device) vs the published figures."""
    config = load_config(name)
    for component, spec in config["components"].items():
        if spec["class"].endswith("Scheduler"):
            continue
        with torch.device("meta"):
            module = build_module(spec["class"], spec["config"])
        millions = sum(p.numel() for p in module.parameters()) / 1e6
        assert millions == pytest.approx(config["reference_params_m"][component], abs=0.05), component


def test_packaged_galip_config_is_the_official_size():
    config = load_config("galip")
    with torch.device("meta"):
        generator = build_module("GALIPGenerator", config["components"]["generator"]["config"])
    assert sum(p.numel() for p in generator.learnable_parameters()) == 51_830_211
    assert sum(p.numel() for p in generator.parameters()) == 51_830_211 + 87_454_464


def test_benchmark_tokenizer_counts_real_clip_tokens():
    tokenizer, description = clip_tokenizer(real=True)  # the clip package ([convert], in [dev]) has the vocabulary
    assert description.startswith("CLIP BPE")
    assert len(tokenizer(PROMPT).input_ids) == 10  # <|startoftext|> + 8 words + <|endoftext|>


def test_benchmark_fallback_tokenizer_has_one_token_per_non_space_character():
    tokenizer, description = clip_tokenizer(real=False)
    assert description.startswith("byte-level CLIPTokenizer")
    # CLIP's pre-tokenizer splits on whitespace and drops it; with no merges every other character is one token:
    # 43 characters - 7 spaces + <|startoftext|> + <|endoftext|> = 38 ids.
    assert len(tokenizer(PROMPT).input_ids) == len(PROMPT.replace(" ", "")) + 2 == 38


def test_cpu_bf16_support_is_read_from_the_cpu_flags(tiny_report):
    from galip_diffusers.benchmark.speed_figures import cpu_bf16_support

    assert cpu_bf16_support("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n") == "native (avx512_bf16)"
    assert cpu_bf16_support("flags : fpu amx_bf16 avx512_bf16\n") == "native (amx_bf16)"
    emulated = cpu_bf16_support("flags : fpu avx2 avx512f avx512_vnni\nflags : fpu avx2\n")
    assert emulated.startswith("emulated (no amx_bf16 / avx512_bf16")
    assert cpu_bf16_support("model name : Apple M2\n") == "unknown"
    _, report, out = tiny_report
    assert report["environment"]["cpu_bf16"] == cpu_bf16_support()
    assert f"bf16 {cpu_bf16_support()})" in (out / "benchmark.md").read_text()


def test_cpu_bf16_rows_on_an_emulating_cpu_say_so(tmp_path, monkeypatch):
    from galip_core import machine

    monkeypatch.setattr(machine, "_cpuinfo", lambda: "model name\t: AMD EPYC\nflags\t\t: sse4_2 avx avx2 fma\n")
    assert benchmark_cli.main(TINY + ["--peers", "none", "--dtype", "bf16", "--batch-sizes", "1", "--out", str(tmp_path),
                                  "--no-plot"]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["notes"]["cpu_bf16"] == f"cpu/bf16 rows: this CPU's bf16 support is {machine.cpu_bf16_support()}"
    assert machine.cpu_bf16_support().startswith("emulated (no amx_bf16 / avx512_bf16")
