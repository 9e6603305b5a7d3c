"""The pinned npm packages of the emoji data set (:mod:`galip_diffusers.data.emoji`) and their tarballs: fetched with
npm's own client (``npm pack``) into a cache folder, or given by the user, and each one's SHA-512 checked against the
``integrity`` npm publishes for that version, so that a changed, truncated or substituted tarball is refused before
anything is read from it. The messages name both ways round a problem, the command line's flags
(``--twemoji_tarball``, ...) and the Python arguments (``tarballs={...}``)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

from galip_core.paths import check_output_folder

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package: name, version and the ``integrity`` the registry publishes for its tarball."""

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


PACKAGES: Dict[str, NpmPackage] = {
    "twemoji": NpmPackage(
        "emoji-datasource-twitter", "16.0.0",
        "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
    ),
    "noto": NpmPackage(
        "emoji-datasource-google", "16.0.0",
        "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
    ),
    "labels": NpmPackage(
        "emojibase-data", "17.0.0",
        "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==",
    ),
}


class EmojiDataError(ValueError):
    """A tarball or its content is not what the pinned npm package holds."""


def default_cache_dir() -> Path:
    """``$GALIP_EMOJI_CACHE``, else ``~/.cache/galip_diffusers/npm``: where ``npm pack`` puts the tarballs."""
    return Path(os.environ.get("GALIP_EMOJI_CACHE") or Path.home() / ".cache" / "galip_diffusers" / "npm")


def check_cache_dir(cache_dir: Optional[PathLike], flag: str = "cache_dir") -> Path:
    """The folder ``npm pack`` fetches into, checked before anything is fetched: ``cache_dir`` (named ``flag`` in the
    errors), else ``$GALIP_EMOJI_CACHE``, else the default (:func:`default_cache_dir`). An empty path is refused (it
    would fetch 140 MB into the current folder), and so is a file or a folder that cannot be written."""
    if cache_dir is None:
        flag = "$GALIP_EMOJI_CACHE" if os.environ.get("GALIP_EMOJI_CACHE") else "the default cache folder"
        cache_dir = default_cache_dir()
    check_output_folder(flag, os.fspath(cache_dir))
    return Path(cache_dir)


def npm_integrity(path: PathLike) -> str:
    """The npm ``integrity`` string (``sha512-<base64>``) of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def verify_tarball(path: PathLike, package: NpmPackage, packages: Mapping[str, NpmPackage] = PACKAGES) -> Path:
    """Check that ``path`` is a file carrying ``package``'s integrity; return it as a ``Path``. A tarball of another
    of ``packages`` is named as such (two tarballs given in each other's place)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{package.spec}: {path} is a folder, not a tarball; give the file "
                                f"{package.tarball_name} (from `npm pack {package.spec}`)")
    if not path.is_file():
        raise FileNotFoundError(f"{package.spec}: tarball {path} does not exist")
    found = npm_integrity(path)
    swapped = [(key, other) for key, other in packages.items() if other.integrity == found and other != package]
    if swapped:
        key, other = swapped[0]
        raise EmojiDataError(f"{path} is the tarball of {other.spec} (the {key!r} one), not of {package.spec}; were "
                             "two tarballs given in each other's place?")
    if found != package.integrity:
        raise EmojiDataError(
            f"{package.spec}: integrity check failed for {path}: expected {package.integrity}, got {found}. "
            "The file is corrupt, truncated or another version; fetch it again with `npm pack "
            f"{package.spec}`."
        )
    return path


def fetch_tarballs(cache_dir: Optional[PathLike], packages: Mapping[str, NpmPackage] = PACKAGES) -> Dict[str, Path]:
    """Fetch the tarballs with ``npm pack`` into ``cache_dir`` (reusing verified ones) and verify each one.

    Returns ``{key: path}`` for the keys of ``packages``. ``cache_dir`` is checked first (:func:`check_cache_dir`;
    ``None``: ``$GALIP_EMOJI_CACHE`` or the default). ``npm`` must be on ``PATH``; a tarball already in
    ``cache_dir`` with the right integrity is not fetched again.
    """
    cache_dir = check_cache_dir(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, package in packages.items():
        path = cache_dir / package.tarball_name
        if not (path.is_file() and npm_integrity(path) == package.integrity):
            _npm_pack(package, cache_dir, packages)
        paths[key] = verify_tarball(path, package, packages)
    return paths


def _npm_pack(package: NpmPackage, cache_dir: Path, packages: Mapping[str, NpmPackage]) -> None:
    npm = shutil.which("npm")
    if npm is None:  # the two ways round it, for the command line and for Python
        flags = ", ".join(f"--{key}_tarball" for key in packages)
        raise RuntimeError(
            f"`npm` is not on PATH and {cache_dir} has no verified {package.tarball_name}: install Node.js/npm; or run "
            f"`npm pack {' '.join(p.spec for p in packages.values())}` elsewhere and copy the tarballs into "
            f"{cache_dir}, or pass them ({flags} on the command line, build_dataset(tarballs={{...}}) in Python)."
        )
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:  # a failed download never lands in cache_dir
        done = subprocess.run([npm, "pack", package.spec, "--silent"], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`npm pack {package.spec}` failed: {done.stderr.strip()[-500:]}")
        os.replace(Path(tmp) / package.tarball_name, cache_dir / package.tarball_name)
