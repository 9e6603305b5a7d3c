"""Packaging a trained run as a shipped pipeline folder: float16 storage that loads in float32, the folder's size,
and the speed figures of its model card. Shared by ``training/package_shapes_model.py`` and
``training/package_emoji_model.py``."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from PIL import Image

from galip_diffusers.benchmark.cold_start import cold_start_seconds
from galip_diffusers.benchmark.speed_figures import machine_description, measure_pipeline_speed
from galip_diffusers.conversion.commit import commit, snapshot, temporary_folder
from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

STORAGE_DTYPE = torch.float16
#: a model shipped inside the package stays under this size (MiB)
SHIPPED_MODEL_MAX_MB = 25.0


def _portable_float32_config(config_path: str, folder_name: str) -> None:
    """Rewrite a saved component's ``config.json`` for shipping: transformers' load dtype says float32, and diffusers'
    ``_name_or_path`` (where the weights were loaded from, e.g. a checkpoint on the machine that packaged them)
    becomes the shipped folder's name."""
    with open(config_path) as f:
        data = json.load(f)
    if not ({"dtype", "torch_dtype", "_name_or_path"} & set(data)):
        return
    if "dtype" in data or "torch_dtype" in data:  # transformers: the dtype it loads in by default
        data.pop("torch_dtype", None)
        data["dtype"] = "float32"
    if "_name_or_path" in data:
        data["_name_or_path"] = folder_name
    with open(config_path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def save_half_precision(pipe: GALIPPipeline, discriminator: GALIPDiscriminator, output_dir: str,
                        max_size_mb: float | None = None) -> None:
    """Save with float16 weights and float32 configs, built in a hidden folder and swapped in as ``output_dir`` with
    the converter's commit (:func:`galip_diffusers.conversion.commit.commit`: an existing folder is replaced in one
    step, and only if nothing changed in it meanwhile).

    Every component's config says float32, so the folder loads in float32 by default, as diffusers models do, and
    ``torch_dtype=`` still picks another dtype. The discriminator goes to ``discriminator/`` (to continue training).
    A folder of ``max_size_mb`` MiB or more is refused before the swap, so ``output_dir`` keeps what it held."""
    output_dir = os.path.abspath(output_dir)
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    checked = snapshot(output_dir)
    tmp = temporary_folder(output_dir)
    try:
        pipe.to(STORAGE_DTYPE)
        pipe.save_pretrained(tmp)
        discriminator.to(STORAGE_DTYPE).save_pretrained(os.path.join(tmp, "discriminator"))
        for name in os.listdir(tmp):
            config = os.path.join(tmp, name, "config.json")
            if os.path.isfile(config):
                _portable_float32_config(config, os.path.basename(output_dir))
        size = folder_size_mb(tmp)
        if max_size_mb is not None and size >= max_size_mb:
            raise ValueError(f"{output_dir} would be {size:.1f} MiB; shipped models stay under {max_size_mb:g} MiB "
                             "(nothing was replaced).")
        commit(tmp, output_dir, checked)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pipe.to(torch.float32)
        discriminator.to(torch.float32)


def folder_size_mb(folder: str) -> float:
    """Total size of the files under ``folder``, in MiB."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files) / 2**20


def measure_speed(folder: str, prompt: str) -> dict[str, Any]:
    """Whole pipeline calls (text encoder, generator, PIL) at batch 1 and 64, with 1 and 2 threads, default and fast
    path (``enable_fast_inference``), plus the cold start of ``galip-generate`` on ``prompt``."""
    threads = torch.get_num_threads()
    rows = []
    try:
        for num_threads in (1, 2):
            torch.set_num_threads(num_threads)
            for path in ("default", "fast"):
                pipe = GALIPPipeline.from_pretrained(folder)
                if path == "fast":
                    pipe.enable_fast_inference()
                setting = f"float32, cpu, {path} path, {num_threads} thread{'s' if num_threads > 1 else ''}"
                rows += measure_pipeline_speed(pipe, batch_sizes=(1, 64), repeats=20, warmup=2, setting=setting)
    finally:
        torch.set_num_threads(threads)
    machine = machine_description("cpu").split(" (")[0] + f" ({os.cpu_count()} cores), torch {torch.__version__}"
    return {"rows": [row.as_card_row() for row in rows], "raw": [asdict(row) for row in rows], "machine": machine,
            "cold_start_galip_generate": cold_start_seconds(folder, prompt=prompt)}


def speed_markdown(speed: dict[str, Any]) -> str:
    """The speed table of a model card (from :func:`measure_speed`) and the cold-start sentence."""
    lines = ["| setting | batch size | ms per image | images per second |", "| --- | --- | --- | --- |"]
    for row in speed["raw"]:
        lines.append(f"| {row['setting']} | {row['batch_size']} | {1000 * row['seconds_per_image']:.1f} | "
                     f"{row['images_per_second']:.0f} |")
    cold = speed["cold_start_galip_generate"]
    lines.append(f"\nCold start of `galip-generate` (process start to PNG written): median {cold['median_s']:.2f} s "
                 f"over {len(cold['runs_s'])} runs ({', '.join(f'{t:.2f}' for t in cold['runs_s'])} s). "
                 f"Machine: {speed['machine']}.")
    return "\n".join(lines) + "\n"


def save_strip(strip: np.ndarray, path: str, scale: int = 2) -> None:
    """An interpolation strip (``(H, W, 3)`` floats in [0, 1]) as a PNG, enlarged ``scale`` times (nearest)."""
    image = Image.fromarray((np.clip(strip, 0.0, 1.0) * 255).round().astype(np.uint8))
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def checkpoint_steps(checkpoint_folder: str) -> int:
    """The step of a ``checkpoint-N`` folder."""
    return int(os.path.basename(os.path.normpath(checkpoint_folder)).split("-")[1])
