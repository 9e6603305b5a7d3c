"""The cold-start harness: wall time of ``galip generate`` in fresh processes, from process start to the PNG
written. Used by ``scripts/measure_cold_start.py`` and the packaging scripts in ``training/`` (for the model cards)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Sequence

import numpy as np


def run_timed(command_line: Sequence[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``command_line`` in a fresh process (environment inherited, output captured); wall seconds and result."""
    start = time.perf_counter()
    proc = subprocess.run(list(command_line), capture_output=True, text=True, env=dict(os.environ))
    return time.perf_counter() - start, proc


def runs_summary(times: Sequence[float]) -> dict[str, Any]:
    """``{"median_s": ..., "runs_s": [...]}`` of repeated wall times."""
    return {"median_s": float(np.median(times)), "runs_s": [round(t, 3) for t in times]}


def cold_start_seconds(model: str, prompt: str = "a large red circle on a white background", repeats: int = 3,
                       extra_args: Sequence[str] = (), command: Sequence[str] | None = None) -> dict[str, Any]:
    """Wall time of ``galip-generate`` in a fresh process, from process start to the PNG written (median and all
    runs; the first run also pays for cold file caches). ``command`` replaces the console script found on PATH, e.g.
    ``[sys.executable, "-m", "galip_diffusers", "generate"]``."""
    if command is None:
        executable = shutil.which("galip-generate")
        if executable is None:
            raise FileNotFoundError("`galip-generate` is not on PATH: install the package (pip install -e .) first.")
        command = [executable]
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            elapsed, proc = run_timed([*command, prompt, "--model", model, "--out", out, *extra_args])
            if proc.returncode != 0 or not any(f.endswith(".png") for f in os.listdir(out)):
                raise RuntimeError(f"galip-generate failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        times.append(elapsed)
    return runs_summary(times)
