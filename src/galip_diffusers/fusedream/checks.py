"""Checks of FuseDream calls beyond :meth:`SearchOptions.check`: compose's own numbers, an up-front memory estimate
(``GALIPPipeline``'s :func:`check_memory`), and the images of a search, which must stay finite.

A NaN image from finite inputs before any search step means corrupt weights (:func:`check_finite_output`); one that
appears after Adam steps means the optimisation ran away (:class:`SearchDivergedError`), which says so instead."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from galip_core.finite import check_finite_output, check_number_in_range
from galip_diffusers.fusedream.options import SearchOptions
from galip_diffusers.pipelines.call_checks import check_memory


#: upper bound of compose's weights (`barrier_alpha`, `closeness_weight`, `containment_weight`, `object_weight`).
#: Sensible values are around 0.1-10; 1e6 is far above any of them and still keeps every weighted term (a score,
#: a spill-over or a distance times the weight) finite in float32. Near 1e308 a term overflows to inf, and the error
#: that follows blamed the scorer's weights or the learning rate instead of the weight.
MAX_COMPOSE_WEIGHT = 1e6


class SearchDivergedError(RuntimeError):
    """The search's images became NaN/inf after some Adam steps from a finite start: the settings, not the weights."""


def check_compose_numbers(barrier_alpha: Any, closeness_weight: Any, containment_weight: Any,
                          object_weight: Any) -> None:  # fmt: skip
    """``ValueError`` naming the argument unless each of compose's weights is a finite number in
    ``[0, MAX_COMPOSE_WEIGHT]``: a huge weight overflows its term to inf, which would surface later as an error
    naming the scorer's weights or `lr` instead of the weight."""
    for name, value in (("barrier_alpha", barrier_alpha), ("closeness_weight", closeness_weight),
                        ("containment_weight", containment_weight), ("object_weight", object_weight)):  # fmt: skip
        check_number_in_range(f"`{name}`", value, low=0, high=MAX_COMPOSE_WEIGHT)


def check_decode_condition(decode_condition: str, layer: int, num_blocks: int, layer_source: str | None = None) -> None:
    """``ValueError`` naming `decode_condition` and `layer` when a non-default `decode_condition` ("joint") cannot
    change the image: at ``layer == num_blocks`` no G-block runs after the blend and ``to_rgb`` takes no condition,
    so "mix" and "joint" both decode the blend to the same image. The default "mix" is let through (it asks for
    nothing the layer cannot give), so callers that always pass the default keep working."""
    if decode_condition == "mix" or layer != num_blocks:
        return
    where = "" if layer_source is None else f" (composition.layer of {layer_source}, the model's recommended `layer`)"
    raise ValueError(
        f"`decode_condition`={decode_condition!r} has no effect at `layer`={layer}{where}: it is the generator's "
        f"num_blocks, so no G-block runs after the blend and to_rgb takes no condition ('mix' and 'joint' give the "
        f"same image); pass a `layer` in [0, {num_blocks - 1}], or leave `decode_condition` at 'mix'."
    )


def check_callback(callback: Any, tensor_inputs: Any, allowed: Sequence[str]) -> None:
    """Before any work: ``TypeError`` unless ``callback_on_step_end`` is ``None`` or callable and
    ``callback_on_step_end_tensor_inputs`` is a list or tuple of names (a bare str is refused, not split into
    characters); ``ValueError`` for a name not in ``allowed`` (the pipeline's ``_callback_tensor_inputs``)."""
    if callback is not None and not callable(callback):
        raise TypeError("`callback_on_step_end` must be None or a callable `callback(pipe, step, timestep, "
                        f"callback_kwargs)`, got {type(callback).__name__} {callback!r}.")
    if not isinstance(tensor_inputs, (list, tuple)):
        hint = f" (for one name, pass [{tensor_inputs!r}])" if isinstance(tensor_inputs, str) else ""
        raise TypeError(f"`callback_on_step_end_tensor_inputs` must be a list of names among {list(allowed)}, got "
                        f"{type(tensor_inputs).__name__} {tensor_inputs!r}{hint}.")
    bad = [name for name in tensor_inputs if name not in allowed]
    if bad:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {list(allowed)}, got {bad}.")


def check_search_memory(config: Mapping[str, Any], options: SearchOptions, num_images_per_prompt: int, batch: int,
                        renders: int, device: torch.device, dtype_bytes: int = 4,
                        num_objectives: int = 1) -> None:  # fmt: skip
    """Refuse up front, naming the argument, a search that would not fit in ``device``'s free memory.

    Estimated as ``GALIPPipeline`` calls (:func:`check_memory`): the search renders ``renders`` images at once with
    gradients (``num_images_per_prompt``); each of the ``batch`` rows draws and scores ``num_candidates`` in chunks
    of ``max_batch_size`` (counted as images: an over-estimate, as only their noise and embeddings are kept); every
    step scores ``num_augmentations`` views of each row per objective, unchunked."""
    check_memory("num_images_per_prompt", num_images_per_prompt, config, renders, None, device, dtype_bytes)
    check_memory("num_candidates", options.num_candidates, config, batch * options.num_candidates,
                 options.max_batch_size, device, dtype_bytes)  # fmt: skip
    if options.num_steps > 0:
        views = batch * options.num_augmentations * num_objectives
        check_memory("num_augmentations", options.num_augmentations, config, views, None, device, dtype_bytes)


def check_search_images(images: torch.Tensor, steps_done: int, num_steps: int, lr: float, source: str | None = None,
                        noisy: bool = False) -> torch.Tensor:  # fmt: skip
    """Return ``images`` (rendered after ``steps_done`` of ``num_steps`` Adam steps, with the search's
    ``latent_noise`` if ``noisy``) if finite. Unperturbed before any step, NaN/inf comes from the generator's weights
    (``source``): :func:`check_finite_output`'s error; else the search diverged: :class:`SearchDivergedError`."""
    if steps_done == 0 and not noisy:
        return check_finite_output(images, "generator", source)
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        if steps_done == 0:  # only the perturbation differs from the finite start
            cause = "the `latent_noise` perturbation made them so (use a smaller `latent_noise`)"
        else:
            cause = (f"the optimisation ran away (`lr`={lr:g}; try a lower `lr`, or a smaller `latent_noise`, or fewer "
                     "`num_steps`)")
        raise SearchDivergedError(
            f"The FuseDream search diverged after {steps_done} of {num_steps} step(s): its images hold "
            f"{int(bad.sum())} non-finite value(s) (NaN or inf). It started from finite images, so the weights are "
            f"not at fault: {cause}. No image was made."
        )
    return images
