"""Data sets for galip-diffusers (currently the procedural captioned-shapes set)."""

from galip_diffusers.data.shapes import (
    all_captions,
    generate_shapes,
    is_held_out,
    make_caption,
    make_dataset,
    parse_caption,
    predict_attributes,
    score_images,
    to_imagefolder,
)

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
