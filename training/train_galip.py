#!/usr/bin/env python
# Copyright 2025 The galip-diffusers authors. Licensed under the Apache License, Version 2.0.
"""Train (or fine-tune) GALIP with accelerate.

Follows diffusers' ``examples/text_to_image/train_text_to_image.py``: same data flags, accelerator setup, checkpoint
hooks, validation and Hub upload. The algorithm is GALIP's (Tao et al., CVPR 2023): hinge loss on real, generated and
mismatched pairs, matching-aware gradient penalty (MA-GP) on the real CLIP features and sentence embeddings, and a
CLIP text-image similarity term for G; the CLIP-ViTs are frozen in G and D.

    accelerate launch training/train_galip.py --train_data_dir data/ --pretrained_model_name_or_path galip-folder \
        --output_dir galip-finetuned --max_train_steps 10000 --train_batch_size 64 --mixed_precision fp16
"""

import argparse
import itertools
import json
import logging
import math
import os
import random
import time
import warnings

import datasets
import diffusers
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTokenizer

import galip_diffusers  # noqa: F401  (registers the GALIP classes with diffusers)
from galip_diffusers import GALIPDiscriminator, GALIPGenerator, GALIPPipeline
from galip_diffusers.pipelines.saving import write_pipeline
from galip_diffusers.hub import HubPushError, push_folder_to_hub
from galip_diffusers.training.losses import MISMATCH_MODES
from galip_diffusers.conversion.model_card import render_model_card
from galip_diffusers.models.clip_bridge import normalize_vision_config
from galip_diffusers.training.data import (
    GALIPCollator,
    GALIPIterableTrainDataset,
    GALIPTrainDataset,
    check_columns,
    drop_held_out_rows,
    load_image_text_dataset,
    noise_seed,
)
from galip_diffusers.training.checkpoints import (
    check_steps_left,
    checkpoint_step,
    load_checkpoint,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
    resume_message,
    run_training,
    save_checkpoint,
    setup_errors,
)
from galip_core.paths import check_apart
from galip_diffusers.training.environment import (
    add_report_to_flag,
    check_mixed_precision,
    check_report_to,
    check_trackers,
    effective_mixed_precision,
    precision_description,
    push_ignore_patterns,
    tracker_config,
)
from galip_diffusers.training.ownership import check_output_dir, open_loss_log, resume_seed, start_run
from galip_diffusers.training.setup import (
    check_config_keys,
    check_models_compatible,
    clip_towers,
    discriminator_config_from_clip,
    extend_discriminator,
    load_json_config,
    load_vision_weights_into_generator,
    training_resolution,
    zero_noise_weights,
)
from galip_diffusers.training.options import (
    adam_class,
    add_training_flags,
    check_training_flags,
    ema_step,
    log_validation_images,
    make_ema,
    make_lr_schedulers,
    restore_lr_schedulers,
    place_ema,
    scale_learning_rates,
    validation_due,
)
from galip_diffusers.training.step import GALIPLossConfig, galip_train_step
from galip_core.settings import starting_settings

