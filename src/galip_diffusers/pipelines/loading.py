"""Checks a saved pipeline folder before loading, so that a missing, corrupt or inconsistent file is named in the error
(the file, the field and what was expected) instead of surfacing as a TypeError, a download attempt or diffusers'
``ignore_mismatched_sizes`` advice. The generator checks are :mod:`galip_core.folder`'s, the ones the fast runtime
runs: both engines refuse the same folders with the same messages. Also the checks and files
:meth:`GALIPPipeline.save_pretrained` adds to diffusers' (:func:`check_save_directory`, :func:`finish_saved_folder`;
the folder is built and swapped in by :mod:`.saving`)."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import inspect
import json
import os
from typing import Any, Iterator

from diffusers.utils import logging

from galip_core.folder import (  # noqa: F401  (FolderError: the error type of these checks)
    FolderError,
    WeightSet,
    check_generator_config,
    check_generator_types,
    check_text_components,
    check_text_config,
    check_tokenizer_files,
    check_unambiguous,
    read_json_object,
    safetensors_shapes,
    select_weights,
    tokenizer_facts,
    tokenizer_facts_of,
    weight_sets,
)

from galip_core.settings import SETTINGS_NAME, GALIPSettings, as_settings

logger = logging.get_logger(__name__)

#: Written next to model_index.json so that ``custom_pipeline="pipeline_galip", trust_remote_code=True`` loads a saved
#: folder without importing galip_diffusers first (it still has to be installed).
REMOTE_CODE_SHIM = '"""Loads GALIP pipelines through diffusers\' custom-pipeline mechanism."""\n' \
    "from galip_diffusers import GALIPPipeline  # noqa: F401\n"

#: ``check_pipeline_folder``'s default: check every set of weights of each component (diffusers' generic loader, which
#: runs the check after loading, does not tell which ``variant`` it loaded)
EVERY_VARIANT: Any = type("EveryVariant", (), {"__repr__": lambda self: "EVERY_VARIANT"})()


def _weights_to_check(component: str, variant: Any) -> list[WeightSet]:
    """The weight sets of a component folder that a load with ``variant`` reads (:func:`select_weights`), or, for
    :data:`EVERY_VARIANT`, all of them (none ambiguous)."""
    if variant is not EVERY_VARIANT:
        return [select_weights(component, variant)]
    sets = weight_sets(component)
    if not sets:
        select_weights(component)  # the error of a folder without weights
    check_unambiguous(sets)
    return sets


