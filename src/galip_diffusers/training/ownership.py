"""Which training run owns an output folder and its checkpoints, so that ``training/train_galip.py`` and
``training/train_clip.py`` never train over, resume, or delete another run's work.

* A new run refuses a non-empty ``--output_dir`` unless it resumes or is given ``--overwrite_output_dir``
  (:func:`check_output_dir`; also an empty ``--output_dir`` and one that cannot be a folder).
* Each run has an id, written to ``<output_dir>/galip_run.json`` when it starts and into every checkpoint it saves.
  A resumed run keeps the id of the checkpoint it resumed from.
* ``--checkpoints_total_limit`` deletes only checkpoints that carry this run's id (:func:`checkpoints_to_delete`);
  ``--resume_from_checkpoint latest`` prefers the checkpoints of the run the folder was last given to
  (:func:`own_checkpoints`).
* ``losses.jsonl`` is cut back to the resumed step, so that no step is listed twice (:func:`open_loss_log`).
* The run's seed is recorded beside its id, so that a resume without ``--seed`` continues with it
  (:func:`resume_seed`).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import IO, Optional, Sequence

from galip_core.paths import check_output_folder
from galip_core.staging import write_file

RUN_FILE = "galip_run.json"

Checkpoints = Sequence[tuple[int, str]]


def check_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> None:
    """Raise ``ValueError`` if ``output_dir`` is empty text, or if a new run (not ``resuming``) would write into a
    non-empty ``output_dir`` without ``overwrite``; ``NotADirectoryError`` if it (or a folder above it) is a file,
    ``PermissionError`` if it cannot be written (:func:`galip_core.paths.check_output_folder`)."""
    check_output_folder("--output_dir", output_dir)
    if resuming or overwrite or not os.path.isdir(output_dir):
        return
    names = sorted(os.listdir(output_dir))
    if names:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} entries)" if len(names) > 6 else "")
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty ({shown}): it holds another run. Pass --resume_from_checkpoint "
            "latest to continue that run, --overwrite_output_dir to train a new run into it anyway (its final model "
            "is replaced; its checkpoints are kept and never deleted by this run), or choose another folder."
        )


def read_run_file(folder: str) -> dict:
    """The run file of ``folder`` (an output folder or a checkpoint): ``{}`` if it has none or it is unreadable."""
    try:
        with open(os.path.join(folder, RUN_FILE), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_run_id(folder: str) -> Optional[str]:
    """The run id recorded in ``folder`` (an output folder or a checkpoint), or ``None`` if it has none."""
    run_id = read_run_file(folder).get("run_id")
    return run_id if isinstance(run_id, str) else None


def read_run_seed(folder: str) -> Optional[int]:
    """The seed recorded in ``folder`` (an output folder or a checkpoint), or ``None`` (none recorded: a run saved
    before seeds were recorded)."""
    seed = read_run_file(folder).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def run_record(run_id: str, seed: Optional[int] = None) -> dict:
    """What a run file holds: the run's id and, when known, its seed."""
    return {"run_id": run_id, **({"seed": int(seed)} if seed is not None else {})}


def write_run_id(folder: str, run_id: str, seed: Optional[int] = None) -> None:
    """Record ``run_id`` (and ``seed``) in ``folder`` (atomically: a reader sees the old file or the new one)."""
    record = json.dumps(run_record(run_id, seed)).encode()
    write_file(os.path.join(folder, RUN_FILE), lambda f: f.write(record))


def start_run(output_dir: str, resume_path: Optional[str], seed: Optional[int] = None) -> str:
    """This run's id: the resumed checkpoint's, else a new one. Recorded in ``output_dir`` with the run's ``seed``
    (main process only)."""
    run_id = (read_run_id(resume_path) if resume_path else None) or uuid.uuid4().hex
    os.makedirs(output_dir, exist_ok=True)
    write_run_id(output_dir, run_id, seed)
    return run_id


def resume_seed(seed: Optional[int], resume_path: Optional[str]) -> Optional[int]:
    """The seed of a run: ``seed`` (``--seed``) for a new run; for a resumed one the seed recorded in the checkpoint
    it resumes from, so that leaving ``--seed`` out continues with the same data order, augmentation and noise. A
    ``--seed`` that differs from the recorded one is a ``ValueError`` (the resumed run would no longer be the run it
    continues); a checkpoint that records no seed (saved before seeds were recorded) keeps ``seed``."""
    recorded = read_run_seed(resume_path) if resume_path else None
    if recorded is None:
        return seed
    if seed is not None and seed != recorded:
        raise ValueError(f"--seed {seed} differs from the seed {recorded} of the run that saved {resume_path}: a "
                         "resumed run continues with its own seed. Leave --seed out (or pass --seed "
                         f"{recorded}), or start a new run with --overwrite_output_dir.")
    return recorded


def own_checkpoints(checkpoints: Checkpoints, output_dir: str) -> list[tuple[int, str]]:
    """The checkpoints ``--resume_from_checkpoint latest`` may pick: those of the run recorded in ``output_dir``, or
    all of them in a folder that records no run (written before run ids existed)."""
    run_id = read_run_id(output_dir)
    if run_id is None:
        return list(checkpoints)
    return [(step, path) for step, path in checkpoints if read_run_id(path) == run_id]


def checkpoints_to_delete(checkpoints: Checkpoints, run_id: Optional[str], total_limit: int) -> list[str]:
    """The oldest checkpoints of run ``run_id`` beyond ``total_limit``; another run's (or an unmarked) checkpoint is
    never among them, and neither is anything when ``run_id`` is ``None``."""
    if run_id is None:
        return []
    own = [path for _, path in sorted(checkpoints) if read_run_id(path) == run_id]
    return own[: max(0, len(own) - total_limit)]


def open_loss_log(output_dir: str, resume_step: Optional[int]) -> IO[str]:
    """``losses.jsonl`` opened for appending: emptied for a new run, cut back to the rows up to ``resume_step`` (and
    any unreadable tail of a killed run dropped) for a resumed one, so that every step is listed once."""
    path = os.path.join(output_dir, "losses.jsonl")
    kept = []
    if resume_step is not None and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                if not isinstance(row, dict) or not isinstance(row.get("step"), int) or row["step"] > resume_step:
                    break
                kept.append(line if line.endswith("\n") else line + "\n")
    write_file(path, lambda f: f.write("".join(kept).encode("utf-8")))
    return open(path, "a", encoding="utf-8")
