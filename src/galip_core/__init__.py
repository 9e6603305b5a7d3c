"""galip_core: run a GALIP pipeline folder with torch, safetensors and tokenizers only.

``galip-generate`` uses it for a fast cold start (diffusers and transformers take seconds to import); the Python API
of the project is :mod:`galip_diffusers`. Attributes are imported on first use, so ``import galip_core`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # also galip_diffusers.__version__

_EXPORTS = {
    "LitePipeline": "galip_core.runtime",
    "LiteUnsupportedError": "galip_core.runtime",
    "resolve_pretrained": "galip_core.runtime",
    "RuntimeGenerator": "galip_core.runtime",
    "clip_text_clean": "galip_core.text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'galip_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
