#!/usr/bin/env python
"""Train a small contrastive CLIP on the procedural captioned-shapes data set (the shipped model's CLIPs).

The tokenizer is a real ``CLIPTokenizer`` whose small BPE vocabulary is learned on the 96 training captions (plus
the 256 byte-level fallback symbols), so the text tower stays tiny. Images come from
``galip_diffusers.data.shapes.generate_shapes(split="train")``: held-out captions (purple triangle, orange circle)
are never seen, unless ``--caption_split all`` (a *broader* judge than the generator, as OpenAI's CLIP is for
FuseDream's BigGAN: it knows the combinations the generator never saw). The loss is the CLIP loss with multi-positive
soft targets: every identical caption in the batch is a positive, in both directions. The temperature is learned as
in CLIP.

Run with ``python training/train_clip.py ...`` or ``accelerate launch training/train_clip.py ...``; the output folder
loads with ``CLIPModel`` / ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` / ``CLIPTokenizer``
``.from_pretrained`` and holds ``zero_shot_eval.json``. As in ``train_galip.py``, a new run refuses a non-empty
``--output_dir`` unless it resumes or is given ``--overwrite_output_dir``, and ``--checkpoints_total_limit`` deletes
only the checkpoints of this run (``galip_diffusers.training.ownership``). With ``--train_data_dir``, the data are
loaded and checked (splits, columns, enough rows for a batch, captions that fit ``--context_length``) before the run is
recorded in ``--output_dir``: a data error ends in one line and leaves that folder as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from typing import NamedTuple, Optional

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTokenizer

from galip_diffusers.training.clip import (
    build_clip_config,
    check_clip_sizes,
    clamp_logit_scale,
    evaluate_clip,
    jitter_brightness_contrast,
    multi_positive_contrastive_loss,
    whiten_patch_embedding,
    pixel_values_from_uint8,
    save_image_processor,
)
from galip_diffusers.training.checkpoints import (check_steps_left, load_checkpoint, remove_incomplete_checkpoints,
                                                   resolve_resume_checkpoint, resume_message, run_training,
                                                   save_checkpoint, setup_errors)
from galip_diffusers.training.clip_data import (
    CaptionDataError,
    CaptionPool,
    check_caption_lengths,
    evaluate_caption_pool,
    load_caption_folder,
    sample_batch_captions,
)
from galip_diffusers.training.options import FLAG_RANGES, LR_SCHEDULERS, check_flag_ranges
from galip_diffusers.training.environment import (add_report_to_flag, check_mixed_precision, check_trackers,
                                                   tracker_config)
from galip_diffusers.training.ownership import check_output_dir, resume_seed, start_run
from galip_diffusers.data.bpe import save_bpe_tokenizer, train_bpe_tokenizer
from galip_diffusers.data.shapes import all_captions, generate_shapes
from galip_core.paths import check_apart

logger = get_logger(__name__)

#: the allowed values of the numeric flags (as galip_core.finite.check_number_in_range keywords): the ranges shared
#: with train_galip.py, and this script's own
CLIP_FLAG_RANGES = {
    **FLAG_RANGES, "max_grad_norm": dict(low=0), "validation_steps": dict(low=0, integer=True),  # 0: off
    **{flag: dict(low=1, integer=True) for flag in ("logging_steps", "eval_images", "num_train_images",
                                                    "context_length")},
}  # fmt: skip
#: the model-size flags (checked by galip_diffusers.training.clip.check_clip_sizes)
SIZE_FLAGS = ("vision_width", "vision_layers", "vision_heads", "text_width", "text_layers", "text_heads",
              "projection_dim", "image_size", "patch_size")


def parse_args(input_args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a small contrastive CLIP on the captioned-shapes data set.")
    parser.add_argument("--output_dir", type=str, required=True,
                        help="Where the CLIP folder is written: empty or new, unless resuming "
                             "(--resume_from_checkpoint) or --overwrite_output_dir.")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Train a new run into a non-empty --output_dir: its final CLIP is replaced, its "
                             "checkpoints are kept (never deleted by this run, never picked by 'latest').")
    parser.add_argument("--seed", type=int, default=None,
                        help="Seed of the weights, the data order and the images (default 0 for a new run; a resumed "
                             "run reuses the seed recorded in its checkpoint, and refuses a different one).")
    # model
    parser.add_argument("--vision_width", type=int, default=128)
    parser.add_argument("--vision_layers", type=int, default=4)
    parser.add_argument("--vision_heads", type=int, default=4)
    parser.add_argument("--text_width", type=int, default=128)
    parser.add_argument("--text_layers", type=int, default=3)
    parser.add_argument("--text_heads", type=int, default=4)
    parser.add_argument("--projection_dim", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=64, help="Vision tower input size (the shapes are 64x64).")
    parser.add_argument("--patch_size", type=int, default=8)
    parser.add_argument(
        "--context_length", type=int, default=16,
        help="Text context: max_position_embeddings of the text tower and the tokenizer's model_max_length.",
    )
    # data
    parser.add_argument(
        "--train_data_dir", type=str, default=None,
        help="Train on this image-caption data set folder (save_to_disk or imagefolder, e.g. the emoji data set) "
        "instead of generated shapes. Rows whose `held_out` column is true are never used, unreadable images are "
        "skipped (counted in the log), images are centre-cropped to a square. Implies --text_negatives batch.",
    )
    parser.add_argument("--train_split", type=str, default=None,
                        help="The split of --train_data_dir to train on when it holds several (a DatasetDict or an "
                        "imagefolder with train/, test/... subfolders); such a folder is refused without it.")
    parser.add_argument("--image_column", type=str, default="image", help="Image column of --train_data_dir.")
    parser.add_argument("--caption_column", type=str, default="text",
                        help="Caption column of --train_data_dir: a string or a list of captions per image.")
    parser.add_argument("--eval_data_dir", type=str, default=None,
                        help="With --train_data_dir: the folder whose retrieval accuracy is reported (per value of "
                        "its `held_out` column); default --train_data_dir (with --train_split). Checked before "
                        "training.")
    parser.add_argument("--eval_split", type=str, default=None,
                        help="The split of --eval_data_dir to evaluate on when it holds several; such a folder is "
                        "refused without it.")
    parser.add_argument("--num_train_images", type=int, default=50000,
                        help="Size of the generated training pool (captions of --caption_split).")
    parser.add_argument(
        "--caption_split", type=str, default="train", choices=["train", "all"],
        help='Captions of the training images: "train" (the 96 the generator is trained on; held-out pairs never '
        'seen) or "all" (the 108, held-out pairs included: a scorer that knows more than the generator). The '
        "tokenizer is learned on the 96 training captions either way, so it equals the generator's.",
    )
    parser.add_argument(
        "--text_negatives", type=str, default="all", choices=["batch", "all"],
        help='"batch": the texts are the batch captions (square CLIP batch); "all": every training caption is '
        "encoded at each step, so each image is contrasted with all 96 captions (better with small batches).",
    )
    parser.add_argument(
        "--patch_init", type=str, default="whiten", choices=["random", "whiten"],
        help='"whiten": initialise the patch embedding with PCA-whitened patches of 2048 training images.',
    )
    parser.add_argument("--no_color_jitter", action="store_true",
                        help="Disable the random per-image brightness/contrast (same for all channels, so hues are "
                        "kept), which helps the held-out colour/shape pairs.")
    parser.add_argument("--no_hflip", action="store_true", help="Disable random horizontal flips (caption-safe).")
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--max_train_steps", type=int, default=1600)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_scheduler", type=str, default="cosine", choices=LR_SCHEDULERS,
                        help="diffusers' get_scheduler schedule")
    parser.add_argument("--lr_warmup_steps", type=int, default=100)
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--adam_beta2", type=float, default=0.98)
    parser.add_argument("--max_grad_norm", type=float, default=1.0, help="clip the gradient norm (0: no clipping)")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                        help="Default: accelerate's (accelerate launch --mixed_precision, its config or "
                             "ACCELERATE_MIXED_PRECISION; else no). fp16 needs a GPU: on a CPU the run trains in fp32, "
                             "with a warning, and records that.")
    parser.add_argument("--logging_steps", type=int, default=25)
    # evaluation
    parser.add_argument("--eval_images", type=int, default=1000,
                        help="Images per split (train captions / held-out captions) for the final evaluation.")
    parser.add_argument("--validation_steps", type=int, default=0,
                        help="Also evaluate every N steps (0: only at the end): on 256 generated images per split, or "
                             "with --train_data_dir the retrieval of the final evaluation, on --eval_data_dir "
                             "(default --train_data_dir). Logged to the trackers and the history.")
    # trackers and checkpoints (as train_galip.py and diffusers' example scripts)
    add_report_to_flag(parser, help_extra=": the loss, learning rate, temperature and validation accuracies")
    parser.add_argument("--logging_dir", type=str, default="logs", help="tracker folder, inside --output_dir")
    parser.add_argument("--tracker_project_name", type=str, default="galip-clip")
    parser.add_argument("--checkpointing_steps", type=int, default=500,
                        help="save the training state (model, optimiser, LR schedule, RNG) every N steps")
    parser.add_argument("--checkpoints_total_limit", type=int, default=None,
                        help="keep at most N of this run's checkpoints (other runs' are never deleted)")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None,
                        help='a checkpoint folder or "latest": continue from its step (the data order after it '
                             "differs from an uninterrupted run)")
    args = parser.parse_args(input_args)
    try:  # every numeric flag's range, the checkpoint to resume and the output folder, before anything loads
        check_flag_ranges(args, CLIP_FLAG_RANGES)
        check_clip_sizes({name: getattr(args, name) for name in SIZE_FLAGS}, prefix="--")
        # even with --overwrite_output_dir: the CLIP's files would replace the data set's (e.g. its README.md card)
        check_apart("--output_dir", args.output_dir,
                    {"--train_data_dir": args.train_data_dir, "--eval_data_dir": args.eval_data_dir})
        resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
        check_output_dir(args.output_dir, resuming=resume_path is not None, overwrite=args.overwrite_output_dir)
        check_steps_left(resume_path, args.max_train_steps)
        seed = resume_seed(args.seed, resume_path)  # a resumed run keeps its own seed (its images and data order)
        args.seed = 0 if seed is None else seed
    except (ValueError, OSError) as error:  # OSError: a missing checkpoint, an output path that cannot be a folder
        parser.error(str(error))
    for flag, folder in (("--train_data_dir", args.train_data_dir), ("--eval_data_dir", args.eval_data_dir)):
        if folder is not None and not os.path.isdir(folder):
            parser.error(f"{flag} {folder} is not a folder")
    if args.eval_data_dir is not None and args.train_data_dir is None:
        parser.error("--eval_data_dir needs --train_data_dir (a shapes run is evaluated on generated shapes)")
    for split_flag, flag in (("--train_split", "--train_data_dir"), ("--eval_split", "--eval_data_dir")):
        if getattr(args, split_flag[2:]) is not None and getattr(args, flag[2:]) is None:
            parser.error(f"{split_flag} needs {flag}: it picks the split of that folder")
    if args.train_data_dir is not None:
        args.text_negatives = "batch"
    if args.train_batch_size < 2:
        parser.error("--train_batch_size must be at least 2")
    if args.num_train_images < args.train_batch_size:
        parser.error("--num_train_images must be at least --train_batch_size")
    return args


class TrainingData(NamedTuple):
    """What the run trains and evaluates on, every check of it passed. (A NamedTuple, not a dataclass: the script is
    also loaded as a module without a ``sys.modules`` entry, e.g. by the tests, where dataclasses fail.)"""

    captions: list[str]  #: the distinct training captions (the caption ids of the shapes run)
    tokenizer: CLIPTokenizer  #: the BPE learned on the training captions
    pool: Optional[CaptionPool] = None  #: --train_data_dir's usable rows (held-out and unreadable ones dropped)
    eval_pool: Optional[CaptionPool] = None  #: --eval_data_dir's rows (default --train_data_dir's), held-out included


def check_enough_rows(num_rows: int, batch_size: int, num_processes: int, source: str, note: str = "") -> None:
    """Refuse fewer rows than one batch on every process: the DataLoader drops the last incomplete batch, so with
    fewer rows it yields nothing and the training loop would spin forever at step 0 (a process without a batch
    would leave the others waiting)."""
    needed = batch_size * num_processes
    if num_rows < needed:
        per_process = f" per process, {needed} on {num_processes} processes" if num_processes > 1 else ""
        raise CaptionDataError(f"{source} has {num_rows} usable rows{note}; --train_batch_size {batch_size} needs at "
                               f"least {batch_size}{per_process}: lower --train_batch_size or add rows.")


def _load_pool(args: argparse.Namespace, train: bool) -> CaptionPool:
    """--train_data_dir's training rows (``train``), or the evaluation rows: --eval_data_dir's, else every row of
    --train_data_dir's split, held-out ones included."""
    if train or args.eval_data_dir is None:
        folder, flag, split, split_flag = args.train_data_dir, "--train_data_dir", args.train_split, "--train_split"
    else:
        folder, flag, split, split_flag = args.eval_data_dir, "--eval_data_dir", args.eval_split, "--eval_split"
    pool = load_caption_folder(folder, args.image_column, args.caption_column, args.image_size, drop_held_out=train,
                               flag=flag, split=split, split_flag=split_flag)
    if pool.num_unreadable or pool.num_uncaptioned:
        logger.warning(f"{flag} {folder}: skipped {pool.num_unreadable} row(s) whose image could not be read and "
                       f"{pool.num_uncaptioned} without a caption (each one is logged above).")
    return pool


