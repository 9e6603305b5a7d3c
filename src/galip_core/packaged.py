"""The models shipped inside the package, by short name, and the default one.

Kept apart from :mod:`galip_core.runtime` (which imports torch) so that the command-line parsers can name the
default model without importing torch.
"""

#: packaged models, loadable by short name (``GALIPPipeline.from_pretrained("galip-emoji")``)
PACKAGED_MODELS = ("galip-shapes", "galip-emoji")
#: the model of ``galip generate``, ``galip demo`` and ``from_pretrained(None)``
DEFAULT_MODEL = "galip-emoji"
