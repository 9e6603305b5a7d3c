"""An up-front estimate of the memory a generation call needs, so that ``num_images_per_prompt=10**6`` is refused at
once, naming the argument, instead of running until an allocation fails minutes later. Shared by ``GALIPPipeline``
and the fast runtime. Torch only."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from galip_core.layers import generator_channels
from galip_core import machine


def estimate_call_bytes(config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                        dtype_bytes: int = 4) -> int:  # fmt: skip
    """Bytes a call making ``num_images`` needs at its peak, roughly: every output image (kept until the end, plus a
    float copy and a uint8 copy when post-processed), the noise and embeddings, and the generator's activations for
    one chunk of ``max_batch_size`` images (all of them without chunking)."""
    size = config["output_size"]
    channels = generator_channels(config["ngf"], size)
    per_image_out = 3 * size * size * (dtype_bytes + 4 + 1) + (config["z_dim"] + config["cond_dim"]) * 4 + 1024
    # the widest G-block output at its size, a few tensors alive at once (input, fused, conv, shortcut)
    sizes = [min(2 ** (3 + i), size) for i in range(len(channels))]
    per_image_forward = 4 * max(c * s * s for c, s in zip(channels, sizes)) * dtype_bytes
    chunk = min(num_images, max_batch_size or num_images)
    return num_images * per_image_out + chunk * per_image_forward


def check_memory(argument: str, value: int, config: Mapping[str, Any], num_images: int, max_batch_size: int | None,
                 device: torch.device, dtype_bytes: int = 4) -> None:  # fmt: skip
    """``ValueError`` naming ``argument`` if a call making ``num_images`` would need more memory than ``device`` has
    free (estimated with :func:`estimate_call_bytes`; nothing is allocated to find out)."""
    needed, free = estimate_call_bytes(config, num_images, max_batch_size, dtype_bytes), machine.available_bytes(device)
    if free is not None and needed > free:
        raise ValueError(
            f"`{argument}`={value} asks for {num_images} images of {config['output_size']} px, which need about "
            f"{needed / 2**30:.1f} GiB; {device.type} has {free / 2**30:.1f} GiB free. Make fewer images per call."
        )
