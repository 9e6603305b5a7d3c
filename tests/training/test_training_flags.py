"""The diffusers-style training flags of train_galip.py (galip_diffusers.training.options): LR schedules per
optimiser, --scale_lr, --use_8bit_adam, EMA placement, --image_interpolation_mode, --validation_epochs, and
validation images sent to every tracker."""

import argparse
import os
import random
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from galip_diffusers.training import options as opts
from galip_diffusers.training.data import official_augment


def flags(*argv, **extra):
    parser = argparse.ArgumentParser()
    opts.add_training_flags(parser)
    args = parser.parse_args(list(argv))
    defaults = dict(use_ema=False, ema_decay=0.9, train_batch_size=4, gradient_accumulation_steps=2,
                    max_train_steps=10, validation_prompts=["a red circle"], validation_steps=4)
    for key, value in {**defaults, **extra}.items():
        setattr(args, key, value)
    return args


def test_one_schedule_per_optimiser_as_diffusers_get_scheduler():
    from diffusers.optimization import get_scheduler

    args = flags("--lr_scheduler", "cosine", "--lr_warmup_steps", "2")
    opt_g = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    opt_d = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=4e-4)
    reference = get_scheduler("cosine", torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                              num_warmup_steps=2, num_training_steps=10)
    sched_g, sched_d = opts.make_lr_schedulers(args, [opt_g, opt_d])
    seen = []
    for _ in range(10):
        seen.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"], reference.get_last_lr()[0]))
        for opt in (opt_g, opt_d, reference.optimizer):
            opt.step()
        for sched in (sched_g, sched_d, reference):
            sched.step()
    assert seen[0][:2] == (0.0, 0.0) and seen[2][:2] == pytest.approx((1e-4, 4e-4))  # linear warm-up, 2 steps
    for lr_g, lr_d, factor in seen:
        assert lr_g == pytest.approx(1e-4 * factor) and lr_d == pytest.approx(4e-4 * factor)
    assert seen[-1][0] < seen[3][0]  # cosine decay after the warm-up
    # resuming: from the saved state, or (a checkpoint older than the schedules) fast-forwarded to the step
    for states in ([sched_g.state_dict()], []):
        fresh = opts.make_lr_schedulers(args, [torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)])
        opts.restore_lr_schedulers(fresh, states, global_step=10)
        assert fresh[0].get_last_lr() == pytest.approx(sched_g.get_last_lr()) and fresh[0].last_epoch == 10


def test_scale_lr_multiplies_by_the_total_batch_size():
    args = flags("--scale_lr", learning_rate_g=1e-4, learning_rate_d=4e-4)
    opts.scale_learning_rates(args, num_processes=3, names=("learning_rate_g", "learning_rate_d"))
    assert (args.learning_rate_g, args.learning_rate_d) == pytest.approx((1e-4 * 24, 4e-4 * 24))
    args = flags(learning_rate_g=1e-4)
    opts.scale_learning_rates(args, 3, ("learning_rate_g",))
    assert args.learning_rate_g == 1e-4


def test_8bit_adam_without_bitsandbytes_is_a_clear_error(monkeypatch):
    real_find_spec = opts.importlib.util.find_spec
    monkeypatch.setattr(opts.importlib.util, "find_spec", lambda n: None if n == "bitsandbytes" else real_find_spec(n))
    with pytest.raises(ImportError, match="--use_8bit_adam needs bitsandbytes: pip install bitsandbytes"):
        opts.check_training_flags(flags("--use_8bit_adam"))
    assert opts.adam_class(False) is torch.optim.Adam
    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(Adam8bit=type("Adam8bit", (torch.optim.Adam,), {}))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    monkeypatch.setattr(opts.importlib.util, "find_spec", lambda n: object())
    assert opts.adam_class(True) is fake.optim.Adam8bit


