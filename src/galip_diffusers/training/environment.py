"""What ``training/train_galip.py`` and ``training/train_clip.py`` check about where they run, before a run claims its
output folder (so that a problem is one line and the corrected command runs at once): the trackers ``--report_to``
names (known to accelerate, installed, logged in), a Hub token that a tracker would expose, and the precision
accelerate really trains in. Also the configuration sent to the trackers (never a secret) and the files of a run
folder that are never uploaded with its model.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Optional, Sequence

from accelerate.utils import LoggerType

from galip_diffusers.hub import DEFAULT_IGNORE_PATTERNS

logger = logging.getLogger(__name__)

#: what ``--report_to`` may name: accelerate's trackers (``all``: every installed one) and ``none``
TRACKERS: tuple[str, ...] = tuple(t.value for t in LoggerType) + ("none",)
#: flags whose value is a secret: never sent to a tracker (TensorBoard's hparams.yml, wandb's config)
SECRET_FLAGS = ("hub_token",)
#: a training run's own records in its output folder: its logs and its ownership file, never uploaded with the model
RUN_RECORD_FILES = ("losses.jsonl", "galip_run.json", "training_summary.json", "learning_curve_points.jsonl", "*.tmp")


def add_report_to_flag(parser: argparse.ArgumentParser, default: str = "tensorboard", help_extra: str = "") -> None:
    """Add ``--report_to``, one of :data:`TRACKERS`, checked at parse time (accelerate itself fails only when the
    trackers start, with a traceback)."""
    parser.add_argument("--report_to", type=str, default=default, choices=TRACKERS, metavar="TRACKER",
                        help=f"accelerate tracker(s) to log to: one of {', '.join(TRACKERS)} (all: every installed "
                             f"one; default {default}){help_extra}")


def check_report_to(report_to: str, hub_token: Optional[str]) -> None:
    """``ValueError`` for ``--hub_token`` with ``--report_to wandb`` or ``all``: wandb records the command line, so
    the token would be exposed (diffusers refuses the same)."""
    if hub_token is not None and report_to in ("wandb", "all"):
        raise ValueError(f"--report_to {report_to} and --hub_token cannot be used together: the tracker would expose "
                         "the token. Log in with `hf auth login` and leave --hub_token out.")


def check_trackers(report_to: str, main_process: bool = True) -> None:
    """``ValueError`` (one line) if a tracker ``--report_to`` names cannot start: its package is not installed
    (accelerate would drop it without a word), or, on the process that starts the trackers (``main_process``), wandb
    is chosen (by name, or by ``all`` when installed) without a login (``wandb login`` or ``WANDB_API_KEY``;
    ``WANDB_MODE=offline`` or ``disabled`` need none). Call it before the run claims its output folder."""
    from accelerate.tracking import get_available_trackers

    if report_to == "none":
        return
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    if report_to != "all" and report_to not in available:
        package = "'galip-diffusers[train]'" if report_to in ("tensorboard", "wandb") else report_to
        raise ValueError(f"--report_to {report_to} needs the {report_to} package (pip install {package}), or pass "
                         "--report_to none.")
    if main_process and "wandb" in available and report_to in ("wandb", "all"):
        _check_wandb_login(report_to)


def _check_wandb_login(report_to: str) -> None:
    import wandb

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    try:
        wandb.login(verify=False)  # reads WANDB_API_KEY or the saved login; prompts only where wandb.init would
    except Exception as err:  # noqa: BLE001  (wandb.errors.UsageError, and whatever a broken settings file gives)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"--report_to {report_to} logs to wandb, which is not logged in ({first}): run `wandb login` "
                         "(or set WANDB_API_KEY, or WANDB_MODE=offline), or pass --report_to tensorboard or "
                         "none.") from None


def tracker_config(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The flags as a tracker's run configuration: scalars as they are, anything else as text; the secrets of
    :data:`SECRET_FLAGS` and the names in ``exclude`` left out."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()
            if k not in SECRET_FLAGS and k not in exclude}


def effective_mixed_precision(accelerator: Any) -> str:
    """The precision accelerate really trains in: ``accelerator.mixed_precision``, except ``"no"`` for fp16 on a CPU,
    which accelerate runs in fp32 (it has no fp16 autocast there). ``native_amp`` is not the test: DeepSpeed and
    Megatron-LM leave it false while they train in half precision themselves."""
    requested = accelerator.mixed_precision
    if requested == "fp16" and accelerator.device.type == "cpu":
        return "no"
    return requested


def check_mixed_precision(accelerator: Any, warn: Any = None) -> str:
    """:func:`effective_mixed_precision`, with a warning (``warn``: a logging function) whenever it differs from the
    precision asked for (by ``--mixed_precision``, ``accelerate launch --mixed_precision`` or
    ``ACCELERATE_MIXED_PRECISION``). Returns the effective precision."""
    effective = effective_mixed_precision(accelerator)
    if effective != accelerator.mixed_precision:
        asked = accelerator.mixed_precision
        (warn or logger.warning)(
            f"{asked} mixed precision was asked for, but accelerate has no {asked} "
            f"autocast on {accelerator.device.type}: this run trains in fp32 (recorded as mixed precision "
            f"'{effective}'). Use a GPU, or bf16 on a CPU.")
    return effective


def precision_description(accelerator: Any) -> str:
    """The model card's mixed-precision line: the effective precision, and what was asked for when that differs."""
    effective = effective_mixed_precision(accelerator)
    if effective == accelerator.mixed_precision:
        return effective
    return f"{effective} (fp32; {accelerator.mixed_precision} was asked for, unavailable on {accelerator.device.type})"


def push_ignore_patterns(output_dir: str, logging_dir: str, tracker_project_name: str) -> list[str]:
    """What ``--push_to_hub`` never uploads from ``output_dir``: :data:`galip_diffusers.hub.DEFAULT_IGNORE_PATTERNS`
    (checkpoints, ``logs/``, hidden files), the run's records (:data:`RUN_RECORD_FILES`) and the tracker folder
    ``--logging_dir`` wherever it lies inside ``output_dir``."""
    patterns = list(DEFAULT_IGNORE_PATTERNS) + list(RUN_RECORD_FILES)
    logs = os.path.relpath(os.path.abspath(os.path.join(output_dir, logging_dir)), os.path.abspath(output_dir))
    if logs == os.curdir:  # the trackers write straight into output_dir: their run folders are named by the project
        logs = tracker_project_name
    if logs != os.pardir and not logs.startswith(os.pardir + os.sep):
        patterns.append(logs.replace(os.sep, "/") + "/*")
    return list(dict.fromkeys(patterns))
