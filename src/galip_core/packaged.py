"""The models shipped inside the package, by short name, and the default one.

Kept apart from :mod:`galip_core.runtime` (which imports torch) so that the command-line parsers can name the
default model without importing torch.
"""

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
