"""Training never trains over, resumes or deletes another run's work (issue #27, items 1 and 8, and losses.jsonl)."""

import json
import os

import pytest

from galip_diffusers.training.ownership import (
    RUN_FILE,
    check_output_dir,
    open_loss_log,
    read_run_id,
    start_run,
    write_run_id,
)
from galip_diffusers.training.checkpoints import list_checkpoints, resolve_resume_checkpoint, save_checkpoint


class FakeAccelerator:
    """One process; ``save_state`` writes one file, as accelerate writes several."""

    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        os.makedirs(path)
        with open(os.path.join(path, "optimizer.bin"), "w") as f:
            f.write("state")


def _foreign_checkpoint(out, step, run_id="another-run"):
    path = os.path.join(out, f"checkpoint-{step}")
    os.makedirs(path)
    if run_id is not None:
        write_run_id(path, run_id)
    return path


def test_a_new_run_refuses_a_non_empty_output_folder(tmp_path):
    out = tmp_path / "out"
    check_output_dir(str(out), resuming=False, overwrite=False)  # new folder: fine
    out.mkdir()
    check_output_dir(str(out), resuming=False, overwrite=False)  # empty folder: fine
    (out / "checkpoint-3000").mkdir()
    with pytest.raises(ValueError, match=r"--output_dir .* is not empty \(checkpoint-3000\): it holds another run.*"
                                         r"--resume_from_checkpoint latest.*--overwrite_output_dir"):
        check_output_dir(str(out), resuming=False, overwrite=False)
    check_output_dir(str(out), resuming=True, overwrite=False)
    check_output_dir(str(out), resuming=False, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_output_dir(str(tmp_path / "file"), resuming=False, overwrite=True)


def test_an_empty_or_impossible_output_folder_is_refused_before_the_run_starts(tmp_path):
    """``--output_dir ""`` (an unset shell variable) passed the check and ended in a traceback from os.makedirs."""
    for resuming, overwrite in ((False, False), (True, True)):
        with pytest.raises(ValueError, match=r"^--output_dir is empty; give a folder.$"):
            check_output_dir("", resuming=resuming, overwrite=overwrite)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"^--output_dir: '.*file' is a file, not a folder, so the folder"):
        check_output_dir(str(tmp_path / "file" / "run"), resuming=False, overwrite=False)
    assert os.listdir(tmp_path) == ["file"]


def test_the_checkpoint_limit_deletes_only_this_runs_checkpoints(tmp_path):
    out = str(tmp_path)
    foreign = [_foreign_checkpoint(out, 1), _foreign_checkpoint(out, 3000), _foreign_checkpoint(out, 4000, None)]
    run_id = start_run(out, None)
    accelerator = FakeAccelerator()
    for step in (2, 3, 4):
        save_checkpoint(accelerator, out, step, total_limit=1, run_id=run_id)
    assert all(os.path.isdir(path) for path in foreign)  # never this run's to delete
    assert [step for step, _ in list_checkpoints(out)] == [1, 4, 3000, 4000]
    assert read_run_id(os.path.join(out, "checkpoint-4")) == run_id
    # `latest` picks this run's newest checkpoint, not the other run's higher steps
    assert resolve_resume_checkpoint("latest", out) == os.path.join(out, "checkpoint-4")
    # a save at a step another run also saved keeps the other run's checkpoint under another name
    save_checkpoint(accelerator, out, 3000, total_limit=1, run_id=run_id)
    assert read_run_id(os.path.join(out, "checkpoint-3000")) == run_id
    assert read_run_id(os.path.join(out, "checkpoint-3000.other-run")) == "another-run"
    assert not os.path.exists(os.path.join(out, "checkpoint-4"))
    # without a run id nothing is deleted
    save_checkpoint(accelerator, out, 5000, total_limit=1, run_id=None)
    assert os.path.isdir(os.path.join(out, "checkpoint-3000"))


def test_a_resumed_run_keeps_the_checkpoints_run_id(tmp_path):
    out = str(tmp_path / "out")
    first = start_run(out, None)
    save_checkpoint(FakeAccelerator(), out, 5, run_id=first)
    assert start_run(out, os.path.join(out, "checkpoint-5")) == first
    assert start_run(str(tmp_path / "other"), os.path.join(out, "checkpoint-5")) == first
    assert start_run(out, None) != first
    with open(os.path.join(out, RUN_FILE)) as f:
        assert json.load(f)["run_id"] != first
    # the folder now belongs to the new run: `latest` does not fall back on the old run's checkpoint
    assert resolve_resume_checkpoint("latest", out) is None


def test_the_loss_log_is_cut_back_to_the_resumed_step(tmp_path):
    out = str(tmp_path)
    rows = [json.dumps({"step": s, "loss_d": 0.5}) + "\n" for s in range(1, 8)]
    (tmp_path / "losses.jsonl").write_text("".join(rows) + '{"step": 8, "lo')  # killed mid-line
    with open_loss_log(out, 5) as log:
        log.write(json.dumps({"step": 6, "loss_d": 0.25}) + "\n")
    steps = [json.loads(line)["step"] for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    with open_loss_log(out, None):  # a new run starts an empty log
        pass
    assert (tmp_path / "losses.jsonl").read_text() == ""
