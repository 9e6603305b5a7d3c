"""The training flags diffusers' ``train_text_to_image.py`` users type, for ``train_galip.py`` (and the tracker /
validation-image part for ``train_clip.py``): learning-rate schedules per optimiser, ``--scale_lr``,
``--use_8bit_adam``, EMA placement (``--foreach_ema`` / ``--offload_ema``), ``--image_interpolation_mode``,
``--validation_epochs``, and validation images sent to every configured tracker. Also the allowed values of both
scripts' numeric flags (:data:`FLAG_RANGES`, checked at parse time by :func:`check_flag_ranges`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from typing import Any, Sequence

import torch

from galip_core.finite import check_number_in_range
from galip_core.paths import check_output_folder as check_folder_flag  # noqa: F401  (the scripts' name)

logger = logging.getLogger(__name__)

#: diffusers' ``get_scheduler`` names (``diffusers.optimization.SchedulerType``) that need no extra arguments
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
#: ``--image_interpolation_mode``: the PIL resampling filter of the real-image resize (GALIP's is bilinear)
INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")

_COUNT = dict(low=1, integer=True)  # an integer >= 1
_COUNT_OR_ZERO = dict(low=0, integer=True)  # an integer >= 0
_POSITIVE = dict(low=0, low_open=True)  # a finite number > 0
_NON_NEGATIVE = dict(low=0)  # a finite number >= 0
_FRACTION = dict(low=0, high=1, high_open=True)  # a finite number in [0, 1)
#: the allowed values of the numeric flags of train_galip.py and train_clip.py, as keywords of
#: :func:`galip_core.finite.check_number_in_range`; :func:`check_flag_ranges` checks those a script has
FLAG_RANGES: dict[str, dict[str, Any]] = {
    # counts
    "max_train_steps": _COUNT, "num_train_epochs": _COUNT, "gradient_accumulation_steps": _COUNT,
    "checkpointing_steps": _COUNT, "checkpoints_total_limit": _COUNT, "validation_epochs": _COUNT,
    "num_validation_images": _COUNT, "max_train_samples": _COUNT, "shuffle_buffer_size": _COUNT,
    "lr_num_cycles": _COUNT, "lr_warmup_steps": _COUNT_OR_ZERO, "reconstruction_warmup_steps": _COUNT_OR_ZERO,
    "dataloader_num_workers": _COUNT_OR_ZERO, "eval_num_images": _COUNT_OR_ZERO,
    "seed": dict(low=0, high=2**32 - 1, integer=True),  # accelerate's set_seed seeds NumPy too: [0, 2**32 - 1]
    # optimiser (train_clip.py: --learning_rate, --weight_decay)
    "learning_rate": _POSITIVE, "learning_rate_g": _POSITIVE, "learning_rate_d": _POSITIVE,
    "adam_beta1": _FRACTION, "adam_beta2": _FRACTION, "adam_epsilon": _POSITIVE,
    "adam_weight_decay": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE,
    "max_grad_norm": _POSITIVE,  # train_galip.py: left out = no clipping (train_clip.py overrides: 0 = no clipping)
    "lr_power": _POSITIVE, "ema_decay": _FRACTION,
    # GALIP's loss (--reconstruction_* and --condition_noise: GALIPLossConfig checks them)
    "sim_weight": _NON_NEGATIVE, "magp_weight": _NON_NEGATIVE, "magp_power": _POSITIVE,
}  # fmt: skip
#: diffusers' polynomial schedule decays to this learning rate and refuses a starting one at or below it
POLYNOMIAL_LR_END = 1e-7
#: the validation flags of train_galip.py, which only act with --validation_prompts, and the values they take then
#: when left out (the parser's default is None, so that a flag given without prompts can be told apart and refused)
VALIDATION_DEFAULTS: dict[str, Any] = {"validation_steps": 500, "validation_epochs": None, "num_validation_images": 4}


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Add the diffusers-style flags (see the module docstring) to ``train_galip.py``'s parser."""
    group = parser.add_argument_group("diffusers-style training flags")
    group.add_argument("--lr_scheduler", default="constant", choices=LR_SCHEDULERS,
                       help="learning-rate schedule of each optimiser, G's and D's (diffusers' get_scheduler)")
    group.add_argument("--lr_warmup_steps", type=int, default=0, help="warm-up steps of the schedule")
    group.add_argument("--lr_num_cycles", type=int, default=1, help="cosine_with_restarts: number of restarts")
    group.add_argument("--lr_power", type=float, default=1.0, help="polynomial: power of the decay")
    group.add_argument("--scale_lr", action="store_true",
                       help="multiply both learning rates by batch size x gradient accumulation x processes")
    group.add_argument("--use_8bit_adam", action="store_true",
                       help="bitsandbytes' 8-bit Adam for G and D (needs `pip install bitsandbytes` and a GPU)")
    group.add_argument("--foreach_ema", action="store_true",
                       help="update the EMA with torch._foreach ops (faster, more peak memory)")
    group.add_argument("--offload_ema", action="store_true",
                       help="keep the EMA weights on the CPU (pinned) between steps, to save device memory")
    group.add_argument("--image_interpolation_mode", default="bilinear", choices=INTERPOLATION_MODES,
                       help="resampling filter of the real-image resize (default: bilinear, as GALIP)")
    group.add_argument("--validation_epochs", type=int, default=None,
                       help="also sample the validation prompts every N epochs (besides --validation_steps; refused "
                            "without --validation_prompts)")


