"""FID and CLIP score for GALIP pipelines (``galip-eval``).

* FID: torchmetrics' ``FrechetInceptionDistance`` with torch-fidelity's TF-ported InceptionV3, loaded from a local
  weights file (``--inception_weights``; nothing is downloaded). Images reach Inception at 299 px through a stated
  resize: ``"clean"`` (PIL bicubic on float32, per channel, as clean-fid does) or ``"bilinear"`` (``F.interpolate``
  bilinear on float, as pytorch-fid and therefore the official GALIP evaluation do); the result is rounded to uint8
  because the Inception takes uint8 (torchmetrics' own resize is then the identity).
* CLIP score, two variants, with any CLIP given by path:
  ``clip_score`` = mean over images of ``100 * max(cos, 0)`` with standard CLIP preprocessing (PIL bicubic resize of the
  shorter side + centre crop): Hessel et al. 2021's CLIP-S, clamped per image, with w = 100 instead of 2.5 (torchmetrics'
  ``CLIPScore`` clamps the mean instead, ``max(mean(100 * cos), 0)``; the two agree when no cosine is negative), and
  ``clip_cosine_official`` = mean raw cosine with the
  official GALIP preprocessing (nearest resize and the *double shift*: the ViT sees pixels in [0.5, 1]); compare the
  latter with the paper's 0.3338.

Protocols: ``official`` (GALIP's own evaluation: FID against an ``.npz`` of (mu, sigma) with the bilinear resize; the
headline CLIP number is the official raw cosine) and ``coco30k`` (the standard: 30k captions, 256 px centre crop,
clean resize, CLIP score x100).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from galip_core.finite import check_number_in_range
from galip_core.text import short_repr

from galip_diffusers.evaluation.clip_score import (
    OFFICIAL_CLIP_NOTE,
    STANDARD_CLIP_NOTE,
    CLIPScorer,
    center_crop_resize,
    clip_score_from_cosines,
    pipeline_clip_scorer,
)
from galip_diffusers.evaluation.fid import (
    RESIZE_DESCRIPTIONS,
    check_finite_features,
    clean_resize,
    fid_statistics,
    inception_input,
    load_fid_metric,
    load_fid_statistics,
    set_real_statistics,
    to_uint8,
)

PROTOCOLS = ("official", "coco30k")
COCO_RESOLUTION = 256
COCO30K_IMAGES = 30_000  #: images (captions) of the coco30k protocol


def num_evaluation_images(num_images: Optional[int], dataset_size: Optional[int],
                          default: Optional[int] = None) -> tuple[Optional[int], str]:
    """``(number of images to use, note)``. A given ``num_images`` must be an integer >= 2 and at most
    ``dataset_size`` (``ValueError`` naming ``--num_images`` and the size otherwise): examples are never repeated, as
    repeats would bias FID. Not given: ``default`` (coco30k's 30,000; ``None``: the whole data set), capped at
    ``dataset_size``, and then ``note`` says so (else it is ``""``). ``dataset_size`` is ``None`` for a streaming
    data set, whose examples are used in order until ``num_images`` or its end."""
    if num_images is not None:
        check_number_in_range("--num_images", num_images, 2, integer=True)
        if dataset_size is not None and num_images > dataset_size:
            raise ValueError(f"--num_images {num_images} is more than the {dataset_size} examples of the data set; "
                             f"give at most {dataset_size} (examples are never repeated).")
        return num_images, ""
    if default is None or dataset_size is None or default <= dataset_size:
        return default if default is not None else dataset_size, ""
    return dataset_size, (f"the data set has {dataset_size} examples, fewer than the {default} of the default "
                          f"--num_images: all {dataset_size} are used.")


def evaluation_examples(dataset, image_column: str, caption_column: str, num_images: Optional[int], seed: int):
    """Yield (PIL image or None, caption) for ``num_images`` examples (default: all): a seeded random subset of the
    data set, never repeated (see :func:`num_evaluation_images`); one caption per example, picked at random when
    there are several."""
    from galip_diffusers.training.data import decode_image

    for value, caption in evaluation_rows(dataset, image_column, caption_column, num_images, seed):
        yield _decode_or_none(decode_image, value), caption


def evaluation_rows(dataset, image_column: str, caption_column: Optional[str], num_images: Optional[int],
                    seed: int) -> Iterator[tuple[Any, Optional[str]]]:
    """:func:`evaluation_examples` with the images not decoded: (raw image value, caption) pairs, so that the captions
    can be gathered without decoding an image. ``caption_column=None``: images only (the caption is ``None``). A bad
    caption is a ``ValueError`` naming ``--caption_column`` and the row."""
    from galip_diffusers.training.data import lazy_image_column, sample_rng

    dataset = lazy_image_column(dataset, image_column)  # decode later, so that a corrupt file is skipped, not fatal
    length = len(dataset) if hasattr(dataset, "__len__") else None
    if length == 0:
        raise ValueError("The evaluation data set is empty.")
    if length is None:  # streaming: in order
        rows = enumerate(dataset)
    else:
        total, _ = num_evaluation_images(num_images, length)
        rows = ((int(row), dataset[int(row)]) for row in np.random.default_rng(seed).permutation(length)[:total])
    for i, (row, example) in enumerate(rows):
        if num_images is not None and i >= num_images:
            return
        image = example.get(image_column)
        if caption_column is None:
            yield image, None
        else:
            yield image, _checked_caption(example[caption_column], sample_rng(seed, 0, i), caption_column, row, image)


def _checked_caption(value: Any, rng, caption_column: str, row: int, image: Any = None) -> str:
    """``pick_caption``'s caption, or its refusal naming ``--caption_column``, the row and the image file."""
    from galip_diffusers.training.data import pick_caption

    try:
        return pick_caption(value, rng)
    except ValueError:
        name = image_name(image)
        where = f"row {row}" + (f" ({name})" if name else "")
        raise ValueError(f"--caption_column {caption_column!r}: {where} holds {short_repr(value, 80)}; every caption "
                         "must be a non-empty string or a list of strings.") from None


def check_captions(dataset, caption_column: str, image_column: Optional[str] = None) -> None:
    """Check the caption of every row when the data set is loaded (``ValueError`` naming ``--caption_column``, the row
    and its image file), rather than when its batch comes up, hours into the generation. Cheap: only the caption
    column is read (in Arrow batches for a ``datasets.Dataset``). A streaming data set is not read twice: its rows
    are checked as they come."""
    import random

    from galip_diffusers.training.data import lazy_image_column, pick_caption

    if not hasattr(dataset, "__len__"):
        return
    if hasattr(dataset, "select_columns") and hasattr(dataset, "iter"):
        batches = dataset.select_columns([caption_column]).iter(batch_size=1000)
        values = (value for batch in batches for value in batch[caption_column])
    else:
        values = (example[caption_column] for example in dataset)
    rng = random.Random(0)
    for row, value in enumerate(values):
        try:
            pick_caption(value, rng)
        except ValueError:  # only now read the row's image value, for its file name
            image = None if image_column is None else lazy_image_column(dataset, image_column)[row].get(image_column)
            _checked_caption(value, rng, caption_column, row, image)  # raises, naming the row and the file


def image_name(value: Any) -> Optional[str]:
    """The file name of a raw image value (a path, or a ``{"bytes", "path"}`` dict), if it has one."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    return os.path.basename(os.fspath(path)) if path else None


def _decode_or_none(decode, value):
    if value is None:
        return None
    try:
        return decode(value)
    except Exception:
        return None


def _batched(iterable: Iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -------------------------------------------------------------------------------------------------------- evaluate
def reference_images_to_fid(metric, images: Sequence[Image.Image], protocol: str, resolution: int) -> None:
    """Add real images to the metric: centre crop at ``resolution``, then the protocol's resize to 299."""
    arrays = np.stack([center_crop_resize(image, resolution) for image in images])
    metric.update(inception_input(arrays, "clean" if protocol == "coco30k" else "bilinear"), real=True)


def add_reference_images(metric, rows: Iterable[tuple[Any, Any]], *, protocol: str, resolution: int,
                         batch_size: int, image_column: str, hint: str = "", progress: bool = False,
                         num_rows: Optional[int] = None) -> tuple[list, int]:
    """Decode the reference images of ``rows`` (:func:`evaluation_rows`'s pairs) batch by batch into the metric, before
    any image is generated; returns (the captions, the number of unreadable images, which are skipped). Fewer than 2
    readable images is a ``ValueError`` saying how many of how many were read (and naming ``--dataset`` and
    ``--image_column``, then ``hint``): FID needs 2, and finding out after the generation would waste all of it.
    ``num_rows``, if known, sizes the progress bar."""
    from galip_diffusers.training.data import decode_image

    captions: list = []
    unreadable: list[str] = []  # names of the unreadable files (or "" when a value has none)
    batches = _batched(rows, batch_size)
    if progress:
        from tqdm.auto import tqdm

        total = None if num_rows is None else -(-num_rows // batch_size)
        batches = tqdm(batches, total=total, desc="galip-eval: reference images", unit="batch")
    for batch in batches:
        captions.extend(caption for _, caption in batch)
        images = []
        for value, _ in batch:
            image = _decode_or_none(decode_image, value)
            if image is None:
                unreadable.append(image_name(value) or "")
            else:
                images.append(image)
        if images:
            reference_images_to_fid(metric, images, protocol, resolution)
    readable = len(captions) - len(unreadable)
    if readable < 2:
        raise too_few_readable_error(readable, str(len(captions)), unreadable, image_column, hint)
    if unreadable:  # skipped, not fatal: still named, with the flags to check
        warnings.warn(f"{len(unreadable)} of {len(captions)} reference images left out of FID"
                      f"{_listed(unreadable)}; check the images of --dataset and --image_column {image_column!r}.",
                      stacklevel=2)
    return captions, len(unreadable)


def too_few_readable_error(readable: int, total: str, unreadable: Sequence[str], image_column: str,
                           hint: str = "") -> ValueError:
    """The refusal of fewer than 2 readable reference images among ``total`` (a count, or "the first N"), naming
    the unreadable files (``""`` for a value without a file name), ``--dataset`` and ``--image_column``, then
    ``hint``: one message for the probe before the models load and for the lazy decoding after."""
    return ValueError(f"{readable} of {total} reference images readable{_listed(unreadable)}; FID needs at least 2. "
                      f"Check the images of --dataset and --image_column {image_column!r}{hint}.")


def _listed(unreadable: Sequence[str]) -> str:
    """`` (unreadable: a.png, b.png, c.png, ...)``, or ``""`` when none of them has a file name."""
    names = sorted(name for name in unreadable if name)
    return f" (unreadable: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""


def generated_images_to_fid(metric, images: torch.Tensor, protocol: str) -> None:
    """Add generated images (N,3,H,W) in [0, 1]: quantised to uint8 as a PNG would be; ``coco30k`` resizes them to
    256 first (clean resize) if they are another size."""
    arrays = to_uint8(images.permute(0, 2, 3, 1).cpu().numpy() * 255)
    if protocol == "coco30k" and arrays.shape[1:3] != (COCO_RESOLUTION, COCO_RESOLUTION):
        arrays = to_uint8(clean_resize(arrays, COCO_RESOLUTION))
    metric.update(inception_input(arrays, "clean" if protocol == "coco30k" else "bilinear"), real=False)


def evaluate_pipeline(
    pipe,
    dataset,
    *,
    protocol: str = "coco30k",
    num_images: Optional[int] = None,
    batch_size: int = 16,
    seed: int = 0,
    image_column: str = "image",
    caption_column: str = "text",
    inception_weights: Optional[str] = None,
    fid_stats: Optional[str] = None,
    fid_feature: int = 2048,
    clip_scorer: Optional[CLIPScorer] = None,
    resolution: int = COCO_RESOLUTION,
    compute_fid: bool = True,
    progress: bool = True,
    fid_metric=None,
) -> dict[str, Any]:
    """Generate one image per evaluation caption (image ``i`` uses seed ``seed + i``) and compute FID and CLIP scores.

    FID is skipped if ``compute_fid`` is false; its reference is ``fid_stats`` (an ``.npz``) or else the data set's
    images for the same captions; ``fid_metric``, if given, is :func:`prepare_fid_metric`'s for these arguments.
    ``num_images`` defaults to 30,000 (coco30k; fewer, with a warning, if the data set is smaller) or the whole data
    set; more than the data set holds is an error. Before any image is generated, the captions of all the examples
    used are read and checked (a bad one is a ``ValueError`` naming its row) and, for FID against the data set, their
    reference images are read (:func:`add_reference_images`, which refuses fewer than 2 readable ones). Returns the
    result dict that ``galip-eval`` writes as JSON."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    num_images, note = num_evaluation_images(num_images, len(dataset) if hasattr(dataset, "__len__") else None,
                                             COCO30K_IMAGES if protocol == "coco30k" else None)
    if note:
        warnings.warn(note, stacklevel=2)
    metric = None
    if compute_fid:
        metric = fid_metric if fid_metric is not None else prepare_fid_metric(inception_weights, fid_feature, fid_stats)
    scorer = clip_scorer or pipeline_clip_scorer(pipe)
    device = pipe._execution_device if hasattr(pipe, "_execution_device") else torch.device("cpu")

    standard, official, generated, missing_real = [], [], 0, 0
    start = time.perf_counter()
    rows = evaluation_rows(dataset, image_column, caption_column, num_images, seed)
    if metric is not None and fid_stats is None:  # the reference images first: too few readable ones fail now
        all_captions, missing_real = add_reference_images(
            metric, rows, protocol=protocol, resolution=resolution, batch_size=batch_size, image_column=image_column,
            hint=", or pass --fid_stats", progress=progress, num_rows=num_images)
    else:
        all_captions = [caption for _, caption in rows]
    iterator = _batched(all_captions, batch_size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=-(-len(all_captions) // batch_size), desc="galip-eval", unit="batch")
    for captions in iterator:
        generators = [torch.Generator("cpu").manual_seed(seed + generated + i) for i in range(len(captions))]
        latents = torch.stack(
            [torch.randn(pipe.generator.config.z_dim, generator=g) for g in generators]
        ).to(device)
        with torch.no_grad():
            images = pipe(captions, latents=latents, output_type="pt").images.float().cpu()
        generated += len(captions)
        if metric is not None:
            generated_images_to_fid(metric, images, protocol)
        if scorer is not None:
            standard.append(scorer.standard_cosine(images, captions))
            official.append(scorer.official_cosine(images, captions))
    elapsed = time.perf_counter() - start

    result: dict[str, Any] = {
        "protocol": protocol,
        "num_images": generated,
        "seed": seed,
        "batch_size": batch_size,
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(generated / elapsed, 3) if elapsed > 0 else None,
    }
    if metric is not None:
        result.update(_fid_fields(metric, protocol, fid_stats, resolution, inception_weights, fid_feature, missing_real))
    if scorer is not None:
        result.update(_clip_fields(scorer, torch.cat(standard), torch.cat(official)))
    headline = ["fid", "clip_cosine_official"] if protocol == "official" else ["fid", "clip_score"]
    result["headline"] = [name for name in headline if name in result]  # only the figures computed
    return result


def prepare_fid_metric(inception_weights: Optional[str], fid_feature: int = 2048, fid_stats: Optional[str] = None):
    """The FID metric, with the reference statistics of ``fid_stats`` (an ``.npz``) loaded if given: built before the
    images are generated, so that a bad ``--inception_weights`` or ``--fid_stats`` is reported first."""
    metric = load_fid_metric(inception_weights, fid_feature)
    if fid_stats is not None:
        try:
            set_real_statistics(metric, *load_fid_statistics(fid_stats))
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith("--fid_stats") else f"--fid_stats {fid_stats!r}: {message}"
                             ) from err
    return metric


def _fid_fields(metric, protocol: str, fid_stats: Optional[str], resolution: int, inception_weights: Optional[str],
                fid_feature: int, missing_real: int) -> dict[str, Any]:  # fmt: skip
    """The FID entries of :func:`evaluate_pipeline`'s result: the value and how it was measured."""
    check_finite_features(metric)  # NaN or inf would crash the process in compute(), not raise
    return {
        "fid": float(metric.compute()),
        "fid_reference": fid_stats if fid_stats is not None else f"{int(metric.real_features_num_samples)} "
        "data set images (centre crop at %d px)" % resolution,
        "fid_resize": RESIZE_DESCRIPTIONS["clean" if protocol == "coco30k" else "bilinear"],
        "fid_generated_images": "quantised to uint8" + (
            f", clean-resized to {COCO_RESOLUTION} px if needed" if protocol == "coco30k" else ""
        ),
        "inception_weights": inception_weights,
        "fid_feature": fid_feature,
        "unreadable_reference_images": missing_real,
    }


def _clip_fields(scorer: CLIPScorer, standard: torch.Tensor, official: torch.Tensor) -> dict[str, Any]:
    """The CLIP-score entries of :func:`evaluate_pipeline`'s result, from the per-image cosines of both variants."""
    return {
        "clip_score": clip_score_from_cosines(standard),
        "clip_score_convention": STANDARD_CLIP_NOTE,
        "clip_cosine_official": float(official.mean()),
        "clip_cosine_official_preprocessing": OFFICIAL_CLIP_NOTE,
        "clip_cosine_official_quirk": True,
        "clip_model": scorer.source,
    }


def dataset_fid_statistics(
    dataset,
    inception_weights: str,
    *,
    protocol: str = "coco30k",
    image_column: str = "image",
    num_images: Optional[int] = None,
    batch_size: int = 32,
    resolution: int = COCO_RESOLUTION,
    seed: int = 0,
    fid_feature: int = 2048,
) -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
    """FID statistics (mu, sigma) of a data set's images, processed as in :func:`evaluate_pipeline`."""
    metric = load_fid_metric(inception_weights, fid_feature)
    length = len(dataset) if hasattr(dataset, "__len__") else None
    num_images, _ = num_evaluation_images(num_images, length)
    rows = evaluation_rows(dataset, image_column, None, num_images, seed)
    _, unreadable = add_reference_images(metric, rows, protocol=protocol, resolution=resolution,
                                         batch_size=batch_size, image_column=image_column)
    mu, sigma, n = fid_statistics(metric, real=True)
    meta = {
        "protocol": protocol,
        "resolution": resolution,
        "resize": RESIZE_DESCRIPTIONS["clean" if protocol == "coco30k" else "bilinear"],
        "inception_weights": os.path.basename(inception_weights),
        "fid_feature": fid_feature,
        "unreadable_images": unreadable,
    }
    return mu, sigma, n, meta
