"""Per-model recommended settings, stored in the model folder as ``galip_settings.json``.

Like diffusers' scheduler configs or transformers' ``generation_config.json``, the settings that were measured best
for a model travel with it and become the defaults of its pipelines; an explicit argument always wins, and a folder
without the file keeps the built-in defaults (:data:`BUILTIN_DEFAULTS`). The file has one object per section::

    {
      "sampling": {"truncation": null},
      "refinement": {"num_candidates": 256, "top_k": 5, "num_steps": 5},
      "composition": {"truncation": 0.5, "num_steps": 0, "layer": 4, "top_k": 1, "containment_weight": 0.0},
      "prompts": {"examples": ["grinning face, twemoji style", "red apple, noto style"]},
      "_comment": "keys starting with an underscore are notes: kept (a re-save writes them back), never settings"
    }

* ``sampling``: ``GALIPPipeline.__call__`` / ``interpolate``, ``galip generate`` and the demo;
* ``refinement``: ``GALIPFuseDreamPipeline.__call__`` (FuseDream's CLIP-guided search);
* ``composition``: ``GALIPFuseDreamPipeline.compose``;
* ``prompts``: ``examples``, prompts in the model's own caption style (the demo's example prompts; its first two are
  the demo's starting prompts). ``null``: the demo's built-in examples.

Torch-free (plain JSON), so that the lite runtime reads it without importing diffusers.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Mapping

from .finite import number_in_range, shown_value, too_large_note

SETTINGS_NAME = "galip_settings.json"

#: the built-in defaults of every setting a model folder may override (today's defaults of the calls they configure;
#: ``layer=None`` is ``generator.num_blocks // 2``)
BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "sampling": {"truncation": None},
    "refinement": {"num_candidates": 1000, "top_k": 5, "num_steps": 200, "truncation": None},
    "composition": {"num_candidates": 256, "top_k": 5, "num_steps": 100, "truncation": None, "layer": None,
                    "containment_weight": 1.0},
    "prompts": {"examples": None},
}  # fmt: skip

SECTIONS = tuple(BUILTIN_DEFAULTS)


class GALIPSettings:
    """The recommended settings of one model: ``{section: {name: value}}`` over :data:`BUILTIN_DEFAULTS`' keys.

    Args:
        settings: the file's content (sections may be missing or partial; keys starting with ``_`` are notes, at the
            top level (:attr:`notes`) or inside a section (:attr:`section_notes`): kept, and written back by
            :meth:`save`, but never settings).
        source: what the errors name (the file's path when read from a folder; :meth:`save` makes it the saved file).

    Raises:
        ValueError: an unknown section or setting (the message names the allowed ones), or a value outside its range:
            counts (``num_candidates``, ``top_k``) integers >= 1 with ``top_k <= num_candidates``, ``num_steps`` and
            ``layer`` integers >= 0 (``layer`` may be ``null``), the other numbers finite and >= 0 or ``null`` (an
            integer there must lie within ±2**63, what torch takes; a float of any size is fine).
    """

    def __init__(self, settings: Mapping[str, Any] | None = None, source: str = SETTINGS_NAME):
        settings = dict(settings or {})
        self.source = source  # named by later errors about a value from here (e.g. compose's `layer`)
        self.notes = {k: v for k, v in settings.items() if k.startswith("_")}
        self.sections: dict[str, dict[str, Any]] = {}
        self.section_notes: dict[str, dict[str, Any]] = {}
        for section, values in settings.items():
            if section.startswith("_"):
                continue
            if section not in BUILTIN_DEFAULTS:
                raise ValueError(f"{source}: unknown section {section!r}; the sections are {list(SECTIONS)}.")
            if not isinstance(values, Mapping):
                raise ValueError(f"{source}: section {section!r} must be an object, got {shown_value(values)}.")
            self.sections[section] = {k: v for k, v in values.items() if not k.startswith("_")}
            notes = {k: v for k, v in values.items() if k.startswith("_")}
            if notes:
                self.section_notes[section] = notes
            for name, value in self.sections[section].items():
                _check_value(section, name, value, source)
            merged = self.defaults(section)
            if "top_k" in merged and merged["top_k"] > merged["num_candidates"]:
                raise ValueError(f"{source}: {section}.top_k ({merged['top_k']}) cannot exceed {section}.num_candidates "
                                 f"({merged['num_candidates']}, built-in unless set).")

    # ------------------------------------------------------------------ files
    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "GALIPSettings":
        """The settings of a model folder; empty (built-in defaults) when it has no ``galip_settings.json``."""
        path = os.path.join(folder, SETTINGS_NAME)
        if not os.path.lexists(path):
            return cls()
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "GALIPSettings":
        """Read a ``galip_settings.json``; a malformed file (a key written twice in one object included) or a folder
        of that name is a ``ValueError`` that starts with its path."""
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder; {SETTINGS_NAME} must be a JSON file (or absent: built-in defaults).")
        if os.path.exists(path) and not os.path.isfile(path):  # a FIFO or device would block the read forever
            raise ValueError(f"{path} is not a regular file; {SETTINGS_NAME} must be a JSON file (or absent).")
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f, object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKeyError as err:
            raise ValueError(f"{path}: the key {err.key!r} is written twice in one object; JSON would silently keep "
                             "only the last one. Keep one.") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); JSON files are UTF-8.") from None
        except (ValueError, RecursionError) as err:  # JSONDecodeError, an integer too long to read, deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise ValueError(f"{path} is not valid JSON ({reason}).") from None
        if not isinstance(content, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(content).__name__}.")
        return cls(content, source=os.fspath(path))

    def save(self, folder: str | os.PathLike, final_folder: str | os.PathLike | None = None) -> str:
        """Write ``folder/galip_settings.json`` (sorted keys, trailing newline, notes included); returns its path.

        The content is checked first, as :meth:`from_file` would check it (values changed in :attr:`sections` after
        loading included): a file that ``from_pretrained`` would refuse is never written, and the ``ValueError``
        names the field. Afterwards :attr:`source` names the saved file, in ``final_folder`` when given (where
        ``folder``, a staging folder, is moved once complete), else in ``folder``."""
        path = os.path.join(folder, SETTINGS_NAME)
        final = os.path.join(os.fspath(final_folder), SETTINGS_NAME) if final_folder is not None else path
        content = self.validate(f"not saved to {final}")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, sort_keys=True)
            f.write("\n")
        self.source = os.fspath(final)
        return path

    def validate(self, source: str | None = None) -> dict[str, Any]:
        """The content of the file these settings would write, checked like a file being read (in case
        :attr:`sections` was changed after loading); a ``ValueError`` starting with ``source`` (default:
        :attr:`source`) names the bad field. Returns the content."""
        content = self.to_dict()
        GALIPSettings(content, source=source or self.source)
        return content

    def to_dict(self) -> dict[str, Any]:
        sections = {name: {**self.section_notes.get(name, {}), **values} for name, values in self.sections.items()}
        sections.update({name: dict(notes) for name, notes in self.section_notes.items() if name not in sections})
        return copy.deepcopy({**self.notes, **sections})

    def is_empty(self) -> bool:
        """Whether nothing is set (the folder had no file): saving then writes no file."""
        return not self.sections and not self.notes and not self.section_notes

    # ------------------------------------------------------------------ defaults
    def defaults(self, section: str) -> dict[str, Any]:
        """The defaults of ``section``: the built-in ones updated with this model's."""
        if section not in BUILTIN_DEFAULTS:
            raise ValueError(f"unknown settings section {section!r}; the sections are {list(SECTIONS)}.")
        return {**BUILTIN_DEFAULTS[section], **self.sections.get(section, {})}

    def resolve(self, section: str, **explicit: Any) -> dict[str, Any]:
        """``defaults(section)`` with every explicit argument that is not ``None`` applied on top.

        ``None`` means "not given" (the model's value, else the built-in one). ``truncation=0`` is how a caller turns
        off a truncation the model's settings switch on: it resolves to ``None`` (no truncation)."""
        values = self.defaults(section)
        unknown = sorted(set(explicit) - set(values))
        if unknown:
            raise TypeError(f"{unknown} are not {section} settings; they are {sorted(values)}.")
        values.update({k: v for k, v in explicit.items() if v is not None})
        if values.get("truncation") == 0:
            values["truncation"] = None
        return values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GALIPSettings) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GALIPSettings({self.to_dict()!r})"


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.load``'s ``object_pairs_hook``: the object as a dict, or :class:`_DuplicateKeyError` for a key written
    twice (JSON itself keeps the last one silently)."""
    content: dict[str, Any] = {}
    for key, value in pairs:
        if key in content:
            raise _DuplicateKeyError(key)
        content[key] = value
    return content


def _check_value(section: str, name: str, value: Any, source: str = SETTINGS_NAME) -> None:
    allowed = BUILTIN_DEFAULTS[section]
    if name not in allowed:
        raise ValueError(f"{source}: unknown {section} setting {name!r}; the {section} settings are {sorted(allowed)}.")
    if name == "examples":
        expected = "null or a list of at least two non-empty strings"
        ok = value is None or (isinstance(value, list) and len(value) >= 2
                               and all(isinstance(v, str) and v.strip() for v in value))
    elif name in ("layer", "num_candidates", "top_k", "num_steps"):
        low = 1 if name in ("num_candidates", "top_k") else 0
        expected = f"null or an integer >= {low}" if name == "layer" else f"an integer >= {low}"
        ok = (value is None and name == "layer") or (isinstance(value, int) and not isinstance(value, bool)
                                                     and value >= low)
    else:
        note = too_large_note(value)
        expected = "null or a finite number >= 0" + (f"; {note}" if note else "")
        ok = value is None or (isinstance(value, (int, float)) and number_in_range(value, 0))
    if not ok:
        raise ValueError(f"{source}: {section}.{name} has the invalid value {shown_value(value)} (expected {expected}).")


def load_settings(folder: str | os.PathLike | None) -> GALIPSettings:
    """``GALIPSettings.from_folder`` for a local folder; empty settings for anything else (a Hub id, ``None``)."""
    if folder is None or not os.path.isdir(folder):
        return GALIPSettings()
    return GALIPSettings.from_folder(folder)


def starting_settings(base_folder: str | os.PathLike | None, writer: str) -> GALIPSettings:
    """The settings a new model folder starts with (``galip convert``, ``train_galip.py``): those of ``base_folder``
    (the pipeline it was fine-tuned from) when it has some, else the built-in defaults written out; with a note
    saying who wrote them and that they are to be measured on the new model."""
    base = load_settings(base_folder)
    if base.is_empty():
        sections = {name: {k: v for k, v in values.items() if v is not None or name == "sampling"}
                    for name, values in BUILTIN_DEFAULTS.items()}
        note = (f"Written by {writer}: the built-in defaults (FuseDream's generic settings), not measured on this "
                "model. Measure (training/eval_fusedream.py) and edit; explicit arguments always win.")
    else:
        sections = base.sections
        note = (f"Written by {writer}: the settings of the model it started from ({os.path.basename(os.fspath(base_folder))}); "
                "re-measure on this model (training/eval_fusedream.py) and edit.")
    return GALIPSettings({"_comment": note, **copy.deepcopy(sections)})


def as_settings(value: Any) -> GALIPSettings:
    """What a pipeline's ``settings`` attribute may be set to: a :class:`GALIPSettings`, or a mapping with the file's
    content (checked like the file; ``{}`` is the built-in defaults). Anything else is a ``TypeError``."""
    if isinstance(value, GALIPSettings):
        return value
    if isinstance(value, Mapping):
        return GALIPSettings(value, source="`settings`")
    raise TypeError(f"`settings` must be a GALIPSettings or a dict like the content of {SETTINGS_NAME}, got "
                    f"{type(value).__name__} {value!r}.")