logger = get_logger(__name__, log_level="INFO")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train or fine-tune a GALIP text-to-image GAN.")
    # models
    parser.add_argument("--pretrained_model_name_or_path", type=str, default=None,
                        help="GALIP pipeline folder or Hub id to fine-tune (D from its `discriminator/` if present, "
                             "unless --discriminator_config asks for a new one).")
    parser.add_argument("--revision", type=str, default=None,
                        help="Hub revision of --pretrained_model_name_or_path (else of --clip_model_name_or_path).")
    parser.add_argument("--variant", type=str, default=None,
                        help="Weight variant (e.g. fp16) of --pretrained_model_name_or_path (else of "
                             "--clip_model_name_or_path).")
    parser.add_argument("--clip_model_name_or_path", type=str, default=None,
                        help="transformers CLIPModel folder (+ tokenizer): train from scratch on this CLIP.")
    parser.add_argument("--generator_config", type=str, default=None, help="JSON file: GALIPGenerator config.")
    parser.add_argument("--discriminator_config", type=str, default=None,
                        help="JSON file or inline JSON: GALIPDiscriminator config (default: derived from the CLIP). "
                             "With --pretrained_model_name_or_path, a new discriminator is built from it instead of "
                             "loading the folder's.")
    parser.add_argument("--discriminator_overrides", type=str, default=None,
                        help="JSON file or inline JSON, with --pretrained_model_name_or_path: config keys to change on "
                             "the folder's discriminator; weights that still fit are kept, new ones (e.g. a pixel path: "
                             "'{\"pixel_channels\": [32, 64, 128]}') start fresh.")
    # data
    parser.add_argument("--dataset_name", type=str, default=None)
    parser.add_argument("--dataset_config_name", type=str, default=None)
    parser.add_argument("--train_data_dir", type=str, default=None,
                        help="imagefolder (images + metadata.jsonl) or a save_to_disk folder.")
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--streaming", action="store_true", help="Stream the data set (needs --max_train_steps).")
    parser.add_argument("--shuffle_buffer_size", type=int, default=1000, help="Shuffle buffer when streaming.")
    parser.add_argument("--image_column", type=str, default="image")
    parser.add_argument("--caption_column", type=str, default="text",
                        help="A string or a list of strings per example (one is picked at random).")
    parser.add_argument("--max_train_samples", type=int, default=None,
                        help="Train on N examples only: a random N (drawn with --seed) of a map-style data set; with "
                             "--streaming, the first N of the stream (before its shuffle buffer).")
    parser.add_argument("--cache_dir", type=str, default=None)
    parser.add_argument("--resolution", type=int, default=None,
                        help="Real-image crop size (default: the power of two at or above the generator's output_size, "
                             "as GALIP; with --reconstruction_weight or --reconstruction_warmup_steps the output_size "
                             "itself, which those compare pixel for pixel, and another value is refused).")
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True,
                        help="Flip real images horizontally at random (GALIP's augmentation). On by default, unlike "
                             "diffusers' --random_flip: pass --no-random_flip to turn it off (captions with left/right, "
                             "arrows, text).")
    parser.add_argument("--center_crop", action="store_true",
                        help="Resize the shorter side to --resolution and crop the centre, instead of GALIP's zoom "
                             "(x76/64) + random crop; for data whose objects must keep their scale and stay whole.")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    # training
    parser.add_argument("--output_dir", type=str, default="galip-model",
                        help="Must be empty or new, unless resuming (--resume_from_checkpoint) or "
                        "--overwrite_output_dir.")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Train a new run into a non-empty --output_dir: its final model is replaced, its "
                        "checkpoints are kept (never deleted by this run, never picked by 'latest').")
    parser.add_argument("--seed", type=int, default=None,
                        help="Seed of the data order, augmentation and noise (default: a random one for a new run; a "
                             "resumed run reuses the seed recorded in its checkpoint, and refuses a different one).")
    parser.add_argument("--train_batch_size", type=int, default=16, help="Per device.")
    parser.add_argument("--num_train_epochs", type=int, default=100)
    parser.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--learning_rate_g", type=float, default=1e-4)
    parser.add_argument("--learning_rate_d", type=float, default=4e-4)
    parser.add_argument("--adam_beta1", type=float, default=0.0)
    parser.add_argument("--adam_beta2", type=float, default=0.9)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--max_grad_norm", type=float, default=None,
                        help="Clip G and D gradient norms to this value (> 0; left out: no clipping, as official).")
    parser.add_argument("--sim_weight", type=float, default=4.0, help="Weight of the CLIP similarity term in L_G.")
    parser.add_argument("--magp_weight", type=float, default=2.0)
    parser.add_argument(
        "--reconstruction_weight", type=float, default=0.0,
        help="Weight of an L1 term pulling G(0, s), the sample at zero noise, towards the caption's real image "
        "(not in GALIP; 0 = off). Helps small CPU runs on data with one image per caption, e.g. the emoji set.",
    )
    parser.add_argument(
        "--reconstruction_fraction", type=float, default=None,
        help="With --reconstruction_weight: anchor this fraction of each batch at zero noise inside the step's one G "
        "pass (e.g. 0.5), instead of an extra G(0, s) pass over the whole batch. Nearly halves the cost of a step.",
    )
    parser.add_argument(
        "--reconstruction_warmup_steps", type=int, default=0,
        help="First N optimisation steps without D: G is fitted by L1 at zero noise alone (not in GALIP; D does not "
        "change). Much faster per second than the GAN on data with one image per caption; the GAN starts at step N.",
    )
    parser.add_argument(
        "--zero_noise_weights", action="store_true",
        help="Before training, zero the generator's weights that read the noise (not in GALIP). For a GAN stage "
        "from a generator fitted at zero noise only (a --reconstruction_warmup_steps run), whose noise weights are "
        "still their random init: every noise then starts at the fitted image, and the GAN grows them from zero.",
    )
    parser.add_argument(
        "--condition_noise", type=float, default=0.0,
        help="Conditioning augmentation (as in StackGAN; not in GALIP; 0 = off): G reads the sentence embedding plus "
        "Gaussian noise of about this fraction of its norm, while D and the CLIP term read the clean one: G must draw "
        "the caption's image from a neighbourhood of its embedding. At 0.3 it did not help the emoji set's held-out "
        "compositions (training/README.md).",
    )
    parser.add_argument("--magp_power", type=float, default=6.0)
    parser.add_argument(
        "--mismatch", type=str, default="roll", choices=list(MISMATCH_MODES),
        help="How D's mismatched captions are chosen: 'roll' (GALIP's: the previous sample's caption) or 'nearest' "
        "(hard negatives: the batch's most similar different caption, so D must read every detail of the caption).",
    )
    parser.add_argument("--use_ema", action="store_true", help="Keep an EMA of G (used for validation and output).")
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--allow_tf32", action="store_true")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                        help="Default: accelerate's (accelerate launch --mixed_precision, its config or "
                             "ACCELERATE_MIXED_PRECISION; else no). fp16 needs a GPU: on a CPU the run trains in fp32, "
                             "with a warning, and records that.")
    # checkpoints, logging, validation
    parser.add_argument("--checkpointing_steps", type=positive_int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=positive_int, default=None,
                        help="Keep at most this many of this run's checkpoints (other runs' are never deleted).")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help='A checkpoint folder or "latest".')
    add_report_to_flag(parser, help_extra="; wandb and all refuse --hub_token")
    parser.add_argument("--logging_dir", type=str, default="logs")
    parser.add_argument("--tracker_project_name", type=str, default="galip-train")
    parser.add_argument("--validation_prompts", type=str, default=None, nargs="+",
                        help="Prompts sampled during training (a grid per validation, sent to the trackers).")
    parser.add_argument("--validation_steps", type=positive_int, default=None,
                        help="Sample the --validation_prompts every N steps (default 500; refused without prompts).")
    parser.add_argument("--num_validation_images", type=int, default=None,
                        help="Images per validation prompt (default 4; refused without --validation_prompts).")
    parser.add_argument("--eval_num_images", type=int, default=0, help="Evaluate the final model on this many "
                        "training captions (CLIP score; FID too with --eval_inception_weights).")
    parser.add_argument("--eval_clip_model_name_or_path", type=str, default=None)
    parser.add_argument("--eval_inception_weights", type=str, default=None)
    parser.add_argument("--speed_batch_sizes", type=str, default="1,8", help="Batch sizes timed at the end for the "
                        "model card's speed table, comma-separated (empty: skip).")
    parser.add_argument("--license", type=str, default=None, help="Model card license (default: the base model's, "
                        "else apache-2.0).")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_token", type=str, default=None,
                        help="Hub token for --push_to_hub (never sent to a tracker; refused with --report_to wandb or "
                             "all: log in with `hf auth login` instead).")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--local_rank", type=int, default=-1)
    add_training_flags(parser)

    args = parser.parse_args(input_args)
    check_training_flags(args)  # every numeric flag's range (options.FLAG_RANGES), before anything loads
    check_report_to(args.report_to, args.hub_token)
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    if args.dataset_name is None and args.train_data_dir is None:
        raise ValueError("Need either a dataset name or a training folder.")
    if args.pretrained_model_name_or_path is None and args.clip_model_name_or_path is None:
        raise ValueError("Give --pretrained_model_name_or_path (fine-tune a GALIP pipeline) or "
                         "--clip_model_name_or_path with --generator_config (train from scratch on a CLIP).")
    if args.pretrained_model_name_or_path is not None and args.generator_config is not None:
        raise ValueError("--generator_config builds a new generator: use it with --clip_model_name_or_path, not with "
                         "--pretrained_model_name_or_path.")
    if args.discriminator_overrides is not None and (args.pretrained_model_name_or_path is None
                                                     or args.discriminator_config is not None):
        raise ValueError("--discriminator_overrides changes a pretrained folder's discriminator: use it with "
                         "--pretrained_model_name_or_path and without --discriminator_config.")
    if args.streaming and args.max_train_steps is None:
        raise ValueError("--streaming needs --max_train_steps (a streamed data set has no length).")
    if args.train_batch_size < 2:
        raise ValueError("--train_batch_size must be at least 2 (GALIP's mismatched pairs need a second caption).")
    if args.resolution is not None and args.resolution < 8:
        raise ValueError(f"--resolution must be at least 8, got {args.resolution}.")
    sizes = [b.strip() for b in args.speed_batch_sizes.split(",") if b.strip()]
    if not all(b.isdigit() and int(b) >= 1 for b in sizes):
        raise ValueError(f"--speed_batch_sizes must be comma-separated integers >= 1 (or empty), got "
                         f"{args.speed_batch_sizes!r}.")
    loss_config_from_args(args)  # bad loss flags fail here, before any model is loaded
    return args


