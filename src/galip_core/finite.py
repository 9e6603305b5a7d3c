"""Non-finite values never become images: inputs (noise, embeddings, truncation) are checked before the generator
runs, and its output after. A GAN makes an image in one pass, so checking the output costs one reduction; a NaN or
inf there means the weights are corrupt, and the error says which component made it (diffusers' image processor only
warns). Used by ``GALIPPipeline`` and the fast runtime alike."""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import torch


def check_number_in_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                          low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """``ValueError`` naming ``name`` (e.g. ``"--ema_decay"`` or ``"`lr`"``) and the allowed range unless ``value`` is
    a finite number (an ``int`` if ``integer``; never a ``bool``) within ``[low, high]``; ``low_open``/``high_open``
    exclude that end. ``None`` for a bound leaves that side open."""
    kind = "an integer" if integer else "a finite number"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_bound(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_bound(high)}")
    allowed = kind + (" " + " and ".join(parts) if parts else "")
    numeric = numbers.Integral if integer else numbers.Real
    ok = (not isinstance(value, bool) and isinstance(value, numeric)
          and (isinstance(value, numbers.Integral) or math.isfinite(value)))  # huge ints overflow isfinite
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def _bound(value: float) -> str:
    """A range bound as written: integers exactly (``4294967295``), floats short (``1e-07``)."""
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def check_finite_tensor(name: str, tensor: torch.Tensor) -> None:
    """``ValueError`` naming ``name`` and counting the bad values if ``tensor`` holds NaN or inf."""
    if tensor.is_floating_point() or tensor.is_complex():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(f"`{name}` holds {count} non-finite value(s) (NaN or inf) out of {tensor.numel()}; "
                             "they would make black or undefined images.")


def check_finite_output(images: torch.Tensor, component: str, source: str | None = None,
                        inputs: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Return ``images`` if finite, else raise ``RuntimeError``: the ``component`` (e.g. ``"generator"``) produced
    NaN/inf from finite inputs, which means its weights (``source``, if known) are corrupt, or that the ``inputs``
    (named tensors, whose largest magnitudes the message reports) are far outside what the model was trained on."""
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        where = f" ({source})" if source else ""
        sizes = ", ".join(f"|{name}| {float(t.detach().abs().max()):.3g}" for name, t in (inputs or {}).items()
                          if t.numel())
        cause = "its weights are probably corrupt"
        if sizes:
            cause += f", or its inputs are far outside what it was trained on (largest {sizes})"
        raise RuntimeError(f"The {component}{where} produced {int(bad.sum())} non-finite value(s) (NaN or inf) from "
                           f"finite inputs: {cause}. No image was made.")
    return images
