"""galip-eval refuses hostile or careless inputs up front, naming the flag: --fid_stats files whose statistics would
crash FID late (NaN, inf, huge values) or give a silently wrong one (no covariance, bad num_images), blank captions
in a late row, too few readable reference images, and mismatched image and prompt counts in the CLIP score."""

import json
import os

import numpy as np
import pytest
import torch
from helpers.training_helpers import make_imagefolder

from galip_cli.eval import main
from galip_diffusers.evaluation.clip_score import CLIPScorer
from galip_diffusers.evaluation.evaluate import check_captions, dataset_fid_statistics, evaluate_pipeline
from galip_diffusers.evaluation.fid import (
    check_fid_statistics,
    fid_statistics,
    load_fid_metric,
    load_fid_statistics,
    random_inception_weights,
    save_fid_statistics,
)
from galip_diffusers.pipelines.pipeline_galip import GALIPPipeline

FEATURE = 64  # the cheapest Inception feature (as in test_evaluation.py)


@pytest.fixture(scope="module")
def fx(fx):
    """The shared fixtures plus random ``inception`` weights."""
    return {**fx, "inception": random_inception_weights(str(fx["root"] / "inception.pth"))}


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the pipeline is loaded: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(GALIPPipeline, "from_pretrained", refuse)


class _NeverCalledPipeline:
    """A pipeline stand-in for :func:`evaluate_pipeline` that fails if an image is generated."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("images were generated before the bad input was refused")


def _exit_code(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- --fid_stats
def _stats(d=FEATURE, **overrides):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((d, 2 * d))
    stats = {"mu": rng.standard_normal(d), "sigma": a @ a.T / (2 * d), "num_images": np.int64(100)}
    stats.update(overrides)
    return {k: v for k, v in stats.items() if v is not None}


def _asymmetric(d=FEATURE):
    sigma = np.eye(d)
    sigma[0, 1] = 0.5
    return sigma


HOSTILE_STATS = {
    "nan_mu": (_stats(mu=np.full(FEATURE, np.nan)), "mu holds 64 NaN or inf value(s); FID statistics must be finite"),
    "inf_sigma": (_stats(sigma=np.full((FEATURE, FEATURE), np.inf)), "sigma holds 4096 NaN or inf"),
    "huge_mu": (_stats(mu=np.full(FEATURE, 1e200)), "mu holds values up to 1e+200; FID statistics must be finite "
                "and within +-1e+100"),
    "huge_sigma": (_stats(sigma=np.eye(FEATURE) * 1e160), "sigma holds values up to 1e+160"),
    "complex_mu": (_stats(mu=np.zeros(FEATURE) + 1j), "mu holds complex numbers; FID statistics must be real"),
    "complex_sigma": (_stats(sigma=np.eye(FEATURE, dtype=np.complex64)), "sigma holds complex numbers"),
    "negative_definite": (_stats(sigma=-np.eye(FEATURE)), "sigma is not positive semi-definite"),
    "asymmetric": (_stats(sigma=_asymmetric()), "sigma is not symmetric"),
    "n_0": (_stats(num_images=np.int64(0)), "num_images must be one integer from 2 to 2**53"),
    "n_1": (_stats(num_images=np.int64(1)), "got 1 (int64)"),
    "n_negative": (_stats(num_images=np.int64(-5)), "got -5 (int64)"),
    "n_fraction": (_stats(num_images=np.float64(2.7)), "got 2.7 (float64)"),
    "n_array": (_stats(num_images=np.arange(3)), "got an array of shape (3,)"),
    "n_bool": (_stats(num_images=np.bool_(True)), "num_images must be one integer"),
    "n_nan": (_stats(num_images=np.float64(np.nan)), "num_images must be one integer"),
    "n_huge": (_stats(num_images=np.float64(1e300)), "num_images must be one integer from 2 to 2**53"),
    "empty": (_stats(mu=np.zeros(0), sigma=np.zeros((0, 0))), "mu must be (d,) and sigma (d, d) with d >= 1"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STATS))
def test_hostile_statistics_files_are_refused_naming_fid_stats(tmp_path, name):
    arrays, message = HOSTILE_STATS[name]
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="--fid_stats") as err:
        load_fid_statistics(str(path))
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_sound_statistics_load_including_round_off_and_integral_float_counts(tmp_path):
    """A rank-deficient covariance from fewer images than features has eigenvalues of -1e-16 or so: accepted."""
    features = np.random.default_rng(1).random((3, FEATURE)) * 5 + 10  # 3 images: rank 2, large mean
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    assert np.linalg.eigvalsh(sigma).min() < 0  # round-off below zero
    np.savez(tmp_path / "ok.npz", mu=mu, sigma=sigma, num_images=np.float64(3.0))
    mu2, sigma2, n = load_fid_statistics(str(tmp_path / "ok.npz"), feature=FEATURE)
    assert n == 3 and isinstance(n, int) and np.array_equal(mu2, mu) and np.array_equal(sigma2, sigma)
    np.savez(tmp_path / "no_count.npz", mu=mu.astype(np.float32), sigma=sigma)  # pytorch-fid files have no count
    assert load_fid_statistics(str(tmp_path / "no_count.npz"))[2] == 50_000
    with pytest.raises(ValueError, match=r"--fid_stats .*this Inception feature has 2048 \(--fid_feature\)"):
        load_fid_statistics(str(tmp_path / "ok.npz"), feature=2048)


@pytest.mark.parametrize("name", ["nan_mu", "huge_mu", "negative_definite", "n_1"])
def test_cli_refuses_hostile_fid_stats_before_the_model_loads(fx, tmp_path, capsys, no_model, name):
    """These used to run the whole generation and then segfault (MKL, exit 139), fail, or print a negative FID."""
    path = tmp_path / f"{name}.npz"
    np.savez(path, **HOSTILE_STATS[name][0])
    code, err = _exit_code(["--model", fx["pipe"], "--dataset", fx["data"], "--num_images", "2", "--inception_weights",
                            fx["inception"], "--fid_feature", str(FEATURE), "--fid_stats", str(path),
                            "--cache_dir", fx["cache"], "--output", str(tmp_path / "out.json")], capsys)
    assert code == 2 and f"--fid_stats {str(path)!r}: " in err and HOSTILE_STATS[name][1] in err
    assert not (tmp_path / "out.json").exists()


def test_saved_statistics_pass_the_same_checks_and_bad_ones_are_not_written(fx, tmp_path):
    stats = tmp_path / "ref.npz"
    assert main(["--save_stats", str(stats), "--dataset", fx["data"], "--inception_weights", fx["inception"],
                 "--fid_feature", str(FEATURE), "--cache_dir", fx["cache"]]) == 0
    assert load_fid_statistics(str(stats), feature=FEATURE)[2] == 3
    with pytest.raises(ValueError, match=r"--save_stats .* not written: sigma holds 1 NaN or inf"):
        sigma = np.eye(2)
        sigma[0, 0] = np.nan
        save_fid_statistics(str(tmp_path / "bad.npz"), np.zeros(2), sigma, 3)
    assert not (tmp_path / "bad.npz").exists()
    assert check_fid_statistics(np.zeros(2), np.eye(2), 2)[2] == 2


@pytest.fixture(scope="module")
def nan_inception(fx):
    """Inception weights with one NaN: every feature becomes NaN (a corrupt download, say)."""
    state = torch.load(fx["inception"])
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    path = str(fx["root"] / "nan_inception.pth")
    torch.save(state, path)
    return path


def test_non_finite_dataset_features_name_inception_weights(fx, nan_inception, tmp_path, capsys):
    """NaN features made NaN statistics (and a segfault in FID's eigen-decomposition); now a clear error."""
    code, err = _exit_code(["--save_stats", str(tmp_path / "s.npz"), "--dataset", fx["data"], "--inception_weights",
                            nan_inception, "--fid_feature", str(FEATURE), "--cache_dir", fx["cache"]], capsys)
    assert code == 1 and "reference images hold NaN or inf" in err and "--inception_weights" in err
    assert not (tmp_path / "s.npz").exists()
    metric = load_fid_metric(fx["inception"], FEATURE)
    metric.real_features_num_samples += 3
    metric.real_features_sum[0] = float("inf")
    with pytest.raises(ValueError, match="--inception_weights"):
        fid_statistics(metric, real=True)


# ---------------------------------------------------------------------------------------------------- captions
def _imagefolder_with_caption(folder, row: int, caption, num_images: int = 6) -> str:
    make_imagefolder(folder, num_images=num_images, list_captions=isinstance(caption, list))
    path = os.path.join(folder, "metadata.jsonl")
    rows = [json.loads(line) for line in open(path)]
    rows[row]["text"] = caption
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


@pytest.mark.parametrize("caption", ["", "   ", None, ["", " "]])
def test_a_bad_caption_in_a_late_row_is_refused_before_the_model_loads(fx, tmp_path, capsys, no_model, caption):
    """It used to surface only when its batch came up, naming neither the row nor --caption_column."""
    data = _imagefolder_with_caption(str(tmp_path / "data"), 5, caption)
    code, err = _exit_code(["--model", fx["pipe"], "--dataset", data, "--no_fid", "--batch_size", "1",
                            "--cache_dir", fx["cache"]], capsys)
    errors = [line for line in err.splitlines() if line.startswith("galip-eval: error: ")]  # not datasets' progress
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "--caption_column 'text': row 5 (005.png) holds " in errors[0]  # (datasets may shorten blank strings)
    assert "every caption must be a non-empty string or a list of strings" in errors[0]


def test_evaluate_pipeline_checks_every_caption_before_generating():
    dataset = [{"image": None, "text": "a red picture"}] * 4 + [{"image": "x/late.png", "text": ""}]
    with pytest.raises(ValueError, match=r"--caption_column 'text': row 4 \(late.png\) holds ''"):
        evaluate_pipeline(_NeverCalledPipeline(), dataset, compute_fid=False, num_images=5, batch_size=1,
                          progress=False)
    check_captions(dataset[:4], "text")
    with pytest.raises(ValueError, match=r"--caption_column 'text': row 4 \(late.png\) holds ''"):
        check_captions(dataset, "text", "image")  # every row, used or not, as galip eval does on loading


# -------------------------------------------------------------------------------------------- reference images
@pytest.mark.parametrize("corrupt", [(0, 1, 2), (0, 2)])
def test_too_few_readable_reference_images_are_refused_before_generating(fx, tmp_path, corrupt):
    """All (or all but one) reference images unreadable used to fail in torchmetrics after the whole generation."""
    folder = make_imagefolder(str(tmp_path / "data"), num_images=3, corrupt=corrupt, list_captions=False)
    dataset = [{"image": os.path.join(folder, f"{i:03d}.png"), "text": "a red picture"} for i in range(3)]
    metric = load_fid_metric(fx["inception"], FEATURE)
    readable = 3 - len(corrupt)
    message = (f"{readable} of 3 reference images readable (unreadable: "
               f"{', '.join(f'{i:03d}.png' for i in corrupt)}); FID needs at least 2. Check the images of --dataset "
               "and --image_column 'image', or pass --fid_stats.")
    with pytest.raises(ValueError) as err:
        evaluate_pipeline(_NeverCalledPipeline(), dataset, num_images=3, fid_metric=metric, progress=False)
    assert str(err.value) == message
    with pytest.raises(ValueError, match=f"{readable} of 3 reference images readable"):  # --save_stats too
        dataset_fid_statistics(dataset, fx["inception"], fid_feature=FEATURE)


def test_cli_names_the_unreadable_reference_images(fx, tmp_path, capsys):
    folder = make_imagefolder(str(tmp_path / "data"), num_images=3, corrupt=(0, 1, 2), list_captions=False)
    code, err = _exit_code(["--model", fx["pipe"], "--dataset", folder, "--inception_weights", fx["inception"],
                            "--fid_feature", str(FEATURE), "--cache_dir", fx["cache"]], capsys)
    assert code == 1 and "0 of 3 reference images readable (unreadable: 000.png, 001.png, 002.png)" in err


# ---------------------------------------------------------------------------------------------------- CLIP score
@pytest.mark.parametrize("num_images, prompts", [(1, ["a", "b", "c"]), (2, ["a", "b", "c"]), (3, []), (0, [])])
@pytest.mark.parametrize("method", ["standard_cosine", "official_cosine"])
def test_clip_cosines_need_one_prompt_per_image(fx, num_images, prompts, method):
    scorer = CLIPScorer.from_pretrained(fx["clip"])
    images = torch.rand(num_images, 3, 40, 40)
    with pytest.raises(ValueError, match=f"^{num_images} images vs {len(prompts)} prompts"):
        getattr(scorer, method)(images, prompts)
    with pytest.raises(ValueError, match="not a single str"):
        getattr(scorer, method)(torch.rand(3, 3, 40, 40), "abc")  # three characters are not three prompts
    assert getattr(scorer, method)(torch.rand(2, 3, 40, 40), ["a", "b"]).shape == (2,)
