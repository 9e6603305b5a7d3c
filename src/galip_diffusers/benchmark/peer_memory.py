"""The up-front memory check of ``--peer_batch_sizes``: what one call of a diffusion peer (SD-1.5, LDM-256, SD-Turbo)
holds at its peak, estimated from the component configs alone (the packaged ones, or a folder's ``config.json``
files), so that a batch that cannot fit is refused before any model is built, instead of ending in an allocation
failure or the OOM killer after the GALIP rows have run for minutes.

What a benchmarked peer call holds at its peak (measured with the process's RSS high-water mark on tiny and
published-size components, ``tests/benchmark/test_peer_memory.py``):

- the weights, in the row's dtype (built in float32 first: that is the peak when it is larger);
- the phases of the call, which run one after the other: the text encoder over the prompts (twice with
  classifier-free guidance), one UNet evaluation over the latents (a doubled batch with guidance), the VAE decoder
  over the images (its full-resolution activations dominate) and the ``np`` post-processing. On CUDA the largest
  phase counts (the caching allocator reuses a phase's freed blocks); on the CPU their sum, plus
  :data:`galip_core.memory.ALLOCATOR_SLACK`: the C allocator keeps the UNet's freed mid-sized tensors resident
  while the VAE decoder's large ones are mapped anew (SD-1.5 at 512 px, fp32, first call: 1332 MiB at batch 1,
  2615 MiB at batch 2, against 814 MiB per image for the decoder alone and 233 MiB per UNet sample alone). The
  attention runs through PyTorch's ``scaled_dot_product_attention``, which holds no score matrix on CPU (flash) nor
  on CUDA (flash / memory-efficient).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from galip_core.folder import read_json_object
from galip_core.memory import ALLOCATOR_SLACK, largest_fitting, text_encoder_bytes
from galip_diffusers.benchmark.peers import ModelSpec, MODE_REAL, build_module, guidance_doubles_batch

#: the component names of the peers' pipelines, by role
UNET, DECODERS, TEXT_ENCODERS = "unet", ("vae", "vqvae"), ("text_encoder", "bert")
#: float32 copies of the decoded images alive during ``output_type="np"`` post-processing (decoded, denormalised,
#: the numpy result)
POST_COPIES = 3
#: feature maps of the UNet's first width (``block_out_channels[0]``) at full latent resolution that one evaluation
#: holds per sample beyond its skip connections. Measured (RSS high-water mark, fp32, channels_last, CPU): one
#: transformer block of SD-1.5 alone holds 24.4 such maps (GEGLU's 8c projection, the gate's GELU, their product,
#: q/k/v, norms, residuals); the whole SD-1.5 UNet 46 per sample (233 MiB per sample, batches 2 and 6), of which the
#: skips are 5.4
UNET_WORK_MAPS = 40


def peer_components(spec: ModelSpec) -> dict[str, tuple[str, dict[str, Any]]] | None:
    """``{name: (class, config)}`` of a peer's UNet, VAE and text encoder, read without building anything: a folder's
    ``model_index.json`` and ``<component>/config.json``, else the packaged (or tiny) config. ``None`` where a folder's
    configs cannot be read: the row then reports its own error."""
    wanted = (UNET, *DECODERS, *TEXT_ENCODERS)
    if spec.mode != MODE_REAL:
        comps = spec.config["components"]
        return {name: (c["class"], c["config"]) for name, c in comps.items() if name in wanted}
    try:
        index = read_json_object(os.path.join(spec.source, "model_index.json"))
        found = {}
        for name in wanted:
            entry = index.get(name)
            if isinstance(entry, list) and len(entry) == 2 and entry[1]:
                found[name] = (entry[1], read_json_object(os.path.join(spec.source, name, "config.json")))
    except (OSError, ValueError):
        return None
    roles = (UNET in found, any(n in found for n in DECODERS), any(n in found for n in TEXT_ENCODERS))
    return found if all(roles) else None


def parameter_count(components: Mapping[str, tuple[str, dict[str, Any]]]) -> int:
    """Parameters of the components, counted on meta-device copies (no memory, no weights read)."""
    with torch.device("meta"):
        return sum(p.numel() for cls, config in components.values() for p in build_module(cls, config).parameters())


def _text_config(cls_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A text encoder config in the field names of :func:`galip_core.memory.text_encoder_bytes` (CLIP's); LDMBert
    names the same widths differently."""
    if cls_name == "LDMBertModel":
        return {"max_position_embeddings": config.get("max_position_embeddings", 77),
                "hidden_size": config.get("d_model", 1280), "intermediate_size": config.get("encoder_ffn_dim", 5120),
                "num_attention_heads": config.get("encoder_attention_heads", 8)}  # fmt: skip
    return dict(config)


