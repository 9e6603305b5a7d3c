"""Gradio demo of a GALIP pipeline (``galip-demo``; ``pip install "galip-diffusers[demo]"``).

The logic is plain Python that the tests call directly: :mod:`.inputs` (validation, the prompt token cap),
:mod:`.media` (strip, GIF) and :mod:`.backend` (model loading, timed requests). Only :mod:`.app` imports gradio, when
a page is built, so importing this package never needs gradio.

    from galip_diffusers.demo import DemoBackend, build_demo
    from galip_diffusers.demo.app import launch_demo
    demo = build_demo(DemoBackend.from_model("path/to/galip-folder"))
    launch_demo(demo)  # demo.launch() with the demo's settings: uploads capped, tracebacks kept in the server log
"""

from __future__ import annotations

from typing import Any

from galip_diffusers.demo.backend import DemoBackend, DemoModelError, GenerationResult, InterpolationResult, load_pipeline, make_refiner
from galip_diffusers.demo.inputs import (
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    DemoInputError,
    cap_prompt,
    validate_generation,
    validate_interpolation,
)
from galip_diffusers.demo.media import make_gif, make_strip, upscale


def build_demo(backend: DemoBackend, concurrency_limit: int = 1, max_queue: int = 32) -> Any:
    """The ``gr.Blocks`` page over ``backend`` (imports gradio); see :func:`galip_diffusers.demo.app.build_demo`."""
    from galip_diffusers.demo.app import build_demo as _build_demo

    return _build_demo(backend, concurrency_limit=concurrency_limit, max_queue=max_queue)


__all__ = [
    "MAX_IMAGES", "MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS", "DemoBackend", "DemoInputError", "DemoModelError",
    "GenerationResult", "InterpolationResult", "build_demo", "cap_prompt", "load_pipeline", "make_gif",
    "make_refiner", "make_strip", "upscale", "validate_generation", "validate_interpolation",
]  # fmt: skip
