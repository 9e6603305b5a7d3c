"""galip_core.paths: an output never is, holds or lies inside an input (check_apart), and a folder that is built
beside and swapped in whole (galip convert, the packaging scripts) is never the current, home or root folder and
replaces a non-empty folder only with --overwrite (check_folder_to_replace). Nothing is created by the checks."""

import os

import pytest

from galip_core.paths import check_apart, check_folder_to_replace


def test_an_output_is_none_of_the_inputs_holds_none_and_lies_in_none(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    clip = tmp_path / "clip.bin"
    clip.write_text("weights")
    inputs = {"--run_dir": str(run), "--clip": str(clip), "--scorer": None}
    with pytest.raises(ValueError, match=r"^--output_dir: '.*run' is the --run_dir input '.*run'; writing there"):
        check_apart("--output_dir", str(run), inputs)
    with pytest.raises(ValueError, match=r"^--output_dir: '.*run' is the --run_dir input"):
        check_apart("--output_dir", str(run) + "/.", inputs)  # the same folder spelt differently
    with pytest.raises(ValueError, match=r"^--output_dir: '.*' contains the --run_dir input"):
        check_apart("--output_dir", str(tmp_path), inputs)
    with pytest.raises(ValueError, match=r"^--output_dir: '.*run/packaged' is inside the --run_dir folder"):
        check_apart("--output_dir", str(run / "packaged"), inputs)
    with pytest.raises(ValueError, match=r"^--output: '.*clip.bin' is the --clip input"):
        check_apart("--output", str(clip), inputs)  # a file output too
    os.symlink(run, tmp_path / "link")
    with pytest.raises(ValueError, match=r"is the --run_dir input"):
        check_apart("--output_dir", str(tmp_path / "link"), inputs)
    with pytest.raises(ValueError, match=r"^--output_dir: '.*run' contains the --results_dir output"):
        check_apart("--output_dir", str(run), {"--results_dir": str(run / "results")}, kind="output")
    check_apart("--output_dir", str(tmp_path / "new"), inputs)  # apart: fine
    check_apart("--output_dir", str(tmp_path / "clip.bin.d"), inputs)  # a name that only starts like an input
    assert sorted(os.listdir(tmp_path)) == ["clip.bin", "link", "run"]


def test_a_folder_to_replace(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "here").mkdir(parents=True)
    monkeypatch.chdir(work / "here")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    check = lambda path, overwrite=False, **kw: check_folder_to_replace(  # noqa: E731
        "--output_dir", str(path), overwrite=overwrite, inputs=kw.get("inputs", {}), outputs=kw.get("outputs"))
    assert check(tmp_path / "new" / "model") == str(tmp_path / "new" / "model")  # created later: fine
    assert check("rel") == str(work / "here" / "rel")  # the absolute path
    with pytest.raises(FileExistsError, match=r"^--output_dir: '.*kept' exists and is not empty; pass --overwrite to "
                                              r"replace it \(it holds notes.txt\), or choose another folder.$"):
        check(kept)
    assert check(kept, overwrite=True) == str(kept)
    for protected in (".", str(work), "/", os.path.expanduser("~")):
        with pytest.raises(ValueError, match=r"refusing to use .*not even with --overwrite; choose a new folder."):
            check(protected, overwrite=True)
    with pytest.raises(ValueError, match=r"^--output_dir must not be empty: pass the folder to create.$"):
        check(" ")
    with pytest.raises(ValueError, match=r"is the --run_dir input"):
        check(kept, overwrite=True, inputs={"--run_dir": str(kept)})
    with pytest.raises(ValueError, match=r"contains the --results_dir output"):
        check(kept, overwrite=True, outputs={"--results_dir": str(kept / "results")})
    with pytest.raises(NotADirectoryError, match=r"^--output_dir '.*notes.txt' is a file"):
        check(kept / "notes.txt", overwrite=True)
    with pytest.raises(NotADirectoryError, match=r"notes.txt' is a file, not a folder, so the folder .* cannot be"):
        check(kept / "notes.txt" / "sub")
    assert sorted(os.listdir(tmp_path)) == ["kept", "work"] and os.listdir(kept) == ["notes.txt"]
