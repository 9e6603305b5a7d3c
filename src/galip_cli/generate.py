"""``galip-generate`` / ``galip generate``: prompts (arguments and/or a prompt file) -> PNG files, with a progress bar.

Two engines make the same images: ``lite`` (:class:`galip_core.LitePipeline`: torch + safetensors + tokenizers, a
cold start of ~3 s on a 2-core CPU) and ``diffusers`` (``GALIPPipeline``: any device, dtype or Hub id, ~9 s to import
diffusers and transformers). ``--dtype auto`` is resolved once, before the engine is chosen (:func:`resolve_dtype`),
so both engines run the same dtype; ``--engine auto`` (the default) takes ``lite`` for local folders and packaged
models on CPU in fp32, ``diffusers`` otherwise, and says why on stderr when it cannot take ``lite``.

All the noise is drawn up front from one seeded generator (exactly as one ``pipe(prompts, num_images_per_prompt=N,
generator=...)`` call would draw it); the images are then made and written ``--batch_size`` at a time, so a long
prompt file needs little memory and the progress bar moves as images are written. Each batch gets exactly the
embeddings and pixels of that call with ``max_batch_size=--batch_size`` (:func:`galip_core.memory.prompt_runs`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from galip_cli.common import DTYPES, CommandParser, check_output_folder, resolve_dtype_name, run_cli, torch_dtype
from galip_core.packaged import DEFAULT_MODEL, PACKAGED_MODELS

if TYPE_CHECKING:
    import torch
    from PIL import Image

ENGINES = ("auto", "lite", "diffusers")

#: ``make_images(prompts, latents)`` -> PIL images, one per prompt
MakeImages = Callable[[list[str], "torch.Tensor"], list["Image.Image"]]

EXAMPLES = f"""examples:
  %(prog)s "grinning face, twemoji style"
  %(prog)s "a large red circle on a white background" --model galip-shapes
  %(prog)s "a small bird with a red head" --model ./galip-coco --num_images 8 --seed 1 --out samples/
  %(prog)s --prompt_file prompts.txt --num_images 4 --device cuda --dtype bf16 --batch_size 32

