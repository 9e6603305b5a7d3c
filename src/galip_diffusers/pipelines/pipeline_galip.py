"""One-step text-to-image pipeline for GALIP."""

from __future__ import annotations

import contextlib
import contextvars
import os

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from galip_core.finite import check_finite_output
from galip_core.machine import warn_if_emulated_bf16
from galip_core.noise import check_noise_arguments, sample_noise
from galip_core.packaged import unknown_model_note
from galip_core.settings import GALIPSettings, as_settings
from galip_core.text import clip_input_ids, prompt_list

from galip_diffusers.models.generator import GALIPGenerator, weights_editable
from galip_diffusers.pipelines.call_checks import (  # noqa: F401
    OUTPUT_TYPES, check_call_inputs, check_call_memory, check_components, check_count, check_fast_inference_options,
    check_latents, check_latents_without_truncation, check_max_batch_size, check_memory, encode_runs,
    postprocess_in_chunks,
)
from galip_diffusers.pipelines.interpolation import interpolate_frames, slerp  # noqa: F401  (slerp: public helper)
from galip_diffusers.pipelines.loading import (  # noqa: F401
    REMOTE_CODE_SHIM, check_pipeline_components, check_pipeline_folder, check_save_directory, end_from_pipe,
    finish_saved_folder, from_pipe_arguments, keeping_dtypes, settings_of_generic_load, skip_from_pipe_cast,
)

logger = logging.get_logger(__name__)

#: set while `GALIPPipeline.from_pretrained` / `from_pipe` run diffusers' loader: they set the settings themselves
_OWN_LOADER: contextvars.ContextVar[bool] = contextvars.ContextVar("galip_own_loader", default=False)


