"""``galip-benchmark``: GALIP against the diffusion pipelines people know, on the same machine, in the same run.

Every row times the full pipeline call (text encoding + generator or denoising loop + decoding, ``output_type="np"``)
and reports parameters, GFLOPs per image, latency per image at batch 1 (median, p90 over repeats), images/s and
pixels/s per batch size, peak memory, and the speed-up of GALIP over each peer measured in the same run. ``--quick``
times only a few denoising steps and extrapolates (stated in every extrapolated row).

Exit status: 0 when every row ran, 1 when at least one row failed (the others still run and are written), 2 for
invalid command-line arguments (nothing runs).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import statistics
import time
import traceback
import warnings
from typing import Any, Callable

import torch

from galip_diffusers.benchmark.peers import (
    GALIP,
    LEARNABLE_NOTE,
    PROMPT,
    ModelSpec,
    build_galip_pipeline,
    build_peer_pipeline,
    count_gflops,
    count_parameters,
    galip_generator_config,
    galip_spec,
    peer_spec,
    resolve_peer_name,
    uses_cfg,
)
from galip_diffusers.benchmark.timing import (  # noqa: F401  (check_dtype is looked up here, tests patch it)
    DEVICES,
    DTYPES,
    BenchmarkError,
    PeakMemory,
    Progress,
    UNetClock,
    check_device,
    check_dtype,
    percentile,
    timed,
    unet_evals,
)

def plan_specs(args: argparse.Namespace) -> list[ModelSpec]:
    """GALIP variants first, then the peers; invalid requests become specs with ``error`` set."""
    specs = [galip_spec(args.galip, variant) for variant in args.galip_variants]
    folders = {"sd-1.5": args.sd, "ldm-256": args.ldm, "sd-turbo": args.sd_turbo}
    names = [] if args.peers.strip().lower() == "none" else [n for n in args.peers.split(",") if n.strip()]
    names += [peer for peer, folder in folders.items() if folder is not None]
    seen = set()
    for name in names:
        try:
            peer = resolve_peer_name(name)
        except ValueError as err:
            specs.append(ModelSpec(name=name, display_name=name, kind="peer", source="-", mode="-", error=str(err)))
            continue
        if peer not in seen:
            seen.add(peer)
            specs.append(peer_spec(peer, folders[peer], args.peer_scale, args.steps))
    return specs


# ----------------------------------------------------------------------------------------------------- rows
def _output_type(spec: ModelSpec, pipe) -> str:
    """``"np"``, except for LDM in half precision: its pipeline cannot turn bf16/fp16 tensors into numpy."""
    if spec.name == "ldm-256" and pipe.unet.dtype != torch.float32:
        return "pt"
    return "np"


def _call(spec: ModelSpec, pipe, device: torch.device, batch: int, steps: int) -> Callable[[], Any]:
    gen_device = device if device.type == "cuda" else "cpu"
    prompts = [PROMPT] * batch
    output_type = _output_type(spec, pipe)

    def run():
        generator = torch.Generator(gen_device).manual_seed(0)
        if spec.kind == GALIP:
            return pipe(prompt=prompts, generator=generator, output_type="np")
        return pipe(
            prompt=prompts, num_inference_steps=steps, guidance_scale=spec.guidance_scale, height=spec.resolution,
            width=spec.resolution, generator=generator, output_type=output_type, **spec.call_kwargs,
        )

    return run


def _prepare_galip(spec: ModelSpec, pipe, device: torch.device, dtype: torch.dtype, row: dict) -> None:
    generator = pipe.generator
    if spec.mode != "real checkpoint":  # random weights: make every text modulation non-trivial (not identity)
        with torch.no_grad():
            torch.manual_seed(0)
            for name, param in generator.named_parameters():
                if "linear2" in name:
                    param.add_(0.05 * torch.randn_like(param))
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, generator.config.z_dim, generator=g).to(device)
    s = torch.randn(2, generator.config.cond_dim, generator=g).to(device)
    with torch.no_grad():
        reference = generator(z, s).float()
    low = None if dtype == torch.float32 else dtype
    if spec.variant == "default":
        pipe.to(dtype=dtype)
    else:
        pipe.enable_fast_inference(dtype=low, compile=spec.variant == "compiled")
    with torch.no_grad():
        out = pipe.generator(z.to(pipe.generator.dtype), s.to(pipe.generator.dtype)).float()
    row["numerics"] = {
        "max_abs_diff_vs_fp32_default": (out - reference).abs().max().item(),
        "reference_max_abs": reference.abs().max().item(),
        "note": "generator output of this row's setup vs the default forward in fp32, same weights and inputs",
    }
    row["options"] = {"variant": spec.variant, **({} if spec.variant == "default" else {
        "enable_fast_inference": {"dtype": str(low).replace("torch.", "") if low else None, "channels_last": True,
                                  "fuse_affine": True, "upsample_conv": "phase",
                                  "compile": spec.variant == "compiled"}})}


def _prepare_peer(spec: ModelSpec, pipe, dtype: torch.dtype, channels_last: bool, row: dict) -> None:
    pipe.to(dtype=dtype)
    if channels_last:
        for name in ("unet", "vae", "vqvae"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(memory_format=torch.channels_last)
    row["options"] = {"torch_dtype": str(dtype).replace("torch.", ""), "channels_last_unet_vae": channels_last,
                      "attention": "SDPA (diffusers default)", "output_type": _output_type(spec, pipe)}


def _time_batch(spec, pipe, device, batch, args, clock) -> dict[str, Any]:
    """Warm up, then time ``repeats`` calls at ``batch``; peers in --quick mode are extrapolated."""
    is_peer = spec.kind != GALIP
    quick = is_peer and args.quick and spec.steps > args.quick_steps
    run_steps = args.quick_steps if quick else spec.steps
    repeats = args.peer_repeats if is_peer else args.repeats
    memory = PeakMemory(device)
    memory.reset()
    for _ in range(1 if is_peer else args.warmup):
        _call(spec, pipe, device, batch, 1)()
    totals, cpu_totals, per_evals, fixed = [], [], [], []
    target_evals = unet_evals(pipe, spec.steps) if is_peer else None
    for _ in range(repeats):
        if clock is not None:
            clock.clear()
        total, cpu = timed(_call(spec, pipe, device, batch, run_steps), device)
        if clock is not None and clock.per_eval() is not None:
            per_eval = clock.per_eval()
            per_evals.append(per_eval)
            fixed.append(total - len(clock.times) * per_eval)
            if quick:  # fixed part measured + per-evaluation time measured x evaluations of the full run
                total = fixed[-1] + target_evals * per_eval
                if cpu is not None:
                    cpu_per_eval = clock.per_eval(cpu=True)
                    cpu = cpu - len(clock.cpu_times) * cpu_per_eval + target_evals * cpu_per_eval
        totals.append(total)
        cpu_totals.append(cpu)
    per_image = [t / batch for t in totals]
    entry = {
        "batch_size": batch,
        "call_s": totals,
        "latency_per_image_s": {"median": statistics.median(per_image), "p90": percentile(per_image, 90),
                                "min": min(per_image)},
        "images_per_s": batch / statistics.median(totals),
        "cpu_call_s": cpu_totals if None not in cpu_totals else None,
        "cpu_time_per_image_s": statistics.median(cpu_totals) / batch if None not in cpu_totals else None,
        "peak_memory_mb": memory.read_mb(),
    }
    if is_peer:
        entry["unet_eval_s"] = statistics.median(per_evals) if per_evals else None
        entry["fixed_s"] = statistics.median(fixed) if fixed else None
    return entry


def run_row(spec: ModelSpec, device_name: str, dtype_name: str, args: argparse.Namespace,
            progress: Progress) -> dict[str, Any]:
    """Benchmark one model on one device in one dtype; errors are recorded in the row."""
    is_peer = spec.kind != GALIP
    batch_sizes = args.peer_batch_sizes if is_peer else args.batch_sizes
    row: dict[str, Any] = {
        "name": spec.label, "model": spec.name, "kind": spec.kind, "variant": spec.variant, "mode": spec.mode,
        "source": spec.source, "device": device_name, "dtype": dtype_name, "status": "error", "error": None,
        "resolution": spec.resolution, "steps": spec.steps, "guidance_scale": spec.guidance_scale,
        "timing": None, "extrapolation": None, "throughput": {},
    }
    pipe = None
    try:
        if spec.error:
            raise BenchmarkError(spec.error)
        device = check_device(device_name)
        dtype = check_dtype(device, dtype_name)
        start = time.perf_counter()
        torch.manual_seed(0)  # the same random weights in every row of a model
        pipe = build_galip_pipeline(spec) if not is_peer else build_peer_pipeline(spec)
        row["build_s"] = time.perf_counter() - start
        pipe.set_progress_bar_config(disable=True)
        row["tokenizer"] = spec.tokenizer if spec.source != "tiny" else "byte-level CLIPTokenizer (tiny)"
        row["prompt_tokens"] = len(pipe.tokenizer(PROMPT, truncation=True, max_length=77).input_ids)
        if not is_peer:
            spec.resolution = row["resolution"] = pipe.generator.config.output_size
        evals = unet_evals(pipe, spec.steps) if is_peer else None
        row["unet_evals"] = evals
        row["params"] = count_parameters(spec, pipe)
        try:
            row["gflops_per_image"] = count_gflops(spec, pipe, evals or 0)
            if spec.kind == GALIP and spec.variant != "default":
                row["gflops_per_image_executed"] = count_gflops(spec, pipe, 0, fast=True)["total"]
        except Exception as err:  # FLOP counting is informative only
            row["gflops_per_image"] = None
            row["gflops_error"] = f"{type(err).__name__}: {err}"
        pipe.to(device)
        if is_peer:
            row["classifier_free_guidance"] = uses_cfg(spec, pipe)
            _prepare_peer(spec, pipe, dtype, not args.no_channels_last, row)
        else:
            _prepare_galip(spec, pipe, device, dtype, row)
        clock = UNetClock(pipe.unet, device) if is_peer else None
        quick = is_peer and args.quick and spec.steps > args.quick_steps
        row["timing"] = "extrapolated" if quick else "measured"
        if quick:
            row["extrapolation"] = (
                f"--quick: timed {args.quick_steps}-step calls; latency = fixed part (text encoder, VAE decode, "
                f"overhead; measured) + {evals} UNet evaluations x measured time per evaluation (for {spec.steps} "
                "steps)"
            )
        for batch in batch_sizes:
            progress.start(f"{spec.label} {device_name} {dtype_name} bs{batch}")
            row["throughput"][str(batch)] = _time_batch(spec, pipe, device, batch, args, clock)
            progress.advance()
            entry = row["throughput"][str(batch)]
            entry["pixels_per_s"] = entry["images_per_s"] * spec.resolution**2
        first = row["throughput"][str(batch_sizes[0])]
        row["latency_s"] = dict(first["latency_per_image_s"], batch_size=batch_sizes[0])
        row["cpu_time_per_image_s"] = first["cpu_time_per_image_s"]
        row["peak_memory_mb"] = max(e["peak_memory_mb"] or 0 for e in row["throughput"].values())
        row["peak_memory_kind"] = PeakMemory(device).kind
        row["status"] = "ok"
    except Exception as err:  # one row's failure must not stop the others
        row["error"] = str(err) if isinstance(err, BenchmarkError) else f"{type(err).__name__}: {err}"
        if args.debug:
            traceback.print_exc()
        progress.advance(len(batch_sizes) - len(row["throughput"]))
    finally:
        del pipe
        gc.collect()
    return row


@contextlib.contextmanager
def _quiet_libraries():
    """Silence diffusers/transformers info and warning logs (dtype casts of random-weight models) during the run."""
    import diffusers
    import transformers

    levels = (diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity())
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(levels[0])
        transformers.utils.logging.set_verbosity(levels[1])


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """The machine of the run (see :func:`galip_core.machine.environment`, which ``galip env`` prints too)."""
    from galip_core.machine import environment as machine_environment

    return machine_environment()


def check_batch_memory(args: argparse.Namespace) -> None:
    """Before any model is built: ``ValueError`` naming ``--batch_sizes`` if the largest GALIP batch would not fit in
    a requested device's free memory in a requested dtype. Estimated as ``GALIPPipeline`` estimates its own calls
    (:func:`galip_core.memory.estimate_call_bytes`, unchunked as the benchmark calls it), so it refuses exactly what
    every row would refuse later, after building the model, and under the name `num_images_per_prompt`=1."""
    from galip_core import machine
    from galip_core.memory import estimate_call_bytes

    config = galip_generator_config(galip_spec(args.galip))
    if config is None:
        return
    batch = max(args.batch_sizes)
    for device_name in args.device:
        if device_name == "cuda" and not torch.cuda.is_available():
            continue  # the rows say that CUDA is missing
        free = machine.available_bytes(device_name)
        for dtype_name in args.dtype:
            needed = estimate_call_bytes(config, batch, None, DTYPES[dtype_name].itemsize)
            if free is not None and needed > free:
                raise ValueError(
                    f"--batch_sizes: one GALIP call of {batch} images of {config['output_size']} px in "
                    f"{dtype_name} needs about {needed / 2**30:.1f} GiB; {device_name} has {free / 2**30:.1f} GiB "
                    "free. Give smaller --batch_sizes."
                )


def check_peer_batch_memory(args: argparse.Namespace) -> None:
    """Before any model is built: ``ValueError`` naming ``--peer_batch_sizes`` if a peer's row at the largest peer
    batch would not fit in a requested device's free memory in a requested dtype (weights and one call, estimated
    from the peer's configs by :func:`galip_diffusers.benchmark.peer_memory.check_peer_batch_memory`). The peers'
    configs are known before loading (packaged, or a folder's ``config.json`` files), so the check runs before the
    GALIP rows spend their minutes; a folder whose configs cannot be read is left to its row."""
    from galip_core import machine
    from galip_diffusers.benchmark.peer_memory import check_peer_batch_memory as check_peer

    batch = max(args.peer_batch_sizes)
    for spec in (s for s in plan_specs(args) if s.kind != GALIP):
        for device_name in args.device:
            if device_name == "cuda" and not torch.cuda.is_available():
                continue  # the rows say that CUDA is missing
            free = machine.available_bytes(device_name)
            for dtype_name in args.dtype:
                check_peer(spec, batch, device_name, dtype_name, DTYPES[dtype_name].itemsize, free)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (device, dtype, model) row and return the report dictionary (see :mod:`galip_diffusers.benchmark.report`)."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run_benchmark(args)
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from galip_diffusers.benchmark.report import add_speedups

    specs = plan_specs(args)
    rows_plan = [(spec, device, dtype) for device in args.device for dtype in args.dtype for spec in specs]
    units = sum(len(args.peer_batch_sizes if s.kind != GALIP else args.batch_sizes) for s, _, _ in rows_plan)
    progress = Progress(units, disable=args.no_progress)
    env = environment(args)
    rows = []
    with warnings.catch_warnings(), _quiet_libraries():
        warnings.simplefilter("ignore")  # random weights produce NaN-casting warnings in the image postprocessing
        for spec, device, dtype in rows_plan:
            rows.append(run_row(copy.deepcopy(spec), device, dtype, args, progress))
    progress.close()
    env["load_average_after"] = environment(args)["load_average"]
    report = {
        "schema_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "settings": {
            "devices": args.device, "dtypes": args.dtype, "batch_sizes": args.batch_sizes,
            "peer_batch_sizes": args.peer_batch_sizes, "steps": args.steps, "repeats": args.repeats,
            "peer_repeats": args.peer_repeats, "warmup": args.warmup, "quick": args.quick,
            "quick_steps": args.quick_steps, "peer_scale": args.peer_scale, "galip": args.galip,
            "galip_variants": args.galip_variants, "prompt": PROMPT,
        },
        "notes": {
            "learnable": LEARNABLE_NOTE,
            "timing": "full pipeline call (tokenizer + text encoder + generator/denoising loop + decode, "
                      "output_type='np'); latency per image = call time / batch size; p90 is nearest-rank; "
                      "CPU s/image = process CPU time (with one thread: the cost without competing processes; "
                      "with several threads it also counts OpenMP spin-waiting)",
            "gflops": "torch.utils.flop_counter on meta-device copies; a multiply-add counts 2 FLOPs",
            "speedup": "GALIP speed-up = peer latency per image / GALIP latency per image at batch 1, same device "
                       "and dtype, same run; per pixel = ratio of pixels/s (different resolutions)",
            "random_weights": "random-weights rows: published architecture, weights drawn with seed 0 (GALIP's "
                              "modulation output layers are perturbed so that no Affine is the identity); speed "
                              "does not depend on weight values",
            "tokenizer": "random-weights rows use OpenAI CLIP's BPE tokenizer when the clip package's vocabulary is "
                         "installed, else a byte-level CLIPTokenizer (one token per non-space character, see each "
                         "row's 'tokenizer'); LDM uses a byte-level tokenizer. Peers pad prompts to 77 tokens; GALIP's "
                         "fast path pads to the prompt's own length, so only its text-encoder cost depends on this",
        },
        "rows": rows,
    }
    if "cpu" in args.device and "bf16" in args.dtype and env["cpu_bf16"].startswith("emulated"):
        report["notes"]["cpu_bf16"] = f"cpu/bf16 rows: this CPU's bf16 support is {env['cpu_bf16']}"
    add_speedups(report)
    return report
