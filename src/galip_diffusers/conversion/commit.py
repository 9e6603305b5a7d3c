"""Putting a converted folder in place without losing anything: the last step of ``galip convert`` (and of the
packaging scripts).

The converter builds the new folder under a hidden temporary name beside ``--output_dir`` (``.<name>.tmp-<pid>-*``,
:func:`galip_core.staging.temporary_sibling`) and then swaps it in with :func:`commit`, the checked, atomic swap of
:mod:`galip_core.swap` (the one ``GALIPPipeline.save_pretrained`` uses too): ``--output_dir``'s contents are recorded
when the conversion starts (:func:`snapshot`) and if anything changed by the swap, nothing is replaced and the
:class:`ConversionError` names the entries; only the recorded entries of the old folder are deleted. The leftovers of
a killed conversion are dealt with at the next run (:func:`clean_stale`).
"""

from __future__ import annotations

from typing import Optional

from galip_core import swap
from galip_core.swap import Snapshot, snapshot  # noqa: F401  (the converter's imports)
from galip_diffusers.conversion.keys import ConversionError


def clean_stale(out: str) -> list[str]:
    """Deal with what killed conversions into ``out`` left beside it (:func:`galip_core.swap.clean_stale`)."""
    return swap.clean_stale(out, kind="conversion")


def commit(tmp: str, out: str, checked: Optional[Snapshot]) -> None:
    """Swap the finished folder ``tmp`` in as ``out``, whose contents must still be ``checked`` (``None``: absent);
    the new files get the modes of the umask first."""
    swap.open_permissions(tmp)
    swap.commit(tmp, out, checked, error_type=ConversionError, label="--output_dir", work="conversion")
