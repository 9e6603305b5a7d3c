"""Tests for the procedural captioned-shapes data set and its pixel evaluator."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from galip_diffusers.data import shapes as S

CAPTION_RE = re.compile(
    r"a (small|large) (red|green|blue|yellow|purple|orange) (circle|square|triangle) "
    r"on a (white|black|gray) background"
)


@pytest.fixture(scope="module")
def renders():
    """300 train + 300 held-out ground-truth renders with metadata."""
    return (S.generate_shapes(300, seed=7, return_meta=True)
            + S.generate_shapes(300, seed=7, split="held_out", return_meta=True))


def _pixels(image):
    return np.asarray(image, dtype=np.uint8)


# ----------------------------------------------------------------------------- constants & captions
def test_constants():
    assert S.IMAGE_SIZE == 64
    assert S.SIZE_RANGES == {"small": (14, 20), "large": (28, 40)}
    assert S.HELD_OUT_PAIRS == (("purple", "triangle"), ("orange", "circle"))
    assert S.COLORS["purple"] == (140, 40, 180) and S.BACKGROUNDS["gray"] == (128, 128, 128)


def test_caption_sets():
    train, held, every = S.all_captions("train"), S.all_captions("held_out"), S.all_captions("all")
    assert (len(train), len(held), len(every)) == (96, 12, 108)
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(every)
    assert len(set(every)) == 108
    assert S.all_captions() == train == S.all_captions("train")  # fixed order
    assert all(S.is_held_out(c) for c in held) and not any(S.is_held_out(c) for c in train)
    assert all("purple triangle" in c or "orange circle" in c for c in held)


def test_caption_grammar_and_round_trip():
    for caption in S.all_captions("all"):
        assert CAPTION_RE.fullmatch(caption), caption
        attrs = S.parse_caption(caption)
        assert set(attrs) == {"size", "color", "shape", "background"}
        assert S.make_caption(**attrs) == caption
    assert S.make_caption("small", "red", "circle", "white") == "a small red circle on a white background"
    assert S.is_held_out({"color": "orange", "shape": "circle"})


@pytest.mark.parametrize("arg", ["size", "color", "shape", "background"])
def test_make_caption_rejects_bad_values(arg):
    kwargs = {"size": "small", "color": "red", "shape": "circle", "background": "white"}
    kwargs[arg] = "pink"
    with pytest.raises(ValueError, match=arg):
        S.make_caption(**kwargs)


@pytest.mark.parametrize("caption", [
    "a small red circle on a white",
    "A small red circle on a white background",
    "a small red circle on a white background.",
    "a tiny red circle on a white background",
    "a small pink circle on a white background",
    "a small red hexagon on a white background",
    "a small red circle on a blue background",
    "",
])
def test_parse_caption_rejects_bad_captions(caption):
    with pytest.raises(ValueError, match="caption"):
        S.parse_caption(caption)


def test_bad_split_raises():
    for call in (lambda: S.all_captions("test"), lambda: S.generate_shapes(2, split="test"),
                 lambda: S.sample_attributes(0, split="val")):
        with pytest.raises(ValueError, match="split"):
            call()


# ----------------------------------------------------------------------------- generation
def test_determinism():
    a, b, c = (S.generate_shapes(40, seed=s) for s in (1, 1, 2))
    assert [x[1] for x in a] == [x[1] for x in b]
    assert all(_pixels(x[0]).tobytes() == _pixels(y[0]).tobytes() for x, y in zip(a, b))
    assert [x[1] for x in a] != [x[1] for x in c]
    assert b"".join(_pixels(x[0]).tobytes() for x in a) != b"".join(_pixels(x[0]).tobytes() for x in c)
    rng1, rng2 = (np.random.Generator(np.random.PCG64(5)) for _ in range(2))
    assert S.sample_attributes(rng1) == S.sample_attributes(rng2)


def test_held_out_never_in_train():
    rng = np.random.Generator(np.random.PCG64(0))
    train = [S.sample_attributes(rng)["caption"] for _ in range(2000)]
    assert not any(S.is_held_out(c) for c in train)
    assert set(train) == set(S.all_captions("train"))
    held = [S.sample_attributes(rng, split="held_out")["caption"] for _ in range(300)]
    assert all(S.is_held_out(c) for c in held) and set(held) == set(S.all_captions("held_out"))
    assert not any(S.is_held_out(c) for _, c in S.generate_shapes(500, seed=3))


def test_renders_exact_size_position_colours(renders):
    for image, caption, meta in renders:
        px = _pixels(image)
        assert image.mode == "RGB" and px.shape == (64, 64, 3)
        attrs = S.parse_caption(caption)
        bg, fg = np.array(S.BACKGROUNDS[attrs["background"]]), np.array(S.COLORS[attrs["color"]])
        is_bg, is_fg = (px == bg).all(-1), (px == fg).all(-1)
        assert (is_bg | is_fg).all(), "every pixel is exactly the background or the shape colour"
        lo, hi = S.SIZE_RANGES[attrs["size"]]
        assert lo <= meta["size_px"] <= hi
        rows, cols = np.flatnonzero(is_fg.any(1)), np.flatnonzero(is_fg.any(0))
        # the shape's pixel bbox is the full box, so it is fully inside the frame (not clipped)
        assert rows[-1] - rows[0] + 1 == meta["size_px"] == cols[-1] - cols[0] + 1
        assert ((cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2) == meta["center"]


def test_shape_geometry():
    fill = {sh: S.render_shape(30, "red", sh, "black", as_array=True) for sh in S.SHAPES}
    ratios = {sh: (a == S.COLORS["red"]).all(-1).sum() / 30**2 for sh, a in fill.items()}
    assert ratios["square"] == 1.0
    assert abs(ratios["circle"] - np.pi / 4) < 0.03
    assert abs(ratios["triangle"] - 0.5) < 0.06
    tri = (fill["triangle"] == S.COLORS["red"]).all(-1)[17:47, 17:47]
    assert tri[0].sum() <= 2 and tri[-1].all()  # apex at top centre, base = bottom edge
    assert np.array_equal(tri, tri[:, ::-1])  # isosceles


def test_render_shape_api():
    image = S.render_shape(20, "blue", "square", "white", center=(10, 54))
    assert isinstance(image, Image.Image)
    array = S.render_shape(20, "blue", "square", "white", center=(10, 54), as_array=True)
    assert array.dtype == np.uint8 and np.array_equal(array, _pixels(image))
    assert (array[44:64, 0:20] == S.COLORS["blue"]).all()
    with pytest.raises(ValueError, match="center"):
        S.render_shape(20, "blue", "square", "white", center=(5, 32))
    with pytest.raises(ValueError, match="color"):
        S.render_shape(20, "pink", "square", "white")
    with pytest.raises(ValueError, match="size_px"):
        S.render_shape(0, "blue", "square", "white")


# ----------------------------------------------------------------------------- datasets
def test_make_dataset():
    from datasets import Image as ImageFeature, Value

    ds = S.make_dataset(30, seed=4, split="held_out")
    assert len(ds) == 30 and ds.column_names == ["image", "text", "held_out"]
    assert isinstance(ds.features["image"], ImageFeature) and ds.features["text"] == Value("string")
    assert ds.features["held_out"] == Value("bool") and ds["held_out"] == [True] * 30
    reference = S.generate_shapes(30, seed=4, split="held_out")
    assert ds["text"] == [c for _, c in reference]
    assert np.array_equal(_pixels(ds[5]["image"].convert("RGB")), _pixels(reference[5][0]))


def test_to_imagefolder_round_trip(tmp_path):
    from datasets import load_dataset

    out = S.to_imagefolder(25, tmp_path / "shapes", seed=9)
    assert len(list(out.glob("*.png"))) == 25
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert lines[0] == {"file_name": "00000.png", "text": S.generate_shapes(1, seed=9)[0][1], "held_out": False}
    loaded = load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 25 and set(loaded.column_names) == {"image", "text", "held_out"}
    assert sorted(loaded["text"]) == sorted(line["text"] for line in lines)

    with pytest.raises(ValueError, match="not empty"):
        S.to_imagefolder(5, out)
    S.to_imagefolder(S.make_dataset(5, seed=1), out, overwrite=True)
    assert len(list(out.glob("*.png"))) == 5
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 5



@pytest.mark.parametrize("bad, error", [
    (dict(dataset_or_num_images=-1), "dataset_or_num_images"),
    (dict(dataset_or_num_images=10.0), "dataset_or_num_images"),
    (dict(dataset_or_num_images="10"), "dataset_or_num_images"),
    (dict(dataset_or_num_images=True), "dataset_or_num_images"),
    (dict(dataset_or_num_images=3, split="validation"), "split"),
    (dict(dataset_or_num_images=3, seed=-1), "seed"),
    (dict(dataset_or_num_images=3, overwrite="yes"), "overwrite"),
    (dict(dataset_or_num_images="dataset without text"), "'text' column"),
])
def test_to_imagefolder_checks_every_argument_before_deleting(tmp_path, bad, error):
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.new("RGB", (4, 4), "red").save(folder / "my_photo.png")
    (folder / "metadata.jsonl").write_text('{"file_name": "my_photo.png", "text": "mine"}\n')
    if bad["dataset_or_num_images"] == "dataset without text":
        bad = dict(dataset_or_num_images=S.make_dataset(2).remove_columns("text"))
    with pytest.raises((ValueError, TypeError), match=error):
        S.to_imagefolder(directory=folder, **{"overwrite": True, **bad})
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.jsonl", "my_photo.png"]
    assert "mine" in (folder / "metadata.jsonl").read_text()


# ----------------------------------------------------------------------------- evaluator
def _stack(renders):
    return np.stack([_pixels(r[0]) for r in renders]), [r[1] for r in renders]


def test_score_ground_truth(renders):
    result = S.score_images([r[0] for r in renders], [r[1] for r in renders], return_predictions=True)
    assert result["n"] == 600
    for key in ("background", "color", "shape", "size", "mean", "all"):
        assert result[key] >= 0.99, (key, result[key])
    centres = [p["center"] for p in result["per_image"]]
    assert centres == [r[2]["center"] for r in renders]
    assert [p["size_px"] for p in result["per_image"]] == [r[2]["size_px"] for r in renders]


def test_score_input_formats(renders):
    import torch

    arrays, captions = _stack(renders[:100])
    as_float = S.score_images(arrays.astype(np.float32) / 255.0, captions)
    as_tensor = S.score_images(torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0, captions)
    upscaled = S.score_images([r[0].resize((128, 128), Image.NEAREST) for r in renders[:100]], captions)
    for result in (as_float, as_tensor, upscaled):
        assert result["all"] >= 0.99
    assert S.predict_attributes(arrays[0]) == S.predict_attributes(renders[0][0])
    assert S.object_center(renders[0][0]) == renders[0][2]["center"]


def test_score_noisy_renders(renders):
    arrays, captions = _stack(renders)
    rng = np.random.default_rng(0)
    noisy = np.clip(arrays / 255.0 + rng.normal(0.0, 0.05, arrays.shape), 0.0, 1.0)
    result = S.score_images(noisy, captions)
    for key in ("background", "color", "shape", "size"):
        assert result[key] >= 0.95, (key, result[key])


def test_score_can_fail(renders):
    images = [r[0] for r in renders[:200]]
    colours, shapes = list(S.COLORS), list(S.SHAPES)

    def shifted(caption, key, values):
        attrs = S.parse_caption(caption)
        attrs[key] = values[(values.index(attrs[key]) + 1) % len(values)]
        return S.make_caption(**attrs)

    wrong_colour = S.score_images(images, [shifted(r[1], "color", colours) for r in renders[:200]])
    assert wrong_colour["color"] < 0.05 and wrong_colour["background"] >= 0.99
    wrong_shape = S.score_images(images, [shifted(r[1], "shape", shapes) for r in renders[:200]])
    assert wrong_shape["shape"] < 0.05 and wrong_shape["all"] < 0.05
    empty = Image.new("RGB", (64, 64), (15, 15, 15))
    blank = S.score_images([empty], ["a small red circle on a black background"])
    assert blank["background"] == 1.0 and blank["color"] == blank["shape"] == blank["size"] == 0.0


def test_score_bad_inputs(renders):
    arrays, captions = _stack(renders[:4])
    with pytest.raises(ValueError, match="lengths must match"):
        S.score_images(arrays, captions[:3])
    with pytest.raises(ValueError, match="shape"):
        S.score_images(arrays[..., 0], captions)
    with pytest.raises(ValueError, match="shape"):
        S.score_images(np.zeros((4, 64, 64, 4), np.uint8), captions)
    with pytest.raises(ValueError, match="caption"):
        S.score_images(arrays, ["a big red circle on a white background"] * 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.score_images(arrays.astype(np.float32) / 127.5 - 1.0, captions)



def test_score_images_reads_integer_arrays_as_0_255():
    import torch

    arrays, captions = _stack(S.generate_shapes(4, seed=3, as_array=True))
    nchw = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    for images in (arrays.astype(np.int64), list(arrays.astype(np.int32)), nchw.long(), nchw,
                   (nchw.float() / 255.0).bfloat16(), [Image.fromarray(a) for a in arrays]):
        assert S.score_images(images, captions)["all"] == 1.0


def test_score_images_refuses_0_255_floats_non_finite_and_odd_dtypes():
    import torch

    arrays, captions = _stack(S.generate_shapes(2, seed=3, as_array=True))
    floats = arrays.astype(np.float32)
    nan, inf = floats / 255.0, floats / 255.0
    nan[0, 0, 0, 0], inf[1, 5, 5, 2] = np.nan, np.inf
    cases = [(floats, r"images must hold uint8 .*0\.\.255, or floats in \[0, 1\].*up to 2\d\d"),
             (torch.from_numpy(floats).permute(0, 3, 1, 2), r"images must hold .*up to 2\d\d"),
             (list(floats), r"images\[0\] must hold .*up to 2\d\d"),
             (arrays.astype(np.int64) * 2, "images must hold .*integer values from"),
             (arrays.astype(np.int16) - 300, "images must hold .*integer values from -"),
             (nan, r"images holds 1 non-finite value\(s\)"), (inf, r"images holds 1 non-finite value\(s\)"),
             (arrays > 100, "got dtype bool")]
    for images, message in cases:
        with pytest.raises(ValueError, match=message):
            S.score_images(images, captions)
    with pytest.raises(ValueError, match=r"image must hold .*0\.\.255, or floats in \[0, 1\]"):
        S.predict_attributes(floats[0])


def test_predict_attributes_refuses_a_list_by_name():
    image = S.generate_shapes(1, seed=3, as_array=True)[0][0]
    with pytest.raises(ValueError, match=r"image must be one PIL image, an \(H, W, 3\) numpy array.*got list"):
        S.predict_attributes([image])


# ------------------------------------------------------------------------------------------------- command line
def test_the_command_line_writes_a_new_folder_and_refuses_bad_arguments_first(tmp_path, capsys):
    import subprocess
    import sys

    from datasets import load_from_disk

    from galip_diffusers.data.shapes_cli import main

    main([str(tmp_path / "arrow"), "--num_images", "3", "--seed", "1"])
    assert load_from_disk(str(tmp_path / "arrow"))["text"] == [t for _, t in S.generate_shapes(3, seed=1)]
    main([str(tmp_path / "folder"), "--num_images", "2", "--format", "imagefolder", "--split", "held_out"])
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["00000.png", "00001.png", "metadata.jsonl"]
    capsys.readouterr()
    for argv, message in [([str(tmp_path / "arrow")], "already exists"), ([str(tmp_path / "x"), "--num_images", "0"],
                          "--num_images must be an integer >= 1"), ([""], "output_dir is empty")]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "galip_diffusers.data.shapes", str(tmp_path / "m"), "--num_images",
                           "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "wrote 1 train images" in done.stdout and "RuntimeWarning" not in done.stderr


@pytest.mark.parametrize("data_format", ["imagefolder", "arrow"])
def test_an_interrupted_command_leaves_no_folder(tmp_path, monkeypatch, capsys, data_format):
    from galip_diffusers.data import imagefolder
    from galip_diffusers.data.shapes_cli import main

    def interrupted(rows, folder):
        (folder / "00000.png").write_bytes(b"half a data set")
        raise KeyboardInterrupt

    def interrupted_build(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imagefolder, "_write_rows", interrupted)
    monkeypatch.setattr(S, "make_dataset", interrupted_build)
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "out"), "--num_images", "5", "--format", data_format])
    assert info.value.code == 130 and "interrupted; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the data set nor its temporary folder
