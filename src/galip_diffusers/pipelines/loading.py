"""Checks a saved pipeline folder before loading, so that a missing or corrupt file is named in the error; and the
files :meth:`GALIPPipeline.save_pretrained` adds to diffusers' (:func:`finish_saved_folder`)."""

from __future__ import annotations

import json
import os

from safetensors import safe_open

from galip_core.settings import SETTINGS_NAME, GALIPSettings

#: Written next to model_index.json so that ``custom_pipeline="pipeline_galip", trust_remote_code=True`` loads a saved
#: folder without importing galip_diffusers first (it still has to be installed).
REMOTE_CODE_SHIM = '"""Loads GALIP pipelines through diffusers\' custom-pipeline mechanism."""\n' \
    "from galip_diffusers import GALIPPipeline  # noqa: F401\n"

#: Files a component folder must hold, by loadable base, in order of preference.
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing file {path!r}.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Corrupt JSON file {path!r}: {err}") from err


def _check_weights(folder: str) -> None:
    weights = sorted(f for f in os.listdir(folder) if f.endswith(_WEIGHT_SUFFIXES))
    if not weights:
        raise FileNotFoundError(
            f"No weights file ({' or '.join('*' + s for s in _WEIGHT_SUFFIXES)}) in component folder {folder!r}."
        )
    for name in weights:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            try:
                with safe_open(path, framework="pt") as f:
                    f.keys()
            except Exception as err:  # safetensors raises its own error type for bad headers
                raise ValueError(f"Corrupt safetensors file {path!r}: {err}") from err
        elif name.endswith(".index.json"):
            _read_json(path)


def check_pipeline_folder(folder: str) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` naming the file if ``folder`` is not a loadable pipeline folder."""
    index = _read_json(os.path.join(folder, "model_index.json"))
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        component = os.path.join(folder, name)
        if not os.path.isdir(component):
            raise FileNotFoundError(f"model_index.json lists component {name!r} but the folder {component!r} is missing.")
        if "Tokenizer" in str(value[1]):
            if not any(os.path.isfile(os.path.join(component, f)) for f in _TOKENIZER_FILES):
                raise FileNotFoundError(f"No tokenizer files ({', '.join(_TOKENIZER_FILES)}) in {component!r}.")
            continue
        _read_json(os.path.join(component, "config.json"))
        _check_weights(component)


def finish_saved_folder(save_directory: str | os.PathLike, settings: GALIPSettings) -> None:
    """After diffusers' ``save_pretrained``: record our component classes under the ``diffusers`` library name (they
    are registered there on ``import galip_diffusers``, and diffusers' Hub download step accepts it), write the
    remote-code shim, and the model's recommended ``settings`` (``galip_settings.json``; none when they are empty)."""
    index_path = os.path.join(save_directory, "model_index.json")
    index = _read_json(index_path)
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
    elif os.path.isfile(settings_path):
        os.remove(settings_path)  # a stale file of another model