def load_training_data(args: argparse.Namespace, num_processes: int) -> TrainingData:
    """The tokenizer and, with --train_data_dir, the training and evaluation rows, with every check of the data:
    folders, splits, columns, images, enough rows for a batch on each process, captions that fit --context_length.

    Called before the run is recorded in --output_dir (``galip_run.json``) and before any training, so a data error
    costs no training time, leaves --output_dir as it was and the corrected command runs at once. Raises
    :class:`CaptionDataError`."""
    if args.train_data_dir is None:  # the tokenizer is learned on the 96 training captions, whatever --caption_split
        captions = all_captions(args.caption_split)
        tokenizer = train_bpe_tokenizer(all_captions("train"), model_max_length=args.context_length)
        check_enough_rows(args.num_train_images, args.train_batch_size, num_processes, "--num_train_images")
        check_caption_lengths(tokenizer, all_captions("all"), "the shapes data set")
        return TrainingData(captions, tokenizer)
    pool = _load_pool(args, train=True)
    dropped = (f" ({pool.num_held_out} held-out rows dropped, {pool.num_unreadable} unreadable images and "
               f"{pool.num_uncaptioned} rows without a caption skipped)")
    check_enough_rows(len(pool.images), args.train_batch_size, num_processes,
                      f"--train_data_dir {args.train_data_dir}", dropped)
    eval_pool = _load_pool(args, train=False)
    captions = sorted({c for row_captions in pool.captions for c in row_captions})
    tokenizer = train_bpe_tokenizer(captions, model_max_length=args.context_length)
    check_caption_lengths(tokenizer, captions, "--train_data_dir")
    check_caption_lengths(tokenizer, [row[-1] for row in eval_pool.captions],
                          "--eval_data_dir" if args.eval_data_dir else "--train_data_dir (evaluation)")
    logger.info(f"--train_data_dir {args.train_data_dir}: {len(pool.images)} usable rows{dropped}, "
                f"{len(captions)} distinct captions; {len(eval_pool.images)} rows to evaluate on")
    return TrainingData(captions, tokenizer, pool, eval_pool)