def complete_generator_config(config: dict) -> dict:
    """``config`` with what ``GALIPGenerator`` fills in itself: its defaults, and ViT-B/32's vision fields."""
    from ..models.clip_bridge import VIT_B_32_VISION_CONFIG
    from ..models.generator import GALIPGenerator

    defaults = {name: p.default for name, p in inspect.signature(GALIPGenerator.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    complete = {**defaults, **config}
    if isinstance(complete["prompt_layers"], tuple):  # the signature's default
        complete["prompt_layers"] = list(complete["prompt_layers"])
    vision = config.get("vision_config")
    complete["vision_config"] = {**VIT_B_32_VISION_CONFIG, **vision} if isinstance(vision, dict) else (
        VIT_B_32_VISION_CONFIG if vision is None else vision)
    return complete


def check_pipeline_folder(folder: str, variant: Any = EVERY_VARIANT) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` naming the file if ``folder`` is not a loadable pipeline folder.

    The weights checked are those a load with ``variant`` reads (``None``: the default weights; a variant's when a
    component has it), every shard of a sharded checkpoint included; by default every set of weights of each
    component. A component folder with two sets of weights a load could read for one variant (a file beside a shard
    index; a ``.bin`` beside ``.safetensors`` is not ambiguous) is refused, and so are default weights missing beside a variant (the error names the
    ``variant`` to pass). Tokenizer, text encoder and generator must fit together (:func:`check_text_components`)."""
    index = read_json_object(os.path.join(folder, "model_index.json"))
    configs: dict[str, dict] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        component = os.path.join(folder, name)
        if not os.path.isdir(component):
            raise FileNotFoundError(f"model_index.json lists component {name!r} but the folder {component!r} is missing.")
        if "Tokenizer" in str(value[1]):
            check_tokenizer_files(component)
            continue
        config_path = os.path.join(component, "config.json")
        configs[name] = config = read_json_object(config_path)
        weights = _weights_to_check(component, variant)
        if value[1] == "GALIPGenerator":
            check_generator_types(config, config_path)
        for weight_set in weights:
            shapes = weight_set.shapes()  # every shard's header: a corrupt file is named
            if shapes is not None:
                check_config_against_weights(str(value[1]), config, config_path, weight_set.describe(), shapes)
    classes = {name: str(value[1]) for name, value in index.items() if isinstance(value, list) and len(value) == 2}
    if classes.get("text_encoder", "").startswith("CLIPText") and classes.get("generator") == "GALIPGenerator" \
            and "Tokenizer" in classes.get("tokenizer", "") and {"text_encoder", "generator"} <= set(configs):
        check_text_components(tokenizer_facts(os.path.join(folder, "tokenizer")), configs["text_encoder"],
                              os.path.join(folder, "text_encoder", "config.json"),
                              complete_generator_config(configs["generator"])["cond_dim"],
                              os.path.join(folder, "generator", "config.json"))


def check_pipeline_components(tokenizer: Any, text_encoder: Any, generator: Any) -> None:
    """:func:`check_text_components` for components in memory (``GALIPPipeline.__init__``, so also ``from_pipe`` and
    direct construction): the errors name the components (and the folder each was loaded from, if known). A missing
    component (``None``) is left to the call's own check."""
    if tokenizer is None or not hasattr(getattr(text_encoder, "config", None), "vocab_size"):  # not a CLIP text tower
        return

    def named(argument: str, source: Any) -> str:
        return f"`{argument}`" + (f" ({source})" if isinstance(source, str) and source else "")

    text_config = text_encoder.config.to_dict() if hasattr(text_encoder.config, "to_dict") else dict(text_encoder.config)
    cond_dim = None if generator is None else generator.config.get("cond_dim")
    source = getattr(tokenizer, "name_or_path", None)
    try:
        check_text_components(
            tokenizer_facts_of(tokenizer, named("tokenizer", source)), text_config,
            named("text_encoder", getattr(text_encoder.config, "_name_or_path", None)), cond_dim,
            named("generator", None if generator is None else generator.config.get("_name_or_path")),
        )
    except FolderError:
        folder = os.path.dirname(os.path.abspath(source)) if isinstance(source, str) and source else None
        if folder and os.path.isfile(os.path.join(folder, "model_index.json")):
            check_pipeline_folder(folder)  # loaded from a folder (diffusers' own loader): its error names the files
        raise


def missing_scorer_error(pipeline_class: str, folder: str | None = None, pipeline: Any = None) -> ValueError | None:
    """``None`` if a pipeline that needs a ``scorer`` CLIP (``GALIPFuseDreamPipeline``) can be made from ``folder``
    (its ``model_index.json`` lists a scorer) or from ``pipeline`` (it has one); else the error that says what is
    missing and how to add a scorer, raised before diffusers' loader (whose message lists every module)."""
    if folder is not None:
        entry = read_json_object(os.path.join(folder, "model_index.json")).get("scorer")
        if isinstance(entry, list) and len(entry) == 2 and entry[0] is not None:
            return None
        where = f"{os.path.join(folder, 'model_index.json')} lists none (a plain GALIPPipeline folder)"
        source = "GALIPPipeline.from_pretrained(folder)"
    else:
        if getattr(pipeline, "scorer", None) is not None:
            return None
        where, source = f"the {type(pipeline).__name__} given has none", "pipe"
    return ValueError(
        f"{pipeline_class} needs a `scorer` CLIP (another CLIP than the generator's, to judge images), but {where}. "
        f"Add one: {pipeline_class}.from_pipe({source}, scorer=CLIPModel.from_pretrained(...)), passing "
        "scorer_tokenizer=CLIPTokenizer.from_pretrained(...) too when the scorer has its own vocabulary"
        + (f"; or {pipeline_class}.from_pretrained(folder, scorer=...)." if folder is not None else ".")
    )


# ------------------------------------------------------------------------------------------ from_pipe
_KEEPING_DTYPES: contextvars.ContextVar[bool] = contextvars.ContextVar("galip_from_pipe_keeps_dtypes", default=False)


@contextlib.contextmanager
def keeping_dtypes() -> Iterator[None]:
    """Within the block, a pipeline built by ``__init__`` ignores one dtype-only ``.to(dtype=...)``: diffusers'
    ``from_pipe`` ends with ``new_pipeline.to(dtype=float32)`` unless told otherwise, which cast the shared modules
    (the original pipeline's too) and logged a spurious warning. :func:`from_pipe_arguments` casts copies instead."""
    token = _KEEPING_DTYPES.set(True)
    try:
        yield
    finally:
        _KEEPING_DTYPES.reset(token)


def skip_from_pipe_cast(pipe: Any) -> None:
    """Called at the end of ``GALIPPipeline.__init__``: within :func:`keeping_dtypes`, the next ``pipe.to`` that
    only names a dtype (diffusers' closing cast in ``from_pipe``) does nothing; ``from_pipe`` removes the override."""
    if not _KEEPING_DTYPES.get():
        return
    cast = pipe.to

    def to(*args: Any, **kwargs: Any) -> Any:
        if not args and set(kwargs) <= {"dtype"}:
            return pipe
        return cast(*args, **kwargs)

    object.__setattr__(pipe, "to", to)


def end_from_pipe(pipe: Any, settings: GALIPSettings) -> Any:
    """The end of ``GALIPPipeline.from_pipe``: undo :func:`skip_from_pipe_cast` (``pipe.to`` is the class's again)
    and set the ``settings`` (:func:`from_pipe_arguments`); returns ``pipe``."""
    vars(pipe).pop("to", None)
    pipe.settings = settings
    return pipe


def from_pipe_arguments(pipeline: Any, kwargs: dict[str, Any], modules: Any,
                        settings: Any = None) -> tuple[dict[str, Any], GALIPSettings]:  # fmt: skip
    """The arguments of ``GALIPPipeline.from_pipe`` for diffusers' ``from_pipe`` (to run within
    :func:`keeping_dtypes`), and the new pipeline's settings.

    dtype: without ``dtype``/``torch_dtype`` every module keeps its dtype (diffusers' default would cast to float32);
    with one, the modules of another dtype are copied and the copies cast, so the original pipeline, and modules the
    caller passed, never change (``modules``: the new pipeline's module names). Settings: ``settings`` if given;
    else a copy of ``pipeline.settings``, unless a ``generator`` other than the pipeline's is passed: its settings
    were measured on its own generator, so the new pipeline gets the built-in defaults, with a warning that says so."""
    import torch

    kwargs = dict(kwargs)
    dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"from_pipe got dtype={dtype} and torch_dtype={torch_dtype}; pass one.")
    dtype = dtype if dtype is not None else torch_dtype
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"`dtype` must be a torch.dtype (e.g. torch.bfloat16) or None (keep the modules' dtypes), "
                        f"got {type(dtype).__name__} {dtype!r}.")
    if settings is not None:
        settings = as_settings(settings)
    else:
        own = getattr(pipeline, "settings", None) or GALIPSettings()
        settings = GALIPSettings(own.to_dict(), source=own.source)  # a copy that still names its file
        new_generator = kwargs.get("generator")
        if new_generator is not None and new_generator is not getattr(pipeline, "generator", None) and not own.is_empty():
            logger.warning(f"from_pipe: `generator` replaces the pipeline's generator, so its recommended settings "
                           f"({own.source}), measured on that generator, are not kept: the new pipeline has the "
                           "built-in defaults. Pass `settings=` (e.g. settings=pipe.settings) to keep or set some.")
            settings = GALIPSettings()
    if dtype is not None:
        for name, module in {**dict(pipeline.components), **kwargs}.items():
            if name in modules and isinstance(module, torch.nn.Module) and any(
                t.is_floating_point() and t.dtype != dtype for t in [*module.parameters(), *module.buffers()]
            ):
                kwargs[name] = torch.nn.Module.to(copy.deepcopy(module), dtype=dtype)  # no ModelMixin warning
    return kwargs, settings


def check_config_against_weights(class_name: str, config: dict, config_path: str, weights: str, shapes: dict) -> None:
    """A component's config against its safetensors weights' shapes (read once, by the caller): the generator's
    fields (the check the fast runtime runs too, :func:`galip_core.folder.check_generator_config`), the text
    encoder's layers and widths (:func:`galip_core.folder.check_text_config`), and no tensor its class has missing."""
    if class_name == "GALIPGenerator":
        check_generator_config(complete_generator_config(config), shapes, config_path, weights)
    elif class_name == "CLIPTextModelWithProjection":
        check_text_config(config, shapes, config_path, weights)
    check_no_missing_weights(class_name, config, weights, shapes)


#: the component classes whose weights are checked for missing tensors (diffusers and transformers would fill a
#: missing one with random values, a silently wrong model; the lite runtime refuses it)
_MODEL_CLASSES = ("GALIPGenerator", "GALIPDiscriminator", "CLIPTextModelWithProjection",
                  "CLIPVisionModelWithProjection", "CLIPModel")


def check_no_missing_weights(class_name: str, config: dict, weights: str, shapes: dict) -> None:
    """:class:`FolderError` naming the file and the tensors if the weights ``shapes`` (of the safetensors weights
    ``weights``: the file a load reads, or all shards of a sharded checkpoint) lack a tensor the component's class
    has (built from its config on the meta device: nothing is allocated). Extra tensors are left to the library, as
    diffusers and transformers ignore them. Pickled ``.bin`` weights cannot be listed and are not checked."""
    if class_name not in _MODEL_CLASSES:
        return
    import torch

    with torch.device("meta"):
        if class_name.startswith("GALIP"):
            from .. import models

            model = getattr(models, class_name).from_config(config)
        else:
            import transformers

            model_class = getattr(transformers, class_name)
            model = model_class(model_class.config_class.from_dict(config))
    missing = sorted(set(model.state_dict()) - set(shapes))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise FolderError(f"{weights!r} lacks weights its {class_name} needs ({shown}): loading it would fill them "
                          "with random values. The file is incomplete or belongs to another model.")


def check_save_directory(save_directory: Any) -> None:
    """Before ``save_pretrained`` writes anything: ``save_directory`` must be a non-empty path that is not a file
    (an empty one would write into the current folder), and a ``pipeline_galip.py`` already there must be this
    package's remote-code shim, which the save rewrites (another file of that name is refused, never replaced)."""
    if not isinstance(save_directory, (str, os.PathLike)) or not os.fspath(save_directory):
        raise ValueError(f"`save_directory` must be a folder path (created if missing), got {save_directory!r}.")
    if os.path.exists(save_directory) and not os.path.isdir(save_directory):
        raise NotADirectoryError(f"`save_directory` {os.fspath(save_directory)!r} is a file; give a folder.")
    shim = os.path.join(save_directory, "pipeline_galip.py")
    if os.path.isfile(shim):
        with open(shim, encoding="utf-8", errors="replace") as f:
            if "from galip_diffusers import GALIPPipeline" not in f.read():
                raise FileExistsError(f"{shim} exists and is not GALIP's remote-code shim, which save_pretrained "
                                      "writes there: move it, or save into another folder. Nothing was written.")


def settings_of_generic_load(name_or_path: Any) -> GALIPSettings:
    """The settings of a pipeline that diffusers' own ``DiffusionPipeline.from_pretrained`` (or ``from_pipe``) built
    from ``name_or_path``: a local folder's ``galip_settings.json``. diffusers does not download that file from the
    Hub and does not pass on its download options, so a Hub id gets the built-in defaults and a warning that says how
    to load them (``GALIPPipeline.from_pretrained`` fetches them with the same revision)."""
    if isinstance(name_or_path, (str, os.PathLike)) and os.path.isdir(name_or_path):
        return GALIPSettings.from_folder(os.fspath(name_or_path))
    if name_or_path:
        logger.warning(
            f"DiffusionPipeline.from_pretrained({str(name_or_path)!r}) does not download {SETTINGS_NAME}, so this "
            "model's recommended settings are not applied: load it with GALIPPipeline.from_pretrained (same "
            "arguments), or set `pipe.settings = galip_diffusers.hub.load_pipeline_settings(repo_id, {})`."
        )
    return GALIPSettings()


def finish_saved_folder(save_directory: str | os.PathLike, settings: GALIPSettings,
                        final_folder: str | os.PathLike | None = None) -> None:  # fmt: skip
    """After diffusers' ``save_pretrained`` (into the new folder that :mod:`.saving` builds): record our component
    classes under the ``diffusers`` library name (they are registered there on ``import galip_diffusers``, and
    diffusers' Hub download step accepts it), write the remote-code shim, and the model's recommended ``settings``
    (``galip_settings.json``; none when they are empty; their ``source`` then names the file in ``final_folder``,
    where the new folder goes, default ``save_directory``)."""
    index_path = os.path.join(save_directory, "model_index.json")
    index = read_json_object(index_path)
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and str(value[0]).startswith("galip_diffusers"):
            index[key] = ["diffusers", value[1]]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(save_directory, "pipeline_galip.py"), "w", encoding="utf-8") as f:
        f.write(REMOTE_CODE_SHIM)
    if not settings.is_empty():
        settings.save(save_directory, final_folder)


def note_replaced_settings(save_directory: str | os.PathLike, settings: GALIPSettings) -> None:
    """After a save of a pipeline without ``settings`` replaced a folder that had a ``galip_settings.json`` (the
    recommended settings of the model saved there before, which do not describe this one): a warning that says so."""
    if settings.is_empty():
        settings_path = os.path.join(save_directory, SETTINGS_NAME)
        logger.warning(f"Removed {settings_path}, the recommended settings of the model saved in this folder before: "
                       "this pipeline has none. Set `pipe.settings` before saving to keep settings in the folder.")
