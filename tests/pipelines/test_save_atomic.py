"""GALIPPipeline.save_pretrained replaces a folder in one step: the new folder is built beside it and swapped in, so
no weight file of an earlier save survives next to the new ones, a reader (or a full disk, or a kill) never sees a
mix of two models, files behind symbolic links are never written through, your own files stay, and what is saved is
safetensors of the promised dtype. Also the minimal model card of push_to_hub."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml
from diffusers import DiffusionPipeline
from diffusers.utils import logging
from diffusers.utils.testing_utils import CaptureLogger
from helpers.hub_helpers import hub  # noqa: F401  (the fixture)
from safetensors import safe_open

from galip_core import LitePipeline
from galip_core import swap
from galip_core.settings import SETTINGS_NAME, GALIPSettings
from galip_diffusers import GALIPGenerator, GALIPPipeline
from galip_diffusers.hub import MINIMAL_CARD, HubPushError, save_half_precision_variant
from galip_diffusers.pipelines.saving import MINIMAL_CARD_MARKER
from galip_diffusers.pipelines.saving import SaveDirectoryChangedError
from galip_diffusers.testing_utils import tiny_discriminator, tiny_fusedream_pipeline, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red circle", "a blue square"]
SAVING_LOGGER = "galip_diffusers.pipelines.saving"


def sample(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, generator=torch.Generator().manual_seed(0), output_type="np").images


def lite_sample(folder):
    images = LitePipeline.from_pretrained(str(folder))(PROMPTS, generator=torch.Generator().manual_seed(0))
    return np.stack([np.asarray(image) for image in images])


def files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder)
                  for name in names)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different tiny pipelines, A and B, each with its images and the lite engine's images of a fresh save."""
    root = tmp_path_factory.mktemp("reference")
    found = {}
    for name, seed in (("A", 0), ("B", 1)):
        pipe = tiny_pipeline(seed=seed)
        pipe.save_pretrained(root / name)
        found[name] = pipe
        found[name + "_images"] = sample(pipe)
        found[name + "_lite"] = lite_sample(root / name)
    return found


def assert_holds(folder, models, name):
    """``folder`` loads as model ``name`` in every engine: GALIPPipeline, diffusers' own loader, the lite runtime."""
    assert np.array_equal(sample(GALIPPipeline.from_pretrained(str(folder))), models[name + "_images"])
    assert np.array_equal(sample(DiffusionPipeline.from_pretrained(str(folder))), models[name + "_images"])
    assert np.array_equal(lite_sample(folder), models[name + "_lite"])


def hidden(parent):
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


# --------------------------------------------------------------------------------------------- 1: no stale weights
def test_no_weight_file_of_an_earlier_save_survives_the_next_one(models, tmp_path):
    A, B = models["A"], models["B"]
    # a pickle (.bin) written by diffusers' own save beside which B writes safetensors
    DiffusionPipeline.save_pretrained(A, tmp_path / "bin", safe_serialization=False)
    B.save_pretrained(tmp_path / "bin")
    assert not [f for f in files(tmp_path / "bin") if f.endswith(".bin")]
    assert_holds(tmp_path / "bin", models, "B")
    # sharded, then one file: no stale index or shard
    B.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert any(f.endswith(".index.json") for f in files(tmp_path / "shards"))
    A.save_pretrained(tmp_path / "shards")
    A.save_pretrained(tmp_path / "fresh")
    assert files(tmp_path / "shards") == files(tmp_path / "fresh")
    assert_holds(tmp_path / "shards", models, "A")
    # one file, then sharded: only the shards
    B.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert "generator/diffusion_pytorch_model.safetensors" not in files(tmp_path / "shards")
    assert np.array_equal(sample(GALIPPipeline.from_pretrained(str(tmp_path / "shards"))), models["B_images"])
    # a half-precision variant of A does not outlive A
    A.save_pretrained(tmp_path / "variant")
    save_half_precision_variant(A, tmp_path / "variant", "fp16")
    assert "generator/diffusion_pytorch_model.fp16.safetensors" in files(tmp_path / "variant")
    B.save_pretrained(tmp_path / "variant")
    assert not [f for f in files(tmp_path / "variant") if ".fp16." in f]
    assert_holds(tmp_path / "variant", models, "B")


