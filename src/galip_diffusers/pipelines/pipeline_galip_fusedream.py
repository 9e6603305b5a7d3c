"""FuseDream-style CLIP-guided latent search on GALIP: AugCLIP, initialisation + over-parameterisation, composition.

After Liu et al., "FuseDream: Training-Free Text-to-Image Generation with Improved CLIP+GAN Space Optimization"
(arXiv 2112.01573), written from the paper for GALIP, whose condition is ``cat([z, text_embeds])``: the search runs on
the noise and/or on the sentence-embedding part of the condition.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from galip_core.finite import check_finite_output
from galip_core.noise import check_generator
from galip_diffusers.fusedream import augclip
from galip_diffusers.fusedream import checks as search_checks
from galip_diffusers.fusedream.masks import fill_outside, outside_spread
from galip_diffusers.fusedream.latent_search import OverparameterizedLatent, dynamic_barrier_direction, gather_rows, top_k_indices
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.fusedream.composition import FuseDreamCompositionMixin
from galip_diffusers.fusedream.options import SearchOptions
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from galip_diffusers import GALIPFuseDreamPipeline

        >>> pipe = GALIPFuseDreamPipeline.from_pretrained("galip-shapes")  # ships a separate scorer CLIP
        >>> out = pipe("a large purple triangle on a white background", num_candidates=256, top_k=5, num_steps=100,
        ...            generator=torch.Generator().manual_seed(0))
        >>> out.images[0], out.scores_before, out.scores_after
        >>> scene = pipe.compose(["a small red circle on a white background", "a small blue square on a white background"],
        ...                      prompt="a small red circle and a small blue square on a white background",
        ...                      generator=torch.Generator().manual_seed(0))
        ```
"""


