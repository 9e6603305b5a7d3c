"""What the demo does for a request, without gradio: load the pipeline (and its CLIP refiner, when it has a scorer),
generate, refine, interpolate, and time every request.

:class:`DemoBackend` takes the raw widget values, checks them (:mod:`.inputs`), runs the pipeline and returns the
pictures with a one-line status that states how long the request took. Errors are :class:`DemoInputError` (bad input)
or :class:`DemoModelError` (the model cannot be loaded), with messages meant for the user.
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import PIL.Image
import torch

from galip_diffusers.conversion.model_card import hub_ids
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline
from galip_diffusers.pipelines.pipeline_galip_fusedream import GALIPFuseDreamPipeline
from galip_diffusers.pretrained import DEFAULT_MODEL, resolve_pretrained
from galip_diffusers.utils import dtype_kwargs
from galip_diffusers.demo.inputs import (
    MAX_IMAGES,
    MAX_REFINE_STEPS,
    MAX_REFINE_WORK,
    DemoInputError,
    GenerationRequest,
    InterpolationRequest,
    validate_generation,
    validate_interpolation,
)
from galip_diffusers.demo.media import make_gif, make_strip, upscale

#: the page's example prompts for a model whose settings name none (captioned-shapes style)
BUILTIN_EXAMPLE_PROMPTS = (
    "a large red circle on a white background",
    "a small blue square on a black background",
    "a small green triangle on a gray background",
    "a large purple triangle on a white background",
)
#: FuseDream settings of the demo's "refine with CLIP" (small, so that a request takes seconds on a CPU).
REFINE_SETTINGS: dict[str, Any] = {
    "num_candidates": 16, "top_k": 4, "num_augmentations": 8, "num_measure_augmentations": 8, "lr": 5e-3,
    "optimize": "noise+text",
}  # fmt: skip
#: Images shown in the gallery and the GIF are enlarged (nearest neighbour) to at least this many pixels.
DISPLAY_SIZE = 256
STRIP_FRAME_SIZE = 96
STRIP_COLUMNS = 8
#: GIFs kept on disk per backend (older ones are deleted): gradio serves its own copy, made when the request returns,
#: and deletes that after an hour (``app.DELETE_CACHE``). The folder itself goes at :meth:`DemoBackend.close`.
KEEP_GIFS = 16


class DemoModelError(RuntimeError):
    """The demo's model cannot be loaded; the message says what to pass instead."""


@dataclass
class GenerationResult:
    images: list[PIL.Image.Image]
    seconds: float
    status: str
    warnings: tuple[str, ...] = ()


@dataclass
class InterpolationResult:
    frames: list[PIL.Image.Image]
    strip: PIL.Image.Image
    gif_path: str
    seconds: float
    status: str
    warnings: tuple[str, ...] = ()


def load_pipeline(model: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> GALIPPipeline:
    """Load ``model`` (a folder, a Hub id or a packaged short name such as ``galip-shapes``; ``None``: the packaged
    default) as a ``GALIPPipeline``.

    Raises :class:`DemoModelError` when the model is missing or cannot be loaded, saying what to pass instead."""
    try:
        path = resolve_pretrained(model)
    except FileNotFoundError as err:
        raise DemoModelError(
            f"{err} Pass --model PATH: a GALIP pipeline folder (from `galip convert`, training/train_galip.py or "
            "`pipe.save_pretrained`) or a Hub repo id."
        ) from err
    path = os.fspath(path)
    if not os.path.isdir(path) and not hub_ids(path):
        raise DemoModelError(f"--model: {path!r} is neither a folder nor a Hub repo id (owner/name).")
    try:
        pipe = GALIPPipeline.from_pretrained(path, **dtype_kwargs(dtype))
    except Exception as err:  # noqa: BLE001  (any loader failure becomes one message)
        raise DemoModelError(
            f"--model {model!r} could not be loaded as a GALIP pipeline: {type(err).__name__}: {err}"
        ) from err
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_refiner(pipe: GALIPPipeline, model_path: Optional[str] = None) -> tuple[Optional[GALIPFuseDreamPipeline], str]:
    """The FuseDream refiner built on ``pipe``'s modules (nothing is copied), or ``None`` and the reason it is
    unavailable. A ``scorer_tokenizer/`` next to the pipeline's components is used when present."""
    if getattr(pipe, "scorer", None) is None:
        return None, "CLIP refinement needs a scorer CLIP in the model folder; this model has none."
    scorer_tokenizer = None
    if model_path and os.path.isdir(os.path.join(model_path, "scorer_tokenizer")):
        from transformers import CLIPTokenizer

        scorer_tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="scorer_tokenizer")
    try:
        refiner = GALIPFuseDreamPipeline(
            tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, generator=pipe.generator, scorer=pipe.scorer,
            image_encoder=pipe.image_encoder, scorer_tokenizer=scorer_tokenizer,
        )
    except (ValueError, TypeError) as err:
        return None, f"CLIP refinement is unavailable: {err}"
    refiner.set_progress_bar_config(disable=True)
    return refiner, "Refinement searches the noise and text embedding for a better scorer-CLIP match (FuseDream)."