@contextlib.contextmanager
def _loading_ourselves():
    """Within the block, `GALIPPipeline.register_to_config` leaves the settings to the caller (see ``_OWN_LOADER``)."""
    token = _OWN_LOADER.set(True)
    try:
        yield
    finally:
        _OWN_LOADER.reset(token)


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> import galip_diffusers  # registers the GALIP classes with diffusers
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("path/to/galip-folder")  # a saved or converted GALIP folder
        >>> # packaged models by name: GALIPPipeline.from_pretrained("galip-emoji")
        >>> images = pipe(
        ...     ["a large red circle on a white background", "a small blue square on a black background"],
        ...     num_images_per_prompt=4,
        ...     generator=torch.Generator().manual_seed(0),
        ... ).images
        ```
"""

class GALIPPipeline(DiffusionPipeline):
    r"""Text-to-image generation with GALIP (Generative Adversarial CLIPs): one generator forward pass per batch.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    (downloading, saving, running on a particular device, offloading).

    Args:
        tokenizer ([`~transformers.CLIPTokenizer`]): tokenizer of the CLIP text tower.
        text_encoder ([`~transformers.CLIPTextModelWithProjection`]): frozen CLIP text tower; GALIP conditions on
            its projected EOT embedding (`text_embeds`, not L2-normalised).
        generator ([`GALIPGenerator`]): the GALIP generator (with its frozen CLIP-ViT bridge).
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`], *optional*): the bridge CLIP's image tower,
            used by the discriminator and by training; not needed for sampling.
        scorer ([`~transformers.CLIPModel`], *optional*): a second CLIP, different from the bridge CLIP, used for
            CLIP scores and CLIP-guided refinement.
    """

    model_cpu_offload_seq = "text_encoder->generator"
    _optional_components = ["image_encoder", "scorer"]

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModelWithProjection,
        generator: GALIPGenerator,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        scorer: CLIPModel | None = None,
    ):
        super().__init__()
        check_pipeline_components(tokenizer, text_encoder, generator)  # they fit together (also from_pipe's)
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            generator=generator,
            image_encoder=image_encoder,
            scorer=scorer,
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=True)
        self._trim_text_padding = False
        self._device_lookup_cache: tuple | None = None
        self.settings = GALIPSettings()
        skip_from_pipe_cast(self)  # within from_pipe: its closing float32 cast is not applied (see from_pipe)

    @property
    def settings(self) -> GALIPSettings:
        """The model's recommended settings (``galip_settings.json`` of its folder): the defaults of the calls. Set it
        to a [`GALIPSettings`] or to a dict of the file's content (checked the same way)."""
        return self._settings

    @settings.setter
    def settings(self, value: GALIPSettings | dict) -> None:
        self._settings = as_settings(value)

    def register_to_config(self, **kwargs) -> None:
        """diffusers' own loaders (``DiffusionPipeline.from_pretrained`` of a GALIP folder, ``from_pipe``) build this
        class through ``__init__`` and then record the source here; its ``galip_settings.json`` is read at that point
        (:func:`settings_of_generic_load`), so the settings apply whichever way the folder is loaded."""
        super().register_to_config(**kwargs)
        if "_name_or_path" in kwargs and not _OWN_LOADER.get():
            path = kwargs["_name_or_path"]
            if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
                check_pipeline_folder(os.fspath(path))  # diffusers' loader skipped GALIP's folder checks: run them now
            self.settings = settings_of_generic_load(path)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs):
        """Like [`DiffusionPipeline.from_pretrained`], plus packaged short names (``"galip-shapes"``, ``None``: the
        default) and a check of local folders naming the missing, corrupt or ambiguous file (of the weights it reads)."""
        from galip_diffusers.hub import load_pipeline_settings
        from galip_diffusers.pretrained import resolve_pretrained

        path = resolve_pretrained(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_pipeline_folder(path, variant=kwargs.get("variant"))
        warn_if_emulated_bf16(kwargs.get("torch_dtype", kwargs.get("dtype")), "cpu")  # pipelines load on the CPU
        try:
            with _loading_ourselves():  # the settings are read below, with the download options of this call
                pipe = super().from_pretrained(path, **kwargs)
        except (OSError, ValueError) as err:  # diffusers: OSError (not on the Hub), ValueError (not a repo id)
            if os.path.exists(path):
                raise
            hub = " ".join(str(err).replace("Please check out the root cause in the stacktrace above.", "").split())
            error_type = ValueError if isinstance(err, ValueError) else OSError
            raise error_type(f"{str(path)!r} is not a local folder or a packaged model ({unknown_model_note(path)}), "
                             f"and the Hub could not provide it: {hub}") from err
        pipe.settings = load_pipeline_settings(path, kwargs)
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, settings: GALIPSettings | dict | None = None, **kwargs):
        """Like [`DiffusionPipeline.from_pipe`], but modules keep their dtypes unless `dtype` is given (copies are cast:
        the original never changes), and `settings` come along unless `generator` replaces the one they were measured
        on (then built-in defaults, with a warning; pass `settings` to choose). See `loading.from_pipe_arguments`."""
        kwargs, settings = from_pipe_arguments(pipeline, kwargs, cls._get_signature_keys(cls)[0], settings)
        with _loading_ourselves(), keeping_dtypes():
            return end_from_pipe(super().from_pipe(pipeline, **kwargs), settings)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """Save as safetensors with the `settings` (``galip_settings.json``): built beside `save_directory`, swapped in
        at once, your own files there kept (`galip_diffusers.pipelines.saving`). With `push_to_hub`, the folder (with
        a minimal model card if it has none) goes to `repo_id` (default: the folder's name), with `private`, `token`,
        `commit_message` and `create_pr` as in diffusers."""
        from galip_diffusers.pipelines.saving import save_pipeline
        hub = {k: kwargs.pop(k) for k in ("repo_id", "private", "token", "commit_message", "create_pr") if k in kwargs}
        save_pipeline(self, save_directory, *args, **kwargs)
        if push_to_hub:
            from galip_diffusers.hub import push_folder_to_hub

            repo_id = hub.pop("repo_id", None) or os.path.basename(os.path.abspath(save_directory))
            push_folder_to_hub(save_directory, repo_id, **hub)

    # ------------------------------------------------------------------ speed
    def enable_fast_inference(
        self,
        dtype: torch.dtype | None = None,
        channels_last: bool = True,
        fuse_affine: bool = True,
        upsample_conv: str = "phase",
        compile: bool = False,
        compile_mode: str | None = None,
        trim_text_padding: bool = True,
    ) -> None:
        r"""Faster sampling with the same function (see [`GALIPGenerator.enable_fast_inference`]).

        Args:
            dtype (`torch.dtype`, *optional*): `torch.bfloat16` (CPUs with AVX512-BF16/AMX, recent GPUs) or
                `torch.float16` (GPUs): the generator runs under autocast with its conv/linear weights cast once, and
                the text encoder is cast to `dtype`. `torch.float32` casts both back to full precision (after an
                earlier half-precision call or `.to(torch.float16)`); `None` keeps the dtypes they have.
            channels_last, fuse_affine, upsample_conv: generator options, all on by default. In fp32 the images
                differ from the default path by float rounding only, bf16 visibly more; both depend on the model
                (max abs diff of [0, 1] images: galip-emoji 1.2e-5 fp32, 0.10 bf16; galip-shapes 4.1e-6 and 0.087;
                bf16 mean ~1e-3; see `galip_diffusers.models.fast_inference`).
            compile (`bool`, defaults to `False`): also `torch.compile` the generator (minutes of compilation on
                the first call and for every new batch size; worth it for long runs). On CPU, inductor's weight
                freezing is used; on CUDA pass `compile_mode="reduce-overhead"` to capture CUDA graphs.
            compile_mode (`str`, *optional*): `torch.compile` mode (`"reduce-overhead"`, `"max-autotune"`).
            trim_text_padding (`bool`, defaults to `True`): pad prompts to the longest one instead of 77 tokens.
                CLIP's text tower is causal, so the sentence embedding (at the EOT token) is the same up to float
                rounding, at a fraction of the text encoder's FLOPs.

        It may be called inside `torch.inference_mode()`: the weights stay usable by later gradient-enabled calls
        (FuseDream's search). The execution device and the generator's dtype are also cached from here on (diffusers
        looks them up by walking every submodule, ~7 ms per call on a 2-core CPU); a `.to()`, a cast or CPU
        offloading refreshes the cache.
        """
        check_fast_inference_options(dtype, compile, compile_mode, trim_text_padding)  # before anything changes
        check_components(self, "enable_fast_inference", text_encoder=dtype is not None)
        warn_if_emulated_bf16(dtype, self.generator.device)
        self.generator.enable_fast_inference(
            dtype=dtype, channels_last=channels_last, fuse_affine=fuse_affine, upsample_conv=upsample_conv
        )
        if dtype is not None and self.text_encoder.dtype != dtype:  # float32 too: undoes an earlier half precision
            with weights_editable():  # normal tensors even inside `torch.inference_mode()`
                self.text_encoder.to(dtype)
        self._trim_text_padding = trim_text_padding
        self._device_lookup_cache = None
        if compile:
            if compile_mode is None and self.generator.device.type == "cpu":
                self.generator.compile(options={"freezing": True})
            else:
                self.generator.compile(mode=compile_mode)

    def disable_fast_inference(self) -> None:
        """Back to the default generator forward, with the weights in their default memory format again (the images
        equal a freshly loaded pipeline's); the weights keep the dtype that fast inference gave them."""
        self.generator.disable_fast_inference()
        self.generator._compiled_call_impl = None  # undo `nn.Module.compile`
        self._trim_text_padding = False

    def _device_lookup_key(self) -> tuple:
        """What the execution device and the generator's dtype depend on, read in microseconds: the device and dtype
        of the first parameter of the generator and of the text encoder, and any accelerate/diffusers hook on them."""
        key = []
        for module in (self.generator, self.text_encoder):
            first = None if module is None else next(module.parameters(), None)
            key += [None if first is None else (first.device, first.dtype),
                    hasattr(module, "_hf_hook") or hasattr(module, "_diffusers_hook")]
        return tuple(key)

    def _device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        """The execution device and the generator's dtype.

        diffusers finds both by walking every submodule of every component in search of offloading and casting hooks:
        ~7 ms per call on a 2-core CPU, a quarter of a batch-1 sample of the shipped model. With fast inference on,
        the answer is cached until the `_device_lookup_key` changes (a `.to()`, a dtype cast, CPU offloading).
        """
        if self.generator.fast_inference_options is None:
            return self._execution_device, self.generator.dtype
        key = self._device_lookup_key()
        if self._device_lookup_cache is None or self._device_lookup_cache[0] != key:
            self._device_lookup_cache = (key, self._execution_device, self.generator.dtype)
        return self._device_lookup_cache[1], self._device_lookup_cache[2]

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self,
        prompt: str | list[str] | None,
        num_images_per_prompt: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        prompt_embeds: torch.Tensor | None,
        output_type: str,
        truncation: float | None = None,
        truncation_mode: str = "resample",
        max_batch_size: int | None = None,
    ) -> int:
        """Validate the call's arguments (see :mod:`.call_checks`); returns the number of images to generate."""
        return check_call_inputs(self.generator.config, prompt, num_images_per_prompt, generator, latents,
                                 prompt_embeds, output_type, truncation, truncation_mode, max_batch_size)  # fmt: skip

    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        max_batch_size: int | None = None,
    ) -> torch.Tensor:
        """CLIP sentence embeddings (projected EOT state, not normalised), repeated so that each prompt's images are
        adjacent: shape (len(prompt) * num_images_per_prompt, cond_dim). The prompts get the cleaning of OpenAI's
        ``clip.tokenize`` (ftfy, HTML entities, whitespace; exact parity with the official GALIP text path); prompts
        longer than the tokenizer's ``model_max_length`` are truncated with a warning naming the cut text
        (`galip_core.text.clip_input_ids`, shared with the lite engine and FuseDream's scorer). The text encoder
        runs once per chunk of `max_batch_size` images (`None`: one pass), over its prompts (`memory.prompt_runs`)."""
        num_images_per_prompt = check_count("num_images_per_prompt", num_images_per_prompt)
        check_max_batch_size(max_batch_size)
        check_components(self, "encode_prompt", text_encoder=True)
        device = device or self._execution_device
        # CLIP's text tower is causal: the EOT state does not depend on the padding after it, so fast inference pads
        # to the longest prompt only (same embeddings up to float rounding, fewer FLOPs).
        padding = "longest" if self._trim_text_padding else "max_length"
        prompts = prompt_list(prompt)
        input_ids = clip_input_ids(self.tokenizer, prompts, self.tokenizer.model_max_length, padding, logger.warning)
        encode = lambda indices: self.text_encoder(input_ids[indices].to(device)).text_embeds  # noqa: E731
        prompt_embeds = encode_runs(encode, prompts, num_images_per_prompt, max_batch_size)
        return prompt_embeds  # by name: diffusers' ReturnNameVisitor maps it to `__call__(prompt_embeds=...)`

    def prepare_latents(
        self,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        truncation: float | None = None,
        truncation_mode: str = "resample",
        max_resample_rounds: int = 1000,
    ) -> torch.Tensor:
        """Noise ``z ~ N(0, I)`` of shape (batch_size, z_dim), drawn with diffusers' ``randn_tensor`` (a list of
        generators: exactly one per row).

        With ``truncation=t``, values beyond ±t are either redrawn from the same generator(s) (``"resample"``, a
        truncated normal) or clamped (``"clamp"``). Given ``latents`` are used as they are (a finite floating-point
        tensor of shape (batch_size, z_dim)), so a ``truncation`` other than ``None`` or 0 with them is refused. The
        arguments get the checks of ``LitePipeline.prepare_latents`` (`galip_core.noise.check_noise_arguments`),
        which draws the same noise on CPU."""
        batch_size = check_noise_arguments("batch_size", batch_size, generator, truncation, truncation_mode, latents)
        shape = (batch_size, self.generator.config.z_dim)
        if latents is not None:
            check_latents(latents, shape)
            return latents.to(device=device, dtype=dtype)
        draw = lambda: randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)  # noqa: E731
        latents = sample_noise(draw, truncation, truncation_mode, max_resample_rounds)
        return latents.to(dtype)

    # ------------------------------------------------------------------ generation
    def _generate(self, latents: torch.Tensor, text_embeds: torch.Tensor, max_batch_size: int | None) -> torch.Tensor:
        chunk, images = max_batch_size or latents.shape[0], None
        with self.progress_bar(total=(latents.shape[0] + chunk - 1) // chunk) as progress:
            for start in range(0, latents.shape[0], chunk):
                z, embeds = latents[start : start + chunk], text_embeds[start : start + chunk]
                part = self.generator(z, embeds)
                check_finite_output(part, "generator", getattr(self.generator.config, "_name_or_path", None),
                                    inputs={"latents": z, "text embeddings": embeds})
                images = part.new_empty((latents.shape[0], *part.shape[1:])) if images is None else images
                torch.clamp(part, -1, 1, out=images[start : start + len(z)])  # one tensor, no list + cat + clamp
                progress.update()
        return images

    def _postprocess(self, images: torch.Tensor, output_type: str, return_dict: bool):
        """The call's output: `"latent"` as the generator made it (its dtype); every other type from a float32 copy,
        so `"pt"` and `"np"` are float32 whatever the pipeline's dtype (and PIL images are rounded from float32)."""
        if output_type != "latent":  # in chunks: diffusers' float copies of the whole batch would triple its memory
            images = postprocess_in_chunks(lambda x: self.image_processor.postprocess(x.float(), output_type), images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        truncation: float | None = None,
        truncation_mode: str = "resample",
        max_batch_size: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images from text in one generator forward pass.

        `truncation=None` takes the model's recommended value (`self.settings`, from `galip_settings.json`).

        Args:
            prompt (`str` or `list[str]`): the prompt(s). Not allowed together with `prompt_embeds`.
            num_images_per_prompt (`int`, defaults to 1): images per prompt; a prompt's images are adjacent.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): for deterministic noise; a list
                gives one generator per image (its length must equal the number of images).
            latents (`torch.Tensor`, *optional*): noise of shape (num_images, z_dim), used as is: a `truncation`
                other than 0 is refused with it, and the model's recommended truncation does not apply to it.
            prompt_embeds (`torch.Tensor`, *optional*): precomputed sentence embeddings (batch, cond_dim).
            truncation (`float`, *optional*): truncate the noise at ±`truncation` (the "truncation trick"); `None`:
                the model's `sampling.truncation` setting (none by default); `0` turns a model's truncation off.
            truncation_mode (`str`, defaults to `"resample"`): `"resample"` redraws values beyond the bound (a
                truncated normal, deterministic under `generator`); `"clamp"` clips them. It is always checked, but
                only matters when a truncation applies (a `truncation` > 0, given or the model's setting, on noise
                drawn here); otherwise it changes nothing.
            max_batch_size (`int`, *optional*): run the generator in chunks of at most this many images (progress
                bar over chunks); by default everything runs in one forward pass.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (BHWC float32 in [0, 1]), `"pt"` (BCHW float32
                in [0, 1]) or `"latent"` (the generator's raw output clamped to [-1, 1], BCHW, in the generator's
                dtype). `"pt"` and `"np"` are float32 whatever the pipeline's dtype (after `.to(torch.bfloat16)`,
                only `"latent"` is bf16), as diffusers' image processor returns them.
            return_dict (`bool`, defaults to `True`): return an [`ImagePipelineOutput`] instead of a tuple.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        check_latents_without_truncation(latents, truncation)
        check_components(self, "__call__", text_encoder=prompt_embeds is None)
        truncation = self.settings.resolve("sampling", truncation=truncation)["truncation"]
        total = self.check_inputs(
            prompt, num_images_per_prompt, generator, latents, prompt_embeds, output_type,
            truncation, truncation_mode, max_batch_size,
        )
        device, dtype = self._device_and_dtype()
        check_call_memory(self, prompt, prompt_embeds, total, max_batch_size, output_type, device, dtype)
        if prompt_embeds is None:
            text_embeds = self.encode_prompt(prompt, device, num_images_per_prompt, max_batch_size)
            check_finite_output(text_embeds, "text encoder", getattr(self.text_encoder.config, "_name_or_path", None))
        else:
            text_embeds = prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
        truncation = None if latents is not None else truncation  # the model's setting is for noise drawn here
        latents = self.prepare_latents(total, dtype, device, generator, latents, truncation, truncation_mode)
        images = self._generate(latents, text_embeds.to(dtype), max_batch_size)
        return self._postprocess(images, output_type, return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        prompt: list[str] | str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        num_steps: int = 8,
        latents: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        interpolate_noise: bool = True,
        interpolate_text: bool = True,
        truncation: float | None = None,
        max_batch_size: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Frames along a path through K >= 2 endpoints: slerp between noise vectors, lerp between sentence embeddings.

        Args:
            prompt (`str` or `list[str]`): K endpoint prompts (a single prompt keeps the text fixed).
            prompt_embeds (`torch.Tensor`, *optional*): K endpoint embeddings (K, cond_dim) instead of `prompt`.
            num_steps (`int`, defaults to 8): frames per segment, both endpoints included; the strip has
                ``(K - 1) * (num_steps - 1) + 1`` frames.
            latents (`torch.Tensor`, *optional*): K endpoint noise vectors (K, z_dim); drawn with `generator` if absent.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): draws the noise endpoints (two
                when one prompt and no `latents` are given); a list holds one generator per noise endpoint.
            interpolate_noise / interpolate_text (`bool`): move along the noise and/or the text path; the one that is
                off stays at its first endpoint.
            truncation, max_batch_size, output_type, return_dict: as in `__call__`.
        """
        return interpolate_frames(self, prompt, prompt_embeds, num_steps, latents, generator, interpolate_noise,
                                  interpolate_text, truncation, max_batch_size, output_type, return_dict)