# --------------------------------------------------------------------------------------------- 2: atomic
def test_a_reader_during_the_save_sees_the_old_model_whole(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    real_save, seen = GALIPGenerator.save_pretrained, []

    def read_then_save(self, *args, **kwargs):  # B's text encoder is written by now: what does a reader get?
        seen.append(sample(GALIPPipeline.from_pretrained(str(folder))))
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(GALIPGenerator, "save_pretrained", read_then_save)
    models["B"].save_pretrained(folder)
    assert len(seen) == 1 and np.array_equal(seen[0], models["A_images"])  # A whole, not B's text with A's generator
    monkeypatch.undo()
    assert_holds(folder, models, "B")
    assert hidden(tmp_path) == []


def test_a_failed_save_leaves_the_old_model_and_nothing_else(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(GALIPGenerator, "save_pretrained", disk_full)  # after B's text encoder
    with pytest.raises(OSError, match="No space left on device"):
        models["B"].save_pretrained(folder)
    monkeypatch.undo()
    assert_holds(folder, models, "A")
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no hidden folder left
    monkeypatch.setattr(GALIPGenerator, "save_pretrained", disk_full)
    with pytest.raises(OSError):  # a new folder: nothing at all is left, not even the parents created for it
        models["B"].save_pretrained(tmp_path / "new" / "deeper")
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_a_folder_changed_during_the_save_is_not_replaced(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    text_encoder_class = type(models["B"].text_encoder)
    real_save = text_encoder_class.save_pretrained

    def meddle_then_save(self, *args, **kwargs):
        (folder / "written-meanwhile.txt").write_text("not the save's")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(text_encoder_class, "save_pretrained", meddle_then_save)
    with pytest.raises(SaveDirectoryChangedError, match=r"save_directory '.*model' changed during the save \(new "
                                                        r"written-meanwhile.txt\); nothing was replaced or deleted"):
        models["B"].save_pretrained(folder)
    monkeypatch.undo()
    assert (folder / "written-meanwhile.txt").read_text() == "not the save's"
    assert_holds(folder, models, "A")
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_a_killed_save_leaves_the_old_model_and_a_hidden_folder_the_next_save_removes(models, tmp_path):
    folder, ready = tmp_path / "model", tmp_path / "ready"
    models["A"].save_pretrained(folder)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time
        from galip_diffusers.testing_utils import tiny_pipeline

        pipe = tiny_pipeline(seed=1)
        real_save = type(pipe.text_encoder).save_pretrained

        def stall(self, *args, **kwargs):  # B's text encoder is written: the process is killed here
            real_save(self, *args, **kwargs)
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(120)

        type(pipe.text_encoder).save_pretrained = stall
        pipe.save_pretrained({str(folder)!r})
        """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the saving process never got ready: {process.communicate()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    [left] = hidden(tmp_path)
    assert left.startswith(f".model.tmp-{process.pid}-")
    assert_holds(folder, models, "A")
    with CaptureLogger(logging.get_logger("galip_core.staging")) as captured:
        models["B"].save_pretrained(folder)
    assert f"Removed {str(tmp_path / left)!r}, the unfinished folder of an interrupted save." in captured.out
    assert sorted(os.listdir(tmp_path)) == ["model", "ready"]
    assert_holds(folder, models, "B")


# --------------------------------------------------------------------------------------------- 3: links
def test_saving_into_a_folder_of_links_never_writes_through_them(models, tmp_path):
    store = tmp_path / "store"  # a Hub cache's blobs, or the folder `cp -rs` linked to
    models["A"].save_pretrained(store)
    before = {name: (store / name).read_bytes() for name in files(store)}
    linked = tmp_path / "snapshot"
    for name in files(store):
        (linked / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(store / name, (linked / name).parent), linked / name)  # relative, as the cache's
    (tmp_path / "my-notes.txt").write_text("mine")
    os.symlink("../my-notes.txt", linked / "notes.txt")
    models["B"].save_pretrained(linked)
    assert {name: (store / name).read_bytes() for name in files(store)} == before
    assert_holds(store, models, "A")
    assert_holds(linked, models, "B")
    assert [name for name in files(linked) if os.path.islink(linked / name)] == ["notes.txt"]  # yours stays a link
    assert os.readlink(linked / "notes.txt") == "../my-notes.txt" and (linked / "notes.txt").read_text() == "mine"
    # a link to the whole folder: the folder it points to gets the new model, the link stays a link
    os.symlink("store", tmp_path / "alias")
    models["B"].save_pretrained(tmp_path / "alias")
    assert os.readlink(tmp_path / "alias") == "store"
    assert_holds(store, models, "B")
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------------------------- 10: foreign parts
def test_a_save_drops_the_old_models_parts_keeps_your_files_and_names_what_looks_foreign(models, tmp_path):
    folder, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    tiny_fusedream_pipeline().save_pretrained(folder)  # lists image_encoder/scorer/scorer_tokenizer folders
    old_index = json.loads((folder / "model_index.json").read_text())
    assert old_index["scorer"][0] is not None and (folder / "scorer").is_dir()
    (folder / "README.md").write_text("# the fusedream model's card\n")
    tiny_discriminator().save_pretrained(folder / "discriminator")  # not listed: carried, but named
    (folder / "notes.txt").write_text("mine")
    (folder / "data" / "deep").mkdir(parents=True)
    (folder / "data" / "deep" / "x.txt").write_text("mine too")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (elsewhere / "big").mkdir(parents=True)
    os.symlink(str(elsewhere / "big"), folder / "big-data")  # a link to a folder stays a link, its files untouched
    (elsewhere / "big" / "y.txt").write_text("kept")
    inode = os.stat(folder / "notes.txt").st_ino
    with CaptureLogger(logging.get_logger(SAVING_LOGGER)) as captured:
        models["A"].save_pretrained(folder)
    assert sorted(os.listdir(folder)) == [".gitattributes", "README.md", "big-data", "data", "discriminator",
                                          "generator", "model_index.json", "notes.txt", "pipeline_galip.py",
                                          "text_encoder", "tokenizer"]  # fmt: skip
    assert not (folder / SETTINGS_NAME).exists()  # the old model's settings are gone with it
    assert os.stat(folder / "notes.txt").st_ino == inode  # a hard link: not even copied
    assert (folder / "data" / "deep" / "x.txt").read_text() == "mine too"
    assert os.readlink(folder / "big-data") == str(elsewhere / "big") and (elsewhere / "big" / "y.txt").exists()
    assert "kept README.md, discriminator/ in" in captured.out and "push_to_hub uploads them" in captured.out
    assert "notes.txt" not in captured.out and "data" not in captured.out.split("kept")[1].split(" in ")[0]
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "model"]  # nothing kept aside, nothing hidden
    assert_holds(folder, models, "A")
    with CaptureLogger(logging.get_logger(SAVING_LOGGER)) as captured:  # no model_index.json before: no card warning
        models["B"].save_pretrained(tmp_path / "fresh")
        (tmp_path / "fresh" / "model_index.json").unlink()
        models["B"].save_pretrained(tmp_path / "fresh")
    assert "README" not in captured.out


def test_without_hard_links_the_files_are_copied_and_links_stay_links(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    os.symlink("notes.txt", folder / "link.txt")

    def no_hard_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    models["B"].save_pretrained(folder)
    monkeypatch.undo()
    assert (folder / "notes.txt").read_text() == "mine" and os.readlink(folder / "link.txt") == "notes.txt"
    assert_holds(folder, models, "B")


# --------------------------------------------------------------------------------------------- in place
def test_saving_in_place_reloads_bit_identically(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    pipe = tiny_pipeline(seed=0)
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.7}})
    pipe.save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    weights = {name: (folder / name).read_bytes() for name in files(folder) if name.endswith(".safetensors")}
    loaded = GALIPPipeline.from_pretrained(str(folder))
    expected = sample(loaded)
    loaded.save_pretrained(folder)  # its weights may still be mapped from these very files
    assert {name: (folder / name).read_bytes() for name in weights} == weights
    again = GALIPPipeline.from_pretrained(str(folder))
    assert np.array_equal(sample(again), expected) and again.settings == pipe.settings
    for name, tensor in loaded.generator.state_dict().items():
        assert torch.equal(tensor, again.generator.state_dict()[name]), name
    assert (folder / "notes.txt").read_text() == "mine"
    monkeypatch.chdir(folder)  # `save_pretrained(".")` from inside the folder: this process stays in it
    again.save_pretrained(".")
    assert os.getcwd() == str(folder) and "model_index.json" in os.listdir(".")
    assert sorted(os.listdir(tmp_path)) == ["model"]


# --------------------------------------------------------------------------------------------- 8, 9: what is written
def test_a_pickle_save_is_refused_before_anything_is_written(models, tmp_path):
    for args, kwargs in (((), {"safe_serialization": False}), ((False,), {})):
        with pytest.raises(ValueError, match=r"safe_serialization=False\) would write pickled weights \(.bin\)"):
            models["A"].save_pretrained(tmp_path / "model", *args, **kwargs)
        assert os.listdir(tmp_path) == []


def test_a_half_precision_variant_must_hold_weights_of_its_dtype(models, tmp_path):
    for variant in ("fp16", "bf16"):
        with pytest.raises(ValueError) as info:
            models["A"].save_pretrained(tmp_path / "model", variant=variant)
        message = str(info.value)
        assert f"variant={variant!r}" in message and "component's weights are torch.float32" in message
        assert "pipe.to(torch.float16)" in message or "pipe.to(torch.bfloat16)" in message
        assert "save_half_precision_variant" in message and "Nothing was written" in message
        assert os.listdir(tmp_path) == []
    half = tiny_pipeline(seed=0).to(torch.float16)
    half.save_pretrained(tmp_path / "half", variant="fp16")
    with safe_open(str(tmp_path / "half" / "generator" / "diffusion_pytorch_model.fp16.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    models["A"].save_pretrained(tmp_path / "ema", variant="ema")  # a variant name without a dtype is free
    assert (tmp_path / "ema" / "generator" / "diffusion_pytorch_model.ema.safetensors").is_file()


def test_a_half_precision_variant_is_added_beside_the_weights_in_one_step(models, tmp_path):
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    tiny_discriminator().save_pretrained(folder / "discriminator")
    (folder / "notes.txt").write_text("mine")
    configs = {name: (folder / name).read_text() for name in files(folder) if name.endswith("config.json")}
    save_half_precision_variant(models["A"], folder, "bf16", {"discriminator": tiny_discriminator()})
    names = files(folder)
    for name in ("generator/diffusion_pytorch_model", "text_encoder/model", "discriminator/diffusion_pytorch_model"):
        assert f"{name}.safetensors" in names and f"{name}.bf16.safetensors" in names
    assert "notes.txt" in names and hidden(tmp_path) == []
    # the configs of the full-precision model stay (a text encoder config saying bfloat16 loads it in bfloat16)
    assert {name: (folder / name).read_text() for name in configs} == configs
    assert GALIPPipeline.from_pretrained(str(folder)).text_encoder.dtype == torch.float32
    assert_holds(folder, models, "A")
    half = GALIPPipeline.from_pretrained(str(folder), variant="bf16", torch_dtype=torch.bfloat16)
    assert half.generator.dtype == half.text_encoder.dtype == torch.bfloat16


# --------------------------------------------------------------------------------------------- 12: model card
def test_push_to_hub_writes_a_minimal_card_into_a_folder_without_one(hub, tmp_path):
    folder = tmp_path / "out"
    tiny_pipeline().save_pretrained(str(folder), push_to_hub=True, repo_id="me/tiny")
    card = (folder / "README.md").read_text()
    assert "README.md" in hub.files("me/tiny")
    assert (tmp_path / "hub" / "me/tiny" / "README.md").read_text() == card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "diffusers", "pipeline_tag": "text-to-image", "tags": ["galip", "text-to-image"]}
    assert 'GALIPPipeline.from_pretrained("me/tiny")' in card and "galip-diffusers" in card


def test_a_failed_push_keeps_the_saved_folder_and_its_card(hub, models, tmp_path):
    folder = tmp_path / "out"
    hub.fail_with = ("upload_folder", ConnectionError("no network"))
    with pytest.raises(HubPushError, match="upload it later with `hf upload me/tiny"):
        models["A"].save_pretrained(str(folder), push_to_hub=True, repo_id="me/tiny")
    assert (folder / "README.md").is_file() and hub.files("me/tiny") == []
    assert_holds(folder, models, "A")


def test_saving_a_half_precision_variant_leaves_the_pipeline_exactly_as_it_was(models, tmp_path):
    pipe = tiny_pipeline(seed=0)
    before = {name: tensor.clone() for name, tensor in pipe.generator.state_dict().items()}
    pipe.save_pretrained(tmp_path / "model")
    save_half_precision_variant(pipe, tmp_path / "model", "fp16")
    assert all(torch.equal(tensor, before[name]) for name, tensor in pipe.generator.state_dict().items())
    assert np.array_equal(sample(pipe), models["A_images"])  # not rounded through float16


def test_a_folder_that_cannot_be_replaced_as_a_whole_is_written_in_place_with_a_warning(models, tmp_path,
                                                                                       monkeypatch):
    """A mount point (a container's volume) or a folder whose parent is not writable cannot be swapped: it is
    written in place as diffusers does, with a warning that says what that does not guarantee."""
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    logger = logging.get_logger(SAVING_LOGGER)
    monkeypatch.setattr(os.path, "ismount", lambda path: path == str(folder))
    with CaptureLogger(logger) as captured:
        models["B"].save_pretrained(folder)
    assert "in place, file by file, since it is a mount point" in captured.out
    assert_holds(folder, models, "B")
    monkeypatch.undo()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path) and real_access(path, mode))
    with CaptureLogger(logger) as captured:
        models["A"].save_pretrained(folder)
    assert "since the folder it is in, " in captured.out and "is not writable" in captured.out
    assert_holds(folder, models, "A")
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(folder) and real_access(path, mode))
    with pytest.raises(PermissionError, match="the folder is not writable. Nothing was written"):
        models["B"].save_pretrained(folder)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert_holds(folder, models, "A")


def test_the_settings_name_the_saved_file_and_are_checked_before_anything_is_written(tmp_path):
    pipe = tiny_pipeline()
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.7}})
    pipe.save_pretrained(tmp_path / "saved")
    assert pipe.settings.source == os.path.join(os.path.realpath(tmp_path / "saved"), SETTINGS_NAME)
    pipe.settings.sections["sampling"]["truncation"] = -3
    with pytest.raises(ValueError, match=r"not saved to .*other.*truncation"):
        pipe.save_pretrained(tmp_path / "other")
    assert os.listdir(tmp_path) == ["saved"]  # no folder, not even a hidden one


def test_a_variant_saved_into_a_model_folder_is_added_beside_its_other_weights(models, tmp_path):
    """diffusers' habit: save, then `.to(torch.float16).save_pretrained(folder, variant="fp16")`: the folder keeps
    its full-precision weights (a plain load still works) and gains the variant."""
    folder = tmp_path / "model"
    models["A"].save_pretrained(folder)
    half = GALIPPipeline.from_pretrained(str(folder), torch_dtype=torch.float16)
    half.save_pretrained(folder, variant="fp16")
    assert {"generator/diffusion_pytorch_model.safetensors", "generator/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors"} <= set(files(folder))
    assert_holds(folder, models, "A")  # the default weights are A's, untouched
    loaded = GALIPPipeline.from_pretrained(str(folder), variant="fp16", torch_dtype=torch.float16)
    assert loaded.generator.dtype == torch.float16


def test_a_second_push_does_not_warn_about_the_minimal_card_the_first_one_wrote(hub, tmp_path):
    folder = tmp_path / "out"
    pipe = tiny_pipeline()
    pipe.save_pretrained(str(folder), push_to_hub=True, repo_id="me/tiny")
    logger = logging.get_logger("galip_diffusers.pipelines.saving")
    with CaptureLogger(logger) as captured:
        pipe.save_pretrained(str(folder), push_to_hub=True, repo_id="me/tiny")
    assert "README.md" not in captured.out and (folder / "README.md").is_file()
    assert MINIMAL_CARD_MARKER in MINIMAL_CARD  # the marker that recognises the card is the card's own text


def test_after_the_swap_the_old_folder_is_no_longer_the_temporary_one(tmp_path, monkeypatch):
    """An interrupt after the exchange must not delete the replaced folder whole (with files written into it during
    the work, which are kept): it is moved out of the temporary name before anything is deleted from it."""
    out, tmp = tmp_path / "out", tmp_path / ".out.tmp-1-x"
    out.mkdir()
    (out / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    checked = swap.snapshot(str(out))

    def interrupted(old, recorded, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(swap, "_delete_recorded", interrupted)
    with pytest.raises(KeyboardInterrupt):
        swap.commit(str(tmp), str(out), checked)
    assert (out / "new.txt").read_text() == "new" and not tmp.exists()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert len(kept) == 1 and (kept[0] / "old.txt").read_text() == "old"
