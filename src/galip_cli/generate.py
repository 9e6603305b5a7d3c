"""``galip-generate`` / ``galip generate``: prompts (arguments and/or a prompt file) -> PNG files, with a progress bar.

Two engines make the same images: ``lite`` (:class:`galip_core.LitePipeline`: torch + safetensors + tokenizers, a
cold start of ~3 s on a 2-core CPU) and ``diffusers`` (``GALIPPipeline``: any device, dtype or Hub id, ~9 s to import
diffusers and transformers). ``--engine auto`` (the default) takes ``lite`` for local folders and packaged models on
CPU in fp32, ``diffusers`` otherwise.

All the noise is drawn up front from one seeded generator (exactly as one ``pipe(prompts, num_images_per_prompt=N,
generator=...)`` call would draw it); the images are then made and written ``--batch_size`` at a time, so a long
prompt file needs little memory and the progress bar moves as images are written.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence

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

#: the seeds torch.Generator.manual_seed accepts
SEED_RANGE = (-(2**63), 2**64 - 1)


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
    parser.add_argument("--seed", type=int, default=0, help="random seed, -2**63 to 2**64 - 1 (default: 0)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="truncate the noise at +-T (resampling), a finite number >= 0; default: the model's "
                             "galip_settings.json (sampling.truncation), else none; 0 turns a recommended truncation off")
    parser.add_argument("--batch_size", type=int, default=64, help="images per generator forward pass (default: 64)")
    parser.add_argument("--out", default="galip-samples", help="output folder (default: galip-samples)")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse the names of files already in --out (default: never overwrite; a taken name "
                             "gets a -1, -2, ... suffix)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="weights dtype; auto (default): fp32 with the lite engine (a small model starts fastest "
                             "that way), else bf16 where the device computes it natively (GPUs, CPUs with "
                             "AMX/AVX512-BF16) and fp32 elsewhere. bf16 on a CPU without it is emulated and far slower")
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


def lite_problem(args: argparse.Namespace) -> str | None:
    """Why the lite engine cannot run these arguments (a message), or ``None`` when it can."""
    from galip_core.runtime import lite_support_problem, resolve_pretrained

    if args.device != "cpu":
        return f"it runs on cpu only (--device {args.device})"
    if args.dtype not in ("auto", "fp32"):  # auto: the lite engine's precision is fp32
        return f"it runs in fp32 only (--dtype {args.dtype})"
    folder = resolve_pretrained(args.model)
    if not os.path.isdir(folder):
        return f"--model {args.model!r} is not a local folder or packaged model"
    return lite_support_problem(folder)


def choose_engine(args: argparse.Namespace) -> str:
    """``lite`` or ``diffusers`` for ``args.engine`` (``auto`` picks ``lite`` whenever it can run the model)."""
    if args.engine == "diffusers":
        return "diffusers"
    problem = lite_problem(args)
    if problem is None:
        return "lite"
    if args.engine == "lite":
        raise ValueError(f"--engine lite cannot be used: {problem}. Use --engine diffusers (or auto).")
    return "diffusers"


def _lite_engine(args: argparse.Namespace, total: int) -> tuple["torch.Tensor", MakeImages]:
    import torch

    from galip_core.runtime import LitePipeline

    pipe = LitePipeline.from_pretrained(args.model)
    check_noise_memory(total, pipe.generator_config["z_dim"])
    # the model's galip_settings.json (sampling.truncation) unless --truncation is given; 0 turns it off
    latents = pipe.prepare_latents(total, torch.Generator().manual_seed(args.seed), truncation=args.truncation)
    return latents, lambda prompts, z: pipe(prompts, latents=z)


def save_png(image: "Image.Image", stem: str, overwrite: bool = False) -> str:
    """Write ``image`` to ``stem.png``, or, unless ``overwrite``, to ``stem-1.png``, ``stem-2.png``, ... when the name
    is taken (checked and claimed in one step, so two runs writing into the same folder never clash). The PNG is
    encoded before the file is claimed and written in one call, so a run killed meanwhile leaves no empty or partial
    PNG behind. Returns the path written."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    path, k = f"{stem}.png", 0
    while True:
        try:
            with open(path, "wb" if overwrite else "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            k += 1
            path = f"{stem}-{k}.png"


def check_noise_memory(total: int, z_dim: int) -> None:
    """All the noise is drawn up front (see the module docstring): refuse, naming ``--num_images``, a run whose noise
    (float32, with a second copy while truncation redraws values) would not fit in the free RAM."""
    from galip_core.machine import available_bytes

    needed, free = 2 * 4 * total * z_dim, available_bytes("cpu")
    if free is not None and needed > free:
        raise ValueError(f"{total} images (prompts x --num_images) need {needed / 2**30:.1f} GiB of noise drawn up "
                         f"front, and this machine has {free / 2**30:.1f} GiB free: make fewer images per run.")


def check_out_folder(out: str) -> None:
    """``--out`` must be a writable folder, created here if missing: checked before the model loads."""
    check_output_folder("--out", out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise OSError(f"--out {out!r}: cannot create this folder ({err.strerror}).") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out!r}: this folder is not writable.")


def _diffusers_engine(args: argparse.Namespace, total: int) -> tuple["torch.Tensor", MakeImages]:
    """``(latents, make_images)`` from a ``GALIPPipeline`` (any folder, Hub id, device or dtype): the noise of all
    ``total`` images drawn up front from ``--seed``, as one pipeline call would draw it."""
    import torch

    from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
    from galip_diffusers.utils import dtype_kwargs

    dtype = torch_dtype(args.dtype, args.device, warn=False)  # auto -> bf16 where native, else fp32 (warned by _run)
    pipe = GALIPPipeline.from_pretrained(args.model, **dtype_kwargs(dtype)).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    check_noise_memory(total, pipe.generator.config.z_dim)
    generator = torch.Generator().manual_seed(args.seed)
    truncation = pipe.settings.resolve("sampling", truncation=args.truncation)["truncation"]
    latents = pipe.prepare_latents(total, pipe.generator.dtype, pipe.device, generator, truncation=truncation)
    return latents, lambda prompts, z: pipe(prompts, latents=z).images


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

    prompts = read_prompts(args.prompt, args.prompt_file)
    check_device(args.device)
    resolve_dtype_name(args.dtype, args.device)  # checks --dtype and warns about emulated bf16; auto is kept for
    # choose_engine: the lite engine runs it in fp32, GALIPPipeline resolves it (bf16 where native, else fp32)
    if args.num_images < 1:
        raise ValueError(f"--num_images must be >= 1, got {args.num_images}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}.")
    if args.truncation is not None and not (math.isfinite(args.truncation) and args.truncation >= 0):
        raise ValueError(f"--truncation must be a finite number >= 0 (0: off), got {args.truncation}.")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise ValueError(f"--seed must be between -2**63 and 2**64 - 1, got {args.seed}.")
    check_out_folder(args.out)
    total = len(prompts) * args.num_images
    engine = choose_engine(args)
    if engine == "lite":
        from galip_core.runtime import LiteUnsupportedError

        try:
            latents, make_images = _lite_engine(args, total)
        except LiteUnsupportedError:
            if args.engine == "lite":
                raise
            engine = "diffusers"  # auto: a config the lite runtime cannot read goes to GALIPPipeline
    if engine == "diffusers":
        latents, make_images = _diffusers_engine(args, total)
    write_images(args, prompts, latents, make_images)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "galip-generate") -> int:
    """Entry point of ``galip-generate`` and ``galip generate``."""
    return run_cli(_run, build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
