"""The converter's path checks, all made before anything is read or written.

* every input (``--checkpoint``, ``--clip``, ``--bpe``) exists and has the right kind (file or folder);
* ``--output_dir`` is not an input, does not contain one and is not inside an input folder: the swap at the end
  replaces ``--output_dir`` wholesale, so ``--clip DIR --output_dir DIR --overwrite`` would delete the CLIP;
* ``--output_dir`` is not the current, home or root folder or a parent of the current folder (refused even with
  ``--overwrite``), and can be created and written (no file on its path);
* a non-empty ``--output_dir`` needs ``--overwrite``.

The ``--output_dir`` rules are :func:`galip_core.paths.check_folder_to_replace`, shared with the packaging scripts.
"""

from __future__ import annotations

import os

from galip_core.paths import check_folder_to_replace
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


def check_output_dir(output_dir: str, overwrite: bool, inputs: dict[str, str | None]) -> str:
    """The absolute ``--output_dir``, or ``ConversionError`` saying why it cannot be used. ``inputs``:
    ``{flag: path}`` of the input files and folders (``None``: not given). The rule is the shared one of folders that
    are built beside and swapped in whole (:func:`galip_core.paths.check_folder_to_replace`)."""
    try:
        return check_folder_to_replace("--output_dir", output_dir, overwrite=overwrite, inputs=inputs,
                                       example="./galip-converted")
    except (ValueError, OSError) as error:  # one error type for the converter's callers
        raise ConversionError(str(error)) from None