def loss_config_from_args(args) -> GALIPLossConfig:
    """The step's loss settings from the flags (a ValueError names the bad one)."""
    return GALIPLossConfig(args.sim_weight, args.magp_weight, args.magp_power, mismatch=args.mismatch,
                           reconstruction_weight=args.reconstruction_weight,
                           reconstruction_fraction=args.reconstruction_fraction, condition_noise=args.condition_noise)


def augmentation_description(center_crop: bool, random_flip: bool) -> str:
    """How real images were prepared, for the model card."""
    crop = "resize the shorter side, centre crop" if center_crop else "resize to ×76/64, random crop"
    return f"{crop}, {'random flip' if random_flip else 'no flip'}"


def load_models(args):
    """Tokenizer, frozen text/image encoders, generator, discriminator (and an optional scorer CLIP)."""
    scorer, d_config = None, load_json_config(args.discriminator_config, "--discriminator_config")
    if args.pretrained_model_name_or_path is not None:
        path = args.pretrained_model_name_or_path
        pipe = GALIPPipeline.from_pretrained(path, revision=args.revision, variant=args.variant)
        tokenizer, text_encoder, generator = pipe.tokenizer, pipe.text_encoder, pipe.generator
        image_encoder, scorer = pipe.image_encoder, pipe.scorer
        if image_encoder is not None and args.clip_model_name_or_path is not None:
            raise ValueError(f"--clip_model_name_or_path is only used when --pretrained_model_name_or_path has no "
                             f"image_encoder; {path!r} has its own (which the generator was built on): leave the flag "
                             "out.")
        if image_encoder is None:
            if args.clip_model_name_or_path is None:
                raise ValueError(f"{path!r} has no image_encoder (the CLIP image tower the discriminator reads); pass "
                                 "--clip_model_name_or_path with the CLIP the generator was built on.")
            # --revision / --variant belong to the pipeline folder here: this CLIP is loaded as it is
            _, image_encoder = clip_towers(CLIPModel.from_pretrained(args.clip_model_name_or_path))
        discriminator, d_source = None, "a new discriminator"
        if args.discriminator_config is None:
            try:
                discriminator = GALIPDiscriminator.from_pretrained(path, subfolder="discriminator", revision=args.revision)
                d_source = f"the discriminator of `{path}`"
            except (OSError, EnvironmentError):
                pass
        if args.discriminator_overrides is not None:
            if discriminator is None:
                raise ValueError(f"--discriminator_overrides changes the folder's discriminator, but {path!r} has no "
                                 "`discriminator/`.")
            overrides = load_json_config(args.discriminator_overrides, "--discriminator_overrides")
            discriminator, fresh = extend_discriminator(discriminator, overrides)
            d_source += f", changed by {json.dumps(overrides)} ({len(fresh)} new tensors)"
        init = f"Fine-tuned from `{path}`, with {d_source}."
    else:
        # training from scratch, --revision and --variant are the CLIP's (the tokenizer has no weight variants)
        clip = CLIPModel.from_pretrained(args.clip_model_name_or_path, revision=args.revision, variant=args.variant)
        tokenizer = CLIPTokenizer.from_pretrained(args.clip_model_name_or_path, revision=args.revision)
        text_encoder, image_encoder = clip_towers(clip)
        g_config = load_json_config(args.generator_config, "--generator_config")
        check_config_keys(g_config, GALIPGenerator, "--generator_config")
        projection_dim = clip.config.projection_dim
        if g_config.get("cond_dim", projection_dim) != projection_dim:
            raise ValueError(f"--generator_config cond_dim={g_config['cond_dim']} but the CLIP's projection_dim is "
                             f"{projection_dim}; leave cond_dim out to take it from the CLIP.")
        g_config.update(cond_dim=projection_dim, vision_config=normalize_vision_config(clip.config.vision_config))
        generator = GALIPGenerator(**g_config)
        load_vision_weights_into_generator(generator, image_encoder)
        discriminator = None
        init = f"Trained from scratch on the CLIP `{args.clip_model_name_or_path}` (frozen in G and D)."
    if discriminator is None:
        check_config_keys(d_config, GALIPDiscriminator, "--discriminator_config")
        d_config = discriminator_config_from_clip(image_encoder.config, text_encoder.config.projection_dim, **d_config)
        discriminator = GALIPDiscriminator(**d_config)
    for frozen_model in (text_encoder, image_encoder):
        frozen_model.requires_grad_(False).eval()
    return tokenizer, text_encoder, image_encoder, generator, discriminator, scorer, init


