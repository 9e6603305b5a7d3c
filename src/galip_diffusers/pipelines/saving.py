"""``GALIPPipeline.save_pretrained``: the folder is replaced in one step, or not at all.

diffusers writes into the target folder file by file, so a reader during a save, a full disk or a killed process
left a mix of two models, weight files of an earlier save (a ``.bin``, a shard index, a variant) next to the new ones,
and a folder of symbolic links (a Hub cache snapshot) was written through into the files they point to. Here:

* the whole new folder is built in a hidden sibling (:func:`galip_core.staging.temporary_sibling`): diffusers' save,
  then :func:`~galip_diffusers.pipelines.loading.finish_saved_folder`;
* the entries of the existing folder that are not parts of its model are carried into it (hard links, else copies;
  symbolic links stay links): the user's own files survive. The parts of the old model are ``model_index.json``,
  ``galip_settings.json``, ``pipeline_galip.py`` and every component folder its ``model_index.json`` lists;
* the finished folder is swapped in with the checked, atomic swap of :mod:`galip_core.swap` (one ``renameat2`` on
  Linux): if the folder changed during the save, nothing is replaced and the error says so. A killed save leaves only
  the hidden folder, which the next save removes.

Before anything is written, a save that would not be safetensors (``safe_serialization=False``) and an ``fp16`` /
``bf16`` variant of weights that are another dtype are refused (:func:`check_save_options`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Callable

from diffusers import DiffusionPipeline
from diffusers.utils import logging

from galip_core.settings import SETTINGS_NAME, GALIPSettings
from galip_core.swap import build_and_swap, open_permissions
from galip_diffusers.pipelines.loading import check_save_directory, finish_saved_folder, note_replaced_settings

logger = logging.get_logger(__name__)

#: the files of a saved model besides its component folders (never carried over to the next save)
MODEL_FILES = ("model_index.json", SETTINGS_NAME, "pipeline_galip.py")

#: variant names that promise a dtype (``galip_diffusers.hub.VARIANT_DTYPES``)
_VARIANT_DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16"}

#: diffusers' positional parameters of ``save_pretrained`` after ``save_directory``
_POSITIONAL = ("safe_serialization", "variant", "max_shard_size")


#: words of ``galip_diffusers.hub.MINIMAL_CARD`` (a test checks they are there): a README.md holding them is that
#: generic card, so a later save into its folder does not warn that it may describe another model
MINIMAL_CARD_MARKER = "text-to-image pipeline (Generative Adversarial CLIPs: one forward pass"


class SaveDirectoryChangedError(RuntimeError):
    """Something else wrote into the folder while ``save_pretrained`` built its replacement: nothing was replaced."""


def check_save_options(pipe: Any, options: dict[str, Any]) -> None:
    """Refuse, before anything is written, what would save other than safetensors of the promised dtype:
    ``safe_serialization=False`` (a pickle), ``use_flashpack=True``, and a ``variant`` named ``fp16``/``bf16`` while
    a component's floating-point weights are another dtype (other variant names, e.g. ``"ema"``, are free)."""
    import torch

    if options.get("safe_serialization", True) is not True:
        raise ValueError(f"save_pretrained(safe_serialization={options['safe_serialization']!r}) would write pickled "
                         "weights (.bin); GALIP folders hold safetensors only: leave `safe_serialization` at True. "
                         "Nothing was written.")
    if options.get("use_flashpack"):
        raise ValueError("save_pretrained(use_flashpack=True) would write FlashPack weights; GALIP folders hold "
                         "safetensors only (`safe_serialization=True`). Nothing was written.")
    variant = options.get("variant")
    if variant not in _VARIANT_DTYPE_NAMES:
        return
    wanted = getattr(torch, _VARIANT_DTYPE_NAMES[variant])
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        dtypes = sorted({str(t.dtype) for t in component.state_dict().values()
                         if torch.is_tensor(t) and t.is_floating_point() and t.dtype != wanted})  # fmt: skip
        if dtypes:
            raise ValueError(
                f"save_pretrained(variant={variant!r}) writes {wanted} weights by name, but the {name} component's "
                f"weights are {', '.join(dtypes)}: cast the pipeline first (`pipe.to({wanted})`), "
                f"or use `galip_diffusers.hub.save_half_precision_variant(pipe, folder, {variant!r})`, which writes "
                "the variant beside the full-precision weights. Nothing was written."
            )


