"""Training data (loading, augmentation, corrupt-image skipping), model checks and checkpoint folders."""

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image
from helpers.training_helpers import make_imagefolder

from galip_diffusers.testing_utils import (
    byte_level_clip_tokenizer,
    tiny_discriminator,
    tiny_generator,
    tiny_image_encoder,
    tiny_text_encoder,
)
from galip_diffusers.training.data import (
    GALIPCollator,
    GALIPIterableTrainDataset,
    GALIPTrainDataset,
    check_columns,
    check_resolution,
    default_resolution,
    load_image_text_dataset,
    official_augment,
    pick_caption,
    sample_rng,
)
from galip_diffusers.training.checkpoints import (
    checkpoint_step,
    list_checkpoints,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
)
from galip_diffusers.training.setup import check_models_compatible, discriminator_config_from_clip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_imagefolder(str(tmp_path_factory.mktemp("data")), num_images=8, corrupt=(2,))


@pytest.fixture(scope="module")
def dataset(data_dir, tmp_path_factory):
    return load_image_text_dataset(train_data_dir=data_dir, cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_official_augment_resizes_crops_and_flips_like_the_recipe():
    array = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)  # H=50, W=100
    image = Image.fromarray(array)
    out = official_augment(image, 32, random.Random(3))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert -1.0 <= out.min() and out.max() <= 1.0
    # Hand computation: shorter side to int(32 * 76 / 64) = 38 -> 76x38, crop at the same rng draws, maybe flip.
    rng = random.Random(3)
    resized = image.resize((76, 38), Image.BILINEAR)
    left, top = rng.randint(0, 76 - 32), rng.randint(0, 38 - 32)
    crop = resized.crop((left, top, left + 32, top + 32))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    expected = torch.from_numpy(np.asarray(crop, np.float32).transpose(2, 0, 1) / 127.5 - 1)
    assert torch.equal(out, expected)
    flips = [torch.equal(official_augment(image, 32, random.Random(s)), official_augment(image, 32, random.Random(s),
             random_flip=False)) for s in range(40)]
    assert 5 < sum(flips) < 35  # about half flipped


def test_center_crop_keeps_scale_and_centre():
    square = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = official_augment(Image.fromarray(square), 32, random.Random(0), random_flip=False, center_crop=True)
    assert torch.equal(out, torch.from_numpy(square.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1))  # untouched
    wide = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 80, 3), dtype=np.uint8))  # H=40, W=80
    out = official_augment(wide, 20, random.Random(0), random_flip=False, center_crop=True)
    expected = wide.resize((40, 20), Image.BILINEAR).crop((10, 0, 30, 20))
    assert torch.equal(out, torch.from_numpy(np.asarray(expected, np.float32).transpose(2, 0, 1) / 127.5 - 1))


def test_pick_caption_string_or_random_list_item():
    assert pick_caption("a cat", random.Random(0)) == "a cat"
    picks = {pick_caption(["a", "b", "c"], random.Random(s)) for s in range(30)}
    assert picks == {"a", "b", "c"}
    with pytest.raises(ValueError, match="non-empty string"):
        pick_caption([], random.Random(0))
    with pytest.raises(ValueError, match="non-empty string"):
        pick_caption(None, random.Random(0))


def test_dataset_skips_and_counts_corrupt_images(dataset, caplog):
    train = GALIPTrainDataset(dataset, resolution=32, seed=0)
    assert len(train) == 8
    sample = train[2]  # corrupt -> the next one
    assert sample["num_skipped"] == 1
    assert not torch.equal(sample["pixel_values"], train[3]["pixel_values"])  # example 3, own augmentation
    assert train[1]["num_skipped"] == 0
    assert "Skipping unreadable training example 2" in caplog.text
    # deterministic per (seed, epoch, index); the epoch changes the augmentation
    again = GALIPTrainDataset(dataset, resolution=32, seed=0)
    assert torch.equal(train[5]["pixel_values"], again[5]["pixel_values"])
    again.set_epoch(1)
    epochs_differ = [not torch.equal(train[i]["pixel_values"], again[i]["pixel_values"]) for i in (0, 1, 3, 4, 5)]
    assert any(epochs_differ)


def test_dataset_with_no_readable_image_raises(tmp_path):
    folder = make_imagefolder(str(tmp_path / "bad"), num_images=3, corrupt=(0, 1, 2))
    dataset = load_image_text_dataset(train_data_dir=folder, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="None of the 3 training examples could be read"):
        GALIPTrainDataset(dataset, resolution=32)[0]


def test_streaming_dataset_skips_corrupt_images(data_dir, tmp_path):
    stream = load_image_text_dataset(train_data_dir=data_dir, streaming=True, cache_dir=str(tmp_path))
    samples = list(GALIPIterableTrainDataset(stream, resolution=32))
    assert len(samples) == 7 and sum(s["num_skipped"] for s in samples) == 1


