"""The converter's path checks, all made before anything is read or written.

* every input (``--checkpoint``, ``--clip``, ``--bpe``) exists and has the right kind (file or folder);
* ``--output_dir`` is not an input, does not contain one and is not inside an input folder: the swap at the end
  replaces ``--output_dir`` wholesale, so ``--clip DIR --output_dir DIR --overwrite`` would delete the CLIP;
* ``--output_dir`` is not the current, home or root folder or a parent of the current folder (refused even with
  ``--overwrite``), and can be created and written (no file on its path);
* a non-empty ``--output_dir`` needs ``--overwrite``;
* a symbolic link as ``--output_dir`` stands for the folder it points to (a dangling one is refused).

The ``--output_dir`` rules are :func:`galip_core.paths.check_folder_to_replace`, shared with the packaging scripts.
"""

from __future__ import annotations

import os

from galip_core.paths import check_folder_to_replace
from galip_diffusers.conversion.keys import ConversionError


def check_inputs(checkpoint_path: str, clip_path: str, bpe_path: str | None) -> None:
    """``ConversionError`` naming the flag unless each input exists with the right kind."""
    if not os.path.isfile(checkpoint_path):
        raise ConversionError(f"--checkpoint: {checkpoint_path!r} is {_not_a_file(checkpoint_path)} (expected the "
                              "official GALIP .pth).")
    if os.path.isdir(clip_path):
        if not os.path.isfile(os.path.join(clip_path, "config.json")):
            raise ConversionError(
                f"--clip: the folder {clip_path!r} is not a transformers CLIPModel folder (it has no config.json); "
                "pass OpenAI's ViT-B-32.pt, a CLIP state dict or a CLIPModel folder."
            )
    elif not os.path.isfile(clip_path):
        kind = "no such file or folder" if not os.path.exists(clip_path) else _not_a_file(clip_path)
        raise ConversionError(f"--clip: {clip_path!r} is {kind} (expected OpenAI's ViT-B-32.pt, a CLIP state dict or "
                              "a CLIPModel folder).")
    if bpe_path is not None and not os.path.isfile(bpe_path):
        raise ConversionError(f"--bpe: {bpe_path!r} is {_not_a_file(bpe_path)} (expected CLIP's "
                              "bpe_simple_vocab_16e6.txt.gz).")


def _not_a_file(path: str) -> str:
    """Why ``path``, which is no regular file, cannot be read as one: ``/dev/null`` or a pipe (``<(curl ...)``)
    exists, so "no such file" would mislead; the converter memory-maps and re-reads its inputs, which needs a file."""
    if os.path.isdir(path):
        return "a folder, not a file"
    if os.path.exists(path):
        return "not a regular file (a device, pipe or socket); save it to a file and pass that"
    return "no such file"


def check_output_dir(output_dir: str, overwrite: bool, inputs: dict[str, str | None]) -> str:
    """The real path of ``--output_dir``, or ``ConversionError`` saying why it cannot be used. ``inputs``:
    ``{flag: path}`` of the input files and folders (``None``: not given). The rule is the shared one of folders that
    are built beside and swapped in whole (:func:`galip_core.paths.check_folder_to_replace`).

    A symbolic link to a folder is resolved, as diffusers' ``save_pretrained`` writes through it: the model goes into
    the linked folder, next to which it is built and swapped in, and the link stays. A link to nothing is refused
    here rather than after the whole conversion."""
    dangling = _dangling_link(output_dir) if output_dir.strip() else None
    if dangling is not None:
        raise ConversionError(
            f"--output_dir: {dangling!r} is a symbolic link to {os.readlink(dangling)!r}, which does not exist; "
            "create that folder, or remove the link or choose another --output_dir."
        )
    try:
        out = check_folder_to_replace("--output_dir", output_dir, overwrite=overwrite, inputs=inputs,
                                      example="./galip-converted")
    except (ValueError, OSError) as error:  # one error type for the converter's callers
        raise ConversionError(str(error)) from None
    return os.path.realpath(out)


def _dangling_link(path: str) -> str | None:
    """The symbolic link on ``path`` (``path`` itself or a folder above it) that points to nothing, or ``None``."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        if os.path.islink(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None
