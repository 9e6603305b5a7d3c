"""Small tarballs laid out like the three emoji npm packages (never real artwork), for the emoji tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from galip_diffusers.data.emoji import NpmPackage, npm_integrity

# two base emoji (one with two skin tones) and one without a Noto image
EMOJI_JSON = [
    {"unified": "1F436", "image": "1f436.png", "has_img_twitter": True, "has_img_google": True},
    {"unified": "1F44B", "image": "1f44b.png", "has_img_twitter": True, "has_img_google": True,
     "skin_variations": {
         "1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png", "has_img_twitter": True,
                   "has_img_google": True},
         "1F3FF": {"unified": "1F44B-1F3FF", "image": "1f44b-1f3ff.png", "has_img_twitter": True,
                   "has_img_google": True}}},
    {"unified": "2764-FE0F", "image": "2764-fe0f.png", "has_img_twitter": True, "has_img_google": False},
]
LABELS = [
    {"label": "dog face", "hexcode": "1F436", "group": 3},
    {"label": "waving hand", "hexcode": "1F44B", "group": 1, "skins": [
        {"label": "waving hand: light skin tone", "hexcode": "1F44B-1F3FB", "group": 1, "tone": 1},
        {"label": "waving hand: dark skin tone", "hexcode": "1F44B-1F3FF", "group": 1, "tone": 5}]},
    {"label": "red heart", "hexcode": "2764", "group": 0},  # emojibase drops -FE0F
]
HELD_OUT = {"about": "fixture", "held_out": [
    {"unified": "1F436", "concept": "1F436", "label": "dog face", "styles": ["noto"]},
    {"unified": "1F44B-1F3FF", "concept": "1F44B", "label": "waving hand: dark skin tone",
     "styles": ["twemoji", "noto"]},
]}
IMAGE_DIR = {"twemoji": "package/img/twitter/64/", "noto": "package/img/google/64/"}


def _png(colour, alpha=255) -> bytes:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (32, 32), (*colour, alpha)), (16, 16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _image_members(style: str, corrupt: str | None = None, skip: str | None = None) -> dict[str, bytes]:
    members = {"package/emoji.json": json.dumps(EMOJI_JSON).encode()}
    files = ["1f436.png", "1f44b.png", "1f44b-1f3fb.png", "1f44b-1f3ff.png"]
    if style == "twemoji":
        files.append("2764-fe0f.png")
    for index, name in enumerate(files):
        if name == skip:
            continue
        colour = (40 * index, 200 - 30 * index, 100 if style == "twemoji" else 0)
        members[IMAGE_DIR[style] + name] = b"not a png" if name == corrupt else _png(colour, alpha=128)
    return members


def make_fixture(tmp_path: Path, corrupt: str | None = None, skip: str | None = None):
    """Tarballs, packages pinned to their integrity, and a held-out list, all under tmp_path."""
    paths = {
        "twemoji": _tarball(tmp_path / "twemoji.tgz", _image_members("twemoji", corrupt, skip)),
        "noto": _tarball(tmp_path / "noto.tgz", _image_members("noto")),
        "labels": _tarball(tmp_path / "labels.tgz", {"package/en/data.json": json.dumps(LABELS).encode()}),
    }
    packages = {key: NpmPackage(f"fixture-{key}", "1.0.0", npm_integrity(path)) for key, path in paths.items()}
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps(HELD_OUT))
    return paths, packages, held_out
