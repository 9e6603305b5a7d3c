"""The Hugging Face Hub side of GALIP folders: reading a Hub model's ``galip_settings.json``, publishing a folder
(``galip convert --push_to_hub``, ``train_galip.py --push_to_hub``, ``pipe.save_pretrained(..., push_to_hub=True)``)
and the half-precision weight variants saved beside the fp32 ones.

All Hub calls go through ``huggingface_hub.create_repo`` / ``upload_folder`` / ``hf_hub_download``, looked up at call
time, so that tests can stand a local folder in for the Hub.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Sequence

from diffusers.utils import logging

from galip_core.settings import SETTINGS_NAME, GALIPSettings

logger = logging.get_logger(__name__)

#: ``--dtype`` names of the half-precision variants (diffusers' ``variant=`` names are the same strings)
VARIANT_DTYPES = ("fp16", "bf16")


class HubPushError(RuntimeError):
    """An upload to the Hub that failed (no network, a bad token, no write access) after the local folder was
    complete: the message names the repository, the cause and the command that uploads the folder later."""


#: never uploaded: training state and logs next to the final model
DEFAULT_IGNORE_PATTERNS = ("step_*", "epoch_*", "checkpoint-*", "checkpoints/*", "logs/*", "*.tmp-*", ".*")


def load_pipeline_settings(path: str | os.PathLike, kwargs: dict[str, Any]) -> GALIPSettings:
    """The ``galip_settings.json`` of a local folder, or of a Hub repository (downloaded with the ``revision``,
    ``cache_dir``, ``token`` and ``local_files_only`` of the ``from_pretrained`` call that loaded it).

    diffusers' pipeline download fetches only the component folders and ``model_index.json``, so the settings file is
    fetched here; a repository without one gives empty settings (the built-in defaults)."""
    if os.path.isdir(path):
        return GALIPSettings.from_folder(path)
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    options = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if kwargs.get(k) is not None}
    try:
        file = huggingface_hub.hf_hub_download(os.fspath(path), SETTINGS_NAME, **options)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return GALIPSettings()
    except OSError as err:  # network trouble after the weights were loaded: keep the built-in defaults, say so
        logger.warning(f"Could not fetch {SETTINGS_NAME} of {path} ({err}); using the built-in defaults.")
        return GALIPSettings()
    return GALIPSettings.from_file(file)


#: the model card of a pushed folder that has none (``{repo_id}``, ``{name}``): the Hub's metadata and how to load it
MINIMAL_CARD = """---
library_name: diffusers
pipeline_tag: text-to-image
tags:
- galip
- text-to-image
---

# {name}

A [GALIP](https://arxiv.org/abs/2301.12959) text-to-image pipeline (Generative Adversarial CLIPs: one forward pass
makes an image) for the `galip-diffusers` package, saved as safetensors. Load it with the package installed:

```python
from galip_diffusers import GALIPPipeline

pipe = GALIPPipeline.from_pretrained("{repo_id}")
image = pipe("a photo of a red double-decker bus").images[0]
```