@torch.no_grad()
def log_validation(generator, text_encoder, tokenizer, args, accelerator, step):
    """Sample every validation prompt, save a grid (one row per prompt), log it to the trackers."""
    import numpy as np
    from PIL import Image

    pipe = GALIPPipeline(tokenizer=tokenizer, text_encoder=text_encoder, generator=generator)
    pipe.set_progress_bar_config(disable=True)
    rng = torch.Generator("cpu").manual_seed(args.seed)
    rows = []
    with accelerator.autocast():
        for prompt in args.validation_prompts:
            rows.append(pipe(prompt, num_images_per_prompt=args.num_validation_images, generator=rng,
                             output_type="np").images)
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    folder = os.path.join(args.output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step_{step:07d}.png")
    Image.fromarray((grid * 255).round().astype("uint8")).save(path)
    log_validation_images(accelerator, rows, args.validation_prompts, step)  # every tracker: TensorBoard, wandb, ...
    logger.info(f"Saved validation samples to {path}")
    return [{"prompt": p, "path": os.path.relpath(path, args.output_dir)} for p in args.validation_prompts]


class TrainingCounters:
    """Run totals saved in checkpoints (``accelerator.register_for_checkpointing``)."""

    def __init__(self):
        self.skipped_images = 0
        self.images_seen = 0
        self.train_seconds = 0.0  # wall time of the training loop, over every resumed segment up to the checkpoint
        self.lr_schedulers: list[dict] = []  # the LR schedules' states (absent from older checkpoints)

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def preflight(args):
    """The checks that need no model and no data, run before anything loads (and by ``galip train --run`` before it
    launches): the checkpoint to resume from exists, and the output folder is not another run's, nor is, holds or
    lies inside a local input (the data set, the pretrained pipeline or CLIP), whose files the final save would
    replace. A resumed run takes the seed recorded in its checkpoint (``--seed`` left out; a different one is
    refused), and a checkpoint past ``--max_train_steps`` is refused (one at it only saves the final model). Returns
    the checkpoint to resume from, or ``None``."""
    resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    check_output_dir(args.output_dir, resuming=resume_path is not None, overwrite=args.overwrite_output_dir)
    check_steps_left(resume_path, args.max_train_steps)
    args.seed = resume_seed(args.seed, resume_path)
    inputs = {flag: path for flag, path in (
        ("--train_data_dir", args.train_data_dir), ("--dataset_name", args.dataset_name),
        ("--pretrained_model_name_or_path", args.pretrained_model_name_or_path),
        ("--clip_model_name_or_path", args.clip_model_name_or_path),
    ) if path is not None and os.path.exists(path)}  # Hub ids and packaged names are not local paths
    check_apart("--output_dir", args.output_dir, inputs)
    return resume_path


def claim_output_dir(accelerator, output_dir: str, resume_path: str | None, seed: int) -> str | None:
    """Once the models and data are ready: this run's id, recorded in ``--output_dir`` by the main process
    (:func:`galip_diffusers.training.ownership.start_run`; ``None`` on the other processes), and the leftovers of
    interrupted checkpoint saves removed. A run that fails before this leaves the folder as it found it."""
    accelerator.wait_for_everyone()  # every process has resolved the checkpoint before the run id is written
    if not accelerator.is_main_process:
        return None
    run_id = start_run(output_dir, resume_path, seed)
    for path in remove_incomplete_checkpoints(output_dir):
        logger.info(f"Removed the incomplete checkpoint {path}")
    return run_id


def setup_accelerator(args) -> Accelerator:
    """The run's ``Accelerator`` (trackers, mixed precision, seedable sampler), logging levels and the seed (one random
    seed for all processes when ``--seed`` is not given and the run does not resume one that recorded its seed).
    Writes nothing into ``--output_dir``."""
    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_info()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()
    check_mixed_precision(accelerator, logger.warning)  # e.g. fp16 on a CPU: fp32, with a warning
    if args.seed is None:  # one random seed for all processes, recorded for the model card
        seed = [random.SystemRandom().randrange(2**31)]
        broadcast_object_list(seed)
        args.seed = seed[0]
    set_seed(args.seed)
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    return accelerator


def register_checkpoint_hooks(accelerator: Accelerator, ema_generator: EMAModel | None) -> None:
    """Save and load checkpoints as diffusers folders (``generator/``, ``discriminator/``, ``generator_ema/``) instead
    of pickled weights."""

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                sub = "generator" if isinstance(accelerator.unwrap_model(model), GALIPGenerator) else "discriminator"
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, sub))
            if ema_generator is not None:
                ema_generator.save_pretrained(os.path.join(output_dir, "generator_ema"))
        while weights:  # saved above; do not pickle them again
            weights.pop()

    def load_model_hook(models, input_dir):
        if ema_generator is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "generator_ema"), model_cls=GALIPGenerator)
            ema_generator.load_state_dict(loaded.state_dict())
            ema_generator.to(accelerator.device)
        for _ in range(len(models)):
            model = models.pop()
            is_generator = isinstance(accelerator.unwrap_model(model), GALIPGenerator)
            cls, sub = (GALIPGenerator, "generator") if is_generator else (GALIPDiscriminator, "discriminator")
            loaded = cls.from_pretrained(input_dir, subfolder=sub)
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def build_train_dataloader(args, tokenizer, resolution: int, accelerator: Accelerator):
    """``(dataset, train_dataset, train_dataloader)`` for the training arguments: a map-style data set (checked to
    hold at least one batch, and one readable image) or a shuffled stream."""
    dataset = load_image_text_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir,
                                      args.dataset_split, args.streaming, args.cache_dir)
    check_columns(dataset, args.image_column, args.caption_column)
    dataset, dropped = drop_held_out_rows(dataset)
    held_out_note = f" ({dropped} held-out rows dropped)" if dropped else ""
    if dropped or dropped is None:
        logger.info(f"Rows whose 'held_out' column is true are never trained on: {dropped or 'all such'} dropped.")
    data_kwargs = dict(image_column=args.image_column, caption_column=args.caption_column, resolution=resolution,
                       seed=args.seed, random_flip=args.random_flip, center_crop=args.center_crop,
                       interpolation=args.image_interpolation_mode)
    source = args.train_data_dir or args.dataset_name
    needed = args.train_batch_size * accelerator.num_processes
    if args.streaming:
        if args.max_train_samples is not None:
            dataset = dataset.take(args.max_train_samples)
        probe = itertools.islice(iter(GALIPIterableTrainDataset(dataset, **data_kwargs)), needed)
        readable = sum(1 for _ in probe)  # reads at most one batch of the stream, before it is shuffled
        if readable < needed:
            raise ValueError(f"The streamed training data set {source!r} yields {readable} readable example(s)"
                             f"{held_out_note}; one batch needs --train_batch_size x processes = {needed}.")
        dataset = dataset.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size)
        train_dataset = GALIPIterableTrainDataset(dataset, **data_kwargs)
    else:
        if args.max_train_samples is not None:
            # in memory: a save_to_disk folder would otherwise get a cache-*.arrow file written into it
            dataset = dataset.shuffle(seed=args.seed, keep_in_memory=True).select(
                range(min(args.max_train_samples, len(dataset))), keep_in_memory=True)
        if len(dataset) < needed:
            raise ValueError(f"The training data set {source!r} has {len(dataset)} example(s){held_out_note}; one "
                             f"batch needs --train_batch_size x processes = {needed}." if len(dataset) else
                             f"The training data set {source!r} has no example to train on{held_out_note}.")
        train_dataset = GALIPTrainDataset(dataset, **data_kwargs)
        train_dataset[0]  # fail now, before training, if no image at all can be read
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset, shuffle=not args.streaming, collate_fn=GALIPCollator(tokenizer), drop_last=True,
        batch_size=args.train_batch_size, num_workers=args.dataloader_num_workers,
    )
    return dataset, train_dataset, train_dataloader


