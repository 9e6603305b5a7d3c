"""The converter's path checks, all made before anything is read or written.

* every input (``--checkpoint``, ``--clip``, ``--bpe``) exists and has the right kind (file or folder);
* ``--output_dir`` is not an input, does not contain one and is not inside an input folder: the swap at the end
  replaces ``--output_dir`` wholesale, so ``--clip DIR --output_dir DIR --overwrite`` would delete the CLIP;
* ``--output_dir`` is not the current, home or root folder or a parent of the current folder (refused even with
  ``--overwrite``), and can be created (no file on its path);
* a non-empty ``--output_dir`` needs ``--overwrite``.
"""

from __future__ import annotations

import os

from galip_diffusers.conversion.keys import ConversionError


def check_inputs(checkpoint_path: str, clip_path: str, bpe_path: str | None) -> None:
    """``ConversionError`` naming the flag unless each input exists with the right kind."""
    if not os.path.isfile(checkpoint_path):
        kind = "a folder, not a file" if os.path.isdir(checkpoint_path) else "no such file"
        raise ConversionError(f"--checkpoint: {checkpoint_path!r} is {kind} (expected the official GALIP .pth).")
    if os.path.isdir(clip_path):
        if not os.path.isfile(os.path.join(clip_path, "config.json")):
            raise ConversionError(
                f"--clip: the folder {clip_path!r} is not a transformers CLIPModel folder (it has no config.json); "
                "pass OpenAI's ViT-B-32.pt, a CLIP state dict or a CLIPModel folder."
            )
    elif not os.path.isfile(clip_path):
        raise ConversionError(f"--clip: no such file or folder {clip_path!r}.")
    if bpe_path is not None and not os.path.isfile(bpe_path):
        kind = "a folder, not a file" if os.path.isdir(bpe_path) else "no such file"
        raise ConversionError(f"--bpe: {bpe_path!r} is {kind} (expected CLIP's bpe_simple_vocab_16e6.txt.gz).")


def _is_same_or_inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(output_dir: str, overwrite: bool, inputs: dict[str, str | None]) -> str:
    """The absolute ``--output_dir``, or ``ConversionError`` saying why it cannot be used. ``inputs``:
    ``{flag: path}`` of the input files and folders (``None``: not given)."""
    if not output_dir.strip():
        raise ConversionError("--output_dir must not be empty: pass the folder to create, e.g. ./galip-converted.")
    out = os.path.abspath(output_dir)
    real = os.path.realpath(out)
    cwd = os.path.realpath(os.getcwd())
    if real in (os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.sep)) or _is_same_or_inside(cwd, real):
        raise ConversionError(
            f"--output_dir: refusing to use {out!r}, the current, home or root folder or a parent of the current "
            "folder: it is never replaced, not even with --overwrite; choose a new folder, e.g. ./galip-converted."
        )
    for flag, path in inputs.items():
        if path is None:
            continue
        source = os.path.realpath(path)
        same = source == real or (os.path.exists(path) and os.path.exists(out) and os.path.samefile(path, out))
        if same or _is_same_or_inside(source, real):
            relation = "is" if same else "contains"
            raise ConversionError(
                f"--output_dir: {out!r} {relation} the {flag} input {path!r}; the converted folder would replace it. "
                "Choose another folder."
            )
        if os.path.isdir(source) and _is_same_or_inside(real, source):
            raise ConversionError(
                f"--output_dir: {out!r} is inside the {flag} folder {path!r}; choose a folder outside it."
            )
    ancestor = out
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        where = "exists and is not a folder" if ancestor == out else f"cannot be created: {ancestor!r} is a file"
        raise ConversionError(f"--output_dir: {out!r} {where}.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ConversionError(f"--output_dir: {out!r} exists and is not empty; pass --overwrite to replace it.")
    return out


def missing_ancestors(folder: str) -> list[str]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing
