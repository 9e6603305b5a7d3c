"""The models shipped inside the package, by short name, and the default one.

Kept apart from :mod:`galip_core.runtime` (which imports torch) so that the command-line parsers can name the
default model without importing torch.
"""

import logging
import os

logger = logging.getLogger(__name__)

#: packaged models, loadable by short name (``GALIPPipeline.from_pretrained("galip-emoji")``)
PACKAGED_MODELS = ("galip-shapes", "galip-emoji")
#: the model of ``galip generate``, ``galip demo`` and ``from_pretrained(None)``
DEFAULT_MODEL = "galip-emoji"


def unknown_model_note(name: object) -> str:
    """What to say when ``name`` is neither a local folder nor a packaged model: the packaged names, and the closest
    one when ``name`` looks like a misspelling of it (``"galip_emoji"``)."""
    import difflib

    close = difflib.get_close_matches(str(name).lower(), PACKAGED_MODELS, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}packaged models: {', '.join(PACKAGED_MODELS)}"


def choose_local_or_packaged(name: str, packaged_folder: str) -> str:
    """What a packaged model's name means when the current folder also has an entry of that name: the local entry
    if it is a pipeline folder (it has a ``model_index.json``; logged at info level, with the packaged model's
    folder for whoever meant that one), else ``packaged_folder`` (a warning names the local entry that was ignored:
    an output folder or a file of that name is not a model)."""
    if os.path.isfile(os.path.join(name, "model_index.json")):
        logger.info(f"Loading the local folder {os.path.abspath(name)!r}, which has the name of a packaged model; for "
                    f"the packaged {name!r}, pass its folder: {packaged_folder!r} "
                    f"(galip_diffusers.pretrained.PRETRAINED_MODELS[{name!r}]).")
        return name
    if os.path.lexists(name):
        kind = "folder" if os.path.isdir(name) else "file"
        logger.warning(f"Ignoring the local {kind} {os.path.abspath(name)!r} (not a pipeline folder: no "
                       f"model_index.json); loading the packaged model {name!r}.")
    return packaged_folder