def main(args):
    """Train (or fine-tune) GALIP and save the pipeline folder, its discriminator, a model card and a summary.

    Long on purpose, like the training loops of diffusers' example scripts: the loop shares the run's state (the
    accelerator, the models and their EMA, the counters and logs) from setup to saving. The setup lives in
    :func:`setup_accelerator`, :func:`load_models`, :func:`register_checkpoint_hooks` and
    :func:`build_train_dataloader`; one step is :func:`galip_diffusers.training.step.galip_train_step`.
    """
    resume_path = preflight(args)
    accelerator = setup_accelerator(args)

    # ------------------------------------------------------------------------------------------------ models, data
    with setup_errors():  # one line, and --output_dir untouched, if the trackers, the models or the data cannot be used
        check_trackers(args.report_to, accelerator.is_main_process)  # installed, logged in: before anything loads
        tokenizer, text_encoder, image_encoder, generator, discriminator, scorer, init_description = load_models(args)
        resolution = args.resolution = training_resolution(
            args.resolution, generator.config.output_size,
            reconstruction=args.reconstruction_weight > 0 or args.reconstruction_warmup_steps > 0)
        check_models_compatible(generator, discriminator, image_encoder, text_encoder, resolution)
        dataset, train_dataset, train_dataloader = build_train_dataloader(args, tokenizer, resolution, accelerator)
    if args.zero_noise_weights:  # before the EMA copy; a resumed checkpoint's weights replace these anyway
        zeroed = zero_noise_weights(generator)
        logger.info(f"--zero_noise_weights: zeroed {zeroed} generator weights that read the noise")
    if args.gradient_checkpointing:
        generator.enable_gradient_checkpointing()
    generator.train()
    discriminator.train()
    ema_generator = make_ema(args, generator, GALIPGenerator)

    register_checkpoint_hooks(accelerator, ema_generator)
    counters = TrainingCounters()
    accelerator.register_for_checkpointing(counters)

    # ------------------------------------------------------------------------------------------------ optimisers
    scale_learning_rates(args, accelerator.num_processes, ("learning_rate_g", "learning_rate_d"))
    adam = dict(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.adam_weight_decay)
    optimizer_g = adam_class(args.use_8bit_adam)(generator.learnable_parameters(), lr=args.learning_rate_g, **adam)
    optimizer_d = adam_class(args.use_8bit_adam)(discriminator.parameters(), lr=args.learning_rate_d, **adam)


    generator, discriminator, optimizer_g, optimizer_d, train_dataloader = accelerator.prepare(
        generator, discriminator, optimizer_g, optimizer_d, train_dataloader
    )
    text_encoder.to(accelerator.device)  # frozen encoders stay fp32 (autocast runs them in mixed precision)
    image_encoder.to(accelerator.device)
    place_ema(ema_generator, args, accelerator.device)

    if args.streaming:  # unknown length: an epoch is one pass over the stream, as many as --max_train_steps needs
        num_update_steps_per_epoch = args.max_train_steps
        args.num_train_epochs = args.max_train_steps
    else:
        num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
        if args.max_train_steps is None:
            args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
        args.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    # one schedule per optimiser, stepped once per optimisation step; its state is saved with the counters (so that
    # checkpoints written before schedules existed still resume: restore_lr_schedulers fast-forwards them)
    lr_schedulers = make_lr_schedulers(args, [optimizer_g.optimizer, optimizer_d.optimizer])
    with setup_errors():  # --max_train_steps from --num_train_epochs is known only now
        check_steps_left(resume_path, args.max_train_steps)
    run_id = claim_output_dir(accelerator, args.output_dir, resume_path, args.seed)  # nothing written before this
    if accelerator.is_main_process:  # never the --hub_token (environment.SECRET_FLAGS)
        accelerator.init_trackers(args.tracker_project_name, tracker_config(args, exclude=("validation_prompts",)))

    # ------------------------------------------------------------------------------------------------ train
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {'streaming' if args.streaming else len(dataset)}")
    logger.info(f"  Num epochs = {args.num_train_epochs}, total optimization steps = {args.max_train_steps}")
    logger.info(f"  Batch size per device = {args.train_batch_size}, total (parallel, accumulation) = "
                f"{total_batch_size}, gradient accumulation steps = {args.gradient_accumulation_steps}")
    global_step, first_epoch, resume_batches = 0, 0, 0
    if message := resume_message(args.resume_from_checkpoint, resume_path, args.max_train_steps):
        accelerator.print(message)
    if resume_path is not None:
        load_checkpoint(accelerator, resume_path)
        global_step = checkpoint_step(resume_path)
        restore_lr_schedulers(lr_schedulers, counters.lr_schedulers, global_step)
        first_epoch = global_step // num_update_steps_per_epoch
        resume_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps

    loss_config = loss_config_from_args(args)
    progress_bar = tqdm(range(args.max_train_steps), initial=global_step, desc="Steps",
                        disable=not accelerator.is_local_main_process)
    loss_log = None
    if accelerator.is_main_process:  # a resumed run's log is cut back to the resumed step: each step listed once
        loss_log = open_loss_log(args.output_dir, global_step if resume_path else None)
    validation_samples, validated_at, pending, skipped, images, micro_steps = [], None, {}, 0, 0, 0
    start_time, seconds_before, images_before = time.perf_counter(), counters.train_seconds, counters.images_seen
    epochs_run = -(-global_step // num_update_steps_per_epoch)  # epochs begun (a resume at the limit adds none)

    def validate(step: int) -> list[dict]:
        with ema_swapped(ema_generator, generator):
            return log_validation(accelerator.unwrap_model(generator), text_encoder, tokenizer, args, accelerator, step)

    for epoch in range(first_epoch, args.num_train_epochs):
        if global_step >= args.max_train_steps:  # resumed from a checkpoint at the limit: only the final save is left
            break
        epochs_run = epoch + 1
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        loader = train_dataloader
        if epoch == first_epoch and resume_batches:
            loader = accelerator.skip_first_batches(train_dataloader, resume_batches)
            loader.set_epoch(epoch)
        for batch_index, batch in enumerate(loader, start=resume_batches if epoch == first_epoch else 0):
            pixel_values = batch["pixel_values"].to(accelerator.device)
            noise = torch.randn(pixel_values.shape[0], accelerator.unwrap_model(generator).config.z_dim,
                                generator=torch.Generator("cpu").manual_seed(
                                    noise_seed(args.seed, epoch, batch_index, accelerator.process_index)))
            with accelerator.accumulate(generator, discriminator):
                logs = galip_train_step(accelerator, generator, discriminator, image_encoder, text_encoder,
                                        optimizer_g, optimizer_d, pixel_values, batch["input_ids"],
                                        noise.to(accelerator.device), loss_config, args.max_grad_norm,
                                        adversarial=global_step >= args.reconstruction_warmup_steps)
            for key, value in logs.items():
                pending[key] = pending.get(key, 0.0) + value
            skipped += int(batch["num_skipped"].sum())
            images += pixel_values.shape[0]  # the real size: an epoch's last step may accumulate fewer micro-batches
            micro_steps += 1
            if not accelerator.sync_gradients:
                continue
            with warnings.catch_warnings():  # D's optimiser does not step during --reconstruction_warmup_steps, but
                # both schedules follow the global step (as a resume restores them), so torch's order warning is moot
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                for lr_scheduler in lr_schedulers:
                    lr_scheduler.step()
            ema_step(ema_generator, args, generator.parameters(), accelerator.device)
            # average over accumulation micro-steps and processes (one gather per optimisation step)
            keys = sorted(pending)
            local = torch.stack([pending[k] / (micro_steps if not k.startswith("grad_norm") else 1) for k in keys])
            values = accelerator.gather(local.to(accelerator.device)[None]).mean(0).tolist()
            new_skipped, new_images = accelerator.gather(
                torch.tensor([[skipped, images]], device=accelerator.device)).sum(0).tolist()
            pending, skipped, images, micro_steps = {}, 0, 0, 0
            global_step += 1
            counters.skipped_images += new_skipped
            counters.images_seen += new_images
            step_logs = dict(zip(keys, values), skipped_images=counters.skipped_images)
            if new_skipped:
                logger.warning(f"Skipped {new_skipped} unreadable example(s) (image or caption) at step {global_step} "
                               f"({counters.skipped_images} in total).")
            progress_bar.update(1)
            progress_bar.set_postfix({k: f"{step_logs[k]:.3f}" for k in ("loss_d", "loss_g") if k in step_logs})
            accelerator.log({**step_logs, "lr_g": lr_schedulers[0].get_last_lr()[0],
                             "lr_d": lr_schedulers[1].get_last_lr()[0]}, step=global_step)
            if loss_log is not None:
                loss_log.write(json.dumps({"step": global_step, **step_logs}) + "\n")
                loss_log.flush()
            if global_step % args.checkpointing_steps == 0:
                counters.train_seconds = seconds_before + time.perf_counter() - start_time
                counters.lr_schedulers = [lr_scheduler.state_dict() for lr_scheduler in lr_schedulers]
                path = save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit,
                                       run_id=run_id, seed=args.seed)
                logger.info(f"Saved state to {path}")
            if accelerator.is_main_process and validation_due(args, global_step, False, epoch):
                validation_samples, validated_at = validate(global_step), global_step
            if global_step >= args.max_train_steps:
                break
        if accelerator.is_main_process and validated_at != global_step and validation_due(args, global_step, True, epoch):
            validation_samples, validated_at = validate(global_step), global_step  # --validation_epochs
        if global_step >= args.max_train_steps:
            break
    elapsed = time.perf_counter() - start_time
    throughput = (counters.images_seen - images_before) / elapsed if elapsed > 0 else 0.0  # this session's images

    # ------------------------------------------------------------------------------------------------ save
    accelerator.wait_for_everyone()
    check_processes_in_sync(accelerator, [generator, discriminator])
    if accelerator.is_main_process:
        loss_log.close()
        generator = accelerator.unwrap_model(generator)
        if ema_generator is not None:
            ema_generator.copy_to(generator.parameters())
        pipeline = GALIPPipeline(tokenizer=tokenizer, text_encoder=text_encoder, generator=generator,
                                 image_encoder=image_encoder, scorer=scorer)
        pipeline.settings = starting_settings(args.pretrained_model_name_or_path, "train_galip.py")
        # in place, not swapped in as a whole (save_pretrained): the folder is this run's, and its trackers still
        # write into it; only this run's own final-save files of the same names are overwritten
        write_pipeline(pipeline, args.output_dir,
                       extra_models={"discriminator": accelerator.unwrap_model(discriminator)})
        if args.validation_prompts and validated_at != global_step:
            validation_samples = log_validation(generator, text_encoder, tokenizer, args, accelerator, global_step)
        eval_results = run_final_evaluation(args, pipeline, dataset) if args.eval_num_images else None
        speed = measure_speed(args, pipeline)
        summary = {"steps": global_step, "epochs": epochs_run, "images_seen": counters.images_seen, "skipped_images": counters.skipped_images,
                   "train_seconds": round(seconds_before + elapsed, 2), "session_train_seconds": round(elapsed, 2),
                   "images_per_second": round(throughput, 3), "mixed_precision": effective_mixed_precision(accelerator)}
        with open(os.path.join(args.output_dir, "training_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        save_model_card(args, init_description, summary, len(dataset) if not args.streaming else "streaming",
                        generator.config.output_size, resolution, accelerator, validation_samples, eval_results,
                        speed, max_prompt_tokens=min(77, tokenizer.model_max_length))
    push_error = None
    if accelerator.is_main_process and args.push_to_hub:  # the pipeline, card and settings; no checkpoints, logs or
        # run records (losses.jsonl, galip_run.json, training_summary.json), wherever --logging_dir is
        try:
            push_folder_to_hub(args.output_dir, args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
                               token=args.hub_token, commit_message="End of training",
                               ignore_patterns=push_ignore_patterns(args.output_dir, args.logging_dir,
                                                                    args.tracker_project_name))
        except HubPushError as err:  # the run is saved: say so, let the other processes finish, then exit 1
            push_error = err
            logger.error(str(err))
    accelerator.wait_for_everyone()  # the other processes wait for the main one's saving before the group goes away
    del generator, discriminator, optimizer_g, optimizer_d, train_dataloader
    accelerator.end_training()
    if push_error is not None:
        raise SystemExit(f"train_galip.py: {push_error}")


def check_processes_in_sync(accelerator, models):
    """Multi-process runs: every process must hold the same weights at the end (DDP keeps them in sync)."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()])
                            for model in models for p in model.parameters()]).to(accelerator.device)
    gathered = accelerator.gather(checksum[None])
    if not torch.equal(gathered.min(0).values, gathered.max(0).values):
        raise RuntimeError("The processes ended with different weights: gradients were not synchronised.")
    logger.info(f"All {accelerator.num_processes} processes hold identical weights.")


class ema_swapped:
    """Context manager: G's weights replaced by the EMA weights (no-op without EMA)."""

    def __init__(self, ema, model):
        self.ema, self.params = ema, list(model.parameters())

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.params)


