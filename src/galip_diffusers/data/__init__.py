"""Data sets for galip-diffusers: the procedural captioned shapes (:mod:`.shapes`, re-exported here) and the emoji
image-caption set (:mod:`.emoji`).

The re-exports are resolved on first use (PEP 562), so that ``python -m galip_diffusers.data.shapes`` runs the module
once, as ``__main__``, without importing it a second time through this package."""

__all__ = [
    "all_captions",
    "generate_shapes",
    "is_held_out",
    "make_caption",
    "make_dataset",
    "parse_caption",
    "predict_attributes",
    "score_images",
    "to_imagefolder",
]


def __getattr__(name: str):
    if name in __all__:
        from galip_diffusers.data import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
