"""GALIP's generator (Mate-G): a CLIP adapter around a frozen CLIP-ViT, followed by text-modulated upsampling blocks."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin must be an attribute here, see loading docs)
from diffusers.configuration_utils import register_to_config
from torch import nn

from galip_core.layers import GeneratorLayers
from galip_diffusers.models.clip_bridge import CLIPBridge, normalize_vision_config
from galip_diffusers.models.fast_inference import FastGeneratorPlan, FastInferenceOptions, fast_generator_forward


class GALIPGenerator(ModelMixin, ConfigMixin, GeneratorLayers):
    r"""GALIP generator (NetG of Tao et al., CVPR 2023), built from its config. The layers and their forward pass are
    :class:`galip_core.layers.GeneratorLayers` (shared with the fast runtime); this class adds the diffusers config,
    the transformers ViT (:class:`CLIPBridge`), gradient checkpointing and the fast-inference plan.

    Data flow for noise ``z`` (B, z_dim) and sentence embeddings ``text_embeds`` (B, cond_dim), with
    ``cond = cat([z, text_embeds])`` (noise first):

    1. ``fc_code``: z -> (B, code_channels, g, g), with g the ViT's patch grid (7 for ViT-B/32 at 224 px).
    2. CLIP adapter: ``mapping_blocks`` (M_Blocks) then ``conv_fuse`` give the *bridge feature* (B, hidden, g, g);
       ``fc_prompt`` turns ``cond`` into one prompt token per layer in ``prompt_layers``; the frozen ViT
       (:class:`CLIPBridge`) maps the bridge feature with those prompts; ``conv_bridge_out`` is applied to
       ``bridge_feature + bridge_scale * vit_output``.
    3. ``blocks``: G-blocks that resize (nearest) and fuse the condition, up to ``output_size``.
    4. ``conv_out``: LeakyReLU(0.2) + 3x3 conv to RGB. There is no tanh: callers clamp to [-1, 1].

    The ViT is frozen (``requires_grad=False``) but differentiable: gradients flow through it to the adapter.

    Parameters:
        z_dim: noise dimension (100).
        cond_dim: sentence-embedding dimension (512, the CLIP projection width).
        ngf: base channel width of the G-blocks (64).
        output_size: output resolution (224).
        code_channels: channels of the noise code map (64).
        mapping_mid_channels: mid channels of the M-blocks (32).
        num_mapping_blocks: number of M-blocks (4).
        prompt_layers: ViT blocks (0-indexed) that get a prompt token appended (1..8).
        bridge_scale: weight of the ViT output added to the bridge feature (0.1).
        vision_config: a ``CLIPVisionConfig`` dict for the frozen ViT (ViT-B/32 by default).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["GeneratorBlock", "CLIPEncoderLayer"]

    @register_to_config
    def __init__(
        self,
        z_dim: int = 100,
        cond_dim: int = 512,
        ngf: int = 64,
        output_size: int = 224,
        code_channels: int = 64,
        mapping_mid_channels: int = 32,
        num_mapping_blocks: int = 4,
        prompt_layers: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
        bridge_scale: float = 0.1,
        vision_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        vision_config = normalize_vision_config(vision_config)
        self.register_to_config(vision_config=vision_config, prompt_layers=list(prompt_layers))
        num_vit_layers = vision_config["num_hidden_layers"]
        if any(not 0 <= layer < num_vit_layers for layer in prompt_layers):
            raise ValueError(
                f"`prompt_layers` must index ViT blocks in [0, {num_vit_layers - 1}], got {list(prompt_layers)}."
            )
        if output_size < 8:
            raise ValueError(f"`output_size` must be at least 8, got {output_size}.")
        vision_model = CLIPBridge(vision_config)
        vision_model.requires_grad_(False)
        self._build_generator_layers(
            z_dim=z_dim, cond_dim=cond_dim, ngf=ngf, output_size=output_size, code_channels=code_channels,
            mapping_mid_channels=mapping_mid_channels, num_mapping_blocks=num_mapping_blocks,
            prompt_layers=prompt_layers, bridge_scale=bridge_scale, hidden_size=vision_config["hidden_size"],
            grid_size=vision_config["image_size"] // vision_config["patch_size"], vision_model=vision_model,
        )  # fmt: skip
        self.gradient_checkpointing = False
        self._fast_plan: FastGeneratorPlan | None = None
        self._fast_weights_key: tuple | None = None  # the weights the plan was built from (see `_weights_key`)
        self._fast_params: list[nn.Parameter] = []
        self._weights_channels_last = False  # set by `enable_fast_inference(channels_last=True)`
        self.register_load_state_dict_post_hook(_forget_fast_weights)  # also covers `assign=True` (new tensors)

    @property
    def num_blocks(self) -> int:
        """Number of G-blocks; ``forward_features(upto=l)`` accepts ``0 <= l <= num_blocks``."""
        return len(self.blocks)

    def _run_blocks(self, h: torch.Tensor, cond: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(block, h, cond)
            else:
                h = block(h, cond)
        return h

    def _check_block_index(self, name: str, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= self.num_blocks:
            raise ValueError(f"`{name}` must be an int in [0, {self.num_blocks}] (the G-block index), got {value!r}.")

    def forward_features(self, z: torch.Tensor, text_embeds: torch.Tensor, upto: int) -> torch.Tensor:
        """Run the generator up to (and including) G-block ``upto - 1``; ``upto=0`` returns the adapter output."""
        self._check_block_index("upto", upto)
        cond = self.condition(z, text_embeds)
        return self._run_blocks(self.bridge(z, cond), cond, 0, upto)

    def forward_from(self, h: torch.Tensor, z: torch.Tensor, text_embeds: torch.Tensor, start: int) -> torch.Tensor:
        """Continue from features ``h`` produced by ``forward_features(..., upto=start)`` to the RGB output."""
        self._check_block_index("start", start)
        cond = self.condition(z, text_embeds)
        return self.to_rgb(self._run_blocks(h, cond, start, self.num_blocks))

    def forward(self, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Generate images (B, 3, output_size, output_size), roughly in [-1, 1] (not clamped).

        After :meth:`enable_fast_inference`, calls without autograd take the fast path."""
        if self._fast_plan is not None and not torch.is_grad_enabled():
            if self._weights_key() != self._fast_weights_key:  # loaded, trained or moved since: rebuild the plan
                options = self._fast_plan.options
                self.enable_fast_inference(options.dtype, options.channels_last, options.fuse_affine,
                                           options.upsample_conv)
            dtype = self._fast_plan.options.dtype
            if dtype is None:
                return fast_generator_forward(self, z, text_embeds)
            with torch.autocast(z.device.type, dtype=dtype):
                return fast_generator_forward(self, z, text_embeds)
        return self.generate_images(z, text_embeds)

    def enable_fast_inference(
        self,
        dtype: torch.dtype | None = None,
        channels_last: bool = True,
        fuse_affine: bool = True,
        upsample_conv: str = "phase",
    ) -> "GALIPGenerator":
        r"""Switch ``forward`` (when autograd is off) to an inference plan that computes the same function with less
        work: fused Affine projections, modulation before upsampling, phase-decomposed upsample+conv, in-place
        activations, channels_last (see :mod:`galip_diffusers.models.fast_inference`). In fp32 the output differs
        from the default path by float rounding only; how much depends on the model (max abs diff of [0, 1] images
        1.2e-5 on galip-emoji, 4.1e-6 on galip-shapes; bf16: 0.10 and 0.087, mean ~1e-3; table in that module).
        Works inside `torch.inference_mode()` too: the weights it casts or converts stay usable by autograd.

        Args:
            dtype (`torch.dtype`, *optional*): run under autocast in this dtype (`torch.bfloat16` on CPUs with
                AVX512-BF16/AMX, `torch.float16`/`torch.bfloat16` on GPUs). Like `.to(dtype)` in diffusers, the conv
                and linear weights are cast to it (norms and embeddings stay in fp32), so autocast does not re-cast
                them on every call. `torch.float32` casts every weight back to float32 (the rounding of an earlier
                half-precision cast stays, as with `.to()`); `None` leaves the weights' dtypes as they are.
            channels_last (`bool`, defaults to `True`): NHWC memory format for the convolutional part (weights
                included; `disable_fast_inference` or `channels_last=False` puts the weights back in the default
                format).
            fuse_affine (`bool`, defaults to `True`): evaluate all Affine MLPs with one matmul + one batched matmul
                per width.
            upsample_conv (`str`, defaults to `"phase"`): `"phase"` computes conv3x3(upsample2x(x)) as four 2x2
                convs on x (2.25x fewer FLOPs in those convs); `"resize"` keeps resize-then-conv.

        The plan keeps copies of some weights; it is rebuilt on the next call when any parameter changed since (an
        in-place update such as `load_state_dict` or an optimiser step, or a `.to()`). Training and any call with
        autograd enabled use the default path. Returns `self`.
        """
        options = FastInferenceOptions(None if dtype == torch.float32 else dtype, channels_last, fuse_affine,
                                       upsample_conv)
        options.check()
        with weights_editable():  # also inside `torch.inference_mode()`: the weights must stay usable by autograd
            if dtype == torch.float32 and self._has_half_precision_weights():
                self.float()  # asked for explicitly: undo an earlier half-precision plan or `.to(float16)`
            self._fast_plan = None
            plan = FastGeneratorPlan(self, options)  # built from the current (full-precision) weights
            if options.dtype is not None:
                for module in self.modules():
                    if isinstance(module, (nn.Conv2d, nn.Linear)):
                        module.to(options.dtype)
            self._set_channels_last(channels_last)
            self._fast_plan = plan.to(self.fc_code.weight.device)
        self._fast_params = [p for name, p in self.named_parameters() if not name.startswith("_fast_plan.")]
        self._fast_weights_key = self._weights_key()
        return self

    def _has_half_precision_weights(self) -> bool:
        """Whether a floating-point parameter or buffer is not float32 (what ``dtype=torch.float32`` casts back)."""
        tensors = list(self.parameters()) + list(self.buffers())
        return any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors)

    def _set_channels_last(self, channels_last: bool) -> None:
        """Put the 4-D weights in channels_last memory format, or back in the default (contiguous) one if an earlier
        call put them in channels_last. The values are the same; only the default path's float rounding depends on
        the layout (oneDNN sums in another order), so a fresh model and one after `disable_fast_inference` match."""
        if channels_last:
            self.to(memory_format=torch.channels_last)
            self._weights_channels_last = True
        elif self._weights_channels_last:
            self.to(memory_format=torch.contiguous_format)
            self._weights_channels_last = False

    def _weights_key(self) -> tuple:
        """The version counters of the parameters, which every in-place update bumps (`load_state_dict`, an optimiser
        step): what the fast plan's weight copies depend on. ~80 us for the shipped models on a 2-core CPU (listing
        the parameters afresh would take 1 ms, so the list is kept). Replaced tensors (`.to()`,
        `load_state_dict(assign=True)`) are caught by `_apply` and the load hook instead."""
        return tuple(p._version for p in self._fast_params)

    def _apply(self, fn, *args, **kwargs):
        """`nn.Module._apply` (behind `.to()`, `.half()`, ...), then mark the fast plan stale: rebuilt on next use."""
        module = super()._apply(fn, *args, **kwargs)
        _forget_fast_weights(self, None)
        return module

    def disable_fast_inference(self) -> "GALIPGenerator":
        """Back to the default forward. The weights get back the default (contiguous) memory format if fast
        inference put them in channels_last, so that the output equals a fresh model's bit for bit; they keep the
        dtype that fast inference gave them (`enable_fast_inference(dtype=torch.float32)` casts them back first)."""
        self._fast_plan = None
        with weights_editable():
            self._set_channels_last(False)
        return self

    @property
    def fast_inference_options(self) -> FastInferenceOptions | None:
        """The options of :meth:`enable_fast_inference`, or `None` when the default path is used."""
        return None if self._fast_plan is None else self._fast_plan.options

    def learnable_parameters(self) -> list[nn.Parameter]:
        """Everything but the frozen ViT: what G's optimiser trains."""
        return [p for n, p in self.named_parameters() if not n.startswith("vision_model.")]


@contextlib.contextmanager
def weights_editable() -> Iterator[None]:
    """Run the block with autograd off but outside any ``torch.inference_mode()`` of the caller: tensors made there
    (casts, memory-format conversions, the fast plan's copies) are normal tensors, so that a later call with autograd
    (FuseDream's search, training) can use them. Inference tensors cannot be saved for backward."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def _forget_fast_weights(generator: GALIPGenerator, incompatible_keys: object) -> None:
    """Mark the fast plan of ``generator`` stale (a load-state-dict post hook, and called after ``_apply``)."""
    generator._fast_weights_key = None
