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

import argparse
import importlib.util
import json
import os
import sys
import time
import types
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .models.clip_bridge import preprocess_for_clip

PROTOCOLS = ("official", "coco30k")
RESIZE_MODES = ("clean", "bilinear")
INCEPTION_SIZE = 299
COCO_RESOLUTION = 256

RESIZE_DESCRIPTIONS = {
    "clean": "clean resize (clean-fid style): PIL bicubic on float32, per channel, to 299 px; then rounded to uint8",
    "bilinear": "bilinear F.interpolate on float (align_corners=False, no antialias; pytorch-fid style, as the official "
    "GALIP evaluation) to 299 px; then rounded to uint8",
}
OFFICIAL_CLIP_NOTE = (
    "official GALIP CLIP preprocessing: nearest resize of x*0.5+0.5 and then (x+1)*0.5 once more before the CLIP "
    "normalisation (the 'double shift' quirk: the ViT sees pixels in [0.5, 1]); raw cosine, not x100"
)
STANDARD_CLIP_NOTE = ("standard CLIP preprocessing (PIL bicubic, shorter side, centre crop); mean of 100*max(cos, 0) "
                      "per image (Hessel et al. 2021's CLIP-S with w = 100)")


# -------------------------------------------------------------------------------------------------------- FID backend
def _import_torch_fidelity_without_torchvision() -> None:
    """torch-fidelity's package ``__init__`` imports torchvision (for feature extractors we do not use), while its
    InceptionV3 module does not. If torchvision is missing, register the package without running its ``__init__``, so
    that ``torch_fidelity.feature_extractor_inceptionv3`` (and torchmetrics' FID, which imports it) can load."""
    if "torch_fidelity" in sys.modules and hasattr(sys.modules["torch_fidelity"], "__path__"):
        return
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        raise ImportError('FID needs torch-fidelity and torchmetrics: pip install "galip-diffusers[eval]".')
    try:
        import torch_fidelity  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name != "torchvision":
            raise
        for name in [n for n in sys.modules if n == "torch_fidelity" or n.startswith("torch_fidelity.")]:
            del sys.modules[name]
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torch_fidelity"] = package


def fid_available() -> bool:
    """Whether torchmetrics and torch-fidelity are importable (the CLIP score works without them)."""
    if importlib.util.find_spec("torchmetrics") is None or importlib.util.find_spec("torch_fidelity") is None:
        return False
    try:
        _import_torch_fidelity_without_torchvision()
        from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: F401
    except Exception:
        return False
    return True


def load_fid_metric(inception_weights: str, feature: int = 2048):
    """torchmetrics ``FrechetInceptionDistance`` with the InceptionV3 weights from a local file (torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth`` format)."""
    if not inception_weights or not os.path.isfile(inception_weights):
        raise FileNotFoundError(
            f"--inception_weights {inception_weights!r} is not a file. FID needs torch-fidelity's InceptionV3 weights "
            "(weights-inception-2015-12-05-6726825d.pth) as a local file; nothing is downloaded."
        )
    _import_torch_fidelity_without_torchvision()
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(
        feature=feature, feature_extractor_weights_path=inception_weights, reset_real_features=False
    )


def random_inception_weights(path: str, seed: int = 0) -> str:
    """Write a random-weight InceptionV3 state dict (torch-fidelity layout) to ``path``: for tests and smoke runs
    only, where the real weights cannot be downloaded. Convolutions get Kaiming-normal weights, so that the features
    keep a useful scale through the depth of the network (the default init makes them vanish)."""
    _import_torch_fidelity_without_torchvision()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    empty = f"{path}.empty"
    torch.save({}, empty)
    try:
        torch.manual_seed(seed)
        model = _RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    finally:
        os.remove(empty)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    torch.save(model.state_dict(), path)
    return path


