"""Model cards rendered from the Jinja templates in ``galip_diffusers/model_cards/`` with huggingface_hub's
``ModelCard``."""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

from huggingface_hub import ModelCard, ModelCardData

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # galip_diffusers/
#: Where templates are looked up (they ship as package data).
TEMPLATE_DIRS = (os.path.join(_HERE, "model_cards"),)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def find_template(template_name: str) -> str:
    """Path of ``model_cards/<template_name>.md`` (``template_name`` may also be a path to a template file)."""
    if os.path.isfile(template_name):
        return template_name
    name = template_name if template_name.endswith(".md") else f"{template_name}.md"
    for folder in TEMPLATE_DIRS:
        path = os.path.normpath(os.path.join(folder, name))
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Model card template {name!r} not found in {[os.path.normpath(d) for d in TEMPLATE_DIRS]}.")


def template_variables(template_name: str) -> set[str]:
    """The fields a template uses (its undeclared Jinja variables, except ``card_data``, which the metadata fills)."""
    import jinja2
    import jinja2.meta

    with open(find_template(template_name), encoding="utf-8") as f:
        parsed = jinja2.Environment().parse(f.read())
    return set(jinja2.meta.find_undeclared_variables(parsed)) - {"card_data"}


def hub_ids(values: Optional[Sequence[Optional[str]] | str]) -> list[str]:
    """Keep the values that look like Hub repo ids (``owner/name``) and are not local paths: only those are valid
    ``datasets`` / ``base_model`` metadata."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v for v in values if v and _HUB_ID.match(v) and not os.path.exists(v)]


def render_model_card(
    template_name: str,
    *,
    license: Optional[str] = None,
    tags: Sequence[str] = (),
    datasets: Optional[Sequence[str] | str] = None,
    base_model: Optional[str] = None,
    **fields: Any,
) -> ModelCard:
    """Render a model card template with ``ModelCard.from_template``.

    The metadata is ``library_name="diffusers"``, ``pipeline_tag="text-to-image"``, the given ``license`` and ``tags``
    (plus ``galip``, ``text-to-image``, ``diffusers``), and ``datasets`` / ``base_model`` where they are Hub ids (local
    paths are left out of the metadata; pass them as template fields to mention them in the text). ``fields`` are the
    template's variables, all required (:func:`template_variables` lists them); a missing one is a ``ValueError``.
    """
    path = find_template(template_name)
    missing = sorted(template_variables(path) - set(fields))
    if missing:
        raise ValueError(
            f"Model card template {os.path.basename(path)!r} needs the fields {missing}; pass each of them (None or "
            "an empty list renders a section's fallback text)."
        )
    all_tags = list(dict.fromkeys(["galip", "text-to-image", "diffusers", *tags]))
    base = hub_ids(base_model)
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image",
        license=license,
        tags=all_tags,
        datasets=hub_ids(datasets) or None,
        base_model=base[0] if base else None,
    )
    return ModelCard.from_template(card_data, template_path=path, **fields)