`GALIPPipeline.from_pretrained` also applies the model's recommended settings (`galip_settings.json`), if it has any.
"""


def write_minimal_card(folder: str | os.PathLike, repo_id: str) -> str | None:
    """Write :data:`MINIMAL_CARD` as ``folder``'s ``README.md`` if it has none; returns its path (``None``: kept)."""
    path = os.path.join(folder, "README.md")
    if os.path.lexists(path):
        return None
    with open(path, "w", encoding="utf-8") as f:
        f.write(MINIMAL_CARD.format(repo_id=repo_id, name=repo_id.rsplit("/", 1)[-1]))
    logger.info(f"Wrote a minimal model card, {path}: edit it to describe the model.")
    return path


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload GALIP pipeline",
    create_pr: bool = False,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
) -> str:
    """Create (or reuse) the model repository ``repo_id`` and upload ``folder`` to it: weights and their variants,
    configs, ``model_index.json``, the model card ``README.md`` and ``galip_settings.json``; never checkpoints or logs
    (``ignore_patterns``). A folder without a ``README.md`` gets a minimal card first (:func:`write_minimal_card`,
    kept in the folder). Returns the repository id the Hub answered with; a failed upload raises
    :class:`HubPushError` (the folder is kept, ready to upload later)."""
    import huggingface_hub

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"The Hub repository (`repo_id`, --hub_model_id) must be a name (user/name or name), got "
                         f"{repo_id!r}.")
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise FileNotFoundError(f"{folder!r} is not a saved pipeline folder (no model_index.json); nothing to push.")
    try:  # the Hub client's own errors (HTTP, transport) have no common base: any failure here is the upload's
        repo = huggingface_hub.create_repo(repo_id, private=private, token=token, exist_ok=True, repo_type="model")
        repo_id = getattr(repo, "repo_id", repo_id)
    except Exception as err:
        raise push_error(folder, repo_id, err, ignore_patterns) from err
    write_minimal_card(folder, repo_id)  # with the id the Hub answered with (namespace included)
    try:
        huggingface_hub.upload_folder(
            repo_id=repo_id, folder_path=os.fspath(folder), token=token, commit_message=commit_message,
            create_pr=create_pr, ignore_patterns=list(ignore_patterns), repo_type="model",
        )  # fmt: skip
    except Exception as err:
        raise push_error(folder, repo_id, err, ignore_patterns) from err
    logger.info(f"Pushed {folder} to https://huggingface.co/{repo_id}")
    return repo_id


def push_error(folder: str | os.PathLike, repo_id: str, err: Exception,
               ignore_patterns: Sequence[str] = ()) -> HubPushError:  # fmt: skip
    """The error of a failed push, with the ``hf upload`` command that retries it (leaving out ``ignore_patterns``,
    as the push did: the CLI takes ``--exclude`` once per pattern)."""
    exclude = "".join(f" --exclude {shlex.quote(pattern)}" for pattern in ignore_patterns)
    return HubPushError(
        f"pushing {os.fspath(folder)} to the Hugging Face Hub repository {repo_id!r} failed "
        f"({type(err).__name__}: {err}). The local folder is complete; upload it later with "
        f"`hf upload {repo_id} {shlex.quote(os.fspath(folder))}{exclude}`."
    )


def save_half_precision_variant(pipe: Any, folder: str | os.PathLike, variant: str,
                                extra_models: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Save ``pipe``'s weights (and ``extra_models``' ``{subfolder: model}``) as the diffusers variant ``variant``
    (``"fp16"`` or ``"bf16"``: ``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16.safetensors``) beside the
    fp32 ones already in ``folder``; ``from_pretrained(folder, variant=variant)`` loads them. The models are cast
    for the save and get their very own tensors back afterwards (a cast back would keep the half-precision rounding).
    The folder is replaced in one step, by itself plus the variant (see :mod:`galip_diffusers.pipelines.saving`):
    everything else in it is kept."""
    import torch

    from galip_diffusers.pipelines.saving import save_pipeline

    if variant not in VARIANT_DTYPES:
        raise ValueError(f"variant must be one of {VARIANT_DTYPES}, got {variant!r}.")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[variant]
    models = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    models += list((extra_models or {}).values())
    kept = [(module, {key: (param, param.data) for key, param in module._parameters.items() if param is not None},
             dict(module._buffers)) for model in models for module in model.modules()]  # fmt: skip
    try:
        for model in models:
            torch.nn.Module.to(model, dtype)
        save_pipeline(pipe, folder, variant=variant, extra_models=extra_models, add_to_existing=True)
    finally:
        for module, params, buffers in kept:
            for key, (param, data) in params.items():
                param.data = data
                module._parameters[key] = param
            module._buffers.update(buffers)
