"""Open emoji artwork with CLDR captions as a Hugging Face ``datasets.Dataset``.

Three npm packages make a licensed image-caption data set:

* ``emoji-datasource-twitter@16.0.0``: Twemoji PNGs at 64 px (graphics CC-BY 4.0, attribution required);
* ``emoji-datasource-google@16.0.0``: Noto Emoji PNGs at 64 px (Apache-2.0);
* ``emojibase-data@17.0.0`` (MIT): the CLDR English label, group and skin tone of every emoji.

Both image packages follow emoji-data's ``emoji.json`` (``unified`` codes, ``skin_variations``, ``has_img_*``
flags); emojibase's ``hexcode`` is the same code, sometimes without ``-FE0F``. Every image (base emoji and skin-tone
variant, 3,786 per style) becomes one row. The alpha channel is composited on white and the image is stored as
64x64 RGB, the pixels a text-to-image model is trained and judged on.

Columns: ``image`` (PIL, 64x64 RGB), ``text`` (list of captions), ``style`` (``twemoji`` or ``noto``), ``concept``
(the base emoji's ``unified`` code; tone variants share it), ``unified`` (this image's code), ``label`` (CLDR
label), ``tone`` (a skin-tone variant's CLDR tone, e.g. ``"dark"``; two people of different tones join both,
``"light,dark"``; ``""`` for base emoji),
``group`` (CLDR group, e.g. ``"animals-nature"``), ``held_out`` (bool: listed in ``held_out.json``).

Caption contract, every row has exactly these two: ``"{label}"`` and ``"{label}, {style} style"``; a skin tone is
part of the CLDR label (``"waving hand: dark skin tone, twemoji style"``).

The tarballs are fetched with npm's own client (``npm pack``) or given by the user, and each one's SHA-512 must
equal the integrity npm publishes for that version (pinned in :mod:`.emoji_npm`): a changed, truncated or
substituted tarball is refused before anything is read from it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from PIL import Image

from galip_core.images import rgb_on_white
from galip_core.staging import write_new_folder

from .emoji_npm import (  # noqa: F401  (the tarballs' part of this module's API)
    PACKAGES, EmojiDataError, NpmPackage, PathLike, check_cache_dir, default_cache_dir, fetch_tarballs,
    npm_integrity, verify_tarball,
)

if TYPE_CHECKING:  # datasets is imported at call time
    from datasets import Dataset

STYLES: Tuple[str, ...] = ("twemoji", "noto")
SPLITS: Tuple[str, ...] = ("train", "held_out", "all")
IMAGE_SIZE = 64


IMAGE_DIRS: Dict[str, str] = {"twemoji": "package/img/twitter/64/", "noto": "package/img/google/64/"}
IMAGE_FLAGS: Dict[str, str] = {"twemoji": "has_img_twitter", "noto": "has_img_google"}
TONE_NAMES: Dict[str, str] = {
    "1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark",
}
GROUP_NAMES: Tuple[str, ...] = (
    "smileys-emotion", "people-body", "component", "animals-nature", "food-drink", "travel-places", "activities",
    "objects", "symbols", "flags",
)
DATASET_CARD = """---
license: other
license_name: cc-by-4.0-and-apache-2.0
task_categories: [text-to-image]
pretty_name: Open emoji artwork with CLDR captions
---
# Emoji (Twemoji + Noto) with CLDR captions

Built by `galip_diffusers.data.emoji` from the npm packages {specs}.

* {n} images ({counts}), 64x64 RGB, alpha composited on white. Split: `{split}`.
* Columns: `image`, `text` (captions `"{{label}}"` and `"{{label}}, {{style}} style"`), `style`, `concept`,
  `unified`, `label`, `tone`, `group`, `held_out`.

## Licences and attribution
* **Twemoji** graphics (`style == "twemoji"`): Copyright 2020 Twitter, Inc and other contributors, licensed under
  CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Code and graphics as packaged by `emoji-datasource-twitter`
  (iamcal/emoji-data, MIT for the packaging). Attribution is required when you redistribute these images or models
  that reproduce them.
