"""Packaging a trained run as a shipped pipeline folder: the output folder's checks (never an input, a non-empty one
only with ``--overwrite``), the whole folder built beside it and swapped in at the end, float16 storage that loads in
float32, the folder's size, and the speed figures of its model card. Shared by ``training/package_shapes_model.py``
and ``training/package_emoji_model.py``."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
from PIL import Image

from galip_diffusers.benchmark.cold_start import cold_start_seconds
from galip_diffusers.benchmark.speed_figures import machine_description, measure_pipeline_speed
from galip_core.paths import check_folder_to_replace, is_same_or_inside
from galip_core.staging import temporary_sibling
from galip_diffusers.conversion.commit import clean_stale, commit, snapshot
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


def check_package_output(output_dir: str, overwrite: bool, inputs: Mapping[str, Optional[str]],
                         carried: Optional[Mapping[str, Optional[str]]] = None,
                         results_dir: Optional[str] = None) -> str:
    """The absolute ``--output_dir`` of a packaging script, checked before anything loads with the converter's rule
    (:func:`galip_core.paths.check_folder_to_replace`): it is none of the ``inputs`` (``{flag: path}``: the run, the
    CLIPs, ...), holds none and lies in none; it is not the current, home or root folder; it is not, holds or lies in
    ``results_dir``; and a non-empty folder (the shipped model's too) is replaced only with ``overwrite``.
    ``carried``: inputs read whole before the work and written into the new folder (``--components_from``,
    ``--settings_file``); they may be the output folder itself (a file: lie in it), and are otherwise inputs too."""
    out = os.path.realpath(os.path.abspath(output_dir)) if output_dir.strip() else ""
    inputs = dict(inputs)
    for flag, path in (carried or {}).items():
        real = os.path.realpath(path) if path is not None and path.strip() else None
        if real is not None and out and (real == out or (os.path.isfile(real) and is_same_or_inside(real, out))):
            continue
        inputs[flag] = path
    return check_folder_to_replace("--output_dir", output_dir, overwrite=overwrite, inputs=inputs,
                                   outputs={"--results_dir": results_dir})


@contextlib.contextmanager
def staged_folder(output_dir: str) -> Iterator[str]:
    """A new hidden folder beside ``output_dir`` (``.<name>.tmp-<pid>-*``) to build the whole packaged folder in, card
    included. When the block ends without an error, the converter's commit swaps it in as ``output_dir``
    (:func:`galip_diffusers.conversion.commit.commit`: an existing folder is replaced in one step, and only if nothing
    in it changed since the block began); on an error, Ctrl-C or SIGTERM it is deleted and ``output_dir`` keeps what
    it held, so a crash never leaves a half-written model (:func:`galip_core.staging.temporary_sibling`). Leftovers
    of a killed packaging are dealt with first (``clean_stale``)."""
    output_dir = os.path.abspath(output_dir)
    clean_stale(output_dir)
    checked = snapshot(output_dir)
    with temporary_sibling(output_dir, kind="packaging") as tmp:
        yield tmp
        commit(tmp, output_dir, checked)


def write_half_precision(pipe: GALIPPipeline, discriminator: GALIPDiscriminator, folder: str, name: str,
                         max_size_mb: float | None = None) -> None:
    """Save into the (new, empty) ``folder`` with float16 weights and float32 configs; ``name``: the folder the
    model ships as (the configs' ``_name_or_path``).

    Every component's config says float32, so the folder loads in float32 by default, as diffusers models do, and
    ``torch_dtype=`` still picks another dtype. The discriminator goes to ``discriminator/`` (to continue training).
    A folder of ``max_size_mb`` MiB or more is a ``ValueError`` (in a :func:`staged_folder`: nothing is replaced)."""
    try:
        pipe.to(STORAGE_DTYPE)
        pipe.save_pretrained(folder)
        discriminator.to(STORAGE_DTYPE).save_pretrained(os.path.join(folder, "discriminator"))
        for component in os.listdir(folder):
            config = os.path.join(folder, component, "config.json")
            if os.path.isfile(config):
                _portable_float32_config(config, name)
        size = folder_size_mb(folder)
        if max_size_mb is not None and size >= max_size_mb:
            raise ValueError(f"The packaged folder {name!r} would be {size:.1f} MiB; shipped models stay under "
                             f"{max_size_mb:g} MiB (nothing was replaced).")
    finally:
        pipe.to(torch.float32)
        discriminator.to(torch.float32)


def save_half_precision(pipe: GALIPPipeline, discriminator: GALIPDiscriminator, output_dir: str,
                        max_size_mb: float | None = None) -> None:
    """:func:`write_half_precision` into a :func:`staged_folder` swapped in as ``output_dir`` (which must already
    have been checked, e.g. by :func:`check_package_output`)."""
    with staged_folder(output_dir) as folder:
        write_half_precision(pipe, discriminator, folder, os.path.basename(os.path.abspath(output_dir)), max_size_mb)


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
