"""Small helpers shared across the package."""

from __future__ import annotations

import logging
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


class _EmptyFloat32ListFilter(logging.Filter):
    """Drops diffusers' ``ModelMixin.to`` warning "There are modules in GALIP... that should be kept in float32: []"
    (diffusers 0.42 turns ``_keep_in_fp32_modules = None`` into ``[]`` and warns on every dtype cast). Our models
    keep no module in float32, so the warning is wrong for them; any other model's warning, or one naming modules,
    passes through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in GALIP") and "should be kept in float32: []." in message)


def quiet_empty_float32_warning() -> None:
    """Install :class:`_EmptyFloat32ListFilter` on diffusers' modeling logger (once)."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFloat32ListFilter) for f in logger.filters):
        logger.addFilter(_EmptyFloat32ListFilter())