The default model is the packaged {DEFAULT_MODEL} (packaged: {', '.join(PACKAGED_MODELS)}).
Output files are OUT/PPPP_KK_seedS.png (prompt P, image K; more digits past 9999 prompts or 99 images, so that the
names sort in order); their paths are printed on stdout, the progress bar goes to stderr. Files already in OUT are
never overwritten: a name that is taken gets a suffix (PPPP_KK_seedS-1.png, -2, ...), unless --overwrite is given.
"""

#: ``--out`` names ending so are taken for an image file, not the folder ``--out`` is
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: bytes per value of each resolved ``--dtype`` (:func:`resolve_dtype`)
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def build_parser(prog: str = "galip-generate") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Generate images with a GALIP pipeline (one forward pass) and write them as PNG files.",
        epilog=EXAMPLES,
    )
    parser.add_argument("prompt", nargs="*", help="one or more prompts (quote each)")
    parser.add_argument("--prompt_file",
                        help="a UTF-8 text file with one prompt per line (blank lines, and lines with no text left "
                             "after CLIP's text cleaning, are skipped)")
    parser.add_argument("--model", default=None,
                        help=f"pipeline folder, Hub id or packaged name ({', '.join(PACKAGED_MODELS)}; "
                             f"default: the packaged {DEFAULT_MODEL}, even beside a local folder of that name)")
    parser.add_argument("--num_images", type=int, default=1, help="images per prompt (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64 - 1 (default: 0)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="truncate the noise at +-T (resampling), a finite number >= 0; default: the model's "
                             "galip_settings.json (sampling.truncation), else none; 0 turns a recommended truncation off")
    parser.add_argument("--batch_size", type=int, default=64, help="images per generator forward pass (default: 64)")
    parser.add_argument("--out", default="galip-samples",
                        help="output folder, created if missing; the PNGs are written inside it (default: "
                             "galip-samples)")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse the names of files already in --out (default: never overwrite; a taken name "
                             "gets a -1, -2, ... suffix)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="weights dtype; auto (default): fp32 on CPU, with either engine (the same pixels as "
                             "GALIPPipeline's default, and the lite engine's fast start), bf16 on a GPU that computes "
                             "it natively, else fp32. bf16 on a CPU without AMX/AVX512-BF16 is emulated and far slower")
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="lite: torch only, fast start (local folders, CPU, fp32); diffusers: GALIPPipeline; "
                             "auto: lite when it can run the model, else diffusers (default: auto)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser  # fmt: skip


def read_prompts(prompts: Sequence[str], prompt_file: str | None) -> list[str]:
    """The prompts given as arguments, then those of ``prompt_file`` (one per line). A blank argument (also one that
    CLIP's text cleaning empties) is refused, as in the demo: it is a quoting slip far more often than a wish for an
    unconditioned image.

    The file is read as ``utf-8-sig`` (a BOM some editors write is not part of the first prompt). A line is skipped
    when CLIP's text cleaning (:func:`galip_core.text.clip_text_clean`, what the tokenizer sees) leaves nothing of it,
    the demo's rule for an empty prompt: blank lines, but also lines of only a BOM (U+FEFF) or control characters,
    which would otherwise each make an unconditioned image numbered as a prompt. How many such non-blank lines were
    skipped is printed on stderr."""
    from galip_core.text import clip_text_clean

    prompts = [p for p in prompts]
    blank = [i for i, p in enumerate(prompts) if not clip_text_clean(p)]  # "\ufeff" too: no text the model sees
    if blank:
        raise ValueError(f"prompt argument {blank[0] + 1} is blank; give some text (the Python pipeline takes \"\" "
                         "if an empty prompt is really meant).")
    if prompt_file:
        if os.path.isdir(prompt_file):
            raise IsADirectoryError(f"--prompt_file {prompt_file!r} is a folder; give a text file, one prompt per line.")
        if not os.path.isfile(prompt_file):
            raise FileNotFoundError(f"--prompt_file: {prompt_file!r} does not exist.")
        try:
            with open(prompt_file, encoding="utf-8-sig") as f:
                lines = [line.strip() for line in f]
        except UnicodeDecodeError as err:
            raise ValueError(f"--prompt_file {prompt_file!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
                             "give a text file, one prompt per line.") from None
        kept = [line for line in lines if line and clip_text_clean(line)]
        invisible = sum(1 for line in lines if line) - len(kept)
        if invisible:
            print(f"warning: --prompt_file {prompt_file!r}: skipped {invisible} line(s) with no text left after CLIP's "
                  "text cleaning (only a BOM, control or other invisible characters)", file=sys.stderr)
        prompts += kept
    if not prompts:
        raise ValueError("no prompt given: pass prompts as arguments or with --prompt_file.")
    return prompts


def resolve_dtype(name: str, device: str, warn: bool = False) -> str:
    """``--dtype`` as ``"fp32" | "fp16" | "bf16"``, decided once, before the engine is chosen, so that one command
    gives one set of pixels whichever engine runs it: ``auto`` is fp32 on a CPU (the lite engine's precision, and
    ``GALIPPipeline``'s default in Python: bf16 there changed pixels by up to 15/255 on CPUs with native bf16),
    else what :func:`galip_cli.common.resolve_dtype_name` picks for ``device`` (bf16 on GPUs that have it). With
    ``warn``, an explicit bf16 on a CPU that emulates it is warned about."""
    if name == "auto" and device.split(":")[0] == "cpu":
        return "fp32"
    return resolve_dtype_name(name, device, warn)


def lite_problem(args: argparse.Namespace) -> str | None:
    """Why the lite engine cannot run these arguments (a message), or ``None`` when it can."""
    from galip_core.runtime import lite_support_problem, resolve_pretrained

    if args.device != "cpu":
        return f"it runs on cpu only (--device {args.device})"
    dtype = resolve_dtype(args.dtype, args.device)
    if dtype != "fp32":
        return f"it runs in fp32 only (--dtype {dtype})"
    folder = resolve_pretrained(args.model)
    if not os.path.isdir(folder):
        return f"--model {args.model!r} is not a local folder or packaged model"
    return lite_support_problem(folder)


def choose_engine(args: argparse.Namespace) -> str:
    """``lite`` or ``diffusers`` for ``args.engine`` (``auto`` picks ``lite`` whenever it can run the model)."""
    return engine_and_reason(args)[0]


def engine_and_reason(args: argparse.Namespace) -> tuple[str, str | None]:
    """:func:`choose_engine`'s engine, and why the lite engine cannot run (``None`` when it can or was not asked):
    ``auto`` then says so once the diffusers engine has loaded (:func:`note_diffusers_engine`)."""
    if args.engine == "diffusers":
        return "diffusers", None
    problem = lite_problem(args)
    if problem is None:
        return "lite", None
    if args.engine == "lite":
        raise ValueError(f"--engine lite cannot be used: {problem}. Use --engine diffusers (or auto).")
    return "diffusers", problem


def note_diffusers_engine(problem: str) -> None:
    """One stderr line: ``--engine auto`` runs GALIPPipeline, since the lite engine cannot (``problem``). Shown
    whatever ``--no_progress`` says (it hides progress bars only), like a warning: it explains a slower start and a
    different engine than usual (the pixels are the same, :func:`resolve_dtype`)."""
    print(f"note: --engine auto: using the diffusers engine (GALIPPipeline), since the lite engine cannot run this: "
          f"{problem}", file=sys.stderr)


def _lite_engine(args: argparse.Namespace, total: int) -> tuple["torch.Tensor", MakeImages]:
    import torch

    from galip_core.runtime import LitePipeline

    pipe = LitePipeline.from_pretrained(args.model)  # a local folder: its memory was checked by _run
    # the model's galip_settings.json (sampling.truncation) unless --truncation is given; 0 turns it off
    latents = pipe.prepare_latents(total, torch.Generator().manual_seed(args.seed), truncation=args.truncation)
    return latents, lambda prompts, z: pipe(prompts, latents=z)


def save_png(image: "Image.Image", stem: str, overwrite: bool = False) -> str:
    """Write ``image`` to ``stem.png``, or, unless ``overwrite``, to ``stem-1.png``, ``stem-2.png``, ... when the name
    is taken (claimed in one step, so two runs writing into the same folder never clash). Returns the path written.
    Whole or not at all (:func:`galip_core.staging.write_file`): a full disk, an error or Ctrl-C leaves an old file
    whole and no empty or partial PNG, and ``overwrite`` replaces a link in ``--out``, never the file it points to."""
    from galip_core.staging import write_file

    return write_file(f"{stem}.png", lambda f: image.save(f, format="PNG"), overwrite,
                      taken_name=lambda k: f"{stem}-{k}.png")


def check_run_memory(args: argparse.Namespace, total: int, config: Mapping[str, Any], text_config: Any,
                     truncation: float | None, dtype_bytes: int) -> None:  # fmt: skip
    """Refuse a run that would not fit in the free memory, before any noise is drawn, naming the flag to change.
    All the noise is drawn up front (the module docstring; :func:`galip_core.noise.noise_peak_bytes`, more while a
    truncation resamples): too much names ``--num_images``. Then each batch is one engine call
    (:func:`galip_core.memory.estimate_call_bytes`) while the noise is held: too much names ``--batch_size``, with
    one that fits."""
    from galip_core.machine import available_bytes
    from galip_core.memory import estimate_call_bytes, images_text, largest_fitting, memory_text as gib
    from galip_core.noise import noise_peak_bytes

    def needed(batch: int) -> int:  # a batch's call, with the noise of all the images held meanwhile
        call = estimate_call_bytes(config, batch, None, dtype_bytes, text_config=text_config, num_prompts=batch,
                                   device_type=args.device.split(":")[0])  # fmt: skip
        return total * config["z_dim"] * dtype_bytes + call

    noise, free = noise_peak_bytes(total, config["z_dim"], truncation, dtype_bytes), available_bytes("cpu")
    if free is not None and noise > free:
        raise ValueError(f"{total} images (prompts x --num_images) need {gib(noise)} of noise drawn up front, and "
                         f"this machine has {gib(free)} free: make fewer images per run.")
    batch, free = min(args.batch_size, total), available_bytes(args.device)
    if free is not None and needed(batch) > free:
        fits = largest_fitting(needed, batch, free)
        remedy = (f"give --batch_size {fits} or less" if fits else "even one image does not fit: free some memory"
                  if total == 1 else "make fewer images per run")  # fmt: skip
        raise ValueError(f"--batch_size {args.batch_size}: a batch of {images_text(batch, config['output_size'])} "
                         f"needs about {gib(needed(batch))} (with the noise of all {total} images), and {args.device} "
                         f"has {gib(free)} free: {remedy}.")


def local_model_configs(model: str | None) -> tuple[dict, dict | None, Any] | None:
    """``(generator config, text encoder config, settings)`` of ``--model`` read from its folder without loading it,
    for :func:`check_run_memory` before the model loads; ``None`` for a Hub id or a folder whose files cannot be
    read here (the diffusers engine checks after loading, and loading names what is wrong)."""
    from galip_core.folder import read_json_object
    from galip_core.runtime import resolve_pretrained
    from galip_core.settings import load_settings

    folder = os.fspath(resolve_pretrained(model))
    text_path = os.path.join(folder, "text_encoder", "config.json")
    try:
        config = read_json_object(os.path.join(folder, "generator", "config.json"))
        text = read_json_object(text_path) if os.path.isfile(text_path) else None
        settings = load_settings(folder)
    except (OSError, ValueError):
        return None
    needed = ("z_dim", "cond_dim", "ngf", "output_size")
    return (config, text, settings) if all(isinstance(config.get(key), int) for key in needed) else None


def check_out_folder(out: str) -> None:
    """``--out`` must be a writable folder, created here if missing: checked before the model loads. A new ``--out``
    named like an image (``cat.png``) is refused: it would become a folder of that name."""
    if os.path.splitext(out)[1].lower() in IMAGE_SUFFIXES and not os.path.isdir(out):  # not a hidden ".png" folder
        raise ValueError(f"--out {out!r} looks like an image file, but --out is a folder: the images are written "
                         f"inside it as PNG files (PPPP_KK_seedS.png); give a folder name, e.g. "
                         f"{os.path.splitext(out)[0] or 'galip-samples'!r}.")
    check_output_folder("--out", out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise OSError(f"--out {out!r}: cannot create this folder ({err.strerror}).") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out!r}: this folder is not writable.")


def _diffusers_engine(args: argparse.Namespace, total: int, fallback: str | None = None,
                      memory_checked: bool = False) -> tuple["torch.Tensor", MakeImages]:  # fmt: skip
    """``(latents, make_images)`` from a ``GALIPPipeline`` (any folder, Hub id, device or dtype): the noise of all
    ``total`` images drawn up front from ``--seed``, as one pipeline call would draw it. ``fallback``: why ``auto``
    did not take the lite engine, said once the model has loaded (a model that fails to load gets its error only).
    ``memory_checked``: :func:`check_run_memory` already ran on the folder's configs; else it runs on the loaded
    model's (a Hub id)."""
    import torch

    from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
    from galip_diffusers.utils import dtype_kwargs

    dtype = torch_dtype(args.dtype, args.device, warn=False)  # resolved by _run (resolve_dtype), which warned
    with hub_progress_bars_hidden(args.no_progress):
        pipe = GALIPPipeline.from_pretrained(args.model, **dtype_kwargs(dtype)).to(args.device)
    if fallback is not None:
        note_diffusers_engine(fallback)
    pipe.set_progress_bar_config(disable=True)
    truncation = pipe.settings.resolve("sampling", truncation=args.truncation)["truncation"]
    if not memory_checked:
        check_run_memory(args, total, pipe.generator.config, pipe.text_encoder.config, truncation, dtype.itemsize)
    generator = torch.Generator().manual_seed(args.seed)
    latents = pipe.prepare_latents(total, pipe.generator.dtype, pipe.device, generator, truncation=truncation)
    return latents, lambda prompts, z: pipe(prompts, latents=z).images


@contextlib.contextmanager
def hub_progress_bars_hidden(hidden: bool) -> Iterator[None]:
    """Within the block, with ``hidden`` (``--no_progress``), diffusers', transformers' and huggingface_hub's own
    progress bars (loading components and weights, downloads) are off; afterwards each is as it was (the switches
    are process-wide, and a Python caller of :func:`main` keeps its own)."""
    if not hidden:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    shown = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled(),
             not hub_utils.are_progress_bars_disabled())  # fmt: skip
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # huggingface_hub's too
    try:
        yield
    finally:
        for was_shown, enable in zip(shown, (diffusers_logging.enable_progress_bar,
                                             transformers_logging.enable_progress_bar, hub_utils.enable_progress_bars)):
            if was_shown:
                enable()
        if not shown[2]:  # transformers' switch turns huggingface_hub's on too
            hub_utils.disable_progress_bars()


def write_images(args: argparse.Namespace, prompts: list[str], latents: "torch.Tensor", make_images: MakeImages
                 ) -> None:
    """Make ``args.num_images`` images per prompt, ``args.batch_size`` at a time, and write them as PNG files."""
    from tqdm.auto import tqdm

    total = len(prompts) * args.num_images
    flat_prompts = [p for p in prompts for _ in range(args.num_images)]
    # zero-padded so that names sort in order: 4 digits for the prompt and 2 for the image, more when needed
    prompt_digits, image_digits = max(4, len(str(len(prompts) - 1))), max(2, len(str(args.num_images - 1)))
    os.makedirs(args.out, exist_ok=True)
    with tqdm(total=total, unit="image", desc=f"{args.model or DEFAULT_MODEL}", disable=args.no_progress,
              file=sys.stderr) as bar:
        for start in range(0, total, args.batch_size):
            stop = min(start + args.batch_size, total)
            images = make_images(flat_prompts[start:stop], latents[start:stop])
            for index, image in zip(range(start, stop), images):
                prompt_index, k = divmod(index, args.num_images)
                path = save_png(image, os.path.join(args.out, f"{prompt_index:0{prompt_digits}d}_{k:0{image_digits}d}_seed{args.seed}"),
                                args.overwrite)
                bar.write(path, file=sys.stdout)
                bar.update()


def _run(args: argparse.Namespace) -> int:
    from galip_core.machine import check_device
    from galip_core.noise import check_seed

    prompts = read_prompts(args.prompt, args.prompt_file)
    check_device(args.device)
    args.dtype = resolve_dtype(args.dtype, args.device, warn=True)  # once, for either engine (same pixels)
    if args.num_images < 1:
        raise ValueError(f"--num_images must be >= 1, got {args.num_images}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}.")
    if args.truncation is not None and not (math.isfinite(args.truncation) and args.truncation >= 0):
        raise ValueError(f"--truncation must be a finite number >= 0 (0: off), got {args.truncation}.")
    check_seed("--seed", args.seed)
    check_out_folder(args.out)
    total = len(prompts) * args.num_images
    engine, fallback = engine_and_reason(args)
    configs = local_model_configs(args.model)
    if configs is not None:  # before the model loads (a Hub id: after, in _diffusers_engine)
        truncation = configs[2].resolve("sampling", truncation=args.truncation)["truncation"]
        check_run_memory(args, total, configs[0], configs[1], truncation, DTYPE_BYTES[args.dtype])
    if engine == "lite":
        from galip_core.runtime import LiteUnsupportedError

        try:
            latents, make_images = _lite_engine(args, total)
        except LiteUnsupportedError as err:
            if args.engine == "lite":
                raise
            engine, fallback = "diffusers", str(err)  # auto: a config the lite runtime cannot read
    if engine == "diffusers":
        latents, make_images = _diffusers_engine(args, total, fallback, memory_checked=configs is not None)
    write_images(args, prompts, latents, make_images)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "galip-generate") -> int:
    """Entry point of ``galip-generate`` and ``galip generate``."""
    return run_cli(_run, build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