@dataclass
class GALIPFuseDreamPipelineOutput(BaseOutput):
    """Output of [`GALIPFuseDreamPipeline`] and of its `compose`.

    Args:
        images: the refined (or composed) images, in the requested `output_type`.
        scores_before / scores_after (`torch.Tensor` (B,)): AugCLIP (scorer CLIP, `num_measure_augmentations` views,
            the same views before and after) of the image at initialisation and after the search.
        latents (`torch.Tensor`): final noise, (B, z_dim), or (B, J, z_dim) for a composition of J objects.
        text_embeds (`torch.Tensor`): final sentence-embedding part of the condition, (B, cond_dim) or (B, J, cond_dim).
        score_history (`torch.Tensor` (num_steps, B)): the training AugCLIP at every step (random views).
        masks (`torch.Tensor` (B, J, H, W), *optional*): the normalised object masks of a composition.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    scores_before: torch.Tensor
    scores_after: torch.Tensor
    latents: torch.Tensor
    text_embeds: torch.Tensor
    score_history: torch.Tensor | None = None
    masks: torch.Tensor | None = None


class GALIPFuseDreamPipeline(FuseDreamCompositionMixin, GALIPPipeline):
    r"""GALIP with FuseDream's training-free CLIP-guided search (refinement) and composed generation.

    Components as [`GALIPPipeline`], except that `scorer` is **required**:

    Args:
        tokenizer, text_encoder, generator, image_encoder: as in [`GALIPPipeline`].
        scorer ([`~transformers.CLIPModel`]): the CLIP that judges images. It must differ from the bridge CLIP inside
            the generator (a generator searched against its own CLIP finds adversarial images); a scorer whose vision
            weights equal the generator's ViT is refused.
        scorer_tokenizer ([`~transformers.CLIPTokenizer`], *optional*): the scorer's tokenizer; by default the
            pipeline `tokenizer` is used, so a scorer trained with another vocabulary must come with its own.

    `augmentation_config` (an [`~galip_diffusers.fusedream.augclip.AugmentationConfig`] attribute) sets the AugCLIP policy.
    """

    model_cpu_offload_seq = "text_encoder->generator->scorer"
    _optional_components = ["image_encoder", "scorer_tokenizer"]
    _callback_tensor_inputs = ["latents", "text_embeds", "images", "scores"]

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModelWithProjection,
        generator: GALIPGenerator,
        scorer: CLIPModel,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        scorer_tokenizer: CLIPTokenizer | None = None,
    ):
        super().__init__(tokenizer, text_encoder, generator, image_encoder=image_encoder, scorer=scorer)
        self.register_modules(scorer_tokenizer=scorer_tokenizer)
        self.augmentation_config = augclip.AugmentationConfig()
        self.check_scorer()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs):
        """As [`GALIPPipeline.from_pretrained`]; a local folder without a `scorer` (a plain GALIP folder) is refused
        first, with what is missing and how to add a scorer (unless `scorer=` is passed)."""
        from galip_diffusers.pipelines.loading import missing_scorer_error
        from galip_diffusers.pretrained import resolve_pretrained

        path = resolve_pretrained(pretrained_model_name_or_path)
        if kwargs.get("scorer") is None and os.path.isfile(os.path.join(path, "model_index.json")):
            error = missing_scorer_error(cls.__name__, folder=os.fspath(path))
            if error is not None:
                raise error
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """As [`GALIPPipeline.from_pipe`] (dtypes kept, settings dropped when `generator` is replaced); a pipeline
        without a `scorer` needs `scorer=` (the error says so before diffusers' loader runs)."""
        from galip_diffusers.pipelines.loading import missing_scorer_error

        error = None if kwargs.get("scorer") is not None else missing_scorer_error(cls.__name__, pipeline=pipeline)
        if error is not None:
            raise error
        return super().from_pipe(pipeline, **kwargs)

    # ------------------------------------------------------------------ checks
    def check_scorer(self) -> None:
        """Raise if the scorer is missing, is not a CLIPModel-like model, or shares the generator's ViT weights."""
        if self.scorer is None:
            raise ValueError(
                "GALIPFuseDreamPipeline requires a `scorer`: a transformers CLIPModel other than the bridge CLIP inside "
                "the generator (searching against the generator's own CLIP finds adversarial images)."
            )
        if not all(hasattr(self.scorer, a) for a in ("vision_model", "text_model", "visual_projection")):
            raise TypeError(f"`scorer` must be a transformers CLIPModel, got {type(self.scorer).__name__}.")
        ours, theirs = self.generator.vision_model.state_dict(), self.scorer.vision_model.state_dict()
        if all(k in theirs and theirs[k].shape == v.shape for k, v in ours.items()) and all(
            torch.allclose(v.float(), theirs[k].float().to(v.device), rtol=1e-3, atol=1e-4) for k, v in ours.items()
        ):
            raise ValueError(
                "`scorer` has the same vision weights as the generator's bridge ViT; FuseDream needs an independent "
                "CLIP to score images. Pass a different CLIPModel as `scorer`."
            )

    def check_search_inputs(self, options: SearchOptions, generator: Any, callback: Any, callback_inputs: Any) -> None:
        """Validate the search settings and the step callback shared by `__call__` and `compose` (before any work)."""
        options.check()
        check_generator(generator)
        if isinstance(generator, list):
            raise ValueError("The search takes a single `torch.Generator` (or None), not a list of generators.")
        search_checks.check_callback(callback, callback_inputs, self._callback_tensor_inputs)

    def check_search_memory(self, options: SearchOptions, num_images_per_prompt: int, batch: int, renders: int,
                            num_objectives: int = 1) -> None:  # fmt: skip
        """Refuse an oversized search up front, naming the argument (see `check_search_memory`)."""
        search_checks.check_search_memory(self.generator.config, options, num_images_per_prompt, batch, renders,
                                          self._execution_device, self.generator.dtype.itemsize, num_objectives)

    def _checked(self, values: torch.Tensor, component: str, **inputs: torch.Tensor) -> torch.Tensor:
        """`values` if finite; NaN/inf that `component` (`"generator"`, `"text_encoder"`, `"scorer"`) made from finite
        `inputs` means corrupt weights or far-out inputs (`check_finite_output`)."""
        source = getattr(getattr(self, component).config, "_name_or_path", None)
        return check_finite_output(values, component.replace("_", " "), source, inputs or None)

    def _check_images(self, images: torch.Tensor, steps_done: int, num_steps: int, lr: float,
                      noisy: bool = False) -> torch.Tensor:  # fmt: skip
        """The search's `images` after `steps_done` of `num_steps` steps, if finite (see `check_search_images`)."""
        source = getattr(self.generator.config, "_name_or_path", None)
        return search_checks.check_search_images(images, steps_done, num_steps, lr, source, noisy)

    def resolve_search_options(self, section: str, search: SearchOptions | None, overrides: dict[str, Any],
                               base: dict[str, Any] | None = None) -> SearchOptions:  # fmt: skip
        """The search settings of a call: `search` if given, else `SearchOptions`' defaults updated with `base` (the
        call's own defaults) and the model's recommended `section` settings (``galip_settings.json``); keyword
        `overrides` on top. ``truncation=0`` turns a recommended truncation off."""
        names = {f.name for f in fields(SearchOptions)}
        recommended = {k: v for k, v in self.settings.sections.get(section, {}).items() if k in names}
        options = SearchOptions.resolve(search, {**(base or {}), **recommended}, **overrides)
        from_file = search is None and "top_k" in recommended and "top_k" not in overrides
        if from_file and options.top_k > options.num_candidates:
            raise ValueError(f"`num_candidates`={options.num_candidates} is below the model's recommended `top_k`="
                             f"{options.top_k} ({section}.top_k of {self.settings.source}): pass a `top_k` <= "
                             "`num_candidates` too.")
        return replace(options, truncation=None) if options.truncation == 0 else options

    # ------------------------------------------------------------------ building blocks
    def encode_scorer_text(self, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """L2-normalised scorer text embeddings (tokenised with `scorer_tokenizer`, else with `tokenizer`)."""
        tokenizer = self.scorer_tokenizer if self.scorer_tokenizer is not None else self.tokenizer
        return self._checked(augclip.encode_text(self.scorer, tokenizer, prompts, device or self._execution_device),
                             "scorer")

    @torch.no_grad()
    def select_candidates(
        self, text_embeds: torch.Tensor, score_text: torch.Tensor, num_candidates: int, top_k: int,
        generator: torch.Generator | None = None, candidate_text_noise: float = 0.05, truncation: float | None = None,
        max_batch_size: int = 64, region: torch.Tensor | None = None, containment_weight: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """FuseDream's initialisation: draw `num_candidates` conditions per row of `text_embeds` and keep the `top_k`
        by plain scorer-CLIP score. Candidate m of row b is ``(z[b, m], text_embeds[b] + s * rms * eps[b, m])``, with
        ``s = candidate_text_noise``. Candidate 0 is exactly the one-step sample [`GALIPPipeline`] draws with the same
        generator (``z[:, 0]`` is drawn first, and ``eps[:, 0] = 0``), so the search starts from a set that contains it. With a
        `region` (B, 1, H, W) weight map, candidates are scored on that region only (see `fill_outside`), minus
        `containment_weight` times their `outside_spread` (what spills over the region).

        Returns ``(z_basis (B, k, z_dim), text_basis (B, k, cond_dim), scores (B, M), indices (B, k))``."""
        batch, device = text_embeds.shape[0], text_embeds.device
        z = self.prepare_latents(batch, torch.float32, device, generator, None, truncation)[:, None]  # = plain sample
        if num_candidates > 1:
            rest = self.prepare_latents(batch * (num_candidates - 1), torch.float32, device, generator, None, truncation)
            z = torch.cat([z, rest.view(batch, num_candidates - 1, -1)], dim=1)
        eps = randn_tensor((batch, num_candidates, text_embeds.shape[1]), generator=generator, device=device)
        eps[:, 0] = 0
        rms = text_embeds.float().square().mean(-1, keepdim=True).sqrt()
        texts = text_embeds.float()[:, None] + candidate_text_noise * rms[:, None] * eps
        flat_z, flat_t = z.flatten(0, 1), texts.flatten(0, 1)
        flat_score_text = score_text.repeat_interleave(num_candidates, dim=0)
        flat_region = None if region is None else region.repeat_interleave(num_candidates, dim=0)
        scores = []
        for start in range(0, flat_z.shape[0], max_batch_size):
            part = slice(start, start + max_batch_size)
            images = self._checked(self._render(flat_z[part], flat_t[part]), "generator", latents=flat_z[part],
                                   text_embeddings=flat_t[part])
            penalty = 0.0
            if flat_region is not None:
                weight = flat_region[part]
                if containment_weight > 0:
                    penalty = containment_weight * outside_spread(images, weight)
                images = fill_outside(images, weight)
            scores.append(augclip.clip_score(self.scorer, images, flat_score_text[part]) - penalty)
        scores = self._checked(torch.cat(scores).view(batch, num_candidates), "scorer")
        indices = top_k_indices(scores, top_k)
        return gather_rows(z, indices), gather_rows(texts, indices), scores, indices

    def _render(self, z: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        dtype = self.generator.dtype
        return self.generator(z.to(dtype), text_embeds.to(dtype)).float().clamp(-1, 1)

    def _perturb(self, value: torch.Tensor, std: float, generator: torch.Generator | None, relative: bool) -> torch.Tensor:
        if std <= 0:
            return value
        scale = value.detach().square().mean(-1, keepdim=True).sqrt() if relative else 1.0
        return value + std * scale * randn_tensor(value.shape, generator=generator, device=value.device)

    def _measure_seed(self, generator: torch.Generator | None) -> int:
        device = generator.device if generator is not None else "cpu"
        return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device))

    def _search(
        self, modules: list[OverparameterizedLatent], render: Callable[[bool], tuple[torch.Tensor, Any]],
        objective: Callable[[torch.Tensor], torch.Tensor], num_steps: int, lr: float,
        closeness: Callable[[torch.Tensor, Any], torch.Tensor] | None = None, constraint: str = "barrier",
        barrier_alpha: float = 0.5, closeness_weight: float = 1.0, callback: Callable | None = None,
        callback_inputs: tuple[str, ...] = (), current: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Adam on the over-parameterised latents maximising `objective` (images -> per-image score, e.g. AugCLIP);
        with `closeness`, the bi-level objective (dynamic barrier or penalty). Returns the objective per step,
        (num_steps, B)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr) if params else None
        history = []
        with self.progress_bar(total=num_steps) as progress:
            for step in range(num_steps):
                with torch.enable_grad():
                    images, extra = render(True)
                    self._check_images(images, step, num_steps, lr, noisy=True)
                    scores = objective(images)
                    loss_f = -scores.sum()
                    if optimizer is not None:
                        if closeness is None:
                            grads = torch.autograd.grad(loss_f, params, allow_unused=True)
                        elif constraint == "penalty":
                            loss = loss_f + closeness_weight * closeness(images, extra).sum()
                            grads = torch.autograd.grad(loss, params, allow_unused=True)
                        else:
                            grad_f = torch.autograd.grad(loss_f, params, retain_graph=True, allow_unused=True)
                            grad_g = torch.autograd.grad(closeness(images, extra).sum(), params, allow_unused=True)
                            zero = [torch.zeros_like(p) for p in params]
                            grads = dynamic_barrier_direction(
                                [g if g is not None else o for g, o in zip(grad_f, zero)],
                                [g if g is not None else o for g, o in zip(grad_g, zero)], barrier_alpha,
                            )
                if optimizer is not None:
                    for p, g in zip(params, grads):
                        p.grad = torch.zeros_like(p) if g is None else g.detach()
                    optimizer.step()
                    for m in modules:
                        m.project_()
                history.append(scores.detach())
                if callback is not None:
                    latents, text_embeds = current()
                    values = {"latents": latents, "text_embeds": text_embeds, "images": images.detach(), "scores": scores.detach()}
                    callback(self, step, step, {k: values[k] for k in callback_inputs})
                progress.update()
        if not history:
            return torch.zeros(0, modules[0].basis.shape[0])
        return torch.stack(history)

    def _augclip_objective(
        self, score_text: torch.Tensor, num_augmentations: int, generator: torch.Generator | None,
        region: torch.Tensor | None = None,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """images -> AugCLIP against `score_text` over `num_augmentations` random views (on `region` only, the rest
        filled as in `fill_outside`, when a (B, 1, H, W) weight map is given)."""

        def objective(images: torch.Tensor) -> torch.Tensor:
            views = images if region is None else fill_outside(images, region)
            return augclip.augclip_score(self.scorer, views, score_text, num_augmentations, generator,
                                         self.augmentation_config)

        return objective

    def _finish(self, images: torch.Tensor, output_type: str, return_dict: bool, **fields: Any):
        if output_type != "latent":
            images = self.image_processor.postprocess(images.detach().float(), output_type=output_type)
        self.maybe_free_model_hooks()
        output = GALIPFuseDreamPipelineOutput(images=images, **fields)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ refinement
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        search: SearchOptions | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        **search_kwargs: Any,
    ) -> GALIPFuseDreamPipelineOutput | tuple:
        r"""Generate images that follow the prompt better, by CLIP-guided search in GALIP's condition space.

        1. *Initialisation*: `num_candidates` conditions per image (noise; the prompt embedding jittered by
           `candidate_text_noise` of its RMS, except candidate 0), keep the `top_k` by plain scorer-CLIP score.
        2. *Over-parameterisation*: ``z = sum_i softmax(W_z)_i * Z_i`` per coordinate over the k chosen noises (basis
           clamped to ±`noise_clamp`), and the same for the sentence embedding over the k chosen embeddings; weights
           start uniform.
        3. *Search*: `num_steps` of Adam (`lr`) on the bases and weights selected by `optimize` (`"noise"`, `"text"`
           or `"noise+text"`), maximising AugCLIP over `num_augmentations` random views, with Gaussian `latent_noise`
           (std, relative to the RMS for the embedding) added to the optimised vectors at every step.

        Search settings not given (neither `search` nor a keyword) take the model's recommended values
        (`self.settings["refinement"]`, from the folder's `galip_settings.json`), else `SearchOptions`' defaults.

        Args:
            prompt (`str` or `list[str]`): the prompt(s); scored by the scorer CLIP and encoded by `text_encoder`.
            search ([`~galip_diffusers.fusedream.options.SearchOptions`], *optional*): the search settings as one
                object; each of them can also be given as a keyword argument (`num_candidates=256`, ...), which
                overrides it. Those described above are settings of `SearchOptions`.
            num_images_per_prompt (`int`): images per prompt, each searched independently (batched together).
            num_measure_augmentations (`int`): views of the reporting AugCLIP (`scores_before`/`scores_after`).
            truncation (`float`, *optional*): truncate candidate noise (see [`GALIPPipeline.__call__`]).
            max_batch_size (`int`, defaults to 64): chunk size when rendering and scoring candidates.
            generator (`torch.Generator`, *optional*): the only source of randomness (candidates, views, noise).
            output_type, return_dict: as in [`GALIPPipeline.__call__`].
            callback_on_step_end (`Callable`, *optional*): ``callback(pipe, step, step, callback_kwargs)`` after every
                step; `callback_kwargs` holds the (detached, read-only) tensors named in
                `callback_on_step_end_tensor_inputs` among `"latents"`, `"text_embeds"`, `"images"`, `"scores"`.

        Returns:
            [`GALIPFuseDreamPipelineOutput`] (or a tuple in its field order).

        Raises:
            `ValueError` naming the argument and its allowed range for a bad setting (NaN/inf included), or for a
            call too big for the free memory; [`~galip_diffusers.fusedream.checks.SearchDivergedError`] (a
            `RuntimeError`) if the search's images become NaN/inf (lower `lr`); `RuntimeError` naming the component
            whose weights produce NaN/inf. No NaN image is ever returned.
        """
        o = self.resolve_search_options("refinement", search, search_kwargs)
        self.check_scorer()
        self.check_search_inputs(o, generator, callback_on_step_end, callback_on_step_end_tensor_inputs)
        total = self.check_inputs(prompt, num_images_per_prompt, None, None, None, output_type, o.truncation,
                                  "resample", o.max_batch_size)
        self.check_search_memory(o, num_images_per_prompt, total, total)
        device = self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        with torch.no_grad():
            text_embeds = self.encode_prompt(prompts, device, num_images_per_prompt)
            text_embeds = self._checked(text_embeds, "text_encoder").float()
            score_text = self.encode_scorer_text(prompts, device).repeat_interleave(num_images_per_prompt, dim=0)
        z_basis, t_basis, _, _ = self.select_candidates(
            text_embeds, score_text, o.num_candidates, o.top_k, generator, o.candidate_text_noise, o.truncation,
            o.max_batch_size,
        )
        z_latent = OverparameterizedLatent(z_basis, clamp=o.noise_clamp, trainable="noise" in o.optimize)
        t_latent = OverparameterizedLatent(t_basis, trainable="text" in o.optimize)

        def render(noisy: bool) -> tuple[torch.Tensor, None]:
            z, t = z_latent(), t_latent()
            if noisy:
                z = self._perturb(z, o.latent_noise if "noise" in o.optimize else 0.0, generator, relative=False)
                t = self._perturb(t, o.latent_noise if "text" in o.optimize else 0.0, generator, relative=True)
            return self._render(z, t), None

        seed = self._measure_seed(generator)
        measure = lambda x: augclip.measure_augclip(  # noqa: E731
            self.scorer, x, score_text, o.num_measure_augmentations, seed, self.augmentation_config, o.max_batch_size)
        with torch.no_grad():
            scores_before = measure(self._check_images(render(False)[0], 0, o.num_steps, o.lr))
        objective = self._augclip_objective(score_text, o.num_augmentations, generator)
        history = self._search(
            [z_latent, t_latent], render, objective, o.num_steps, o.lr, callback=callback_on_step_end,
            callback_inputs=tuple(callback_on_step_end_tensor_inputs),
            current=lambda: (z_latent().detach(), t_latent().detach()),
        )
        with torch.no_grad():
            images = self._check_images(render(False)[0], o.num_steps, o.num_steps, o.lr)
            scores_after = measure(images)
        return self._finish(images, output_type, return_dict, scores_before=scores_before, scores_after=scores_after,
                            latents=z_latent().detach(), text_embeds=t_latent().detach(), score_history=history)
