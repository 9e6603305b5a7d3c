"""The demo's input rules, as plain functions (no gradio): validation of every request field, the prompt token cap.

A rule that is broken raises :class:`DemoInputError` with a message that names the field and its allowed values; the
UI shows that message (never a traceback). Requests can come from the web page or from the Gradio API, so the server
checks everything even where the widgets already limit the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from galip_core.text import short_repr
from galip_diffusers.conversion.tokenizer import clip_text_clean

#: CLIP's context length: start token + 75 prompt tokens + end token.
MAX_PROMPT_TOKENS = 77
#: Longest prompt accepted, in characters, checked before any text cleaning or tokenizing. CLIP reads at most 77
#: tokens (roughly 300-400 characters of English), so a longer prompt is cut anyway; this bound only keeps a huge one
#: from holding the server: cleaning and tokenizing cost about 2 us and 200 bytes per character (4 MB: 9 s, +0.9 GB).
MAX_PROMPT_CHARS = 2000
MAX_IMAGES = 16
MAX_SEED = 2**32 - 1
MAX_TRUNCATION = 10.0
MIN_FRAMES, MAX_FRAMES = 2, 32
MAX_REFINE_STEPS = 200
#: Refinement work per request, images x steps (16 x 200 held a 2-core CPU server for ~18 min; 320 is ~2 min there).
MAX_REFINE_WORK = 320


class DemoInputError(ValueError):
    """A request the demo cannot serve; the message is meant for the user."""


@dataclass(frozen=True)
class CappedPrompt:
    """A prompt cut to the model's token limit.

    Attributes:
        text: the prompt that will be used (the input unchanged when it fits).
        num_tokens: tokens of the input, start and end tokens included.
        limit: the limit applied, start and end tokens included.
    """

    text: str
    num_tokens: int
    limit: int

    @property
    def truncated(self) -> bool:
        return self.num_tokens > self.limit

    @property
    def warning(self) -> Optional[str]:
        if not self.truncated:
            return None
        return (
            f"The prompt has {self.num_tokens} tokens; the model reads at most {self.limit} (start and end tokens "
            f"included), so only this part is used: \"{self.text}\"."
        )


def token_limit(tokenizer: Any, max_tokens: int = MAX_PROMPT_TOKENS) -> int:
    """``max_tokens``, or the tokenizer's ``model_max_length`` when that is smaller (it may be a huge sentinel)."""
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 2 < model_max < max_tokens:
        return model_max
    return max_tokens


def cap_prompt(prompt: str, tokenizer: Any, max_tokens: int = MAX_PROMPT_TOKENS) -> CappedPrompt:
    """Cut ``prompt`` to ``token_limit(tokenizer, max_tokens)`` tokens (start and end tokens included).

    Tokens are counted on the text the pipeline encodes (after CLIP's text cleaning). A prompt that fits is returned
    unchanged; a longer one is replaced by the decoded text of its first ``limit - 2`` tokens."""
    limit = token_limit(tokenizer, max_tokens)
    def tokens(text: str) -> list[int]:
        return tokenizer(clip_text_clean(text), add_special_tokens=False, verbose=False)["input_ids"]

    ids = tokens(prompt)
    num_tokens = len(ids) + 2
    if num_tokens <= limit:
        return CappedPrompt(prompt, num_tokens, limit)
    # A byte-level BPE can split one character (an emoji, CJK) over several tokens, and decoded text can re-tokenize
    # differently: drop tokens until the text is whole (no U+FFFD) and really fits.
    for keep in range(limit - 2, 0, -1):
        text = tokenizer.decode(ids[:keep], skip_special_tokens=True).strip()
        if "\ufffd" not in text and len(tokens(text)) <= limit - 2:
            return CappedPrompt(text, num_tokens, limit)
    return CappedPrompt("", num_tokens, limit)


