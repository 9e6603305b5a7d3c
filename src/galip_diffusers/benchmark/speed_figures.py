"""Small, honest speed figures for model cards: images per second of a pipeline, and the machine they were taken on.

``galip benchmark`` is the full benchmark (peers, FLOPs, memory); this is the few timed calls a training run or a
conversion can afford at its end, so that every card states a speed together with its machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from galip_core.machine import CPU_BF16_FLAGS, cpu_bf16_support, cpu_name  # noqa: F401  (re-exported)

SPEED_PROMPT = "a large red circle on a white background"


@dataclass(frozen=True)
class SpeedRow:
    """One measured setting: the median over ``repeats`` timed calls of the whole pipeline (text encoder, generator,
    conversion to PIL)."""

    setting: str
    batch_size: int
    seconds_per_image: float
    images_per_second: float
    repeats: int

    def as_card_row(self) -> dict[str, Any]:
        """The row as the card templates show it (rounded)."""
        row = asdict(self)
        row["seconds_per_image"] = f"{self.seconds_per_image:.4g}"
        row["images_per_second"] = f"{self.images_per_second:.4g}"
        return row


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line naming the hardware and software of a measurement, e.g. ``"CPU: Intel Xeon ... (2 cores, 1 torch
    thread), torch 2.13.0, Linux"`` or ``"GPU: NVIDIA H100 (CUDA 12.8), torch ..."``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = f"GPU: {torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    elif device.type == "mps":
        hardware = f"Apple GPU (MPS), {platform.machine()}"
    else:
        threads = torch.get_num_threads()
        hardware = (f"CPU: {cpu_name()} ({os.cpu_count()} cores, {threads} torch thread{'s' if threads != 1 else ''})")
    return f"{hardware}, torch {torch.__version__}, {platform.system()}"


@torch.no_grad()
def measure_pipeline_speed(
    pipe: Any, batch_sizes: Sequence[int] = (1,), repeats: int = 3, warmup: int = 1, prompt: str = SPEED_PROMPT,
    setting: str | None = None,
) -> list[SpeedRow]:
    """Time ``pipe(prompt, num_images_per_prompt=batch)`` for every batch size (after ``warmup`` untimed calls).

    ``setting`` labels the rows (default: the generator's dtype and the device)."""
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be integers >= 1, got {list(batch_sizes)}.")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    device = pipe.device
    label = setting or f"{str(pipe.generator.dtype).replace('torch.', '')}, {device.type}"
    previous = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    try:
        return [_time_batch(pipe, int(batch), repeats, warmup, prompt, label) for batch in batch_sizes]
    finally:
        pipe._progress_bar_config = previous


def _time_batch(pipe: Any, batch: int, repeats: int, warmup: int, prompt: str, label: str) -> SpeedRow:
    device = pipe.device

    def call() -> None:
        pipe(prompt, num_images_per_prompt=batch, generator=torch.Generator().manual_seed(0))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return SpeedRow(label, batch, median / batch, batch / median, repeats)