def fid_statistics(metric, real: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, n) of the real (or fake) features accumulated in a torchmetrics FID metric (float64)."""
    prefix = "real" if real else "fake"
    n = int(getattr(metric, f"{prefix}_features_num_samples"))
    if n < 2:
        raise ValueError(f"FID statistics need at least 2 images, got {n}.")
    total = getattr(metric, f"{prefix}_features_sum").double()
    cov_sum = getattr(metric, f"{prefix}_features_cov_sum").double()
    mu = total / n
    sigma = (cov_sum - n * torch.outer(mu, mu)) / (n - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy(), n


def set_real_statistics(metric, mu: np.ndarray, sigma: np.ndarray, n: int = 50_000) -> None:
    """Load reference statistics into the metric's real-feature state (exact inverse of :func:`fid_statistics`)."""
    dim = metric.real_features_sum.shape[0]
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise ValueError(f"FID statistics have shapes {mu.shape}, {sigma.shape}; this Inception feature has {dim}.")
    mu_t = torch.as_tensor(mu, dtype=torch.float64)
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
    metric.real_features_sum = mu_t * n
    metric.real_features_cov_sum = sigma_t * (n - 1) + n * torch.outer(mu_t, mu_t)
    metric.real_features_num_samples = torch.tensor(n)
    if not hasattr(metric, "orig_dtype"):  # torchmetrics sets it in update(); compute() casts the result to it
        metric.orig_dtype = torch.float32


def save_fid_statistics(path: str, mu: np.ndarray, sigma: np.ndarray, num_images: int, **meta: Any) -> None:
    """Write pytorch-fid style statistics (``mu``, ``sigma``) plus ``num_images`` and a JSON ``meta`` string."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, num_images=np.int64(num_images), meta=json.dumps(meta))


def load_fid_statistics(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, num_images) from an ``.npz`` with ``mu`` and ``sigma`` (num_images defaults to 50,000)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--fid_stats {path!r} is not a file.")
    with np.load(path) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"{path!r} must hold arrays 'mu' and 'sigma'; it has {sorted(data.keys())}.")
        n = int(data["num_images"]) if "num_images" in data else 50_000
        return data["mu"].astype(np.float64), data["sigma"].astype(np.float64), n


# ------------------------------------------------------------------------------------------------------- resizing
def clean_resize(images: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's resize: each channel as a float32 PIL image, bicubic to ``size`` x ``size``. (N,H,W,3) uint8 ->
    (N,size,size,3) float32 in [0, 255]."""
    out = np.empty((images.shape[0], size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        for c in range(3):
            channel = Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
            out[i, :, :, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC), dtype=np.float32)
    return out.clip(0, 255)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(images, 0, 255)).astype(np.uint8)


def inception_input(images: np.ndarray, resize: str) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,299,299) uint8 for the Inception, through the named resize."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}.")
    if images.shape[1:3] == (INCEPTION_SIZE, INCEPTION_SIZE):
        resized = images.astype(np.float32)
    elif resize == "clean":
        resized = clean_resize(images, INCEPTION_SIZE)
    else:
        x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        resized = x.permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(to_uint8(resized)).permute(0, 3, 1, 2).contiguous()


