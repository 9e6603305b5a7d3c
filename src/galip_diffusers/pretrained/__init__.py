"""Models shipped inside the package, resolvable by short name (e.g. ``GALIPPipeline.from_pretrained("galip-shapes")``).

The name lookup lives in :mod:`galip_core.runtime` (``galip-generate`` resolves names without importing diffusers).
"""

from __future__ import annotations

import os

from galip_core.runtime import DEFAULT_MODEL, PACKAGED_MODELS, resolve_pretrained

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
PRETRAINED_MODELS = {name: os.path.join(PRETRAINED_DIR, name) for name in PACKAGED_MODELS}

__all__ = ["DEFAULT_MODEL", "PRETRAINED_DIR", "PRETRAINED_MODELS", "resolve_pretrained"]