* **Noto Emoji** graphics (`style == "noto"`): Copyright Google Inc., Apache License 2.0, as packaged by
  `emoji-datasource-google`.
* **Captions**: CLDR annotations via `emojibase-data` (MIT); CLDR data is under the Unicode licence.
"""


# ----------------------------------------------------------------------------- tarballs
def _read_member(archive: tarfile.TarFile, name: str, what: str) -> bytes:
    try:
        member = archive.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise EmojiDataError(f"{what}: {name} is missing from {archive.name}")
    return member.read()


def _read_folder(path: Path, prefix: str) -> Dict[str, bytes]:
    """Every file under ``prefix`` in one sequential pass (random access into a .tgz re-inflates it each time)."""
    files = {}
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.startswith(prefix):
                files[member.name] = archive.extractfile(member).read()
    return files


def _read_json(archive: tarfile.TarFile, name: str) -> object:
    raw = _read_member(archive, name, "metadata")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise EmojiDataError(f"{name} in {archive.name} is not valid JSON: {error}") from None


def composite_on_white(png: bytes, where: str) -> Image.Image:
    """Decode a PNG, composite its alpha on white and return it as 64x64 RGB (a clear error if it is broken)."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            rgba = image.convert("RGBA")
    except Exception as error:  # PIL raises several types for broken files
        raise EmojiDataError(f"{where} is not a readable PNG: {error}") from None
    if rgba.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgba = rgba.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return rgb_on_white(rgba, where)


# ----------------------------------------------------------------------------- labels
def _strip_fe0f(code: str) -> str:
    return "-".join(part for part in code.upper().split("-") if part != "FE0F")


def load_labels(archive: tarfile.TarFile) -> Dict[str, dict]:
    """``{code without FE0F: {"label", "group"}}`` for every emoji and skin variant of emojibase's ``en/data.json``."""
    labels = {}
    for entry in _read_json(archive, "package/en/data.json"):
        group = GROUP_NAMES[entry["group"]] if isinstance(entry.get("group"), int) else ""
        for item in [entry, *entry.get("skins", [])]:
            labels[_strip_fe0f(item["hexcode"])] = {"label": item["label"], "group": group}
    return labels


def _tone(unified: str) -> str:
    """CLDR tone names of a code; two people of one tone have that one tone, as their CLDR label says."""
    tones = [TONE_NAMES[part] for part in unified.upper().split("-") if part in TONE_NAMES]
    return ",".join(dict.fromkeys(tones))


def emoji_records(emoji_json: Sequence[dict], labels: Mapping[str, dict], style: str) -> List[dict]:
    """One record per image of ``style`` (base emoji and skin variants) that has a CLDR label.

    Emoji without an image in this style are skipped (emoji-data's ``has_img_*`` flag); emoji without a CLDR label
    raise, since every image must be captioned.
    """
    flag, records = IMAGE_FLAGS[style], []
    for entry in emoji_json:
        variants = [entry, *(entry.get("skin_variations") or {}).values()]
        for variant in variants:
            if not variant.get(flag):
                continue
            info = labels.get(_strip_fe0f(variant["unified"]))
            if info is None:
                raise EmojiDataError(f"emoji {variant['unified']} ({style}) has no CLDR label in emojibase-data")
            records.append({
                "unified": variant["unified"], "concept": entry["unified"], "image_file": variant["image"],
                "label": info["label"], "group": info["group"], "style": style,
                "tone": _tone(variant["unified"]) if variant is not entry else "",  # swatches are not variants
            })
    return records