def save_options(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``save_pretrained``'s options by name (diffusers takes the first three positionally too)."""
    if len(args) > len(_POSITIONAL):
        raise TypeError(f"save_pretrained takes at most {len(_POSITIONAL)} options by position "
                        f"({', '.join(_POSITIONAL)}); pass the others by name.")
    options = dict(zip(_POSITIONAL, args))
    twice = sorted(set(options) & set(kwargs))
    if twice:
        raise TypeError(f"save_pretrained got {twice[0]!r} both by position and by name.")
    return {**options, **kwargs}


def save_pipeline(pipe: Any, save_directory: str | os.PathLike, *args, extra_models: dict[str, Any] | None = None,
                  add_to_existing: bool = False, **kwargs) -> str:  # fmt: skip
    """Save ``pipe`` (diffusers' ``save_pretrained`` with ``args``/``kwargs``, then our files) as ``save_directory``,
    replacing an existing folder in one step (see the module's notes); returns the folder's real path.

    ``extra_models`` (``{subfolder: model}``) are saved into the same folder, with the same ``variant``.
    ``add_to_existing`` (always, for a ``variant`` saved into a folder that holds a model, as diffusers does): the
    variant's weight files are added to the existing model (beside its other weights): everything else of the old
    folder stays as it was, configs included."""
    check_save_directory(save_directory)
    options = save_options(args, kwargs)
    check_save_options(pipe, options)
    settings = getattr(pipe, "settings", None) or GALIPSettings()
    target_file = os.path.join(os.path.realpath(os.fspath(save_directory)), SETTINGS_NAME)
    if not settings.is_empty():
        settings.validate(f"not saved to {target_file}")  # before anything is written (values changed after loading)
    had_settings = os.path.isfile(target_file)

    def write(folder: str) -> None:
        write_pipeline(pipe, folder, options, extra_models, settings, final_folder=os.path.dirname(target_file))

    if options.get("variant") and os.path.isfile(os.path.join(os.path.dirname(target_file), "model_index.json")):
        add_to_existing = True  # as in diffusers: a variant is added to the model there, beside its other weights
    target = replace_folder(save_directory, write, add_to_existing=add_to_existing, variant=options.get("variant"))
    if had_settings and not add_to_existing:
        note_replaced_settings(save_directory, settings)
    return target


def write_pipeline(pipe: Any, folder: str, options: dict[str, Any] | None = None,
                   extra_models: dict[str, Any] | None = None, settings: GALIPSettings | None = None,
                   final_folder: str | None = None) -> None:  # fmt: skip
    """Write ``pipe`` into ``folder`` as it stands, file by file: diffusers' ``save_pretrained`` with ``options``,
    ``extra_models`` (``{subfolder: model}``, same ``variant``), then our files (``settings``: default the pipeline's;
    ``final_folder``: where ``folder`` is moved once complete, which the settings' ``source`` then names).
    :func:`save_pipeline` calls it on the hidden folder it swaps in. Called directly, it is for a folder that only
    its caller writes and that must not be replaced as a whole: ``train_galip.py``'s final save into its own run
    folder, whose trackers still write into ``logs/`` (a swap would stop at their changes). ``options`` are taken as
    checked (:func:`check_save_options`, which :func:`save_pipeline` runs before anything is written)."""
    options = dict(options or {})
    DiffusionPipeline.save_pretrained(pipe, folder, **options)
    for sub, model in (extra_models or {}).items():
        model.save_pretrained(os.path.join(folder, sub), variant=options.get("variant"))
    if settings is None:
        settings = getattr(pipe, "settings", None) or GALIPSettings()
    finish_saved_folder(folder, settings, final_folder)


def replace_folder(save_directory: str | os.PathLike, write: Callable[[str], None], *,
                   add_to_existing: bool = False, variant: str | None = None) -> str:  # fmt: skip
    """``write(folder)`` into a hidden sibling of ``save_directory``, carry over what the old folder holds besides
    its model, and swap the result in (see the module's notes); returns the real path. A symbolic link to a folder
    is followed: the folder it points to is replaced, and the link keeps pointing to it."""
    target = os.path.realpath(os.fspath(save_directory))
    problem = check_replaceable(target, os.fspath(save_directory))
    if problem is not None:  # e.g. a container's volume: written in place, as diffusers does
        logger.warning(f"save_pretrained writes {os.fspath(save_directory)!r} in place, file by file, since {problem} "
                       "(it cannot be replaced as a whole): a reader meanwhile may see a mix of two models, and files "
                       "of an earlier save that this one does not overwrite stay. Save into a new folder inside it "
                       "for an atomic save.")
        write(target)
        return target
    try:
        cwd = os.getcwd()
    except OSError:  # the current folder was deleted
        cwd = None
    recorded: dict = {}

    def build(tmp: str) -> None:  # the new model, then what the old folder holds besides its model
        write(tmp)
        open_permissions(tmp)  # before the user's files are carried over: their modes are theirs
        if recorded["checked"] is not None:
            wrote_card = os.path.lexists(os.path.join(tmp, "README.md"))
            had_model = os.path.lexists(os.path.join(target, "model_index.json"))
            parts = set() if add_to_existing else model_parts(target)
            carried, replaced = carry_entries(target, tmp, parts, merge=add_to_existing, variant=variant)
            if not add_to_existing:
                _warn_about_carried(os.fspath(save_directory), tmp, carried, replaced,
                                    old_card=had_model and not wrote_card)

    build_and_swap(target, build, check=lambda checked: recorded.update(checked=checked),
                   error_type=SaveDirectoryChangedError, label="save_directory", work="save")
    if cwd is not None and (cwd == target or cwd.startswith(target + os.sep)) and os.path.isdir(cwd):
        os.chdir(cwd)  # this process was in the replaced folder: into the new one (``save_pretrained(".")``)
    return target


def check_replaceable(target: str, shown: str) -> str | None:
    """Before anything is written: why the folder cannot be replaced as a whole by one built beside it (it is a mount
    point, or the folder it is in is not writable), else ``None``; then it is written in place, as diffusers does. A
    folder that is not writable itself is a ``PermissionError`` (a read-only folder stays so)."""
    parent = os.path.dirname(target)
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if os.path.isdir(target) and not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(f"save_pretrained cannot write into {shown!r}: the folder is not writable. Nothing was "
                              "written.")
    if os.path.ismount(target):
        return "it is a mount point"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder it is in, {parent!r}, is not writable"
    return None


def model_parts(folder: str) -> set[str]:
    """The entries of ``folder`` that belong to the model saved there: :data:`MODEL_FILES` and the component folders
    that its ``model_index.json`` lists (none if that file is missing or unreadable)."""
    parts = set(MODEL_FILES)
    try:
        with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        return parts
    if isinstance(index, dict):
        parts |= {name for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, list) and len(value) == 2}  # fmt: skip
    return parts


