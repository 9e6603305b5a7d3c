"""Timing, memory and device helpers of ``galip-benchmark``."""

from __future__ import annotations

import copy
import ctypes
import gc
import sys
import time
from typing import Any, Callable

import torch

from galip_core.machine import check_device as check_device_name

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("cpu", "cuda")


class BenchmarkError(Exception):
    """A problem with one row (reported in that row; the other rows still run)."""


# ----------------------------------------------------------------------------------------------------- device
def check_device(device: str) -> torch.device:
    """The row's device, or a :class:`BenchmarkError` saying why this machine cannot run it."""
    try:
        check_device_name(device)
    except ValueError as err:
        raise BenchmarkError(str(err)) from None
    return torch.device(device)


def check_dtype(device: torch.device, dtype_name: str) -> torch.dtype:
    """Raise when ``dtype`` cannot run the ops the pipelines need on ``device`` (probed on tiny tensors)."""
    dtype = DTYPES[dtype_name]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise BenchmarkError(f"dtype bf16 is not supported on {torch.cuda.get_device_name(device)}")
    try:
        x = torch.randn(1, 8, 6, 6, device=device).to(dtype)
        y = torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3, device=device, dtype=dtype), padding=1)
        y = torch.nn.functional.group_norm(y, 4)
        q = torch.nn.functional.linear(y.flatten(2).transpose(1, 2), torch.randn(8, 8, device=device, dtype=dtype))
        torch.nn.functional.scaled_dot_product_attention(q[:, None], q[:, None], q[:, None])
        torch.nn.functional.layer_norm(q, (8,))
    except (RuntimeError, NotImplementedError) as err:
        raise BenchmarkError(f"dtype {dtype_name} is not supported on {device.type} by this torch build: {err}") from err
    return dtype


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float | None]:
    """``(wall seconds, process CPU seconds)`` of ``fn()``: CUDA events around it on GPUs (no CPU time), else
    ``perf_counter`` and ``process_time``. The CPU time of a single-threaded run is what the call costs without
    other processes competing for the cores (it is the sum over threads, spinning included, with more threads)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, None
    start_time, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start_time, time.process_time() - start_cpu


class PeakMemory:
    """CUDA ``max_memory_allocated``, or the peak RSS of this process on CPU (reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak RSS of the process"

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (Linux >= 4.0)
        except OSError:
            self.kind = "cpu peak RSS of the process since start (could not reset)"

    def read_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class UNetClock:
    """Wall and CPU timestamps of every UNet call (forward pre-hook): the per-evaluation time of a denoising loop."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.device, self.times, self.cpu_times = device, [], []
        self.handle = unet.register_forward_pre_hook(self._pre)

    def clear(self) -> None:
        self.times.clear()
        self.cpu_times.clear()

    def _pre(self, module, args):
        synchronize(self.device)
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())

    def per_eval(self, cpu: bool = False) -> float | None:
        """Mean time from one UNet call to the next (UNet + scheduler step + guidance arithmetic)."""
        times = self.cpu_times if cpu else self.times
        if len(times) < 2:
            return None
        return (times[-1] - times[0]) / (len(times) - 1)


def unet_evals(pipe, steps: int) -> int:
    """UNet evaluations of a ``steps``-step call (PNDM with skip_prk_steps runs steps + 1)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


class Progress:
    """One tqdm bar over all (row, batch size) units, on stderr."""

    def __init__(self, total: int, disable: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="galip-benchmark", unit="unit", disable=disable, file=sys.stderr)

    def start(self, label: str) -> None:
        self.bar.set_postfix_str(label)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
