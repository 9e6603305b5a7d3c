"""Composed generation (FuseDream's bi-level composition) for :class:`GALIPFuseDreamPipeline`.

Each object prompt j gets its own over-parameterised condition ``(z_j, t_j)``. GALIP runs up to G-block ``layer`` for
every object (``forward_features``); the features are blended under soft spatial masks; the rest of G decodes the blend
(``forward_from``). Decoding (``decode_condition``):

* ``"mix"`` (default): the blend is decoded once per object with that object's own condition and the RGB outputs are
  blended with the same masks at full resolution. GALIP's modulation is per channel (not spatial), so this is how each
  region keeps its own colour/shape condition; with a mask that is all ones for object j it is exactly ``G(z_j, t_j)``.
* ``"joint"``: one decode of the blend with the joint prompt's embedding and the mask-area-weighted mean noise.

Candidates: object j's are scored on its own mask region, minus a spill-over penalty (``containment_weight``).

Objective (bi-level): the upper level maximises AugCLIP of the composite for the joint `prompt` (plus, with
``object_weight``, each object prompt's AugCLIP on its own region); the lower level keeps the composite close to the
*collage* of the objects at initialisation. ``closeness="scorer"`` measures an LPIPS-like
distance (channel-normalised tokens of every scorer-ViT layer) to the pixel collage ``sum_j mask_j * G(z_j0, t_j0)``;
``"generator"`` measures it between the blended G features and the blended features at initialisation. It is solved by
dynamic-barrier gradient descent (``constraint="barrier"``: every step also decreases the distance) or by a penalty
(``"penalty"``: AugCLIP loss + ``closeness_weight`` * distance).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.utils import logging

from galip_core.finite import check_number_in_range
from galip_core.text import clip_text_clean
from galip_diffusers.fusedream import augclip
from galip_diffusers.fusedream.checks import check_compose_numbers, check_decode_condition
from galip_diffusers.fusedream.masks import (
    CLOSENESS_MODES, CONSTRAINTS, DECODE_CONDITIONS, MASK_LAYOUTS, default_masks, feature_distance, prepare_masks,
    resize_masks,
)
from galip_diffusers.fusedream.options import SearchOptions
from galip_diffusers.fusedream.latent_search import OverparameterizedLatent


logger = logging.get_logger(__name__)

#: compose's own defaults of the search settings (the others are :class:`SearchOptions`' defaults)
COMPOSE_DEFAULTS = {"num_candidates": 256, "num_steps": 100}


class FuseDreamCompositionMixin:
    """Adds :meth:`compose` to :class:`GALIPFuseDreamPipeline`."""

    def check_compose_inputs(
        self, prompts: Any, prompt: Any, layer: Any, decode_condition: Any, closeness: Any, constraint: Any,
        barrier_alpha: Any, containment_weight: Any = 0.0, object_weight: Any = 0.0, closeness_weight: Any = 1.0,
        mask_layout: Any = "split", layer_source: str | None = None,
    ) -> None:
        """Raise a ``ValueError`` naming the argument and its allowed values for a bad argument of `compose`.
        `layer_source`: the settings file `layer` came from (the model's recommended value), which the error names."""
        if not isinstance(prompts, (list, tuple)) or len(prompts) < 2 or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompts` must be a list of >= 2 object prompts (str), got {prompts!r}.")
        if not isinstance(prompt, str):
            raise TypeError(f"`prompt` (the joint prompt) must be a str, got {type(prompt).__name__}.")
        what = "the G-block after which the features are blended; 0 = the CLIP adapter output"
        layer_name = (f"`layer` ({what})" if layer_source is None else
                      f"composition.layer of {layer_source} (the model's recommended `layer`, {what}; pass `layer` to "
                      "override it)")
        check_number_in_range(layer_name, layer, low=0, high=self.generator.num_blocks, integer=True)
        for name, value, allowed in (("decode_condition", decode_condition, DECODE_CONDITIONS),
                                     ("closeness", closeness, CLOSENESS_MODES), ("constraint", constraint, CONSTRAINTS),
                                     ("mask_layout", mask_layout, MASK_LAYOUTS)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
        check_decode_condition(decode_condition, layer, self.generator.num_blocks, layer_source)
        check_compose_numbers(barrier_alpha, closeness_weight, containment_weight, object_weight)

    def _warn_if_default_prompt_is_cut(self, prompt: str) -> None:
        """Say that compose's default joint prompt is over the generator's text encoder's token limit (e.g. two
        galip-shapes captions joined with " and "), before the truncation warning of the generator's text path names
        the cut text (the scorer's text path warns for itself if its own limit cuts it too)."""
        limit = self.tokenizer.model_max_length
        length = len(self.tokenizer(clip_text_clean(prompt)).input_ids)
        if length > limit:
            logger.warning(f"compose: the default joint prompt `\" and \".join(prompts)` = {prompt!r} has {length} "
                           f"tokens, over the {limit} the generator's text encoder takes, so its end is cut there (see "
                           "the truncation warning): pass a shorter joint `prompt`.")

    def compose(
        self,
        prompts: list[str],
        prompt: str | None = None,
        num_images_per_prompt: int = 1,
        layer: int | None = None,
        masks: torch.Tensor | None = None,
        mask_layout: str = "split",
        decode_condition: str = "mix",
        closeness: str = "scorer",
        constraint: str = "barrier",
        barrier_alpha: float = 0.5,
        closeness_weight: float = 1.0,
        containment_weight: float | None = None,
        object_weight: float = 0.0,
        search: SearchOptions | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        **search_kwargs: Any,
    ):
        r"""Compose J >= 2 objects into one image (see the module docstring for the method).

        `layer`, `containment_weight` and the search settings not given take the model's recommended values
        (`self.settings["composition"]`, from the folder's `galip_settings.json`), else `num_blocks // 2`, 1.0 and
        `SearchOptions`' defaults with `COMPOSE_DEFAULTS`; `truncation=0` turns a recommended truncation off.

        Args:
            prompts (`list[str]`): one prompt per object (each a prompt the generator knows).
            prompt (`str`, *optional*): the joint prompt AugCLIP maximises; defaults to ``" and ".join(prompts)``.
                That default is often longer than a small model's token limit (two galip-shapes captions make 20
                tokens, over its tokenizer's 16): it is then truncated for both the text encoder and the scorer,
                with a warning that says so and warnings naming the cut text; pass a shorter joint prompt (e.g.
                "a red circle and a blue square") to keep all of it.
            num_images_per_prompt (`int`): compositions to make (different candidates), batched.
            layer (`int`, *optional*): G-block index of the blend, in ``[0, generator.num_blocks]``; defaults to
                ``num_blocks // 2``.
            masks (`torch.Tensor`, *optional*): (J, H, W) or (B, J, H, W) non-negative soft masks at any resolution,
                normalised to sum to 1 over objects; by default `default_masks(J, output_size, mask_layout)`.
            mask_layout (`str`): `"split"` (vertical strips; left/right halves for two objects) or `"center"`
                (object 1 under a centred Gaussian, object 0 around it).
            decode_condition, closeness, constraint, barrier_alpha, closeness_weight: see the module docstring. The
                weights, here and below, are finite numbers in [0, 1e6] (`fusedream.checks.MAX_COMPOSE_WEIGHT`): far
                above any useful value, and low enough that no weighted term overflows to inf. `decode_condition`
                acts only through the G-blocks after the blend: at ``layer == generator.num_blocks`` (galip-shapes'
                recommended layer) none runs and `to_rgb` takes no condition, so "mix" and "joint" make the same
                image. "joint" there is refused (a `ValueError` naming both); the default "mix" is accepted.
            containment_weight (`float`, defaults to 1.0): candidates of object j are scored (plain CLIP, its own
                prompt) on its own mask region, the rest filled with the region's mean colour, minus
                `containment_weight` times their spill-over (`outside_spread`: how much the candidate varies outside
                the region), so that each object is drawn from a candidate whose object lies inside its region. 0 is
                the region score alone.
            object_weight (`float`, defaults to 0.0): the upper level maximises the joint prompt's AugCLIP plus
                `object_weight` times the mean over objects of each object prompt's AugCLIP on its own region. 0 is
                the joint prompt alone, as in FuseDream; a scorer trained on single-object captions reads the object
                prompts far better than a joint one.
            search and the other search settings (`num_candidates`, ...): as in `__call__` (defaults: `SearchOptions`,
                with `COMPOSE_DEFAULTS`).

        Returns:
            [`GALIPFuseDreamPipelineOutput`]: `latents` (B, J, z_dim), `text_embeds` (B, J, cond_dim), `masks`
            (B, J, H, W) at output resolution; the scores are the joint prompt's AugCLIP.
        """
        o = self.resolve_search_options("composition", search, search_kwargs, COMPOSE_DEFAULTS)
        default_prompt = prompt is None
        if default_prompt and isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
            prompt = " and ".join(prompts)  # else the check below names the bad `prompts`
        recommended = self.settings.resolve("composition", layer=layer, containment_weight=containment_weight)
        layer_source = self.settings.source if layer is None and recommended["layer"] is not None else None
        layer, containment_weight = recommended["layer"], recommended["containment_weight"]
        layer = self.generator.num_blocks // 2 if layer is None else layer
        self.check_scorer()
        self.check_compose_inputs(prompts, prompt, layer, decode_condition, closeness, constraint, barrier_alpha,
                                  containment_weight, object_weight, closeness_weight, mask_layout, layer_source)
        layer = int(layer)  # a numpy integer is accepted as the int it is
        self.check_search_inputs(o, generator, callback_on_step_end, callback_on_step_end_tensor_inputs)
        self.check_inputs(list(prompts), num_images_per_prompt, None, None, None, output_type, o.truncation, "resample",
                          o.max_batch_size)
        device, batch, num_objects = self._execution_device, num_images_per_prompt, len(prompts)
        objectives = 1 + (num_objects if object_weight > 0 else 0)
        self.check_search_memory(o, batch, batch, num_objects * batch, objectives)
        size = self.generator.config.output_size
        if masks is None:
            masks = default_masks(num_objects, size, mask_layout)
        weights = prepare_masks(masks, num_objects, batch).to(device)
        weights_img = resize_masks(weights, size)

        with torch.no_grad():
            object_embeds = self._checked(self.encode_prompt(list(prompts), device, batch), "text_encoder")
            object_embeds = object_embeds.float().view(num_objects, batch, -1)
            object_text = self.encode_scorer_text(list(prompts), device).repeat_interleave(batch, dim=0)
            object_text = object_text.view(num_objects, batch, -1)  # as `object_embeds`: object j's rows at [j]
            if default_prompt:
                self._warn_if_default_prompt_is_cut(prompt)
            joint_text = self.encode_scorer_text([prompt], device).expand(batch, -1)
            joint_embeds = self._checked(self.encode_prompt([prompt], device, batch), "text_encoder").float()
        z_latents, t_latents = [], []
        for j in range(num_objects):
            z_basis, t_basis, _, _ = self.select_candidates(
                object_embeds[j], object_text[j], o.num_candidates, o.top_k, generator, o.candidate_text_noise,
                o.truncation, o.max_batch_size, region=weights_img[:, j : j + 1], containment_weight=containment_weight,
            )
            z_latents.append(OverparameterizedLatent(z_basis, clamp=o.noise_clamp, trainable="noise" in o.optimize))
            t_latents.append(OverparameterizedLatent(t_basis, trainable="text" in o.optimize))

        def conditions(noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
            z = torch.cat([m() for m in z_latents])  # object-major: row j * B + b
            t = torch.cat([m() for m in t_latents])
            if noisy:
                z = self._perturb(z, o.latent_noise if "noise" in o.optimize else 0.0, generator, relative=False)
                t = self._perturb(t, o.latent_noise if "text" in o.optimize else 0.0, generator, relative=True)
            return z, t

        def render(noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
            z, t = conditions(noisy)
            dtype = self.generator.dtype
            feats = self.generator.forward_features(z.to(dtype), t.to(dtype), upto=layer).float()
            feats = feats.view(num_objects, batch, *feats.shape[1:])
            w = resize_masks(weights, feats.shape[-1]).transpose(0, 1).unsqueeze(2)  # (J, B, 1, h, w)
            blend = (w * feats).sum(0)
            if decode_condition == "mix":
                out = self.generator.forward_from(blend.repeat(num_objects, 1, 1, 1).to(dtype), z.to(dtype), t.to(dtype), layer)
                out = out.float().view(num_objects, batch, *out.shape[1:])
                images = (weights_img.transpose(0, 1).unsqueeze(2) * out).sum(0)
            else:
                area = weights_img.mean(dim=(2, 3)).transpose(0, 1).unsqueeze(-1)  # (J, B, 1)
                z_mean = (area * z.view(num_objects, batch, -1)).sum(0)
                images = self.generator.forward_from(blend.to(dtype), z_mean.to(dtype), joint_embeds.to(dtype), layer)
            return images.float().clamp(-1, 1), blend

        with torch.no_grad():
            images0, blend0 = render(False)
            self._check_images(images0, 0, o.num_steps, o.lr)
            z0, t0 = conditions(False)
            objects0 = self._render(z0, t0).view(num_objects, batch, 3, size, size)
            collage = (weights_img.transpose(0, 1).unsqueeze(2) * objects0).sum(0)
            target = augclip.encode_images(self.scorer, collage, output_hidden_states=True)[1]

        def distance(images: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
            if closeness == "generator":
                return feature_distance((blend,), (blend0,))
            return feature_distance(augclip.encode_images(self.scorer, images, output_hidden_states=True)[1], target)

        def current() -> tuple[torch.Tensor, torch.Tensor]:
            z, t = conditions(False)
            return (z.detach().view(num_objects, batch, -1).transpose(0, 1),
                    t.detach().view(num_objects, batch, -1).transpose(0, 1))

        seed = self._measure_seed(generator)
        measure = lambda x: augclip.measure_augclip(  # noqa: E731
            self.scorer, x, joint_text, o.num_measure_augmentations, seed, self.augmentation_config, o.max_batch_size)
        scores_before = measure(images0)
        joint_objective = self._augclip_objective(joint_text, o.num_augmentations, generator)
        object_objectives = [  # each object prompt on its own region (only when weighted)
            self._augclip_objective(object_text[j], o.num_augmentations, generator, region=weights_img[:, j : j + 1])
            for j in range(num_objects)
            if object_weight > 0
        ]

        def objective(images: torch.Tensor) -> torch.Tensor:
            score = joint_objective(images)
            for object_objective in object_objectives:
                score = score + object_weight / num_objects * object_objective(images)
            return score

        history = self._search(
            z_latents + t_latents, render, objective, o.num_steps, o.lr, distance, constraint, barrier_alpha,
            closeness_weight, callback_on_step_end, tuple(callback_on_step_end_tensor_inputs), current,
        )
        with torch.no_grad():
            images = self._check_images(render(False)[0], o.num_steps, o.num_steps, o.lr)
            scores_after = measure(images)
        latents, text_embeds = current()
        return self._finish(images, output_type, return_dict, scores_before=scores_before, scores_after=scores_after,
                            latents=latents, text_embeds=text_embeds, score_history=history, masks=weights_img)
