"""An inference-only execution plan for :class:`GALIPGenerator` that computes the same function with less work.

Every rewrite here is exact algebra; results differ from the default ``forward`` only by float rounding, by an amount
that depends on the model (see ``tests/models/test_fast_inference.py`` and the benchmark's
``fast_inference_max_abs_diff``). Measured on the shipped models (``output_type="pt"``, images in [0, 1]; 8 prompts x
2 images x 4 seeds each; Intel Xeon with AMX, torch 2.14.1; ``tests/pipelines/test_fast_inference_figures.py`` checks
them):

==============  =====================  ==================
model           fp32: max (mean) diff  bf16: max (mean)
==============  =====================  ==================
galip-emoji     1.2e-5 (1.7e-7)        0.10 (1.6e-3)
galip-shapes    4.1e-6 (8.2e-8)        0.087 (1.0e-3)
==============  =====================  ==================

The rewrites:

* **Fused Affine projections.** Every Affine MLP of the generator reads the same condition vector
  ``cond = cat([z, text_embeds])``. All first layers (``linear1``) run as one matmul, and the second layers
  (``linear2``) as one batched matmul per channel width, instead of ~120 tiny Linear calls.
* **Modulate before upsampling.** A G-block starts with a nearest resize followed by a fusion block (per-channel
  affine + LeakyReLU) and, on the shortcut, a 1x1 conv. Per-pixel operations commute with nearest resizing, so they
  run on the low-resolution input (2-4x fewer pixels); only the 3x3 convs see the upsampled map.
* **Phase-decomposed "upsample 2x + conv3x3"** (``upsample_conv="phase"``). A 3x3 conv of a nearest-2x-upsampled
  map equals four 2x2 convs of the low-resolution map (one per output phase) with summed weights: 16 instead of 36
  multiply-adds per input pixel (2.25x fewer FLOPs in the G-blocks that double their resolution).
* **In-place activations, channels_last memory format, low-precision weights.** ``dtype=torch.bfloat16`` casts the
  conv/linear weights to bf16 once, like ``.to(dtype)`` (norms and embeddings stay fp32), so that autocast does not
  re-cast them on every call; ``dtype=torch.float32`` later casts them back (the rounding of the cast stays, as after
  ``.to(torch.bfloat16).to(torch.float32)``).

The plan holds *copies* of weights: call :meth:`GALIPGenerator.enable_fast_inference` again after changing the
weights (it is meant for inference; training keeps using the default path, which is also used whenever autograd is
enabled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from galip_core.layers import Affine, FusionBlock, GeneratorBlock, MappingBlock

UPSAMPLE_CONV_MODES = ("phase", "resize")
#: the `dtype` values of fast inference: full precision, or autocast in a half-precision type
FAST_DTYPES = (None, torch.bfloat16, torch.float16)

# Phase (a) of a nearest-2x upsample maps the 3 taps of a 3x3 kernel onto 2 low-resolution rows: row r of this
# matrix sums the kernel taps that land on low-resolution tap r.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


@dataclass
class FastInferenceOptions:
    """What :meth:`GALIPGenerator.enable_fast_inference` turned on (stored on the generator)."""

    dtype: torch.dtype | None = None
    channels_last: bool = True
    fuse_affine: bool = True
    upsample_conv: str = "phase"

    def check(self) -> None:
        """``ValueError``/``TypeError`` naming the option and its allowed values (before anything is changed)."""
        if self.dtype not in FAST_DTYPES:
            names = ", ".join("None" if d is None else str(d) for d in FAST_DTYPES)
            raise TypeError(f"`dtype` must be one of {names} (None: full precision), got {self.dtype!r}.")
        for name in ("channels_last", "fuse_affine"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
        if self.upsample_conv not in UPSAMPLE_CONV_MODES:
            raise ValueError(f"`upsample_conv` must be one of {UPSAMPLE_CONV_MODES}, got {self.upsample_conv!r}.")


class FusedAffineProjections(nn.Module):
    """All Affine MLPs of a generator, evaluated together: one matmul for every ``linear1`` (they share ``cond``), one
    batched matmul per channel width for the ``linear2`` layers. Holds copies of the weights as non-persistent
    buffers (nothing is added to the state dict)."""

    def __init__(self, affines: list[Affine], dtype: torch.dtype | None = None):
        super().__init__()
        self.affines = list(affines)  # plain list: not registered as submodules
        mlps = [mlp for affine in self.affines for mlp in (affine.fc_gamma, affine.fc_beta)]
        widths = sorted({mlp.linear2.out_features for mlp in mlps}, reverse=True)
        self.groups: list[tuple[int, int]] = []  # (width, number of MLPs) in the concatenation order
        self.slots: dict[int, tuple[int, int]] = {}  # id(mlp) -> (group index, position in the group)
        order = []
        for g, width in enumerate(widths):
            members = [mlp for mlp in mlps if mlp.linear2.out_features == width]
            self.groups.append((width, len(members)))
            for k, mlp in enumerate(members):
                self.slots[id(mlp)] = (g, k)
            order.extend(members)
        with torch.no_grad():
            weight1 = torch.cat([mlp.linear1.weight for mlp in order])
            bias1 = torch.cat([mlp.linear1.bias for mlp in order])
            self.register_buffer("weight1", weight1.to(dtype or weight1.dtype), persistent=False)
            self.register_buffer("bias1", bias1.to(dtype or bias1.dtype), persistent=False)
            start = 0
            for g, (width, count) in enumerate(self.groups):
                members = order[start : start + count]
                start += count
                weight2 = torch.stack([mlp.linear2.weight.t() for mlp in members])  # (n, C_in, C_out)
                bias2 = torch.stack([mlp.linear2.bias for mlp in members])[:, None, :]  # (n, 1, C_out)
                self.register_buffer(f"weight2_{g}", weight2.to(dtype or weight2.dtype).contiguous(), persistent=False)
                self.register_buffer(f"bias2_{g}", bias2.to(dtype or bias2.dtype), persistent=False)

    def forward(self, cond: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Map ``id(affine)`` to its ``(gamma, beta)``, each (B, C, 1, 1)."""
        hidden = F.relu(F.linear(cond.to(self.weight1.dtype), self.weight1, self.bias1))
        batch = cond.shape[0]
        outputs, offset = [], 0
        for g, (width, count) in enumerate(self.groups):
            h = hidden[:, offset : offset + width * count].view(batch, count, width).transpose(0, 1)
            outputs.append(torch.baddbmm(getattr(self, f"bias2_{g}"), h, getattr(self, f"weight2_{g}")))
            offset += width * count
        table = {}
        for affine in self.affines:
            g_gamma, k_gamma = self.slots[id(affine.fc_gamma)]
            g_beta, k_beta = self.slots[id(affine.fc_beta)]
            table[id(affine)] = (outputs[g_gamma][k_gamma][:, :, None, None], outputs[g_beta][k_beta][:, :, None, None])
        return table