def run_final_evaluation(args, pipeline, dataset):
    """CLIP score (and FID with --eval_inception_weights) of the final model on training captions (coco30k recipe)."""
    from galip_diffusers.evaluation.evaluate import CLIPScorer, evaluate_pipeline

    scorer = CLIPScorer.from_pretrained(args.eval_clip_model_name_or_path) if args.eval_clip_model_name_or_path else None
    result = evaluate_pipeline(pipeline, dataset, protocol="coco30k", num_images=args.eval_num_images,
                               batch_size=args.train_batch_size, seed=args.seed, image_column=args.image_column,
                               caption_column=args.caption_column, inception_weights=args.eval_inception_weights,
                               clip_scorer=scorer, compute_fid=args.eval_inception_weights is not None, progress=False)
    with open(os.path.join(args.output_dir, "eval_results.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def measure_speed(args, pipeline):
    """Inference speed of the final pipeline for the model card: ``(rows, machine)``, or ``None`` when skipped."""
    from galip_diffusers.benchmark.speed_figures import machine_description, measure_pipeline_speed

    batch_sizes = [int(b) for b in args.speed_batch_sizes.split(",") if b.strip()]
    if not batch_sizes:
        return None
    prompt = (args.validation_prompts or ["a photo"])[0]
    generator_mode = pipeline.generator.training
    pipeline.generator.eval()
    try:
        rows = measure_pipeline_speed(pipeline, batch_sizes=batch_sizes, repeats=3, prompt=prompt)
    finally:
        pipeline.generator.train(generator_mode)
    logger.info("Inference speed: " + ", ".join(f"batch {r.batch_size}: {r.images_per_second:.3g} images/s" for r in rows))
    return [row.as_card_row() for row in rows], machine_description(pipeline.device)


def save_model_card(args, init_description, summary, num_examples, output_size, resolution, accelerator,
                    validation_samples, eval_results, speed=None, max_prompt_tokens=77):
    license_ = args.license
    if license_ is None and args.pretrained_model_name_or_path and os.path.isfile(
            os.path.join(args.pretrained_model_name_or_path, "README.md")):
        from huggingface_hub import ModelCard

        license_ = ModelCard.load(os.path.join(args.pretrained_model_name_or_path, "README.md")).data.license
    license_ = license_ or "apache-2.0"
    rows = []
    if eval_results:
        if "fid" in eval_results:
            rows.append(("FID", f"{eval_results['fid']:.3f}", f"{eval_results['num_images']} images; "
                         f"{eval_results['fid_resize']}"))
        if "clip_score" in eval_results:
            rows.append(("CLIP score", f"{eval_results['clip_score']:.2f}", f"{eval_results['clip_score_convention']}; "
                         f"CLIP: {eval_results['clip_model']}"))
            rows.append(("CLIP cosine (official)", f"{eval_results['clip_cosine_official']:.4f}",
                         "raw cosine with the official double-shift preprocessing"))
    args.mixed_precision = effective_mixed_precision(accelerator)  # what ran (fp16 on a CPU: no)
    hyperparameters = [(k, getattr(args, k)) for k in (
        "learning_rate_g", "learning_rate_d", "adam_beta1", "adam_beta2", "adam_epsilon", "adam_weight_decay",
        "sim_weight", "magp_weight", "magp_power", "mismatch", "reconstruction_weight", "reconstruction_fraction",
        "reconstruction_warmup_steps", "zero_noise_weights", "condition_noise",
        "max_grad_norm",
        "train_batch_size", "gradient_accumulation_steps",
        "mixed_precision", "use_ema", "ema_decay", "resolution", "seed")]
    card = render_model_card(
        "galip_trained", license=license_, tags=["gan", "diffusers-training"],
        datasets=args.dataset_name, base_model=args.pretrained_model_name_or_path or args.clip_model_name_or_path,
        model_name=args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
        repo_path=args.hub_model_id or args.output_dir, example_prompt=(args.validation_prompts or ["a photo"])[0],
        init_description=init_description, dataset=f"`{args.dataset_name or args.train_data_dir}`",
        num_examples=num_examples, steps=summary["steps"], epochs=summary["epochs"],
        images_seen=summary["images_seen"], skipped_images=summary["skipped_images"],
        effective_batch_size=args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        train_batch_size=args.train_batch_size, num_processes=accelerator.num_processes,
        gradient_accumulation_steps=args.gradient_accumulation_steps, resolution=resolution, output_size=output_size,
        augmentation=augmentation_description(args.center_crop, args.random_flip),
        mixed_precision=precision_description(accelerator), hyperparameters=hyperparameters,
        training_time=f"{summary['train_seconds']:.0f} s on {accelerator.num_processes} x {accelerator.device.type}",
        throughput=f"{summary['images_per_second']:.2f} images/s", sim_weight=args.sim_weight,
        magp_weight=args.magp_weight, magp_power=args.magp_power, adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2, validation_samples=validation_samples, eval_results=rows,
        license_note=f"`{license_}`. Weights derived from the official GALIP checkpoints keep their CC BY-NC-SA 4.0 "
        "license.",
        speed_results=speed[0] if speed else None, speed_machine=speed[1] if speed else None,
        max_prompt_tokens=max_prompt_tokens, limitations=[],
    )
    card.save(os.path.join(args.output_dir, "README.md"))


if __name__ == "__main__":
    try:
        arguments = parse_args()
        preflight(arguments)
    except (ValueError, OSError) as error:  # bad arguments: one line, as the README promises, not a traceback
        raise SystemExit(f"{os.path.basename(__file__)}: error: {error}") from None
    run_training(main, arguments, os.path.basename(__file__))
