"""Checks a saved pipeline folder before loading, so that a missing or corrupt file is named in the error."""

from __future__ import annotations

import json
import os

from safetensors import safe_open

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