class DemoBackend:
    """The demo's model and request handlers (no UI code).

    Args:
        pipe: the loaded pipeline.
        refiner: a `GALIPFuseDreamPipeline` sharing `pipe`'s modules, or None.
        refine_note: why refinement is unavailable, or what it does.
        model_name: shown in the page header.
        max_images: images per request (at most `MAX_IMAGES`).
        max_refine_work: images x refinement steps per refined request (at least `max_images`: one step each).
    """

    def __init__(
        self, pipe: GALIPPipeline, refiner: Optional[GALIPFuseDreamPipeline] = None, refine_note: str = "",
        model_name: str = "", max_images: int = MAX_IMAGES, max_refine_work: int = MAX_REFINE_WORK,
    ):
        if not 1 <= max_images <= MAX_IMAGES:
            raise ValueError(f"max_images must be from 1 to {MAX_IMAGES}, got {max_images}.")
        if not max_images <= max_refine_work <= max_images * MAX_REFINE_STEPS:
            raise ValueError(f"max_refine_work must be from max_images ({max_images}) to "
                             f"{max_images * MAX_REFINE_STEPS}, got {max_refine_work}.")
        self.max_refine_work = max_refine_work
        self.pipe, self.refiner, self.refine_note = pipe, refiner, refine_note
        self.model_name = model_name
        self.max_images = max_images
        self._gif_dir = tempfile.TemporaryDirectory(prefix="galip-demo-")
        self._gifs: collections.deque[str] = collections.deque()

    @classmethod
    def from_model(cls, model: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   max_images: int = MAX_IMAGES, max_refine_work: int = MAX_REFINE_WORK) -> "DemoBackend":
        """Load ``model`` (see :func:`load_pipeline`) and its refiner, if it has a scorer."""
        pipe = load_pipeline(model, device, dtype)
        path = os.fspath(resolve_pretrained(model))
        refiner, note = make_refiner(pipe, path if os.path.isdir(path) else None)
        return cls(pipe, refiner, note, model_name=str(model or DEFAULT_MODEL), max_images=max_images,
                   max_refine_work=max_refine_work)

    # ---------------------------------------------------------------------------------------------- description
    @property
    def can_refine(self) -> bool:
        return self.refiner is not None

    @property
    def default_truncation(self) -> float:
        """The truncation slider's start: the model's recommended ``sampling.truncation`` (0, off, without one)."""
        return float(self.pipe.settings.defaults("sampling")["truncation"] or 0.0)

    @property
    def example_prompts(self) -> list[str]:
        """The model's example prompts (``prompts.examples`` of its ``galip_settings.json``), else the demo's built-in
        ones (:data:`BUILTIN_EXAMPLE_PROMPTS`): the page's examples, and its first two are the starting prompts."""
        return list(self.pipe.settings.defaults("prompts")["examples"] or BUILTIN_EXAMPLE_PROMPTS)

    def default_refine_steps(self, upper: int) -> int:
        """The refinement-steps slider's start: the model's recommended ``refinement.num_steps`` if it has one (in
        [1, ``upper``]), else 20."""
        steps = self.pipe.settings.sections.get("refinement", {}).get("num_steps", 20)
        return int(min(max(steps, 1), upper))

    @property
    def image_size(self) -> int:
        return int(self.pipe.generator.config.output_size)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def describe(self) -> str:
        """One Markdown line about the loaded model."""
        params = sum(p.numel() for p in self.pipe.generator.parameters())
        return (f"Model `{self.model_name}`: {self.image_size}x{self.image_size} px, generator {params / 1e6:.2f}M "
                f"parameters, {self.pipe.generator.dtype} on {self.device}.")

    # ----------------------------------------------------------------------------------------------- requests
    def generate(
        self, prompt: Any, seed: Any, num_images: Any, truncation: Any = 0, refine: Any = False, refine_steps: Any = 0,
    ) -> GenerationResult:
        """Check the inputs and make ``num_images`` images (refined with CLIP if asked); time the request: the wall
        time from the call to the enlarged images (prompt checks and tokenizing included), and the model's part."""
        start = time.perf_counter()
        request = validate_generation(prompt, seed, num_images, truncation, refine, refine_steps,
                                      tokenizer=self.pipe.tokenizer, can_refine=self.can_refine,
                                      max_images=self.max_images, max_refine_work=self.max_refine_work)
        model_start = time.perf_counter()
        images, refine_text = self._run(request)
        model_seconds = time.perf_counter() - model_start
        shown = upscale(images, DISPLAY_SIZE)
        seconds = time.perf_counter() - start
        status = (f"{len(images)} image(s) of {self.image_size}x{self.image_size} px in **{seconds:.3f} s** "
                  f"(wall time; model {model_seconds:.3f} s, {1000 * model_seconds / len(images):.1f} ms per image) "
                  f"on {self.device.type}, seed {request.seed}"
                  f"{', truncation ' + format(request.truncation, 'g') if request.truncation else ''}.{refine_text}")
        return GenerationResult(shown, seconds, status, request.warnings)

    def _run(self, request: GenerationRequest) -> tuple[list[PIL.Image.Image], str]:
        generator = torch.Generator().manual_seed(request.seed)
        if not request.refine:
            out = self.pipe(request.prompt, num_images_per_prompt=request.num_images, generator=generator,
                            truncation=request.truncation or 0)  # 0: the slider's "off" wins over the model's setting
            return out.images, ""
        out = self.refiner(request.prompt, num_images_per_prompt=request.num_images, num_steps=request.refine_steps,
                           truncation=request.truncation or 0, generator=generator, **REFINE_SETTINGS)
        before, after = out.scores_before.mean().item(), out.scores_after.mean().item()
        return out.images, (f" Refined with CLIP ({request.refine_steps} steps): mean scorer AugCLIP {before:.3f} → "
                            f"{after:.3f}.")

    def interpolate(
        self, prompt_a: Any, prompt_b: Any, seed_a: Any, seed_b: Any, num_frames: Any
    ) -> InterpolationResult:
        """Frames from (prompt_a, seed_a) to (prompt_b, seed_b): a strip and an animated GIF; time the request.

        The first frame is the generation tab's first image for (prompt_a, seed_a), the last frame the one for
        (prompt_b, seed_b): each endpoint's noise comes from its own seed."""
        start = time.perf_counter()
        request = validate_interpolation(prompt_a, prompt_b, seed_a, seed_b, num_frames, tokenizer=self.pipe.tokenizer)
        model_start = time.perf_counter()
        frames = self._interpolate(request)
        model_seconds = time.perf_counter() - model_start
        strip = make_strip(upscale(frames, STRIP_FRAME_SIZE), columns=STRIP_COLUMNS)
        gif_path = make_gif(upscale(frames, DISPLAY_SIZE), self._new_gif_path())
        seconds = time.perf_counter() - start
        status = (f"{len(frames)} frames of {self.image_size}x{self.image_size} px in **{seconds:.3f} s** (wall "
                  f"time; model {model_seconds:.3f} s, {1000 * model_seconds / len(frames):.1f} ms per frame) on "
                  f"{self.device.type}, seeds "
                  f"{request.seeds[0]} → {request.seeds[1]}.")
        return InterpolationResult(frames, strip, gif_path, seconds, status, request.warnings)

    def _interpolate(self, request: InterpolationRequest) -> list[PIL.Image.Image]:
        generators = [torch.Generator().manual_seed(seed) for seed in request.seeds]
        return self.pipe.interpolate(list(request.prompts), num_steps=request.num_frames, generator=generators).images

    def _new_gif_path(self) -> str:
        path = os.path.join(self._gif_dir.name, f"galip-interpolation-{uuid.uuid4().hex[:12]}.gif")
        self._gifs.append(path)
        while len(self._gifs) > KEEP_GIFS:
            try:
                os.remove(self._gifs.popleft())
            except FileNotFoundError:
                pass
        return path

    def close(self) -> None:
        """Delete the GIFs written so far, and their folder (safe to call twice)."""
        self._gif_dir.cleanup()


__all__ = ["DemoBackend", "DemoInputError", "DemoModelError", "GenerationResult", "InterpolationResult",
           "load_pipeline", "make_refiner"]
