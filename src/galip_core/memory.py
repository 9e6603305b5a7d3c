"""An up-front estimate of the memory a generation call needs, so that ``num_images_per_prompt=10**6`` is refused at
once, naming what to change, instead of running until an allocation fails minutes later (or the OOM killer ends the
process). Shared by ``GALIPPipeline``, the fast runtime and ``galip generate``. Torch only.

What a call holds at its peak, as measured with the process's RSS high-water mark
(``tests/pipelines/test_memory_guard.py``):

- for every image: its noise and sentence embedding (float32), the generator's output (the pipeline's dtype; chunks
  are copied into one tensor and clamped in place) and the returned output (:data:`OUTPUT_BYTES`);
- the generator's activations over one chunk of ``max_batch_size`` images (all of them without chunking);
- the post-processing of :func:`postprocess_in_chunks`: a few float copies of a chunk of
  :data:`POSTPROCESS_CHUNK_BYTES`;
- before all that, the text encoder's activations over one chunk of prompts (:func:`text_encoder_bytes`);
- on the CPU, memory the C allocator keeps after a chunk's temporaries are freed (:data:`ALLOCATOR_SLACK`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from galip_core.finite import check_number_in_range
from galip_core.layers import generator_channels
from galip_core import machine

#: bytes per output value kept until the call returns: PIL stores RGB as 4 bytes per pixel, ``np``/``pt`` are
#: float32, ``latent`` is the generator's output itself
OUTPUT_BYTES = {"pil": 4 / 3, "np": 4, "pt": 4, "latent": 0}
#: float32 bytes of generator output post-processed at a time: small enough that diffusers' image processor's
#: copies of it stay below glibc's mmap threshold and are reused chunk after chunk instead of piling up
POSTPROCESS_CHUNK_BYTES = 8 * 2**20
#: float32 copies of a post-processing chunk alive at once (denormalised, ``* 255``, rounded), one more to cast
POSTPROCESS_COPIES = 3
#: copies of a text layer's (tokens, hidden_size) state alive at once (residual, norm, q, k, v, attention output)
TEXT_HIDDEN_COPIES = 8
#: bytes per image (and per prompt) beyond the tensors: the PIL and Python objects, the prompt's token ids
PER_IMAGE_OVERHEAD = 2048
#: RSS the C allocator keeps (freed, not returned) across a CPU call's chunks: 0 to 260 MiB measured on calls of
#: hundreds of MiB (glibc's heap and its dynamic mmap threshold); counted up to what the call itself holds
ALLOCATOR_SLACK = 256 * 2**20
#: transformers' ``CLIPTextConfig`` defaults, for a text encoder config that leaves a field out
CLIP_TEXT_DEFAULTS = {"max_position_embeddings": 77, "hidden_size": 512, "intermediate_size": 2048,
                      "num_attention_heads": 8}  # fmt: skip


def check_max_batch_size(max_batch_size: Any) -> None:
    """``ValueError`` unless ``max_batch_size`` is ``None`` (one pass) or an integer >= 1."""
    if max_batch_size is not None:
        check_number_in_range("`max_batch_size` (None: one pass)", max_batch_size, 1, integer=True)


def prompt_runs(prompts: Sequence[str], num_images_per_prompt: int,
                max_batch_size: int | None = None) -> list[tuple[list[int], list[int]]]:  # fmt: skip
    """The text encoder's batches when the images (prompt ``i``'s ``num_images_per_prompt`` adjacent) are made
    ``max_batch_size`` at a time (``None``: all at once): for each chunk, the indices of the prompts to encode and how
    many of the chunk's images each embedding serves. A run of equal prompts is encoded once, so
    ``(["a", "b"], 2, 3)`` and ``(["a", "a", "b"], 1)`` both encode ``["a", "b"]``, with the same float rounding:
    ``galip generate``, writing a call's images a batch at a time, gets exactly that call's embeddings (the text
    encoder's rounding depends on the batch). Both engines encode this way."""
    check_max_batch_size(max_batch_size)
    per, total = num_images_per_prompt, len(prompts) * num_images_per_prompt
    runs = []
    for start in range(0, total, max_batch_size or total):
        stop, indices, counts = min(start + (max_batch_size or total), total), [], []
        for i in range(start // per, (stop - 1) // per + 1):
            count = min(stop, (i + 1) * per) - max(start, i * per)
            if indices and prompts[indices[-1]] == prompts[i]:
                counts[-1] += count
            else:
                indices.append(i)
                counts.append(count)
        runs.append((indices, counts))
    return runs


def encode_runs(encode: Callable[[list[int]], torch.Tensor], prompts: Sequence[str], num_images_per_prompt: int,
                max_batch_size: int | None = None) -> torch.Tensor:  # fmt: skip
    """One sentence embedding per image: ``encode(indices)`` (the embeddings of those prompts) run over each batch
    of :func:`prompt_runs`, each row copied for the images it serves into one tensor allocated once (a list of
    small per-chunk results, each allocated after a chunk's large temporaries, fragments the heap: 650 MiB held
    for 20,000 prompts in chunks of 64, against 57 MiB this way)."""
    embeds, start = None, 0
    for indices, counts in prompt_runs(prompts, num_images_per_prompt, max_batch_size):
        part = encode(indices)
        if embeds is None:
            embeds = part.new_empty((len(prompts) * num_images_per_prompt, *part.shape[1:]))
        rows = torch.arange(len(counts), device=part.device).repeat_interleave(torch.tensor(counts, device=part.device))
        embeds[start : start + len(rows)] = part[rows]  # a slice copy: autograd follows it (FuseDream's gradients)
        start += len(rows)
    return embeds


def postprocess_chunk(output_size: int) -> int:
    """Images per post-processing chunk: :data:`POSTPROCESS_CHUNK_BYTES` of float32 (at least one image)."""
    return max(1, POSTPROCESS_CHUNK_BYTES // (3 * output_size * output_size * 4))


def postprocess_in_chunks(postprocess: Callable[[torch.Tensor], Any], images: torch.Tensor) -> Any:
    """``postprocess(images)`` (a list, an array or a tensor over the batch), applied :func:`postprocess_chunk` images
    at a time and joined, so that its float copies never span the whole batch (diffusers' image processor makes
    three of them at once). ``postprocess`` must work image by image (the image processor, ``to_pil``), so the
    result equals the unchunked one exactly."""
    chunk = postprocess_chunk(images.shape[-1])
    if images.shape[0] <= chunk:
        return postprocess(images)
    parts = (postprocess(images[start : start + chunk]) for start in range(0, images.shape[0], chunk))
    first = next(parts)
    if isinstance(first, list):
        return first + [image for part in parts for image in part]
    shape = (images.shape[0], *first.shape[1:])
    out = np.empty(shape, first.dtype) if isinstance(first, np.ndarray) else first.new_empty(shape)
    out[:chunk] = first
    for start, part in zip(range(chunk, images.shape[0], chunk), parts):
        out[start : start + len(part)] = part
    return out


def text_encoder_bytes(text_config: Any, num_prompts: int, dtype_bytes: int = 4) -> int:
    """Bytes CLIP's text tower holds while encoding ``num_prompts`` prompts in one pass, padded to
    ``max_position_embeddings`` tokens: one layer's hidden states, its MLP's two wide tensors and the attention
    scores, plus the token ids and Python objects of each prompt. ``text_config``: the text encoder's
    ``config.json`` as a dict, or transformers' config object (a missing field takes :data:`CLIP_TEXT_DEFAULTS`)."""
    def field(key: str) -> int:
        if isinstance(text_config, Mapping):
            return text_config.get(key, CLIP_TEXT_DEFAULTS[key])
        return getattr(text_config, key, CLIP_TEXT_DEFAULTS[key])

    tokens, width = field("max_position_embeddings"), field("hidden_size")
    per_prompt = tokens * (TEXT_HIDDEN_COPIES * width + 2 * field("intermediate_size")
                           + field("num_attention_heads") * tokens) * dtype_bytes  # fmt: skip
    return num_prompts * (per_prompt + PER_IMAGE_OVERHEAD)


def estimate_call_bytes(config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                        dtype_bytes: int = 4, *, output_type: str = "pil", text_config: Any = None,
                        num_prompts: int | None = None, device_type: str = "cpu") -> int:  # fmt: skip
    """Bytes a call making ``num_images`` needs at its peak (see the module docstring): the largest of the text
    encoder's pass (counted when ``text_config`` and ``num_prompts`` are given: prompts are encoded once per chunk of
    ``max_batch_size`` images), the generator's pass over one chunk and the post-processing, each with what is alive
    meanwhile, plus :data:`ALLOCATOR_SLACK` on the CPU."""
    size, chunk = config["output_size"], min(num_images, max_batch_size or num_images)
    values = 3 * size * size
    channels = generator_channels(config["ngf"], size)
    # the widest G-block output at its size, a few tensors alive at once (input, fused, conv, shortcut)
    sizes = [min(2 ** (3 + i), size) for i in range(len(channels))]
    per_image_forward = 4 * max(c * s * s for c, s in zip(channels, sizes)) * dtype_bytes
    kept = num_images * ((config["z_dim"] + config["cond_dim"]) * 4 + values * dtype_bytes + PER_IMAGE_OVERHEAD)
    forward = chunk * (per_image_forward + values * dtype_bytes)  # and the chunk's output, before it is copied
    post = 0
    if output_type != "latent":
        copies = POSTPROCESS_COPIES + (dtype_bytes != 4)
        post_chunk = min(num_images, postprocess_chunk(size))
        post = num_images * values * OUTPUT_BYTES[output_type] + copies * post_chunk * values * 4
    text = 0
    if text_config is not None and num_prompts:
        text = text_encoder_bytes(text_config, min(num_prompts, max_batch_size or num_prompts), dtype_bytes)
    held = max(text, kept + max(forward, post))
    # the allocator can keep back no more than the call itself allocates: a small call gets a small slack
    slack = min(ALLOCATOR_SLACK, held) if device_type == "cpu" else 0
    return int(held + slack)


def memory_text(size: float) -> str:
    """``size`` bytes as the memory errors show it: GiB with one decimal, MiB below 1 GiB (not "0.0 GiB")."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def images_text(count: int, size: int) -> str:
    """``"1 image of 64 px"`` / ``"300 images of 64 px"``."""
    return f"{count} image{'' if count == 1 else 's'} of {size} px"


def largest_fitting(needed: Callable[[int], int], limit: int, free: int) -> int | None:
    """The largest ``n`` in ``[1, limit]`` with ``needed(n) <= free`` (``needed`` grows with ``n``), or ``None``:
    the chunk size, or ``--batch_size``, that an error suggests."""
    if needed(1) > free:
        return None
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if needed(middle) <= free else (low, middle - 1)
    return low


def check_memory(argument: str, value: Any, config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                 device: torch.device, dtype_bytes: int = 4, *, output_type: str = "pil", text_config: Any = None,
                 num_prompts: int | None = None, chunk_argument: str | None = None) -> None:  # fmt: skip
    """``ValueError`` if a call making ``num_images`` would need more memory than ``device`` has free (estimated with
    :func:`estimate_call_bytes`; nothing is allocated to find out). It names what asked for the images: ``argument``
    and its ``value`` (``value=None``: ``argument`` is the whole description, e.g. "3 prompt(s) x
    `num_images_per_prompt`=4000"). With ``chunk_argument`` (the call's ``max_batch_size``), it names the chunk size
    that would fit, when one does."""
    def needed(chunk: int | None) -> int:
        return estimate_call_bytes(config, num_images, chunk, dtype_bytes, output_type=output_type,
                                   text_config=text_config, num_prompts=num_prompts, device_type=device.type)

    total, free = needed(max_batch_size), machine.available_bytes(device)
    if free is None or total <= free:
        return
    subject = argument if value is None else f"`{argument}`={value}"
    passes = f" with `{chunk_argument or 'max_batch_size'}`={max_batch_size}" if max_batch_size else ""
    fits = None
    if chunk_argument is not None:
        fits = largest_fitting(needed, min(num_images, max_batch_size or num_images), free)
        fits = None if fits is None else 2 ** (fits.bit_length() - 1)  # a round number that fits
    if fits is not None:
        remedy = (f"Pass `{chunk_argument}`={fits} (about {memory_text(needed(fits))}), or make fewer images per "
                  "call.")  # fmt: skip
    else:
        remedy = "Even one image does not fit: free some memory." if num_images == 1 else "Make fewer images per call."
    raise ValueError(f"{subject} asks for {images_text(num_images, config['output_size'])}, which need about "
                     f"{memory_text(total)}{passes}; {device.type} has {memory_text(free)} free. {remedy}")
