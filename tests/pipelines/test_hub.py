"""Publishing to the Hub, against a local folder standing in for it (huggingface_hub's create_repo / upload_folder /
hf_hub_download monkeypatched: nothing leaves the machine): galip convert --push_to_hub, save_pretrained(push_to_hub),
train_galip.py --push_to_hub, settings of Hub models, and half-precision variants."""

import os
import shlex

import pytest
import torch
from helpers.hub_helpers import hub  # noqa: F401  (the fixture)

from galip_diffusers import GALIPPipeline
from galip_diffusers.hub import (
    DEFAULT_IGNORE_PATTERNS, HubPushError, load_pipeline_settings, push_folder_to_hub, save_half_precision_variant,
)
from galip_diffusers.testing_utils import tiny_pipeline
from galip_core.settings import SETTINGS_NAME, GALIPSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_save_pretrained_push_to_hub_uploads_the_finished_folder(hub, tmp_path):
    pipe = tiny_pipeline()
    pipe.settings = GALIPSettings({"sampling": {"truncation": 0.7}})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("# my card\n")
    pipe.save_pretrained(str(tmp_path / "out"), push_to_hub=True, repo_id="me/tiny", private=True)
    files = hub.files("me/tiny")
    assert {"model_index.json", SETTINGS_NAME, "README.md", "generator/diffusion_pytorch_model.safetensors"} <= set(files)
    assert (tmp_path / "hub" / "me/tiny" / "README.md").read_text() == "# my card\n"  # not replaced by an empty card
    assert hub.repos["me/tiny"]["private"] is True
    # the settings of a Hub model are fetched too (diffusers' download only takes the component folders)
    assert load_pipeline_settings("me/tiny", {}) == pipe.settings
    hub.create_repo("me/no-settings")
    assert load_pipeline_settings("me/no-settings", {}).is_empty()  # no file on the Hub: the built-in defaults


def test_push_skips_checkpoints_and_logs_and_refuses_a_non_pipeline(hub, tmp_path):
    folder = tmp_path / "run"
    tiny_pipeline().save_pretrained(str(folder))
    for junk in ("checkpoint-5/x.bin", "logs/events.out", ".incomplete-checkpoint-6/y"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("x")
    assert push_folder_to_hub(str(folder), "me/run") == "me/run"
    assert not [f for f in hub.files("me/run") if f.startswith(("checkpoint-", "logs", ".incomplete"))]
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        push_folder_to_hub(str(tmp_path), "me/empty")
    with pytest.raises(ValueError, match="--hub_model_id"):
        push_folder_to_hub(str(folder), " ")


class ConnectError(Exception):
    """Stands in for the Hub client's transport error (not an OSError, as httpx's is not)."""


@pytest.mark.parametrize("step", ["create_repo", "upload_folder"])
def test_a_failed_push_names_the_hub_the_repository_and_how_to_upload_later(hub, tmp_path, step):
    folder = tmp_path / "run"
    tiny_pipeline().save_pretrained(str(folder))
    before = sorted(os.listdir(folder))
    hub.fail_with = (step, ConnectError("[Errno -2] Name or service not known"))
    with pytest.raises(HubPushError) as info:
        push_folder_to_hub(str(folder), "me/run")
    message = str(info.value)
    assert "Hugging Face Hub repository 'me/run' failed (ConnectError: [Errno -2] Name or service not known)" in message
    exclude = "".join(f" --exclude {shlex.quote(pattern)}" for pattern in DEFAULT_IGNORE_PATTERNS)
    assert f"The local folder is complete; upload it later with `hf upload me/run {folder}{exclude}`." in message
    assert " --exclude 'checkpoint-*' --exclude 'checkpoints/*' --exclude 'logs/*'" in message  # the retry leaves out what the push left out
    assert isinstance(info.value.__cause__, ConnectError)
    card = ["README.md"] if step == "upload_folder" else []  # the minimal card written before the upload stays
    assert sorted(os.listdir(folder)) == sorted(before + card) and hub.files("me/run") == []


def test_half_precision_variant_loads_with_variant_and_torch_dtype(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(str(tmp_path))
    save_half_precision_variant(pipe, str(tmp_path), "fp16")
    assert pipe.generator.dtype == torch.float32  # cast back after the save
    assert os.path.isfile(tmp_path / "generator" / "diffusion_pytorch_model.fp16.safetensors")
    assert os.path.isfile(tmp_path / "generator" / "diffusion_pytorch_model.safetensors")
    half = GALIPPipeline.from_pretrained(str(tmp_path), variant="fp16", torch_dtype=torch.float16)
    assert half.generator.dtype == torch.float16 and half.text_encoder.dtype == torch.float16
    assert GALIPPipeline.from_pretrained(str(tmp_path)).generator.dtype == torch.float32
    with pytest.raises(ValueError, match="variant must be one of"):
        save_half_precision_variant(pipe, str(tmp_path), "int8")