def center_crop_resize(image: Image.Image, resolution: int) -> np.ndarray:
    """Shorter side to ``resolution`` (PIL bicubic), centre crop; returns (resolution, resolution, 3) uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.BICUBIC)
    left, top = (new_size[0] - resolution) // 2, (new_size[1] - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------------ CLIP score
class CLIPScorer:
    """Cosine similarity between images and captions with a CLIP (text and image towers with projections).

    ``images`` are float tensors (N,3,H,W) in [0, 1]. ``standard_cosine`` preprocesses like ``CLIPProcessor`` (PIL);
    ``official_cosine`` like the official GALIP code (see :data:`OFFICIAL_CLIP_NOTE`)."""

    def __init__(self, text_encoder, image_encoder, tokenizer, source: str = "", device: str | torch.device = "cpu"):
        self.text_encoder = text_encoder.to(device).eval()
        self.image_encoder = image_encoder.to(device).eval()
        self.tokenizer = tokenizer
        self.source = source
        self.device = torch.device(device)
        try:
            from transformers import CLIPImageProcessorPil as processor_cls
        except ImportError:  # older transformers: the slow processor is the PIL one
            from transformers import CLIPImageProcessor as processor_cls
        size = image_encoder.config.image_size
        self.processor = processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cpu") -> "CLIPScorer":
        """From a transformers ``CLIPModel`` folder with its tokenizer."""
        from transformers import CLIPModel, CLIPTokenizer

        from .training_utils import clip_towers

        if not os.path.isdir(path):
            raise FileNotFoundError(f"--clip_model {path!r} is not a folder (a transformers CLIPModel + tokenizer).")
        text_encoder, image_encoder = clip_towers(CLIPModel.from_pretrained(path))
        return cls(text_encoder, image_encoder, CLIPTokenizer.from_pretrained(path), source=path, device=device)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids).text_embeds.float()

    @torch.no_grad()
    def standard_cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        pil = [Image.fromarray(a) for a in to_uint8(images.permute(0, 2, 3, 1).cpu().numpy() * 255)]
        pixels = self.processor(images=pil, return_tensors="pt").pixel_values.to(self.device, self.image_encoder.dtype)
        image_embeds = self.image_encoder(pixel_values=pixels).image_embeds.float()
        return F.cosine_similarity(image_embeds, self.text_embeds(prompts), dim=-1).cpu()

    @torch.no_grad()
    def official_cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x = images.to(self.device, torch.float32) * 2 - 1
        pixels = preprocess_for_clip(x, self.image_encoder.config.image_size, mode="official")
        image_embeds = self.image_encoder(pixel_values=pixels.to(self.image_encoder.dtype)).image_embeds.float()
        return F.cosine_similarity(image_embeds, self.text_embeds(prompts), dim=-1).cpu()


def clip_score_from_cosines(cosines: torch.Tensor) -> float:
    """Hessel et al. (2021), "CLIPScore": ``CLIP-S(c, v) = w * max(cos(c, v), 0)`` per image, averaged over images,
    with ``w = 100`` (the scale torchmetrics uses) instead of the paper's 2.5: ``mean(100 * max(cos, 0))``.

    torchmetrics' ``CLIPScore`` clamps after averaging, ``max(mean(100 * cos), 0)``: the same number when no cosine
    is negative, a larger one otherwise (``tests/test_evaluation.py`` checks both on the same embeddings)."""
    return float((100 * cosines.clamp_min(0)).mean())


# ---------------------------------------------------------------------------------------------------------- data
def evaluation_examples(dataset, image_column: str, caption_column: str, num_images: Optional[int], seed: int):
    """Yield (PIL image or None, caption) for ``num_images`` examples: a seeded random subset of the data set (cycled
    if ``num_images`` exceeds it); one caption per example, picked at random when there are several."""
    from .training_data import decode_image, lazy_image_column, pick_caption, sample_rng

    dataset = lazy_image_column(dataset, image_column)  # decode here, so that a corrupt file is skipped, not fatal
    length = len(dataset) if hasattr(dataset, "__len__") else None
    if length == 0:
        raise ValueError("The evaluation data set is empty.")
    if length is None:  # streaming: in order
        for i, example in enumerate(dataset):
            if num_images is not None and i >= num_images:
                return
            yield _decode_or_none(decode_image, example.get(image_column)), pick_caption(
                example[caption_column], sample_rng(seed, 0, i)
            )
        return
    order = np.random.default_rng(seed).permutation(length)
    total = length if num_images is None else num_images
    for i in range(total):
        example = dataset[int(order[i % length])]
        yield _decode_or_none(decode_image, example.get(image_column)), pick_caption(
            example[caption_column], sample_rng(seed, 0, i)
        )


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
) -> dict[str, Any]:
    """Generate one image per evaluation caption (image ``i`` uses seed ``seed + i``) and compute FID and CLIP scores.

    FID is skipped if ``compute_fid`` is false; its reference is ``fid_stats`` (an ``.npz``) or else the data set's
    images for the same captions. Returns the result dict that ``galip-eval`` writes as JSON."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    if num_images is None and protocol == "coco30k":
        num_images = 30_000
    metric = load_fid_metric(inception_weights, fid_feature) if compute_fid else None
    if metric is not None and fid_stats is not None:
        set_real_statistics(metric, *load_fid_statistics(fid_stats))
    scorer = clip_scorer or pipeline_clip_scorer(pipe)
    device = pipe._execution_device if hasattr(pipe, "_execution_device") else torch.device("cpu")

    standard, official, generated, missing_real = [], [], 0, 0
    start = time.perf_counter()
    examples = evaluation_examples(dataset, image_column, caption_column, num_images, seed)
    total_batches = None if num_images is None else -(-num_images // batch_size)
    iterator = _batched(examples, batch_size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total_batches, desc="galip-eval", unit="batch")
    for batch in iterator:
        captions = [caption for _, caption in batch]
        generators = [torch.Generator("cpu").manual_seed(seed + generated + i) for i in range(len(batch))]
        latents = torch.stack(
            [torch.randn(pipe.generator.config.z_dim, generator=g) for g in generators]
        ).to(device)
        with torch.no_grad():
            images = pipe(captions, latents=latents, output_type="pt").images.float().cpu()
        generated += len(batch)
        if metric is not None:
            generated_images_to_fid(metric, images, protocol)
            if fid_stats is None:
                real = [image for image, _ in batch if image is not None]
                missing_real += len(batch) - len(real)
                if real:
                    reference_images_to_fid(metric, real, protocol, resolution)
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
        result.update(
            {
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
        )
    if scorer is not None:
        std = torch.cat(standard)
        off = torch.cat(official)
        result.update(
            {
                "clip_score": clip_score_from_cosines(std),
                "clip_score_convention": STANDARD_CLIP_NOTE,
                "clip_cosine_official": float(off.mean()),
                "clip_cosine_official_preprocessing": OFFICIAL_CLIP_NOTE,
                "clip_cosine_official_quirk": True,
                "clip_model": scorer.source,
            }
        )
    result["headline"] = (
        ["fid", "clip_cosine_official"] if protocol == "official" else ["fid", "clip_score"]
    )
    return result


def pipeline_clip_scorer(pipe) -> Optional[CLIPScorer]:
    """A scorer from the pipeline: its ``scorer`` CLIP if it has one, else its own (training) CLIP towers, as the
    official GALIP evaluation does (biased: the generator was trained against this CLIP)."""
    device = pipe._execution_device if hasattr(pipe, "_execution_device") else "cpu"
    if getattr(pipe, "scorer", None) is not None:
        from .training_utils import clip_towers

        text_encoder, image_encoder = clip_towers(pipe.scorer)
        return CLIPScorer(text_encoder, image_encoder, pipe.tokenizer, "pipeline scorer", device)
    if getattr(pipe, "image_encoder", None) is not None:
        return CLIPScorer(
            pipe.text_encoder, pipe.image_encoder, pipe.tokenizer,
            "pipeline's own CLIP (the training CLIP, as in the official evaluation; biased)", device,
        )
    return None


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
    from .training_data import decode_image, lazy_image_column

    metric = load_fid_metric(inception_weights, fid_feature)
    dataset = lazy_image_column(dataset, image_column)
    unreadable = 0
    length = len(dataset) if hasattr(dataset, "__len__") else None
    if length is not None:
        order = np.random.default_rng(seed).permutation(length)[: num_images or length]
        values = (dataset[int(i)][image_column] for i in order)
    else:
        values = (example[image_column] for i, example in enumerate(dataset) if num_images is None or i < num_images)
    for batch in _batched(values, batch_size):
        images = [_decode_or_none(decode_image, v) for v in batch]
        readable = [image for image in images if image is not None]
        unreadable += len(images) - len(readable)
        if readable:
            reference_images_to_fid(metric, readable, protocol, resolution)
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


# -------------------------------------------------------------------------------------------------------------- CLI
EVAL_EXAMPLES = """examples:
  %(prog)s --model galip-coco --dataset data/coco_val --num_images 30000 --batch_size 32 \\
      --inception_weights weights-inception-2015-12-05-6726825d.pth --clip_model ./clip-vit-base-patch32 \\
      --output results/eval.json
  %(prog)s --model galip-coco --dataset data/coco_val --no_fid --num_images 1000      # CLIP scores only
  %(prog)s --save-stats coco_val.npz --dataset data/coco_val --inception_weights weights-inception-....pth
  %(prog)s --model galip-coco --protocol official --fid_stats coco_val256_FIDK0.npz --dataset data/coco_val \\
      --inception_weights weights-inception-....pth

Nothing is downloaded: FID needs a local InceptionV3 weights file (or pass --no_fid).
"""


def build_parser(prog: str = "galip-eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="FID and CLIP score of a GALIP pipeline, or FID statistics of a data set (--save-stats).",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="GALIP pipeline folder (or a packaged short name).")
    parser.add_argument("--dataset", required=True, help="Data set: imagefolder, save_to_disk folder, or name.")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default=None, help="Split (default: validation, else test, else train).")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="text")
    parser.add_argument("--protocol", default="coco30k", choices=PROTOCOLS)
    parser.add_argument("--num_images", type=int, default=None, help="Default: 30000 (coco30k) / the whole split.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inception_weights", default=None, help="Local InceptionV3 weights file (torch-fidelity).")
    parser.add_argument("--fid_stats", default=None, help="Reference .npz with mu and sigma (default: the data set).")
    parser.add_argument("--fid_feature", type=int, default=2048, choices=[64, 192, 768, 2048],
                        help="Inception feature layer (2048, the standard pool3 features).")
    parser.add_argument("--no_fid", action="store_true", help="Only the CLIP scores.")
    parser.add_argument("--clip_model", default=None, help="CLIPModel folder for the CLIP scores (default: the "
                        "pipeline's scorer, else its own training CLIP).")
    parser.add_argument("--resolution", type=int, default=COCO_RESOLUTION, help="Centre-crop size of real images.")
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--output", default=None, help="JSON file to write (default: print only).")
    parser.add_argument("--save-stats", "--save_stats", dest="save_stats", default=None,
                        help="Compute FID statistics of --dataset into this .npz instead of evaluating a model.")
    parser.add_argument("--cache_dir", default=None)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across arguments; ``parser.error`` (exit code 2) on a bad combination."""
    if args.save_stats is None and args.model is None:
        parser.error("give --model (evaluate a pipeline) or --save-stats OUT.npz (statistics of --dataset).")
    if (args.save_stats is not None or not args.no_fid) and args.inception_weights is None:
        parser.error("FID needs --inception_weights FILE (nothing can be downloaded); or pass --no_fid.")
    if args.num_images is not None and args.num_images < 2:
        parser.error("--num_images must be at least 2.")
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1.")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def _load_eval_dataset(args: argparse.Namespace):
    from .training_data import check_columns, load_image_text_dataset

    kwargs: dict[str, Any] = {"cache_dir": args.cache_dir}
    if os.path.isdir(args.dataset):
        kwargs["train_data_dir"] = args.dataset
    else:
        kwargs.update(dataset_name=args.dataset, dataset_config_name=args.dataset_config_name)
    dataset = load_image_text_dataset(split=args.split, **kwargs)
    check_columns(dataset, args.image_column, args.caption_column if args.save_stats is None else args.image_column)
    return dataset


def format_table(result: dict[str, Any]) -> str:
    """Two-column text table of a result dict (floats with 4 decimals)."""
    width = max(len(k) for k in result)
    lines = []
    for key, value in result.items():
        if isinstance(value, float):
            text = f"{value:.4f}"
        elif isinstance(value, (list, tuple)):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        lines.append(f"{key.ljust(width)}  {text}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = "galip-eval") -> int:
    """``galip-eval`` / ``galip eval``: 0 on success, 1 on an error (one line on stderr), 2 on bad arguments."""
    from .cli import run_cli

    return run_cli(_run, build_parser(prog), argv, check=check_args)


def _run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = _load_eval_dataset(args)
    if args.save_stats is not None:
        mu, sigma, n, meta = dataset_fid_statistics(
            dataset, args.inception_weights, protocol=args.protocol, image_column=args.image_column,
            num_images=args.num_images, batch_size=args.batch_size, resolution=args.resolution, seed=args.seed,
            fid_feature=args.fid_feature,
        )
        save_fid_statistics(args.save_stats, mu, sigma, n, **meta)
        result = {"fid_stats": args.save_stats, "num_images": n, **meta}
    else:
        import galip_diffusers  # noqa: F401  (registers the classes)

        from .pipelines.pipeline_galip import GALIPPipeline

        pipe = GALIPPipeline.from_pretrained(args.model).to(device)
        pipe.set_progress_bar_config(disable=True)
        scorer = CLIPScorer.from_pretrained(args.clip_model, device) if args.clip_model else None
        result = {"model": args.model, **evaluate_pipeline(
            pipe, dataset, protocol=args.protocol, num_images=args.num_images, batch_size=args.batch_size,
            seed=args.seed, image_column=args.image_column, caption_column=args.caption_column,
            inception_weights=args.inception_weights, fid_stats=args.fid_stats, fid_feature=args.fid_feature,
            clip_scorer=scorer,
            resolution=args.resolution, compute_fid=not args.no_fid,
        )}
    print(format_table(result))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