class TrainingProgress:
    """The step and the logged history, saved in checkpoints (``accelerator.register_for_checkpointing``)."""

    def __init__(self):
        self.step, self.history = 0, []

    def state_dict(self) -> dict:
        return {"step": self.step, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.history = int(state["step"]), list(state["history"])


def validation_accuracies(model: CLIPModel, tokenizer: CLIPTokenizer, data: TrainingData) -> dict:
    """The ``--validation_steps`` evaluation: zero-shot caption accuracy per attribute on 256 generated images per
    split (shapes), or with --train_data_dir the final evaluation's retrieval (top-1 / top-5 per value of the
    ``held_out`` column) on the evaluation rows."""
    if data.pool is None:
        report = evaluate_clip(model, tokenizer, num_images=256)
        return {k: v["caption"] for k, v in report["zero_shot"].items() if isinstance(v, dict)}
    report = evaluate_caption_pool(model, tokenizer, data.eval_pool)
    return {group: {k: v for k, v in values.items() if k != "n"} for group, values in report.items()
            if isinstance(values, dict)}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, embeddings and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main(args: argparse.Namespace) -> dict:
    """Train the CLIP, evaluate it and save it with its tokenizer and image processor; returns the evaluation report.

    One function, like the training loops of diffusers' example scripts: the loop shares the run's state (accelerator,
    model, optimiser, data, history). The pieces are library functions of :mod:`galip_diffusers.training.clip`.
    """
    start_time = time.time()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir,
                                            logging_dir=os.path.join(args.output_dir, args.logging_dir)),
    )
    mixed_precision = check_mixed_precision(accelerator, logger.warning)  # what really runs (fp16 on a CPU: no)
    set_seed(args.seed)
    resume_path = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)  # before the run is recorded
    if message := resume_message(args.resume_from_checkpoint, resume_path, args.max_train_steps):
        accelerator.print(message)
    # Trackers (installed, logged in), data and tokenizer (BPE learned on the training captions, whatever
    # --caption_split is), checked before the run is recorded: an error leaves --output_dir untouched.
    with setup_errors():
        check_trackers(args.report_to, accelerator.is_main_process)
    data = load_training_data(args, accelerator.num_processes)
    train_captions, tokenizer = data.captions, data.tokenizer
    run_id = None  # this run's id (main process): --checkpoints_total_limit deletes only its checkpoints
    if accelerator.is_main_process:
        run_id = start_run(args.output_dir, resume_path, args.seed)
        for path in remove_incomplete_checkpoints(args.output_dir):
            logger.info(f"Removed the incomplete checkpoint {path}")

    config = build_clip_config(
        tokenizer, vision_width=args.vision_width, vision_layers=args.vision_layers, vision_heads=args.vision_heads,
        text_width=args.text_width, text_layers=args.text_layers, text_heads=args.text_heads,
        projection_dim=args.projection_dim, image_size=args.image_size, patch_size=args.patch_size,
    )
    model = CLIPModel(config)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info(f"CLIP with {num_params:,} parameters ({2 * num_params / 2**20:.2f} MiB in fp16)")

    # Every caption is tokenised once. With CLIP's causal mask, the EOS state does not depend on the padding after
    # it, so padding to the longest caption gives the same embeddings as padding to model_max_length.
    caption_ids = tokenizer(train_captions, padding="longest", return_tensors="pt").input_ids

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(0.9, args.adam_beta2), eps=1e-6)

    # Data: a deterministic pool of images of the --caption_split captions, kept as uint8.
    if args.train_data_dir is not None:  # labels are row indices; captions are drawn per batch
        images, labels = data.pool.images, torch.arange(len(data.pool.images))
        caption_rng = random.Random(args.seed)
        args.num_train_images = len(images)
    else:
        pairs = generate_shapes(args.num_train_images, seed=args.seed, split=args.caption_split, as_array=True)
        caption_index = {c: i for i, c in enumerate(train_captions)}
        images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([caption_index[p[1]] for p in pairs], dtype=torch.long)
        del pairs
    if args.patch_init == "whiten":
        whiten_patch_embedding(model, pixel_values_from_uint8(images[:2048]))
    dataloader = DataLoader(TensorDataset(images, labels), batch_size=args.train_batch_size, shuffle=True,
                            drop_last=True)

    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    progress_state = TrainingProgress()
    accelerator.register_for_checkpointing(progress_state)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, tracker_config(args))
    if resume_path is not None:
        load_checkpoint(accelerator, resume_path)
        logger.info(f"Resumed from {resume_path} (step {progress_state.step})")

    logger.info(f"Training {args.max_train_steps} steps of batch {args.train_batch_size} "
                f"on {args.num_train_images} images", main_process_only=True)
    progress = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process, desc="steps",
                    mininterval=10)
    history, step, running = progress_state.history, progress_state.step, []
    progress.update(step)
    model.train()
    while step < args.max_train_steps:
        for batch_images, batch_labels in dataloader:
            if not args.no_hflip:
                flip = torch.rand(batch_images.shape[0], device=batch_images.device) < 0.5
                batch_images = torch.where(flip[:, None, None, None], batch_images.flip(-1), batch_images)
            if not args.no_color_jitter:
                batch_images = jitter_brightness_contrast(batch_images)
            pixel_values = pixel_values_from_uint8(batch_images.cpu()).to(accelerator.device)
            if args.train_data_dir is not None:  # the batch's distinct captions; identical strings are positives
                texts, batch_labels = sample_batch_captions([data.pool.captions[i] for i in batch_labels.tolist()],
                                                            caption_rng)
                batch_labels = batch_labels.to(accelerator.device)
                text_ids = tokenizer(texts, padding="longest", truncation=True, return_tensors="pt").input_ids
                columns = batch_labels  # (B, distinct) -> (B, B) below, identical captions sharing one column
            elif args.text_negatives == "all":
                text_labels = torch.arange(len(train_captions), device=batch_labels.device)
                text_ids, columns = caption_ids, None
            else:
                text_labels, columns = torch.unique(batch_labels, return_inverse=True)
                text_ids = caption_ids[text_labels.cpu()]
            with accelerator.accumulate(model), accelerator.autocast():
                out = model(input_ids=text_ids.to(accelerator.device), pixel_values=pixel_values)
                if columns is None:
                    loss = multi_positive_contrastive_loss(out.logits_per_image, batch_labels, text_labels)
                else:
                    # (B, unique) -> (B, B): every text of the batch, identical captions sharing one embedding.
                    loss = multi_positive_contrastive_loss(out.logits_per_image[:, columns], batch_labels)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            clamp_logit_scale(accelerator.unwrap_model(model))
            step = progress_state.step = step + 1
            progress.update(1)
            running.append(loss.detach().float().item())
            record = None
            if step % args.logging_steps == 0 or step == args.max_train_steps:
                scale = accelerator.unwrap_model(model).logit_scale.exp().item()
                record = {"step": step, "loss": float(np.mean(running)), "logit_scale": scale,
                          "lr": lr_scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - start_time, 1)}
                running = []
                progress.set_postfix(loss=record["loss"], scale=round(scale, 1))
            if args.validation_steps and step % args.validation_steps == 0 and accelerator.is_main_process:
                record = record or {"step": step}  # every N steps, whatever --logging_steps is
                record["val"] = validation_accuracies(accelerator.unwrap_model(model), tokenizer, data)
            if record is not None:
                history.append(record)
                accelerator.log({k: v for k, v in record.items() if k not in ("step", "val")}
                                | {f"val/{k}": v for k, v in record.get("val", {}).items()}, step=step)
                logger.info(json.dumps(record), main_process_only=True)
            if step % args.checkpointing_steps == 0:
                path = save_checkpoint(accelerator, args.output_dir, step, args.checkpoints_total_limit, run_id,
                                       seed=args.seed)
                logger.info(f"Saved state to {path}")
            if step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    train_time = time.time() - start_time
    report: dict = {}
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).float().eval()
        model.save_pretrained(args.output_dir)
        save_bpe_tokenizer(tokenizer, args.output_dir)
        save_image_processor(args.output_dir, args.image_size)
        if args.train_data_dir is not None:
            report = {"retrieval": evaluate_caption_pool(model, tokenizer, data.eval_pool)}
        else:
            report = evaluate_clip(model, tokenizer, num_images=args.eval_images)
        weights = os.path.join(args.output_dir, "model.safetensors")
        report["model"] = {
            "num_parameters": num_params,
            "fp16_mib": round(2 * num_params / 2**20, 3),
            "safetensors_mib": round(os.path.getsize(weights) / 2**20, 3) if os.path.exists(weights) else None,
            "vocab_size": len(tokenizer),
            "context_length": args.context_length,
        }
        report["training"] = {"args": vars(args), "mixed_precision": mixed_precision,
                              "train_wall_time_s": round(train_time, 1),
                              "total_wall_time_s": round(time.time() - start_time, 1),
                              "num_processes": accelerator.num_processes, "history": history}
        with open(os.path.join(args.output_dir, "zero_shot_eval.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        if "retrieval" in report:
            print(f"retrieval: {json.dumps(report['retrieval'])}")
        else:
            zs = report["zero_shot"]
            for split in ("train_split", "held_out"):
                print(f"zero-shot {split}: " + ", ".join(f"{k} {v:.3f}" for k, v in zs[split]["caption"].items()))
            print(f"text linear probe (held-out captions): {report['text_linear_probe']['ridge=0.1']}")
        print(f"wall time {report['training']['total_wall_time_s']} s; saved to {args.output_dir}")
    accelerator.end_training()
    return report


if __name__ == "__main__":
    run_training(main, parse_args(), "train_clip.py")  # a CaptionDataError (a SetupError) ends in one line
