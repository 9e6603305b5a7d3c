"""galip benchmark's up-front memory check of ``--peer_batch_sizes``: a batch a diffusion peer cannot hold is refused in
one line before any model is built (it once ran until an allocation failed, after the GALIP rows had run), and the
estimate it rests on is grounded: at least the peak RSS a tiny peer pipeline's call really reaches, and not far above
it."""

import json

import pytest
import torch

import galip_core.machine as machine
from galip_cli import benchmark as benchmark_cli
from galip_diffusers.benchmark import runner
from galip_diffusers.benchmark.peer_memory import call_bytes, peer_bytes, peer_components
from galip_diffusers.benchmark.peers import build_peer_pipeline, load_config, peer_spec


@pytest.mark.parametrize("name, resolution, batch", [("sd-1.5", 128, 8), ("ldm-256", 512, 8)])
def test_the_estimate_covers_a_tiny_peer_calls_peak_and_is_not_far_above(name, resolution, batch, peak_rss):
    """A tiny peer (same block types) called as a row calls it (channels_last, ``output_type="np"``) on 64x64 latents
    (LDM's pipeline takes ``height // 8`` whatever its VAE), where the UNet's activations (16 samples with guidance)
    and the VAE decoder's are hundreds of MiB. The first
    call is measured: a row's warm-up call runs at the row's batch, one-time allocations included."""
    spec = peer_spec(name, scale="tiny", steps=1)
    spec.resolution = resolution
    torch.manual_seed(0)
    pipe = build_peer_pipeline(spec)
    pipe.set_progress_bar_config(disable=True)
    runner._prepare_peer(spec, pipe, torch.float32, True, {})
    _, peak = peak_rss(runner._call(spec, pipe, torch.device("cpu"), batch, spec.steps))
    estimate = call_bytes(spec, peer_components(spec), batch, 4)
    assert peak <= estimate <= 3 * peak, (peak / 2**20, estimate / 2**20)


def test_an_oversized_peer_batch_fails_in_one_line_before_any_model_is_built(tmp_path, capsys, monkeypatch,
                                                                             known_memory):
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda args: pytest.fail("the benchmark ran"))
    argv = ["--galip", "tiny", "--peers", "sd-1.5", "--peer_batch_sizes", "1,64", "--out", str(tmp_path / "out"),
            "--no_plot"]
    assert benchmark_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--peer_batch_sizes: Stable Diffusion 1.5 (sd-1.5) at batch 64 (512 px, fp32) needs about" in err
    assert "GiB; cpu has 16.0 GiB free. Give --peer_batch_sizes 8 or less (about" in err


def test_the_batch_it_suggests_fits_and_the_next_does_not(known_memory):
    spec = peer_spec("sd-1.5")
    components = peer_components(spec)
    assert peer_bytes(spec, components, 8, 4) <= 16 * 2**30 < peer_bytes(spec, components, 9, 4)
    assert 5 * 2**30 < peer_bytes(spec, components, 1, 4) < 6 * 2**30  # 4.0 GiB of fp32 weights and one call
    # measured for this architecture at 512 px, fp32 (random weights, first call): 5456 MiB above the RSS before
    # building, 1308 MiB of it in the call


def test_ordinary_peer_batches_pass_and_half_precision_counts_half(known_memory):
    args = benchmark_cli.parse_args(["--galip", "tiny", "--peer_batch_sizes", "1,4"])  # all three published peers
    runner.check_peer_batch_memory(args)
    args = benchmark_cli.parse_args(["--galip", "tiny", "--peers", "sd-turbo", "--peer_batch_sizes", "16",
                                     "--dtype", "bf16"])  # fits in bf16, not in fp32
    runner.check_peer_batch_memory(args)
    args.dtype = ["bf16", "fp32"]
    with pytest.raises(ValueError, match=r"^--peer_batch_sizes: SD-Turbo \(sd-turbo\) at batch 16 \(512 px, fp32\)"):
        runner.check_peer_batch_memory(args)


def test_a_peer_that_cannot_fit_at_all_says_so(monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device: 2 * 2**30)  # less than SD-1.5's weights
    args = benchmark_cli.parse_args(["--galip", "tiny", "--peers", "sd-1.5", "--peer_batch_sizes", "2"])
    with pytest.raises(ValueError, match=r"No batch fits \(batch 1 needs about 5\.\d GiB, its weights 4\.0 GiB in "
                                         r"float32\): leave sd-1.5 out of --peers\.$"):
        runner.check_peer_batch_memory(args)


def _write_folder(folder, name: str, unet_sample_size: int) -> None:
    """A pipeline folder's configs only (no weights): what the check reads."""
    config = load_config(name)
    index = {"_class_name": config["pipeline"]}
    for key, comp in config["components"].items():
        library = "transformers" if comp["class"].startswith("CLIP") else "diffusers"
        index[key] = [library, comp["class"]]
        (folder / key).mkdir(parents=True)
        comp_config = dict(comp["config"], sample_size=unet_sample_size) if key == "unet" else comp["config"]
        (folder / key / "config.json").write_text(json.dumps(comp_config))
    (folder / "model_index.json").write_text(json.dumps(index))


def test_a_folder_peer_is_estimated_from_its_own_configs(tmp_path, known_memory):
    """A folder's VAE decides the latent size: one with a VAE of five levels (16x down) needs less than the
    packaged one; an unreadable folder is left to its row."""
    _write_folder(tmp_path / "sd", "sd-1.5", 64)
    spec = peer_spec("sd-1.5", str(tmp_path / "sd"))
    components = peer_components(spec)
    assert components["unet"][1]["sample_size"] == 64
    packaged = peer_bytes(spec, components, 4, 4)
    assert packaged == peer_bytes(peer_spec("sd-1.5"), peer_components(peer_spec("sd-1.5")), 4, 4)
    vae = json.loads((tmp_path / "sd" / "vae" / "config.json").read_text())
    vae["block_out_channels"] = [64, 128, 256, 512, 512]
    vae["down_block_types"] = vae["down_block_types"] + ["DownEncoderBlock2D"]
    vae["up_block_types"] = vae["up_block_types"] + ["UpDecoderBlock2D"]
    (tmp_path / "sd" / "vae" / "config.json").write_text(json.dumps(vae))
    assert peer_bytes(spec, peer_components(spec), 4, 4) < packaged
    (tmp_path / "sd" / "unet" / "config.json").write_text("{not json")
    assert peer_components(spec) is None
    args = benchmark_cli.parse_args(["--galip", "tiny", "--sd", str(tmp_path / "sd"), "--peers", "sd-1.5",
                                     "--peer_batch_sizes", "100000"])
    runner.check_peer_batch_memory(args)  # the row reports the broken folder
