"""FID backend: torch-fidelity's InceptionV3 from a local weights file (nothing is downloaded), FID statistics,
and the stated resizes to Inception's 299 px (``"clean"``: PIL bicubic per channel, as clean-fid; ``"bilinear"``:
``F.interpolate``, as pytorch-fid and the official GALIP evaluation)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from galip_core.staging import write_file

RESIZE_MODES = ("clean", "bilinear")
INCEPTION_SIZE = 299
RESIZE_DESCRIPTIONS = {
    "clean": "clean resize (clean-fid style): PIL bicubic on float32, per channel, to 299 px; then rounded to uint8",
    "bilinear": "bilinear F.interpolate on float (align_corners=False, no antialias; pytorch-fid style, as the official "
    "GALIP evaluation) to 299 px; then rounded to uint8",
}

#: Largest magnitude allowed in FID statistics. Inception features are of order 1 to 10, but FID squares them
#: (``sigma * (n - 1) + n * outer(mu, mu)``, ``sigma1 @ sigma2``) and sums over up to 2048 features and ``n`` images.
#: Up to 1e100, a square (1e200) times features and images (< 1e20) stays far below float64's 1.8e308; above it,
#: the sums overflow to inf and the eigen-decomposition crashes the process (MKL) instead of raising.
STATISTICS_MAX_ABS = 1e100
#: Tolerance of the covariance checks (symmetry, no negative eigenvalue), relative to the statistics' scale: far above
#: float64 round-off of a sum of squares (about 1e-13 of it for 2048 features), far below a wrong matrix.
COVARIANCE_RTOL = 1e-6
#: Largest ``num_images`` of a statistics file: counts are used as float64 factors, exact up to 2**53.
NUM_IMAGES_MAX = 2**53
#: ``num_images`` of a statistics file that does not record it (pytorch-fid's files): the usual 50,000 images.
DEFAULT_STATISTICS_IMAGES = 50_000


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

    try:
        return FrechetInceptionDistance(
            feature=feature, feature_extractor_weights_path=inception_weights, reset_real_features=False
        )
    except Exception as err:  # noqa: BLE001  (unpickling and state-dict errors alike: say which flag is wrong)
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"--inception_weights {inception_weights!r} is not torch-fidelity's InceptionV3 weights file "
            f"(weights-inception-2015-12-05-6726825d.pth): {type(err).__name__}: {detail}"
        ) from err


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


def check_finite_features(metric, real: Optional[bool] = None) -> None:
    """Refuse Inception features that hold NaN or inf (``ValueError`` naming ``--inception_weights``), before FID's
    eigen-decomposition, which on them crashes the whole process (MKL) instead of raising. ``real``: check only the
    real (``True``) or only the generated (``False``) side; default both."""
    sides = [("real", "reference")] if real is True else [("fake", "generated")] if real is False else [
        ("real", "reference"), ("fake", "generated")]
    for prefix, label in sides:
        for key in ("sum", "cov_sum"):
            if not bool(torch.isfinite(getattr(metric, f"{prefix}_features_{key}")).all()):
                raise ValueError(f"The Inception features of the {label} images hold NaN or inf, so FID cannot be "
                                 "computed: the --inception_weights file is probably corrupt.")


def fid_statistics(metric, real: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, n) of the real (or fake) features accumulated in a torchmetrics FID metric (float64)."""
    prefix = "real" if real else "fake"
    n = int(getattr(metric, f"{prefix}_features_num_samples"))
    if n < 2:
        raise ValueError(f"FID statistics need at least 2 images, got {n}.")
    check_finite_features(metric, real)
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


def save_fid_statistics(path: str, mu: np.ndarray, sigma: np.ndarray, num_images: int, overwrite: bool = False,
                        **meta: Any) -> None:
    """Write pytorch-fid style statistics (``mu``, ``sigma``) plus ``num_images`` and a JSON ``meta`` string to
    exactly ``path`` (no suffix is added). An existing file is refused (``FileExistsError``) unless ``overwrite``;
    the file is written beside it first and then renamed, so that a failed write leaves the old one intact.
    Statistics that :func:`check_fid_statistics` refuses are a ``ValueError``: nothing is written."""
    try:  # never write a file that --fid_stats would refuse
        mu, sigma, num_images = check_fid_statistics(mu, sigma, num_images)
    except ValueError as err:
        raise ValueError(f"--save_stats {path!r} not written: {err}") from None
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"--save_stats {path!r} already exists; pass --overwrite to replace it.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_file(path, lambda f: np.savez(f, mu=mu, sigma=sigma, num_images=np.int64(num_images), meta=json.dumps(meta)),
               overwrite)  # the check above, made again in the step that claims the name


