"""Models shipped inside the package, resolvable by short name (e.g. ``GALIPPipeline.from_pretrained("galip-shapes")``)."""

from __future__ import annotations

import os

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
PRETRAINED_MODELS = {"galip-shapes": os.path.join(PRETRAINED_DIR, "galip-shapes")}
DEFAULT_MODEL = "galip-shapes"


def resolve_pretrained(name_or_path):
    """Map a packaged model's short name to its folder; anything else (a path, a Hub id) is returned unchanged."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    name = str(name_or_path)
    if name in PRETRAINED_MODELS and not os.path.exists(name):
        folder = PRETRAINED_MODELS[name]
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"The packaged model {name!r} is not part of this installation (expected it in {folder!r})."
            )
        return folder
    return name_or_path