class PhaseUpsampleConv(nn.Module):
    """``conv3x3(nearest_upsample_2x(x))`` (padding 1) computed as four 2x2 convs on ``x``, one per output phase."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype | None = None, channels_last: bool = False):
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("PhaseUpsampleConv needs a 3x3 conv with stride 1, padding 1 and groups 1.")
        self.out_channels = conv.out_channels
        with torch.no_grad():
            weight = conv.weight.float()
            taps = _PHASE_TAPS.to(weight.device)
            # kernel for phase (a, b): taps[a] @ W @ taps[b]^T  -> (C_out, C_in, 2, 2)
            phases = [torch.einsum("rk,oikl,sl->oirs", taps[a], weight, taps[b]) for a in (0, 1) for b in (0, 1)]
            weight = torch.cat(phases).to(dtype or conv.weight.dtype)
            if channels_last:  # the layout of the input, or oneDNN re-lays the weight out on every call
                weight = weight.contiguous(memory_format=torch.channels_last)
            bias = None if conv.bias is None else conv.bias.repeat(4).to(dtype or conv.bias.dtype)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        batch, _, height, width = x.shape
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)  # (B, 4*C_out, H+1, W+1)
        c = self.out_channels
        out = torch.empty(batch, c, 2 * height, 2 * width, dtype=y.dtype, device=y.device, memory_format=memory_format)
        # out[:, :, 2i+a, 2j+b] = phase (a, b) at window (i+a, j+b)
        out_view = out.unflatten(3, (width, 2)).unflatten(2, (height, 2))  # (B, C, H, 2, W, 2)
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b
                out_view[:, :, :, a, :, b] = y[:, k * c : (k + 1) * c, a : a + height, b : b + width]
        return out


class FastGeneratorPlan(nn.Module):
    """The precomputed pieces of the fast path (fused Affine weights, phase kernels, low-precision weight copies)."""

    def __init__(self, generator: nn.Module, options: FastInferenceOptions):
        super().__init__()
        options.check()
        self.options = options
        affines = [m for m in generator.modules() if isinstance(m, Affine)]
        self.fused_affines = FusedAffineProjections(affines, options.dtype) if options.fuse_affine else None
        self.phase_convs = nn.ModuleDict()
        if options.upsample_conv == "phase":
            for i, block in enumerate(generator.blocks):
                if _doubles(block, i, generator):
                    self.phase_convs[str(i)] = PhaseUpsampleConv(block.conv1, options.dtype, options.channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.options.channels_last else torch.contiguous_format


def _doubles(block: GeneratorBlock, index: int, generator: nn.Module) -> bool:
    """Whether G-block ``index`` upsamples its input by exactly 2x (its input size is known from the config)."""
    in_size = generator.grid_size if index == 0 else generator.blocks[index - 1].out_size
    return block.out_size == 2 * in_size


def _fuse(block: FusionBlock, x: torch.Tensor, cond: torch.Tensor, table) -> torch.Tensor:
    """FusionBlock forward with in-place LeakyReLUs (and fused modulations when ``table`` is given)."""
    if table is None:
        x = F.leaky_relu_(block.affine0(x, cond), 0.2)
        return F.leaky_relu_(block.affine1(x, cond), 0.2)
    gamma, beta = table[id(block.affine0)]
    x = F.leaky_relu_(torch.addcmul(beta.to(x.dtype), gamma.to(x.dtype), x), 0.2)
    gamma, beta = table[id(block.affine1)]
    return F.leaky_relu_(torch.addcmul(beta.to(x.dtype), gamma.to(x.dtype), x), 0.2)


def _mapping_block(block: MappingBlock, x: torch.Tensor, cond: torch.Tensor, table) -> torch.Tensor:
    h = _fuse(block.fuse1, block.conv1(x), cond, table)
    h = _fuse(block.fuse2, block.conv2(h), cond, table)
    shortcut = x if block.conv_shortcut is None else block.conv_shortcut(x)
    return h.add_(shortcut)


def _generator_block(
    block: GeneratorBlock, x: torch.Tensor, cond: torch.Tensor, table, phase_conv: PhaseUpsampleConv | None, fmt
) -> torch.Tensor:
    size = (block.out_size, block.out_size)
    h = _fuse(block.fuse1, x, cond, table)  # per-pixel: commutes with the resize
    if phase_conv is not None:
        h = phase_conv(h, fmt)
    else:
        h = block.conv1(F.interpolate(h, size=size))
    h = block.conv2(_fuse(block.fuse2, h, cond, table))
    shortcut = x if block.conv_shortcut is None else block.conv_shortcut(x)  # 1x1 conv: commutes with the resize
    return h.add_(F.interpolate(shortcut, size=size))


def fast_generator_forward(generator: nn.Module, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """``generator(z, text_embeds)`` computed with the generator's :class:`FastGeneratorPlan` (no autograd)."""
    plan: FastGeneratorPlan = generator._fast_plan
    fmt = plan.memory_format
    cond = generator.condition(z, text_embeds)
    table = plan.fused_affines(cond) if plan.fused_affines is not None else None
    config = generator.config

    h = generator.fc_code(z).view(z.shape[0], config.code_channels, generator.grid_size, generator.grid_size)
    h = h.contiguous(memory_format=fmt)
    for block in generator.mapping_blocks:
        h = _mapping_block(block, h, cond, table)
    bridge_feature = generator.conv_fuse(h)
    prompts = generator.fc_prompt(cond).view(z.shape[0], len(config.prompt_layers), -1)
    vit_out = generator.vision_model(bridge_feature, prompts, config.prompt_layers)
    h = generator.conv_bridge_out((bridge_feature + config.bridge_scale * vit_out).contiguous(memory_format=fmt))
    for i, block in enumerate(generator.blocks):
        phase_conv = plan.phase_convs[str(i)] if str(i) in plan.phase_convs else None
        h = _generator_block(block, h, cond, table, phase_conv, fmt)
    return generator.conv_out(F.leaky_relu_(h, 0.2))
