"""Checks a saved pipeline folder before loading, so that a missing, corrupt or inconsistent file is named in the error
(the file, the field and what was expected) instead of surfacing as a TypeError, a download attempt or diffusers'
``ignore_mismatched_sizes`` advice. The generator checks are :mod:`galip_core.folder`'s, the ones the fast runtime
runs: both engines refuse the same folders with the same messages. Also the files
:meth:`GALIPPipeline.save_pretrained` adds to diffusers' (:func:`finish_saved_folder`)."""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

from diffusers.utils import logging

from galip_core.folder import (  # noqa: F401  (FolderError: the error type of these checks)
    FolderError,
    check_generator_config,
    check_generator_types,
    check_text_config,
    check_tokenizer_files,
    read_json_object,
    safetensors_shapes,
)

from galip_core.settings import SETTINGS_NAME, GALIPSettings

logger = logging.get_logger(__name__)

#: Written next to model_index.json so that ``custom_pipeline="pipeline_galip", trust_remote_code=True`` loads a saved
#: folder without importing galip_diffusers first (it still has to be installed).
REMOTE_CODE_SHIM = '"""Loads GALIP pipelines through diffusers\' custom-pipeline mechanism."""\n' \
    "from galip_diffusers import GALIPPipeline  # noqa: F401\n"

#: Files a component folder must hold, by loadable base, in order of preference.
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


#: the weights file of a component, by library (diffusers, transformers)
_MAIN_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _check_weights(folder: str) -> tuple[str | None, dict | None]:
    """Every weights file of a component folder is readable; returns the path and the tensor shapes of its main
    safetensors file (:data:`_MAIN_WEIGHTS`), read once for the checks against the config, or ``(None, None)``."""
    weights = sorted(f for f in os.listdir(folder) if f.endswith(_WEIGHT_SUFFIXES))
    if not weights:
        raise FileNotFoundError(
            f"No weights file ({' or '.join('*' + s for s in _WEIGHT_SUFFIXES)}) in component folder {folder!r}."
        )
    shapes = {}
    for name in weights:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            shapes[name] = safetensors_shapes(path)
        elif name.endswith(".index.json"):
            read_json_object(path)
    main = next((name for name in _MAIN_WEIGHTS if name in shapes), None)
    return (None, None) if main is None else (os.path.join(folder, main), shapes[main])