def load_fid_statistics(path: str, feature: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, num_images) from an ``.npz`` with ``mu`` and ``sigma`` (num_images defaults to 50,000), checked by
    :func:`check_fid_statistics` (with ``feature`` features, if given). Any problem is a ``ValueError`` naming
    ``--fid_stats``: raised when the file is read, before the model loads, instead of a wrong FID or a crash after
    all the images are generated."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--fid_stats {path!r} is not a file.")
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as err:
        raise OSError(f"--fid_stats {path!r} cannot be read: {err.strerror or err}.") from err
    except Exception as err:  # noqa: BLE001  (numpy's own messages speak of pickles, not of the flag)
        raise ValueError(f"--fid_stats {path!r} is not an .npz file (NumPy's zip of arrays) with arrays 'mu' and "
                         "'sigma'.") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"--fid_stats {path!r} is a single .npy array, not an .npz file with arrays 'mu' and "
                         "'sigma'.")
    with data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"--fid_stats {path!r} must hold arrays 'mu' and 'sigma'; it has {sorted(data.keys())}.")
        try:
            arrays = data["mu"], data["sigma"], data["num_images"] if "num_images" in data else None
        except Exception as err:  # noqa: BLE001  (a damaged or pickled member of the zip)
            raise ValueError(f"--fid_stats {path!r} cannot be read: {type(err).__name__}: {err}") from err
    try:
        return check_fid_statistics(*arrays, feature=feature)
    except ValueError as err:
        raise ValueError(f"--fid_stats {path!r}: {err}") from None


def check_fid_statistics(mu: Any, sigma: Any, num_images: Any = None,
                         feature: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mu, sigma, num_images)`` as float64 arrays and an int, or a one-line ``ValueError`` saying what is wrong.
    FID on bad statistics either crashes late (NaN, inf, or values whose squares overflow float64, see
    :data:`STATISTICS_MAX_ABS`) or is silently wrong (a ``sigma`` that is no covariance matrix can even give a
    negative FID). ``mu`` must be ``(d,)`` and ``sigma`` ``(d, d)`` (``d == feature`` if given), both real, finite
    and within +-1e100; ``sigma`` symmetric and positive semi-definite within :data:`COVARIANCE_RTOL`;
    ``num_images`` (``None``: 50,000) one integer from 2 to 2**53."""
    mu, sigma = _real_array("mu", mu), _real_array("sigma", sigma)
    _check_shapes(mu, sigma, feature)
    for name, array in (("mu", mu), ("sigma", sigma)):
        _check_finite_and_bounded(name, array)
    num_images = _checked_num_images(num_images)
    _check_covariance(mu, sigma)  # last: an eigen-decomposition, about 0.5 s for 2048 features
    return mu, sigma, num_images


def _real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as float64, if it holds real numbers (complex ones would lose their imaginary part silently)."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        kind = "complex numbers" if array.dtype.kind == "c" else f"{array.dtype} values, not numbers"
        raise ValueError(f"{name} holds {kind}; FID statistics must be real numbers.")
    return array.astype(np.float64)


def _check_shapes(mu: np.ndarray, sigma: np.ndarray, feature: Optional[int]) -> None:
    if mu.ndim != 1 or mu.size == 0 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"mu must be (d,) and sigma (d, d) with d >= 1; they are {mu.shape} and {sigma.shape}.")
    if feature is not None and mu.size != feature:
        raise ValueError(f"FID statistics have shapes {mu.shape}, {sigma.shape}; this Inception feature has "
                         f"{feature} (--fid_feature).")


def _check_finite_and_bounded(name: str, array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{name} holds {int((~finite).sum())} NaN or inf value(s); FID statistics must be finite.")
    largest = float(np.abs(array).max())
    if largest > STATISTICS_MAX_ABS:
        raise ValueError(f"{name} holds values up to {largest:.3g}; FID statistics must be finite and within "
                         f"+-{STATISTICS_MAX_ABS:.0e} (FID squares them, and the squares must fit float64).")


def _check_covariance(mu: np.ndarray, sigma: np.ndarray) -> None:
    """``sigma`` must be a covariance matrix: symmetric and with no negative eigenvalue, up to round-off relative to
    the scale of the features' second moments (``mu**2`` too: sigma is a difference of sums of squares)."""
    scale = max(float(np.abs(sigma).max()), float((mu**2).max()))
    asymmetry = float(np.abs(sigma - sigma.T).max())
    if asymmetry > COVARIANCE_RTOL * scale:
        raise ValueError(f"sigma is not symmetric (sigma - sigma.T reaches {asymmetry:.3g}); it must be a covariance "
                         "matrix.")
    lowest = float(np.linalg.eigvalsh(sigma).min())
    if lowest < -COVARIANCE_RTOL * scale:
        raise ValueError(f"sigma is not positive semi-definite (it has an eigenvalue of {lowest:.3g}); it must be a "
                         "covariance matrix.")


def _checked_num_images(value: Any) -> int:
    """The ``num_images`` entry as an int: one integer (an integral float is accepted) from 2 to 2**53."""
    if value is None:
        return DEFAULT_STATISTICS_IMAGES
    array = np.asarray(value)
    number = array.item() if array.shape == () and array.dtype.kind in "iuf" else None
    valid = number is not None and float(number).is_integer() and 2 <= number <= NUM_IMAGES_MAX
    if not valid:
        shown = f"an array of shape {array.shape}" if array.shape != () else f"{array.item()!r} ({array.dtype})"
        raise ValueError(f"num_images must be one integer from 2 to 2**53 (the number of images behind mu and "
                         f"sigma), got {shown}.")
    return int(number)


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
