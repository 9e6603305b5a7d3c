"""Non-finite values never become images: inputs (noise, embeddings, truncation) are checked before the generator
runs, and its output after. A GAN makes an image in one pass, so checking the output costs one reduction; a NaN or
inf there means the weights are corrupt, and the error says which component made it (diffusers' image processor only
warns). Used by ``GALIPPipeline`` and the fast runtime alike."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch is imported where a tensor is checked: the number checks serve torch-free modules too
    import torch

#: a real-valued argument given as a Python ``int`` must lie within ±this: torch turns such a scalar into a 64-bit
#: integer and raises ``OverflowError`` beyond it (``truncation=2**70`` failed inside the noise code)
TORCH_INT_LIMIT = 2**63


def number_in_range(value: Any, low: float | None = None, high: float | None = None, low_open: bool = False,
                    high_open: bool = False, integer: bool = False) -> bool:
    """Whether ``value`` passes :func:`check_number_in_range` (the same rules, no message): never raises, also not
    ``OverflowError`` for an integer too large for a float (``10**400``), which is then simply out of range for a
    real-valued setting. ``galip_settings.json``'s checks use it too."""
    numeric = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, numeric):
        return False
    try:
        if not integer:
            if isinstance(value, numbers.Integral) and not -TORCH_INT_LIMIT <= value < TORCH_INT_LIMIT:
                return False
            if not math.isfinite(value):
                return False
        if low is not None and not (value > low if low_open else value >= low):
            return False
        return high is None or (value < high if high_open else value <= high)
    except (OverflowError, ValueError, TypeError):  # a number type whose float conversion or comparison fails
        return False


def check_number_in_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                          low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """``ValueError`` naming ``name`` (e.g. ``"--ema_decay"`` or ``"`lr`"``) and the allowed range unless ``value`` is
    a finite number (an ``int`` if ``integer``; never a ``bool``) within ``[low, high]``; ``low_open``/``high_open``
    exclude that end. ``None`` for a bound leaves that side open. Integers are exact at any size; a real-valued
    ``value`` given as an ``int`` must lie within ±2**63 (:data:`TORCH_INT_LIMIT`, what torch takes as a scalar):
    beyond it, the same range error (with that reason) instead of an ``OverflowError`` later."""
    if not number_in_range(value, low, high, low_open, high_open, integer):
        note = too_large_note(value, integer)
        raise ValueError(f"{name} must be {allowed_range(low, high, low_open, high_open, integer)}, got "
                         f"{shown_value(value)}" + (f" ({note})." if note else "."))


def allowed_range(low: float | None = None, high: float | None = None, low_open: bool = False,
                  high_open: bool = False, integer: bool = False) -> str:
    """The range :func:`check_number_in_range` names: ``"a finite number >= 0"``, ``"an integer >= 1 and <= 10"``."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_bound(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_bound(high)}")
    return ("an integer" if integer else "a finite number") + (" " + " and ".join(parts) if parts else "")


def too_large_note(value: Any, integer: bool = False) -> str:
    """Why an ``int`` in a real-valued range is refused although it is "a finite number" (it is beyond ±2**63), or
    ``""``."""
    if integer or isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return ""
    if -TORCH_INT_LIMIT <= value < TORCH_INT_LIMIT:
        return ""
    return "an integer beyond ±2**63 is too large for torch: write it as a float"


def shown_value(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, or the size of an integer with more digits than Python
    will print."""
    try:
        text = repr(value)
    except ValueError:  # more than sys.get_int_max_str_digits() digits
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _bound(value: float) -> str:
    """A range bound as written: integers exactly (``4294967295``), floats short (``1e-07``)."""
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def check_finite_tensor(name: str, tensor: torch.Tensor) -> None:
    """``ValueError`` naming ``name`` and counting the bad values if ``tensor`` holds NaN or inf."""
    if tensor.is_floating_point() or tensor.is_complex():
        bad = ~tensor.isfinite()
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(f"`{name}` holds {count} non-finite value(s) (NaN or inf) out of {tensor.numel()}; "
                             "they would make black or undefined images.")


def check_finite_output(images: torch.Tensor, component: str, source: str | None = None,
                        inputs: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Return ``images`` if finite, else raise ``RuntimeError``: the ``component`` (e.g. ``"generator"``) produced
    NaN/inf from finite inputs, which means its weights (``source``, if known) are corrupt, or that the ``inputs``
    (named tensors, whose largest magnitudes the message reports) are far outside what the model was trained on."""
    bad = ~images.isfinite()
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