def check_flag_ranges(args: argparse.Namespace, ranges: dict[str, dict[str, Any]] | None = None) -> None:
    """``ValueError`` naming the flag and its allowed values for the first flag of ``ranges`` (default
    :data:`FLAG_RANGES`) that ``args`` holds outside them; a flag ``args`` lacks or leaves unset (``None``) is
    skipped. With ``--lr_scheduler polynomial`` every learning rate must also be above :data:`POLYNOMIAL_LR_END`."""
    for name, allowed in (FLAG_RANGES if ranges is None else ranges).items():
        if getattr(args, name, None) is not None:
            check_number_in_range(f"--{name}", getattr(args, name), **allowed)
    if getattr(args, "lr_scheduler", None) == "polynomial":
        for name in ("learning_rate", "learning_rate_g", "learning_rate_d"):
            if getattr(args, name, None) is not None:
                check_number_in_range(f"--{name} (--lr_scheduler polynomial decays to {POLYNOMIAL_LR_END:g})",
                                      getattr(args, name), POLYNOMIAL_LR_END, low_open=True)


def check_training_flags(args: argparse.Namespace) -> None:
    """Clear errors for bad values (raised before any model is loaded): the numeric flags' ranges
    (:func:`check_flag_ranges`), validation flags without prompts (:func:`check_validation_flags`), and the EMA /
    8-bit Adam flags."""
    check_flag_ranges(args)
    check_validation_flags(args)
    if args.offload_ema and not getattr(args, "use_ema", False):
        raise ValueError("--offload_ema (and --foreach_ema) place the EMA weights: add --use_ema.")
    if args.use_8bit_adam:
        adam_class(True)  # fail now, not after the data is loaded


def check_validation_flags(args: argparse.Namespace) -> None:
    """``ValueError`` naming the flags if ``--validation_steps``, ``--validation_epochs`` or ``--num_validation_images``
    is given without ``--validation_prompts``: there is nothing to sample, so the flag would do nothing (diffusers'
    ``train_text_to_image.py`` ignores ``--validation_epochs`` silently then). Then the flags left out take their
    values of :data:`VALIDATION_DEFAULTS`."""
    given = [f"--{name}" for name in VALIDATION_DEFAULTS if getattr(args, name, None) is not None]
    if given and not getattr(args, "validation_prompts", None):
        raise ValueError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --validation_prompts (the "
                         "prompts to sample); without prompts no validation image is made. Add --validation_prompts "
                         f"\"a prompt\" ..., or leave {'it' if len(given) == 1 else 'them'} out.")
    for name, default in VALIDATION_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, default)


def scale_learning_rates(args: argparse.Namespace, num_processes: int, names: Sequence[str]) -> None:
    """``--scale_lr``: multiply each learning rate in ``names`` by the total batch size (per-device batch x gradient
    accumulation x processes), as diffusers' example scripts do. A no-op without ``--scale_lr``."""
    if not args.scale_lr:
        return
    factor = args.train_batch_size * args.gradient_accumulation_steps * num_processes
    for name in names:
        setattr(args, name, getattr(args, name) * factor)
    logger.info(f"--scale_lr: learning rates x {factor}: " + ", ".join(f"{n}={getattr(args, n):g}" for n in names))


def adam_class(use_8bit: bool) -> type:
    """``torch.optim.Adam``, or bitsandbytes' ``Adam8bit`` for ``--use_8bit_adam`` (a clear error if missing)."""
    if not use_8bit:
        return torch.optim.Adam
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("--use_8bit_adam needs bitsandbytes: pip install bitsandbytes (CUDA GPUs), or leave the "
                          "flag out to use torch.optim.Adam.")
    import bitsandbytes as bnb

    return bnb.optim.Adam8bit