def test_collator_tokenizes_and_sums_skips(dataset):
    train = GALIPTrainDataset(dataset, resolution=32)
    batch = GALIPCollator(byte_level_clip_tokenizer())([train[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["input_ids"].shape == (4, 77)
    assert batch["num_skipped"].tolist() == [0, 0, 1, 0]


def test_missing_columns_are_named_with_the_available_ones(dataset):
    check_columns(dataset, "image", "text")
    with pytest.raises(ValueError, match=r"--image_column 'img' not found; available columns: \['image', 'text'\]"):
        check_columns(dataset, "img", "text")
    with pytest.raises(ValueError, match=r"--caption_column 'caption' not found; available columns"):
        check_columns(dataset, "image", "caption")


def test_load_from_disk_and_split_errors(dataset, tmp_path):
    import datasets

    saved = str(tmp_path / "saved")
    datasets.DatasetDict({"train": dataset}).save_to_disk(saved)
    assert len(load_image_text_dataset(dataset_name=saved)) == 8
    assert len(load_image_text_dataset(train_data_dir=saved)) == 8
    assert len(load_image_text_dataset(train_data_dir=saved, split=None)) == 8  # auto: the only split
    with pytest.raises(ValueError, match=r"Split 'validation' not found .* available splits: \['train'\]"):
        load_image_text_dataset(train_data_dir=saved, split="validation")
    with pytest.raises(ValueError, match="Need either a dataset name"):
        load_image_text_dataset()
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_image_text_dataset(train_data_dir=str(tmp_path / "nope"))


def test_resolution_must_fit_the_generator():
    assert default_resolution(224) == 256 and default_resolution(32) == 32 and default_resolution(48) == 64
    check_resolution(256, 224)
    check_resolution(224, 224)
    with pytest.raises(ValueError, match=r"--resolution 64 is incompatible .*output_size=224.*\[224, 256\]"):
        check_resolution(64, 224)


def test_model_compatibility_errors_name_the_mismatch():
    generator, discriminator = tiny_generator(), tiny_discriminator()
    image_encoder, text_encoder = tiny_image_encoder(), tiny_text_encoder()
    check_models_compatible(generator, discriminator, image_encoder, text_encoder, 32)
    with pytest.raises(ValueError, match="incompatible"):
        check_models_compatible(generator, discriminator, image_encoder, text_encoder, 128)
    with pytest.raises(ValueError, match=r"generator cond_dim=16 but the text encoder's projection_dim=8"):
        check_models_compatible(generator, discriminator, image_encoder, tiny_text_encoder(projection_dim=8), 32)
    with pytest.raises(ValueError, match="discriminator grid_size=7 but the image encoder's patch grid is 5"):
        check_models_compatible(generator, tiny_discriminator(grid_size=7), image_encoder, text_encoder, 32)


def test_discriminator_config_from_clip_reproduces_the_official_sizes():
    from galip_diffusers.models.clip_bridge import VIT_B_32_VISION_CONFIG

    config = discriminator_config_from_clip(VIT_B_32_VISION_CONFIG, 512)
    assert config == {"hidden_size": 768, "out_channels": 512, "cond_dim": 512, "head_channels": 128,
                      "grid_size": 7, "feature_layers": [1, 4, 8]}
    tiny = discriminator_config_from_clip(tiny_image_encoder().config, 16, head_channels=4)
    assert tiny["grid_size"] == 5 and tiny["feature_layers"] == [0, 1, 2] and tiny["head_channels"] == 4


def test_checkpoint_folders_ignore_incomplete_saves(tmp_path):
    out = str(tmp_path)
    for name in ("checkpoint-2", "checkpoint-10", ".incomplete-checkpoint-12", "checkpoint-x"):
        os.makedirs(os.path.join(out, name))
    open(os.path.join(out, "checkpoint-20"), "w").close()  # a file, not a folder
    assert [step for step, _ in list_checkpoints(out)] == [2, 10]
    assert resolve_resume_checkpoint("latest", out) == os.path.join(out, "checkpoint-10")
    with pytest.raises(ValueError, match="is not a checkpoint saved by training"):  # no random_states_0.pkl in it
        resolve_resume_checkpoint("checkpoint-2", out)
    open(os.path.join(out, "checkpoint-2", "random_states_0.pkl"), "w").close()
    assert resolve_resume_checkpoint("checkpoint-2", out) == os.path.join(out, "checkpoint-2")
    assert resolve_resume_checkpoint("latest", str(tmp_path / "empty")) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_resume_checkpoint("checkpoint-7", out)
    assert checkpoint_step(os.path.join(out, "checkpoint-10/")) == 10
    assert remove_incomplete_checkpoints(out) == [os.path.join(out, ".incomplete-checkpoint-12")]
    assert not os.path.exists(os.path.join(out, ".incomplete-checkpoint-12"))
    assert sample_rng(1, 2, 3).random() == sample_rng(1, 2, 3).random() != sample_rng(1, 2, 4).random()


def test_imagefolder_metadata_problems_name_the_file_line_and_column(tmp_path):
    empty = make_imagefolder(str(tmp_path / "empty"), num_images=2)
    open(os.path.join(empty, "metadata.jsonl"), "w").close()
    with pytest.raises(ValueError, match=r"metadata.jsonl' is empty: an imagefolder's metadata.jsonl needs"):
        load_image_text_dataset(train_data_dir=empty)
    mixed = make_imagefolder(str(tmp_path / "mixed"), num_images=2)
    with open(os.path.join(mixed, "metadata.jsonl"), "a") as f:
        f.write('{"file_name": "000.png", "text": "a plain string"}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl': column 'text' is a list on line 1 but a string on line 3"):
        load_image_text_dataset(train_data_dir=mixed)
    broken = make_imagefolder(str(tmp_path / "broken"), num_images=2)
    with open(os.path.join(broken, "metadata.jsonl"), "a") as f:
        f.write('{"file_name": "000.png", "text": \n')
    with pytest.raises(ValueError, match=r"metadata.jsonl' line 3 is not valid JSON"):
        load_image_text_dataset(train_data_dir=broken)
