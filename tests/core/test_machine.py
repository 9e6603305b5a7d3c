"""CPU flags read once, native vs emulated bf16, ``--dtype auto``, the emulated-bf16 warning, and ``galip env``."""

import json
import logging

import pytest
import torch

from galip_cli import common as cli
from galip_cli.main import main as galip_main
from galip_core import machine

EPYC_AVX2 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
XEON_AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


@pytest.fixture(params=[EPYC_AVX2, XEON_AMX], ids=["avx2-only", "amx"])
def fake_cpu(request, monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: request.param)
    return request.param


def test_bf16_support_is_read_from_the_flags(fake_cpu):
    native = fake_cpu is XEON_AMX
    assert machine.cpu_bf16_support().startswith("native" if native else "emulated")
    assert machine.cpu_bf16_support() == machine.cpu_bf16_support(fake_cpu)
    assert machine.native_bf16("cpu") is native
    assert machine.auto_dtype_name("cpu") == ("bf16" if native else "fp32")
    assert cli.resolve_dtype_name("auto") == ("bf16" if native else "fp32")
    assert cli.torch_dtype("auto") == (torch.bfloat16 if native else torch.float32)
    assert machine.cpu_name() in fake_cpu
    assert machine.cpu_bf16_support("") == "unknown"


def test_bf16_on_an_emulating_cpu_warns_and_says_what_to_use(fake_cpu, caplog):
    with caplog.at_level(logging.WARNING, logger="galip_core.machine"):
        assert cli.resolve_dtype_name("bf16", "cpu") == "bf16"  # the user's choice is kept
    if fake_cpu is XEON_AMX:
        assert not caplog.records
    else:
        text = caplog.text
        assert "emulated" in text and "AMD EPYC 7B13" in text and "--dtype auto or fp32" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="galip_core.machine"):
        cli.resolve_dtype_name("fp32", "cpu")
        assert not machine.warn_if_emulated_bf16(torch.float32, "cpu")
    assert not caplog.records


def test_loading_a_pipeline_in_bf16_on_an_emulating_cpu_warns(monkeypatch, caplog, tmp_path):
    from galip_diffusers import GALIPPipeline
    from galip_diffusers.testing_utils import tiny_pipeline

    monkeypatch.setattr(machine, "_cpuinfo", lambda: EPYC_AVX2)
    tiny_pipeline().save_pretrained(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="galip_core.machine"):
        GALIPPipeline.from_pretrained(str(tmp_path))
        assert not caplog.records
        pipe = GALIPPipeline.from_pretrained(str(tmp_path), torch_dtype=torch.bfloat16)
    assert pipe.generator.dtype == torch.bfloat16 and "emulated" in caplog.text


def test_generate_auto_dtype_takes_the_lite_fp32_engine_on_every_cpu(fake_cpu, model_dir, tmp_path, capsys):
    """``--dtype auto`` is fp32 for the lite engine, so a native-bf16 CPU keeps the fast start (and ``--engine lite``
    works with the default dtype there); only an explicit bf16 goes to GALIPPipeline."""
    from galip_cli.generate import build_parser, choose_engine
    from galip_cli.generate import main as generate

    parse = build_parser().parse_args
    args = parse(["a red circle", "--model", str(model_dir)])
    assert args.dtype == "auto" and choose_engine(args) == "lite"
    assert choose_engine(parse(["a red circle", "--model", str(model_dir), "--dtype", "bf16"])) == "diffusers"
    assert generate(["a red circle", "--model", str(model_dir), "--engine", "lite", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith(".png")
    code = generate(["a red circle", "--model", str(model_dir), "--engine", "lite", "--dtype", "bf16",
                     "--out", str(tmp_path)])
    assert code == 1 and "--engine lite cannot be used: it runs in fp32 only (--dtype bf16)" in capsys.readouterr().err


def test_galip_env_prints_versions_device_flags_and_threads(capsys):
    assert galip_main(["env"]) == 0
    out = capsys.readouterr().out
    for needle in (f"- torch: {torch.__version__}", "- diffusers: ", "- CPU: ", "- CPU flags: ", "- bf16 on CPU: ",
                   f"- Threads: {torch.get_num_threads()} torch intra-op", "- GPU: ", "--dtype auto picks: "):
        assert needle in out, needle
    assert galip_main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu_bf16"] == machine.cpu_bf16_support()
    assert set(env["cpu_flags"]) <= set(machine.REPORTED_CPU_FLAGS) and env["packages"]["torch"] == torch.__version__


def test_benchmark_records_the_same_environment():
    from galip_diffusers.benchmark.runner import environment

    env = environment(None)
    assert {"python", "torch", "diffusers", "transformers", "platform", "cpu", "cpu_count", "torch_threads",
            "cpu_capability", "cpu_bf16", "gpu", "load_average", "cpu_flags"} <= set(env)
    assert env["cpu"] == machine.cpu_name()