def unet_sample_values(unet: Mapping[str, Any], latent: int) -> int:
    """Values one UNet evaluation holds per latent sample: the skip connections kept for the up path (the input
    convolution's output, each down resnet's and each downsampler's), plus the work at full latent resolution
    (:data:`UNET_WORK_MAPS`)."""
    channels, layers = unet["block_out_channels"], unet.get("layers_per_block", 2)
    side, skips = latent, channels[0] * latent**2
    for i, c in enumerate(channels):
        skips += layers * c * side**2
        if i < len(channels) - 1:
            side = (side + 1) // 2
            skips += c * side**2
    return skips + UNET_WORK_MAPS * channels[0] * latent**2


def decoder_image_values(vae: Mapping[str, Any], latent: int) -> int:
    """Values the VAE decoder holds at its peak per image: in a resnet, its input, the norm's and the activation's
    outputs (as wide as the larger of its input and output) and its output; in an upsampler, its input, the
    interpolated tensor and the convolution's output. The last level's first resnet, at full resolution, usually
    dominates."""
    channels = list(reversed(vae["block_out_channels"]))
    side, previous, peak = latent, channels[0], 0
    for i, c in enumerate(channels):
        peak = max(peak, (previous + 2 * max(previous, c) + c) * side**2)
        if i < len(channels) - 1:
            peak = max(peak, c * side**2 + 2 * c * (2 * side) ** 2)
            side *= 2
        previous = c
    return peak


def call_bytes(spec: ModelSpec, components: Mapping[str, tuple[str, dict[str, Any]]], batch: int, dtype_bytes: int,
               device_type: str = "cpu") -> int:  # fmt: skip
    """Bytes one benchmarked call of ``batch`` images holds at its peak beyond the weights (see the module
    docstring)."""
    unet = components[UNET][1]
    vae = next(components[n][1] for n in DECODERS if n in components)
    text_cls, text = next(components[n] for n in TEXT_ENCODERS if n in components)
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    latent = spec.resolution // (8 if spec.name == "ldm-256" else scale)  # diffusers' LDM pipeline: height // 8
    side = latent * scale  # the decoded images' side
    samples = batch * (2 if guidance_doubles_batch(spec, unet) else 1)
    text_bytes = text_encoder_bytes(_text_config(text_cls, text), samples, dtype_bytes)
    unet_bytes = samples * unet_sample_values(unet, latent) * dtype_bytes
    decode_bytes = batch * decoder_image_values(vae, latent) * dtype_bytes
    post = batch * 3 * side**2 * POST_COPIES * 4
    kept = samples * (77 * _text_config(text_cls, text).get("hidden_size", 768) + 3 * vae.get("latent_channels", 4)
                      * latent**2) * dtype_bytes  # the prompt embeddings and the latents, alive throughout
    phases = (text_bytes, unet_bytes, decode_bytes, post)
    if device_type != "cpu":  # CUDA's caching allocator gives a phase's freed blocks to the next one
        return int(kept + max(phases))
    return int(kept + sum(phases) + ALLOCATOR_SLACK)


def peer_bytes(spec: ModelSpec, components: Mapping[str, tuple[str, dict[str, Any]]], batch: int, dtype_bytes: int,
               device_type: str = "cpu", params: int | None = None) -> int:  # fmt: skip
    """Bytes a peer row needs at ``batch``: the weights in the row's dtype plus one call, or the float32 weights it
    is built with when that is more."""
    params = parameter_count(components) if params is None else params
    call = call_bytes(spec, components, batch, dtype_bytes, device_type)
    return max(params * 4, params * dtype_bytes + call)


def check_peer_batch_memory(spec: ModelSpec, batch: int, device_name: str, dtype_name: str, dtype_bytes: int,
                            free: int | None) -> None:  # fmt: skip
    """``ValueError`` naming ``--peer_batch_sizes``, the batch, the estimate, the free memory and a batch that fits
    (or that none does), if ``spec``'s row at ``batch`` would not fit in ``free`` bytes. Nothing is built."""
    components = None if free is None or spec.error else peer_components(spec)
    if components is None:
        return
    params = parameter_count(components)
    device_type = torch.device(device_name).type

    def needed(n: int) -> int:
        return peer_bytes(spec, components, n, dtype_bytes, device_type, params)

    if needed(batch) <= free:
        return
    fits = largest_fitting(needed, batch, free)
    remedy = (f"Give --peer_batch_sizes {fits} or less (about {needed(fits) / 2**30:.1f} GiB)." if fits else
              f"No batch fits (batch 1 needs about {needed(1) / 2**30:.1f} GiB, its weights "
              f"{params * 4 / 2**30:.1f} GiB in float32): leave {spec.name} out of --peers.")
    raise ValueError(
        f"--peer_batch_sizes: {spec.display_name} ({spec.name}) at batch {batch} ({spec.resolution} px, {dtype_name}) "
        f"needs about {needed(batch) / 2**30:.1f} GiB; {device_name} has {free / 2**30:.1f} GiB free. {remedy}"
    )
