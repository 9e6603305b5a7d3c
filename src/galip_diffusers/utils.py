"""Small helpers shared across the package."""

from __future__ import annotations

from typing import Any

import diffusers
from packaging import version


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The dtype keyword that this diffusers version's ``from_pretrained`` expects (``dtype`` since 0.40)."""
    if dtype is None:
        return {}
    if version.parse(diffusers.__version__).release >= (0, 40):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}
