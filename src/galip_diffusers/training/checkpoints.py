"""Crash-safe checkpoint folders of ``training/train_galip.py`` (``checkpoint-N``, written under a temporary name and
renamed) and loading a checkpoint's generator."""

from __future__ import annotations

import os
import re
import shutil
from typing import Optional


from galip_diffusers.models.generator import GALIPGenerator

CHECKPOINT_PREFIX = "checkpoint-"


INCOMPLETE_PREFIX = ".incomplete-checkpoint-"


_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------------------------------- checkpoints
def load_checkpoint_generator(checkpoint: str, use_ema: bool = True) -> tuple[GALIPGenerator, bool]:
    """The generator of a ``train_galip.py`` ``checkpoint-N`` folder, with its EMA weights (``generator_ema/``) copied in
    when ``use_ema`` and the checkpoint has them. Returns the generator and whether EMA weights were used."""
    generator = GALIPGenerator.from_pretrained(checkpoint, subfolder="generator")
    ema_dir = os.path.join(checkpoint, "generator_ema")
    if not (use_ema and os.path.isdir(ema_dir)):
        return generator, False
    from diffusers.training_utils import EMAModel

    EMAModel.from_pretrained(ema_dir, model_cls=GALIPGenerator).copy_to(generator.parameters())
    return generator, True


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as sorted ``(step, path)``; incomplete (temporary) dirs are ignored."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(resume_from_checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """``"latest"`` -> the newest complete checkpoint in ``output_dir`` (or None); a path or a ``checkpoint-N`` name
    in ``output_dir`` -> that path. Raises ``FileNotFoundError`` for a named checkpoint that does not exist."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist (give 'latest', a checkpoint folder, or "
        f"a checkpoint-N name inside --output_dir)."
    )


def checkpoint_step(path: str) -> int:
    """The global step a checkpoint folder was written at (from its ``checkpoint-N`` name)."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    if not match:
        raise ValueError(f"Cannot read the step from checkpoint folder name {path!r} (expected 'checkpoint-<step>').")
    return int(match.group(1))


def remove_incomplete_checkpoints(output_dir: str) -> list[str]:
    """Delete leftovers of interrupted saves (main process only). Returns the removed paths."""
    removed = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(INCOMPLETE_PREFIX):
                path = os.path.join(output_dir, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: Optional[int] = None) -> str:
    """``accelerator.save_state`` into a temporary folder, then an atomic rename to ``checkpoint-<step>``; only then
    are the oldest checkpoints beyond ``total_limit`` deleted. A process killed mid-save leaves the previous
    checkpoints intact, and ``list_checkpoints`` never sees the partial folder. Call on every process."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f"{INCOMPLETE_PREFIX}{step}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):  # re-saving the same step (e.g. after a resume): move the old one out of the way
            stale = f"{temporary}.old"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(temporary, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
