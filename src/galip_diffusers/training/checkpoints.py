"""Crash-safe checkpoint folders of ``training/train_galip.py`` (``checkpoint-N``, written under a temporary name and
renamed) and loading a checkpoint's generator."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from typing import Iterator, Optional

from galip_core.staging import terminate_as_interrupt
from galip_diffusers.models.generator import GALIPGenerator

from .ownership import RUN_FILE, checkpoints_to_delete, own_checkpoints, read_run_id, run_record

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
    """``"latest"`` -> the newest complete checkpoint in ``output_dir`` of the run the folder holds (or None; see
    :func:`~galip_diffusers.training.ownership.own_checkpoints`); a path or a ``checkpoint-N`` name in ``output_dir`` -> that
    path. Raises ``FileNotFoundError`` for a named checkpoint that does not exist."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = own_checkpoints(list_checkpoints(output_dir), output_dir)
        return checkpoints[-1][1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            check_checkpoint_folder(candidate)
            return candidate
    raise FileNotFoundError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist (give 'latest', a checkpoint folder, or "
        f"a checkpoint-N name inside --output_dir)."
    )


#: what ``accelerator.save_state`` always writes into a checkpoint (the RNG states of process 0)
CHECKPOINT_MARKER = "random_states_0.pkl"


def check_checkpoint_folder(path: str) -> None:
    """Before anything starts: ``--resume_from_checkpoint PATH`` must be a ``checkpoint-N`` folder that a training
    script saved (it holds ``random_states_0.pkl``). Any other folder is a ``ValueError`` naming it, so that a failed
    resume never marks ``--output_dir`` as a new run (and ``latest`` keeps finding this run's checkpoints)."""
    name = os.path.basename(os.path.normpath(path))
    if not _CHECKPOINT_RE.match(name) or not os.path.isfile(os.path.join(path, CHECKPOINT_MARKER)):
        raise ValueError(f"--resume_from_checkpoint {path!r} is not a checkpoint saved by training (expected a "
                         f"checkpoint-N folder holding {CHECKPOINT_MARKER}); give 'latest' or one of the checkpoint-N "
                         "folders in --output_dir.")


class ResumeError(RuntimeError):
    """A checkpoint that exists but cannot be loaded (corrupt, incomplete, or saved with other model settings)."""


class SetupError(ValueError):
    """The run cannot start with these arguments: a model or data set that cannot be used as given (a missing
    column or split, too few rows, an image size the models cannot take). Raised before the run writes anything into
    its output folder, so the corrected command can be run at once."""


@contextlib.contextmanager
def setup_errors() -> Iterator[None]:
    """Within the block (a training script loading its models and data), a ``ValueError`` or ``OSError`` (a missing
    column, split or file, too few rows) becomes a :class:`SetupError`, which :func:`run_training` prints as one
    line."""
    try:
        yield
    except (ValueError, OSError) as error:
        raise SetupError(" ".join(str(error).split())) from error


def load_checkpoint(accelerator, path: str) -> None:
    """``accelerator.load_state(path)``, with a :class:`ResumeError` that says what to do instead of the library's
    traceback (``EOFError``, a state-dict mismatch, a missing ``optimizer.bin``). Nothing is deleted either way."""
    try:
        accelerator.load_state(path)
    except Exception as err:  # noqa: BLE001  (accelerate, torch and safetensors raise many types here)
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise ResumeError(
            f"cannot resume from {path} ({type(err).__name__}: {first}): the checkpoint is incomplete or corrupt, or "
            "it was saved with other model settings. Resume from an earlier checkpoint-N of --output_dir, or start "
            "afresh with --overwrite_output_dir. Nothing was deleted."
        ) from err


def run_training(main, args, script: str) -> None:
    """``main(args)`` of a training script, ending in one line instead of a traceback on Ctrl-C or SIGTERM (the
    checkpoints already saved are complete: each is written, then renamed) and on a :class:`ResumeError` or
    :class:`SetupError`."""
    try:
        with terminate_as_interrupt():
            main(args)
    except KeyboardInterrupt:
        raise SystemExit(f"{script}: interrupted; the checkpoints in {args.output_dir} are intact: continue with "
                         "--resume_from_checkpoint latest.") from None
    except (ResumeError, SetupError) as error:
        raise SystemExit(f"{script}: error: {error}") from None


def resume_message(resume_from_checkpoint: Optional[str], resume_path: Optional[str],
                   max_train_steps: Optional[int] = None) -> Optional[str]:
    """The line a training script prints about ``--resume_from_checkpoint`` (as diffusers' scripts do): which
    checkpoint it resumes from (and, when that checkpoint is already at ``max_train_steps``, that only the final save
    is left), or that ``latest`` found none and a new run starts; ``None`` without the flag."""
    if resume_path is not None:
        if max_train_steps is not None and checkpoint_step(resume_path) == max_train_steps:
            return (f"Resuming from checkpoint {resume_path}: it is at --max_train_steps {max_train_steps}, so no "
                    "step is left to train; saving the final model from it")
        return f"Resuming from checkpoint {resume_path}"
    if resume_from_checkpoint:
        return f"Checkpoint '{resume_from_checkpoint}' does not exist. Starting a new training run."
    return None


def check_steps_left(resume_path: Optional[str], max_train_steps: Optional[int]) -> None:
    """``ValueError`` when the checkpoint to resume from is past ``--max_train_steps`` (a lowered limit: the run
    cannot go back). A checkpoint exactly at the limit is accepted: it trains no step and saves the final model from
    that checkpoint, which finishes a run killed between its last checkpoint and its final save, and makes rerunning
    a finished run's command line harmless. Checked before anything changes."""
    if resume_path is None or max_train_steps is None:
        return
    step = checkpoint_step(resume_path)
    if step > max_train_steps:
        raise ValueError(f"the checkpoint {resume_path} is at step {step}, past --max_train_steps {max_train_steps}: "
                         f"a run cannot go back. Pass --max_train_steps {step} to save the final model from it, or "
                         "more to train on.")


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


def save_checkpoint(
    accelerator, output_dir: str, step: int, total_limit: Optional[int] = None, run_id: Optional[str] = None,
    seed: Optional[int] = None,
) -> str:
    """``accelerator.save_state`` into a temporary folder, marked with ``run_id`` (and the run's ``seed``, which a
    resume without ``--seed`` reuses), then an atomic rename to
    ``checkpoint-<step>``; only then are the oldest checkpoints of *this run* beyond ``total_limit`` deleted (another
    run's checkpoints are never deleted, nor any without ``run_id``). A process killed mid-save leaves the previous
    checkpoints intact, and ``list_checkpoints`` never sees the partial folder. Call on every process."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f"{INCOMPLETE_PREFIX}{step}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if run_id is not None:
            with open(os.path.join(temporary, RUN_FILE), "w", encoding="utf-8") as f:
                json.dump(run_record(run_id, seed), f)
        if os.path.isdir(final):
            _move_aside(final, run_id)
        os.replace(temporary, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            for path in checkpoints_to_delete(list_checkpoints(output_dir), run_id, total_limit):
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _move_aside(checkpoint: str, run_id: Optional[str]) -> None:
    """Make room for a new save of the same step: this run's own older save (after resuming from an earlier step) is
    deleted; another run's is renamed ``<name>.other-run[-k]``, which no listing picks up, and kept."""
    if run_id is not None and read_run_id(checkpoint) == run_id:
        name = os.path.basename(checkpoint)[len(CHECKPOINT_PREFIX):]
        stale = os.path.join(os.path.dirname(checkpoint), f"{INCOMPLETE_PREFIX}{name}.old")  # cleaned up if killed
        os.replace(checkpoint, stale)
        shutil.rmtree(stale, ignore_errors=True)
        return
    kept, k = checkpoint + ".other-run", 1
    while os.path.exists(kept):
        kept, k = f"{checkpoint}.other-run-{k}", k + 1
    os.replace(checkpoint, kept)


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