def carry_entries(old: str, new: str, parts: set[str], *, merge: bool = False,
                  variant: str | None = None) -> tuple[list[str], list[str]]:  # fmt: skip
    """Carry the entries of folder ``old`` that are not in ``parts`` into folder ``new``: hard links (a link is
    linked as a link), copies where the file system has none; folders entry by entry. An entry ``new`` already has
    wins. With ``merge`` (adding the weights ``variant`` to a model) folders in both are merged and the old files win,
    except the variant's weight files. Returns the names carried and the names ``new`` replaced."""
    carried, replaced = [], []
    for name in sorted(os.listdir(old)):
        if name in parts:
            continue
        source, destination = os.path.join(old, name), os.path.join(new, name)
        if not os.path.lexists(destination):
            _link_or_copy(source, destination)
            carried.append(name)
        elif not merge:
            replaced.append(name)
        elif _is_folder(source) and _is_folder(destination):
            carry_entries(source, destination, set(), merge=True, variant=variant)
        elif variant is None or not re.search(rf"\.{re.escape(variant)}[.-]", name):  # e.g. a config: as it was
            shutil.rmtree(destination) if _is_folder(destination) else os.unlink(destination)
            _link_or_copy(source, destination)
    return carried, replaced


def _is_folder(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _link_or_copy(source: str, destination: str) -> None:
    if _is_folder(source):
        os.mkdir(destination)
        for name in os.listdir(source):
            _link_or_copy(os.path.join(source, name), os.path.join(destination, name))
        shutil.copystat(source, destination, follow_symlinks=False)
        return
    try:
        os.link(source, destination, follow_symlinks=False)
    except (OSError, NotImplementedError):  # no hard links here (FAT, some network mounts; Windows): a copy
        if os.path.islink(source):
            os.symlink(os.readlink(source), destination)
        else:
            shutil.copy2(source, destination)


def _is_minimal_card(folder: str, name: str) -> bool:
    """Whether ``folder/name`` is the generic card that ``push_to_hub`` writes (``galip_diffusers.hub.MINIMAL_CARD``,
    which holds :data:`MINIMAL_CARD_MARKER`): it describes no particular model."""
    try:
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            return MINIMAL_CARD_MARKER in f.read(100_000)
    except OSError:
        return False


def _warn_about_carried(shown: str, new: str, carried: list[str], replaced: list[str], old_card: bool) -> None:
    """Warn about what the save kept that looks like another model's: its model card, and folders with a config."""
    suspects = [name for name in carried if name == "README.md" and old_card and not _is_minimal_card(new, name)]
    suspects += [f"{name}/" for name in carried if os.path.isfile(os.path.join(new, name, "config.json"))]
    if suspects:
        logger.warning(f"save_pretrained kept {', '.join(suspects)} in {shown!r}: not parts of this pipeline, they "
                       "may belong to the model saved there before (a README.md is its model card; a folder with "
                       "a config.json a model of its own). Delete them if they do not describe this pipeline: "
                       "push_to_hub uploads them.")
    if replaced:
        logger.warning(f"save_pretrained replaced {', '.join(replaced)} in {shown!r}, which the folder's "
                       "model_index.json did not list, by this pipeline's files of the same name.")