@pytest.mark.parametrize("argv, match", [
    (["--validation_epochs", "0"], "--validation_epochs must be an integer >= 1, got 0"),
    (["--lr_warmup_steps", "-1"], "--lr_warmup_steps must be an integer >= 0, got -1"),
    (["--lr_num_cycles", "0"], "--lr_num_cycles must be an integer >= 1, got 0"),
    (["--lr_power", "nan"], "--lr_power must be a finite number > 0, got nan"),
    (["--offload_ema"], "add --use_ema"),
])  # fmt: skip
def test_bad_flags_are_refused(argv, match):
    with pytest.raises(ValueError, match=match):
        opts.check_training_flags(flags(*argv))


@pytest.mark.parametrize("offload", [False, True])
def test_ema_foreach_and_offload(offload):
    from galip_diffusers import GALIPGenerator
    from galip_diffusers.testing_utils import tiny_generator

    generator = tiny_generator()
    args = flags("--foreach_ema", *(["--offload_ema"] if offload else []), use_ema=True)
    ema = opts.make_ema(args, generator, GALIPGenerator)
    assert ema.foreach is True
    opts.place_ema(ema, args, torch.device("cpu"))
    before = [p.clone() for p in ema.shadow_params]
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(1.0)
    opts.ema_step(ema, args, generator.parameters(), torch.device("cpu"))
    moved = [(s - b).abs().max().item() for s, b in zip(ema.shadow_params, before) if s.requires_grad or True]
    assert max(moved) > 0 and all(s.device.type == "cpu" for s in ema.shadow_params)
    assert opts.make_ema(flags(use_ema=False), generator, GALIPGenerator) is None


def test_image_interpolation_mode_changes_the_resize():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    out = {mode: official_augment(image, 32, random.Random(0), False, True, mode) for mode in ("bilinear", "bicubic")}
    assert out["bilinear"].shape == (3, 32, 32) and not torch.equal(out["bilinear"], out["bicubic"])
    with pytest.raises(ValueError, match="interpolation must be one of"):
        official_augment(image, 32, random.Random(0), interpolation="cubic")


def test_validation_every_n_steps_and_every_n_epochs():
    args = flags("--validation_epochs", "2")
    assert opts.validation_due(args, 8, False, 0) and not opts.validation_due(args, 6, False, 0)
    assert opts.validation_due(args, 6, True, 1) and not opts.validation_due(args, 6, True, 0)
    assert not opts.validation_due(flags(), 6, True, 1)  # no --validation_epochs: steps only
    assert not opts.validation_due(flags(validation_prompts=None), 8, False, 0)


def test_validation_images_reach_every_tracker():
    logged = {}

    class Tracker:
        def __init__(self, name):
            self.name = name

        def log_images(self, values, step, **kwargs):
            logged[self.name] = ({k: np.asarray(v).shape for k, v in values.items()},
                                 {np.asarray(v).dtype for v in values.values()}, step, kwargs)

    class NoImages:
        name = "csv"

    accelerator = types.SimpleNamespace(trackers=[Tracker("tensorboard"), Tracker("wandb"), NoImages()])
    rows = [np.full((2, 8, 8, 3), 0.5, dtype=np.float32), np.zeros((2, 8, 8, 3), dtype=np.float32)]
    reached = opts.log_validation_images(accelerator, rows, ["a red circle", "a blue square"], step=7)
    assert reached == ["tensorboard", "wandb"]
    assert logged["tensorboard"] == ({"validation": (4, 8, 8, 3)}, {np.dtype(np.uint8)}, 7, {"dataformats": "NHWC"})
    assert logged["wandb"] == ({"validation/0: a red circle": (2, 8, 8, 3), "validation/1: a blue square": (2, 8, 8, 3)},
                               {np.dtype(np.uint8)}, 7, {})


def test_accelerates_trackers_take_these_images(tmp_path):
    """The real TensorBoard tracker accepts the call (wandb's `log_images` has the same signature)."""
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    tracker = TensorBoardTracker("run", str(tmp_path))
    tracker.start()
    accelerator = types.SimpleNamespace(trackers=[tracker])
    assert opts.log_validation_images(accelerator, [np.zeros((1, 8, 8, 3), np.float32)], ["x"], 1) == ["tensorboard"]
    tracker.finish()
    assert [f for f in os.listdir(tmp_path / "run") if f.startswith("events")]
    import inspect

    assert list(inspect.signature(WandBTracker.log_images).parameters)[:3] == ["self", "values", "step"]