# ------------------------------------------------------------------------------------------------------- fields
def check_prompt(prompt: Any, name: str = "prompt", max_chars: int = MAX_PROMPT_CHARS) -> str:
    """The prompt, stripped; empty is an error, also when only what CLIP's text cleaning removes is left (control
    characters), which would give an unconditioned image.

    The type and the length are checked first: API calls can send any JSON value, and a prompt of megabytes would
    spend seconds and gigabytes in the cleaning and the tokenizer (:data:`MAX_PROMPT_CHARS`)."""
    if prompt is None:
        raise DemoInputError(f"Enter a {name}: it is empty.")
    if not isinstance(prompt, str):
        raise DemoInputError(f"{name} must be text, got {type(prompt).__name__} {short_repr(prompt)}.")
    if len(prompt) > max_chars:
        raise DemoInputError(
            f"{name} must be at most {max_chars} characters, got {len(prompt)}: the model reads at most "
            f"{MAX_PROMPT_TOKENS} tokens (a few hundred characters), so shorten it."
        )
    if not clip_text_clean(prompt):
        raise DemoInputError(f"Enter a {name}: it is empty.")
    return prompt.strip()


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """An integer in [low, high]; integral floats (what number widgets send) are accepted."""
    if isinstance(value, bool) or value is None:
        raise DemoInputError(f"{name} must be an integer from {low} to {high}, got {short_repr(value)}.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise DemoInputError(f"{name} must be an integer from {low} to {high}, got {short_repr(value)}.")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise DemoInputError(f"{name} must be an integer from {low} to {high}, got {short_repr(value)}.") from None
    if not isinstance(value, int) or not low <= value <= high:
        raise DemoInputError(f"{name} must be an integer from {low} to {high}, got {short_repr(value)}.")
    return value


def check_truncation(value: Any) -> Optional[float]:
    """``None`` or 0 turn the truncation trick off; otherwise a number in (0, MAX_TRUNCATION]."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 < value <= MAX_TRUNCATION):
        raise DemoInputError(f"truncation must be 0 (off) or a number in (0, {MAX_TRUNCATION:g}], "
                             f"got {short_repr(value)}.")
    return float(value)


# ------------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class GenerationRequest:
    """A checked request of the generation tab."""

    prompt: str
    seed: int
    num_images: int
    truncation: Optional[float] = None
    refine: bool = False
    refine_steps: int = 0
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class InterpolationRequest:
    """A checked request of the interpolation tab."""

    prompts: tuple[str, str]
    seeds: tuple[int, int]
    num_frames: int
    warnings: tuple[str, ...] = field(default=())


def validate_generation(
    prompt: Any, seed: Any, num_images: Any, truncation: Any = None, refine: Any = False, refine_steps: Any = 0, *,
    tokenizer: Any, can_refine: bool = False, max_images: int = MAX_IMAGES, max_refine_work: int = MAX_REFINE_WORK,
) -> GenerationRequest:
    """Check the generation tab's fields and cap the prompt; raise :class:`DemoInputError` on the first bad one.
    A refined request may do at most ``max_refine_work`` images x steps."""
    capped = cap_prompt(check_prompt(prompt), tokenizer)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    num_images = check_int(num_images, "number of images", 1, max_images)
    truncation = check_truncation(truncation)
    if not isinstance(refine, (bool, np.bool_)):  # bool("false") is True: only real booleans
        raise DemoInputError(f"refine must be true or false, got {short_repr(refine)}.")
    refine = bool(refine)
    steps = 0
    if refine:
        if not can_refine:
            raise DemoInputError("CLIP refinement is not available for this model (it has no scorer CLIP).")
        steps = check_int(refine_steps, "refinement steps", 1, MAX_REFINE_STEPS)
        if num_images * steps > max_refine_work:
            raise DemoInputError(
                f"number of images x refinement steps must be at most {max_refine_work} per request, got "
                f"{num_images} x {steps} = {num_images * steps}: fewer images or fewer steps "
                f"(e.g. {num_images} x {max(1, max_refine_work // num_images)})."
            )
    warnings = (capped.warning,) if capped.warning else ()
    return GenerationRequest(capped.text, seed, num_images, truncation, refine, steps, warnings)


def validate_interpolation(
    prompt_a: Any, prompt_b: Any, seed_a: Any, seed_b: Any, num_frames: Any, *, tokenizer: Any,
) -> InterpolationRequest:
    """Check the interpolation tab's fields and cap both prompts."""
    # both prompts are checked before either is tokenized
    prompts = [check_prompt(prompt_a, "first prompt"), check_prompt(prompt_b, "second prompt")]
    capped = [cap_prompt(prompt, tokenizer) for prompt in prompts]
    seeds = (check_int(seed_a, "first seed", 0, MAX_SEED), check_int(seed_b, "second seed", 0, MAX_SEED))
    num_frames = check_int(num_frames, "number of frames", MIN_FRAMES, MAX_FRAMES)
    labels = ("First prompt", "Second prompt")
    warnings = tuple(f"{label}: {c.warning}" for label, c in zip(labels, capped) if c.warning)
    return InterpolationRequest((capped[0].text, capped[1].text), seeds, num_frames, warnings)