def make_lr_schedulers(args: argparse.Namespace, optimizers: Sequence[torch.optim.Optimizer]) -> list[Any]:
    """One diffusers ``get_scheduler`` per optimiser (G's and D's step together, so they share the schedule's
    shape), counted in optimisation steps: step them once per synchronised step, on every process."""
    from diffusers.optimization import get_scheduler

    return [
        get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                      num_training_steps=args.max_train_steps, num_cycles=args.lr_num_cycles, power=args.lr_power)
        for optimizer in optimizers
    ]  # fmt: skip


def restore_lr_schedulers(schedulers: Sequence[Any], states: Sequence[dict], global_step: int) -> None:
    """Resume the schedules: from their saved ``states`` (kept with the run's counters in a checkpoint), or, for a
    checkpoint written before schedules were saved, by stepping them ``global_step`` times from the start."""
    import warnings

    if states:
        for scheduler, state in zip(schedulers, states):
            scheduler.load_state_dict(state)
        return
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": expected while fast-forwarding
        warnings.simplefilter("ignore", UserWarning)
        for scheduler in schedulers:
            for _ in range(global_step):
                scheduler.step()


def make_ema(args: argparse.Namespace, model: torch.nn.Module, model_cls: type) -> Any:
    """diffusers' ``EMAModel`` of ``model`` (``None`` without ``--use_ema``), with ``--foreach_ema``; with
    ``--offload_ema`` its weights stay on the CPU, pinned when CUDA is there (see :func:`ema_step`)."""
    from diffusers.training_utils import EMAModel

    if not args.use_ema:
        return None
    ema = EMAModel(model.parameters(), decay=args.ema_decay, model_cls=model_cls, model_config=model.config,
                   foreach=args.foreach_ema)
    if args.offload_ema and torch.cuda.is_available():
        ema.pin_memory()
    return ema


def place_ema(ema: Any, args: argparse.Namespace, device: torch.device) -> None:
    """Put the EMA weights where they live between steps: the CPU with ``--offload_ema``, else ``device``."""
    if ema is not None:
        ema.to("cpu" if args.offload_ema else device, non_blocking=True)


def ema_step(ema: Any, args: argparse.Namespace, parameters: Any, device: torch.device) -> None:
    """One EMA update; with ``--offload_ema`` the weights visit ``device`` for the update and go back to the CPU."""
    if ema is None:
        return
    if args.offload_ema:
        ema.to(device, non_blocking=True)
    ema.step(parameters)
    if args.offload_ema:
        ema.to("cpu", non_blocking=True)


def validation_due(args: argparse.Namespace, global_step: int, epoch_done: bool, epoch: int) -> bool:
    """Whether to sample the validation prompts now: every ``--validation_steps`` steps, and at the end of every
    ``--validation_epochs``-th epoch when that flag is given."""
    if not args.validation_prompts:
        return False
    if epoch_done:
        return args.validation_epochs is not None and (epoch + 1) % args.validation_epochs == 0
    return global_step % args.validation_steps == 0


def log_validation_images(accelerator: Any, images: Sequence[Any], prompts: Sequence[str], step: int,
                          tag: str = "validation") -> list[str]:  # fmt: skip
    """Send validation images (uint8 or [0, 1] float HWC arrays, one list per prompt) to every configured tracker,
    through accelerate's ``log_images``: TensorBoard gets one ``tag`` batch (NHWC), wandb and the other trackers one
    ``"{tag}/{i}: {prompt}"`` list per prompt (so the prompt is shown with its images). Returns the names of the
    trackers that received them (a tracker without ``log_images`` is skipped with a warning)."""
    import numpy as np

    images = [[np.asarray(image) if np.asarray(image).dtype == np.uint8 else
               (np.clip(np.asarray(image), 0, 1) * 255).round().astype(np.uint8) for image in row] for row in images]
    reached = []
    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            logger.warning(f"The {tracker.name} tracker cannot log images; validation images are not sent to it.")
            continue
        if tracker.name == "tensorboard":
            tracker.log_images({tag: np.concatenate([np.stack(row) for row in images])}, step=step, dataformats="NHWC")
        else:
            tracker.log_images({f"{tag}/{i}: {prompt}": list(row) for i, (prompt, row) in enumerate(zip(prompts, images))},
                               step=step)
        reached.append(tracker.name)
    return reached