def complete_generator_config(config: dict) -> dict:
    """``config`` with what ``GALIPGenerator`` fills in itself: its defaults, and ViT-B/32's vision fields."""
    from ..models.clip_bridge import VIT_B_32_VISION_CONFIG
    from ..models.generator import GALIPGenerator

    defaults = {name: p.default for name, p in inspect.signature(GALIPGenerator.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    complete = {**defaults, **config}
    if isinstance(complete["prompt_layers"], tuple):  # the signature's default
        complete["prompt_layers"] = list(complete["prompt_layers"])
    vision = config.get("vision_config")
    complete["vision_config"] = {**VIT_B_32_VISION_CONFIG, **vision} if isinstance(vision, dict) else (
        VIT_B_32_VISION_CONFIG if vision is None else vision)
    return complete


def check_pipeline_folder(folder: str) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` naming the file if ``folder`` is not a loadable pipeline folder."""
    index = read_json_object(os.path.join(folder, "model_index.json"))
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        component = os.path.join(folder, name)
        if not os.path.isdir(component):
            raise FileNotFoundError(f"model_index.json lists component {name!r} but the folder {component!r} is missing.")
        if "Tokenizer" in str(value[1]):
            check_tokenizer_files(component)
            continue
        config_path = os.path.join(component, "config.json")
        config = read_json_object(config_path)
        weights, shapes = _check_weights(component)
        if value[1] == "GALIPGenerator":
            check_generator_types(config, config_path)
        if shapes is not None:
            check_config_against_weights(str(value[1]), config, config_path, weights, shapes)


def check_config_against_weights(class_name: str, config: dict, config_path: str, weights: str, shapes: dict) -> None:
    """A component's config against its safetensors weights' shapes (read once, by the caller): the generator's
    fields (the check the fast runtime runs too, :func:`galip_core.folder.check_generator_config`), the text
    encoder's layers and widths (:func:`galip_core.folder.check_text_config`), and no tensor its class has missing."""
    if class_name == "GALIPGenerator":
        check_generator_config(complete_generator_config(config), shapes, config_path, weights)
    elif class_name == "CLIPTextModelWithProjection":
        check_text_config(config, shapes, config_path, weights)
    check_no_missing_weights(class_name, config, weights, shapes)


#: the component classes whose weights are checked for missing tensors (diffusers and transformers would fill a
#: missing one with random values, a silently wrong model; the lite runtime refuses it)
_MODEL_CLASSES = ("GALIPGenerator", "GALIPDiscriminator", "CLIPTextModelWithProjection",
                  "CLIPVisionModelWithProjection", "CLIPModel")


def check_no_missing_weights(class_name: str, config: dict, weights: str, shapes: dict) -> None:
    """:class:`FolderError` naming the file and the tensors if the weights ``shapes`` (of the safetensors file
    ``weights``) lack a tensor the component's class has (built from its config on the meta device: nothing is
    allocated). Extra tensors are left to the library, as diffusers and transformers ignore them. Sharded and
    ``.bin`` weights are not checked."""
    if class_name not in _MODEL_CLASSES:
        return
    import torch

    with torch.device("meta"):
        if class_name.startswith("GALIP"):
            from .. import models

            model = getattr(models, class_name).from_config(config)
        else:
            import transformers

            model_class = getattr(transformers, class_name)
            model = model_class(model_class.config_class.from_dict(config))
    missing = sorted(set(model.state_dict()) - set(shapes))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise FolderError(f"{weights!r} lacks weights its {class_name} needs ({shown}): loading it would fill them "
                          "with random values. The file is incomplete or belongs to another model.")


def check_save_directory(save_directory: Any) -> None:
    """Before ``save_pretrained`` writes anything: ``save_directory`` must be a non-empty path that is not a file
    (an empty one would write into the current folder), and a ``pipeline_galip.py`` already there must be this
    package's remote-code shim, which the save rewrites (another file of that name is refused, never replaced)."""
    if not isinstance(save_directory, (str, os.PathLike)) or not os.fspath(save_directory):
        raise ValueError(f"`save_directory` must be a folder path (created if missing), got {save_directory!r}.")
    if os.path.exists(save_directory) and not os.path.isdir(save_directory):
        raise NotADirectoryError(f"`save_directory` {os.fspath(save_directory)!r} is a file; give a folder.")
    shim = os.path.join(save_directory, "pipeline_galip.py")
    if os.path.isfile(shim):
        with open(shim, encoding="utf-8", errors="replace") as f:
            if "from galip_diffusers import GALIPPipeline" not in f.read():
                raise FileExistsError(f"{shim} exists and is not GALIP's remote-code shim, which save_pretrained "
                                      "writes there: move it, or save into another folder. Nothing was written.")


def settings_of_generic_load(name_or_path: Any) -> GALIPSettings:
    """The settings of a pipeline that diffusers' own ``DiffusionPipeline.from_pretrained`` (or ``from_pipe``) built
    from ``name_or_path``: a local folder's ``galip_settings.json``. diffusers does not download that file from the
    Hub and does not pass on its download options, so a Hub id gets the built-in defaults and a warning that says how
    to load them (``GALIPPipeline.from_pretrained`` fetches them with the same revision)."""
    if isinstance(name_or_path, (str, os.PathLike)) and os.path.isdir(name_or_path):
        return GALIPSettings.from_folder(os.fspath(name_or_path))
    if name_or_path:
        logger.warning(
            f"DiffusionPipeline.from_pretrained({str(name_or_path)!r}) does not download {SETTINGS_NAME}, so this "
            "model's recommended settings are not applied: load it with GALIPPipeline.from_pretrained (same "
            "arguments), or set `pipe.settings = galip_diffusers.hub.load_pipeline_settings(repo_id, {})`."
        )
    return GALIPSettings()


def finish_saved_folder(save_directory: str | os.PathLike, settings: GALIPSettings) -> None:
    """After diffusers' ``save_pretrained``: record our component classes under the ``diffusers`` library name (they
    are registered there on ``import galip_diffusers``, and diffusers' Hub download step accepts it), write the
    remote-code shim, and the model's recommended ``settings`` (``galip_settings.json``; none when they are empty)."""
    index_path = os.path.join(save_directory, "model_index.json")
    index = read_json_object(index_path)
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and str(value[0]).startswith("galip_diffusers"):
            index[key] = ["diffusers", value[1]]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(save_directory, "pipeline_galip.py"), "w", encoding="utf-8") as f:
        f.write(REMOTE_CODE_SHIM)
    settings_path = os.path.join(save_directory, SETTINGS_NAME)
    if not settings.is_empty():
        settings.save(save_directory)
    elif os.path.isfile(settings_path):  # the file of the model saved there before: it does not describe this one
        os.remove(settings_path)
        logger.warning(f"Removed {settings_path}, the recommended settings of the model saved in this folder before: "
                       "this pipeline has none. Set `pipe.settings` before saving to keep settings in the folder.")