def captions(label: str, style: str) -> List[str]:
    """The caption contract: ``["{label}", "{label}, {style} style"]``."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return [label, f"{label}, {style} style"]


# ----------------------------------------------------------------------------- held-out pairs
def load_held_out(path: Optional[PathLike] = None) -> Dict[Tuple[str, str], dict]:
    """``{(unified, style): entry}`` from ``held_out.json`` (default: the copy shipped with the package), every entry
    checked (:func:`_held_out_styles`): a malformed list must not quietly hold out nothing."""
    path = Path(path) if path is not None else Path(__file__).with_name("emoji_held_out.json")
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EmojiDataError(f"cannot read the held-out list {path}: {error}") from None
    entries = content.get("held_out") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise EmojiDataError(f"held-out list {path}: expected a JSON object whose 'held_out' is a list of entries "
                             f'such as {{"unified": "1F436", "styles": ["noto"]}}, got {json.dumps(content)[:80]}')
    return {(entry["unified"], style): entry for index, entry in enumerate(entries)
            for style in _held_out_styles(entry, f"held-out list {path}, held_out[{index}]")}


def _held_out_styles(entry: object, where: str) -> List[str]:
    """The styles of one checked held-out entry; an :class:`EmojiDataError` names the file, the entry and the
    allowed values (``unified`` as the data set's column holds it, ``styles`` from :data:`STYLES`)."""
    unified = entry.get("unified") if isinstance(entry, dict) else None
    if not (isinstance(unified, str) and all(4 <= len(part) <= 6 and set(part) <= set("0123456789ABCDEF")
                                             for part in unified.split("-"))):
        raise EmojiDataError(f"{where}: 'unified' must be an emoji-data code in upper-case hex such as '1F436' or "
                             f"'1F44B-1F3FF', got {entry!r}")
    styles = entry.get("styles")
    if not (isinstance(styles, list) and styles and all(isinstance(s, str) and s in STYLES for s in styles)):
        raise EmojiDataError(f"{where} ({unified}): 'styles' must be a non-empty list drawn from {list(STYLES)}, "
                             f"got {styles!r}")
    return styles


# ----------------------------------------------------------------------------- data set
def read_emoji_images(
    tarballs: Mapping[str, PathLike],
    packages: Mapping[str, NpmPackage] = PACKAGES,
    styles: Sequence[str] = STYLES,
) -> Tuple[List[dict], List[Image.Image]]:
    """Verify the tarballs, then return the records and images (composited on white) of every emoji of ``styles``."""
    styles = (styles,) if isinstance(styles, str) else tuple(styles)  # "noto" is one style, not four letters
    if set(styles) - set(STYLES) or not styles or len(set(styles)) != len(styles):
        raise ValueError(f"styles must be a non-empty subset of {', '.join(STYLES)} without repeats, got "
                         f"{list(styles)}")
    missing = sorted({"labels", *styles} - set(tarballs))
    if missing:
        raise ValueError(f"tarballs is missing the keys {missing}; expected 'labels' and one per style in {list(styles)}")
    paths = {key: verify_tarball(tarballs[key], packages[key], packages) for key in ("labels", *styles)}
    with tarfile.open(paths["labels"]) as archive:
        labels = load_labels(archive)
    records, images = [], []
    for style in styles:
        with tarfile.open(paths[style]) as archive:
            style_records = emoji_records(_read_json(archive, "package/emoji.json"), labels, style)
        pngs = _read_folder(paths[style], IMAGE_DIRS[style])
        for record in style_records:
            name = IMAGE_DIRS[style] + record.pop("image_file")
            if name not in pngs:
                raise EmojiDataError(f"{style} image: {name} is missing from {paths[style]}")
            images.append(composite_on_white(pngs.pop(name), f"{name} ({style})"))
        records.extend(style_records)
    return records, images


def build_dataset(
    tarballs: Optional[Mapping[str, PathLike]] = None,
    cache_dir: Optional[PathLike] = None,
    split: str = "all",
    held_out_path: Optional[PathLike] = None,
    packages: Mapping[str, NpmPackage] = PACKAGES,
) -> "Dataset":
    """Build the emoji data set as a ``datasets.Dataset``.

    Args:
        tarballs: ``{"twemoji": path, "noto": path, "labels": path}`` of tarballs you already have. Without it, the
            packages are fetched with ``npm pack`` into ``cache_dir``.
        cache_dir: where ``npm pack`` puts the tarballs (default :func:`default_cache_dir`; checked first,
            :func:`check_cache_dir`).
        split: ``"train"`` (everything a model may train on), ``"held_out"`` (the pairs of ``held_out.json``) or
            ``"all"`` (both, e.g. for the nearest-neighbour judge).
        held_out_path: another ``held_out.json``; default the copy shipped with the package. Each of its pairs must
            match an image.
        packages: the pinned packages (tests pass fixtures with their own integrity).
    """
    from datasets import Dataset, Features, Image as ImageFeature, Sequence as SequenceFeature, Value

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if tarballs is None:
        tarballs = fetch_tarballs(cache_dir, packages)
    held_out = load_held_out(held_out_path)  # a malformed list fails now, not after reading every image
    records, images = read_emoji_images(tarballs, packages)
    missing = sorted(set(held_out) - {(record["unified"], record["style"]) for record in records})
    if missing:  # a mistyped code, or a style without that image: nothing would be held out for it, without a word
        raise EmojiDataError(f"held-out list {held_out_path or 'emoji_held_out.json'}: {len(missing)} (unified, "
                             f"style) pair(s) match no image, e.g. {', '.join(map(str, missing[:3]))}; check their "
                             "codes (emoji-data's, with -FE0F where it has one) and styles")
    rows = {name: [] for name in ("image", "text", "style", "concept", "unified", "label", "tone", "group", "held_out")}
    for record, image in zip(records, images):
        is_held_out = (record["unified"], record["style"]) in held_out
        if split != "all" and is_held_out != (split == "held_out"):
            continue
        for name in ("style", "concept", "unified", "label", "tone", "group"):
            rows[name].append(record[name])
        rows["image"].append(image)
        rows["text"].append(captions(record["label"], record["style"]))
        rows["held_out"].append(is_held_out)
    features = Features({
        "image": ImageFeature(), "text": SequenceFeature(Value("string")),
        **{name: Value("string") for name in ("style", "concept", "unified", "label", "tone", "group")},
        "held_out": Value("bool"),
    })
    dataset = Dataset.from_dict(rows, features=features)
    dataset.info.description = f"emoji images with CLDR captions, split={split}, from " + ", ".join(
        package.spec for package in packages.values()
    )
    return dataset


def dataset_card(dataset: "Dataset", split: str, packages: Mapping[str, NpmPackage] = PACKAGES) -> str:
    """The dataset card (README.md) with the licences and the Twemoji attribution."""
    counts = {style: sum(1 for s in dataset["style"] if s == style) for style in STYLES}
    return DATASET_CARD.format(
        specs=", ".join(f"`{p.spec}`" for p in packages.values()), n=len(dataset), split=split,
        counts=", ".join(f"{counts[s]} {s}" for s in STYLES),
    )


def save_dataset(dataset: "Dataset", directory: PathLike, split: str = "all") -> Path:
    """``dataset.save_to_disk(directory)`` plus its card, written atomically (``directory`` must not exist)."""

    def write(tmp: Path) -> None:
        dataset.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(dataset_card(dataset, split))

    return write_new_folder(directory, write)


def export_imagefolder(dataset: "Dataset", directory: PathLike, split: str = "all") -> Path:
    """Write ``images/*.png`` + ``metadata.jsonl`` (``file_name``, ``text`` list and the other columns) + card,
    loadable with ``load_dataset("imagefolder", data_dir=directory)`` and ``train_galip.py --train_data_dir``."""

    def write(tmp: Path) -> None:
        (tmp / "images").mkdir()
        with open(tmp / "metadata.jsonl", "w") as metadata:
            for index, row in enumerate(dataset):
                file_name = f"images/{row['style']}_{row['unified'].lower()}.png"
                row.pop("image").save(tmp / file_name)
                metadata.write(json.dumps({"file_name": file_name, **row}) + "\n")
        (tmp / "README.md").write_text(dataset_card(dataset, split))

    return write_new_folder(directory, write)


if __name__ == "__main__":  # python -m galip_diffusers.data.emoji OUT [...]: the command line lives in emoji_cli.py,
    import runpy  # which imports this module; run by name, so that this module never imports its own command line

    runpy.run_module("galip_diffusers.data.emoji_cli", run_name="__main__", alter_sys=True)
