"""A transformers ``CLIPTokenizer`` built from the BPE file that ships in OpenAI's ``clip`` package.

The ``clip`` packages (``clip-anytorch``, ``openai-clip``) import torchvision at import time, so this module never
imports them: it only locates ``bpe_simple_vocab_16e6.txt.gz`` in the installed package.

The tokenizer gives the same ids as ``clip.tokenize(text, truncate=True)`` up to and including ``<|endoftext|>``
(``clip.tokenize`` pads with id 0, ours with ``<|endoftext|>``; under CLIP's causal mask and EOT pooling the text
embedding is the same). ``clip`` also cleans the text first (``ftfy.fix_text``, ``html.unescape`` twice, Python's
``str.lower``); for text that this cleaning leaves unchanged the ids are identical. :func:`clip_text_clean` applies the
same cleaning, for exact parity on curly quotes, HTML entities, ligatures, full-width forms or a word-final capital Σ.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from galip_core.text import clip_text_clean  # noqa: F401  (re-exported: part of this module's API)

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: Packages that ship the BPE file, in order of preference.
BPE_PACKAGES = ("clip", "open_clip")
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def find_clip_bpe_file() -> str:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside an installed ``clip`` (or ``open_clip``) package."""
    for package in BPE_PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            path = os.path.join(location, BPE_FILE_NAME)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(
        f"Cannot find {BPE_FILE_NAME}: install the `clip` package (pip install 'galip-diffusers[convert]') or pass "
        f"the file's path (bpe_path / --bpe)."
    )


def read_clip_bpe(bpe_path: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges exactly as ``clip.simple_tokenizer.SimpleTokenizer`` builds them (49,408 ids)."""
    bpe_path = bpe_path or find_clip_bpe_file()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # SimpleTokenizer skips the version line and keeps 49152 - 256 - 2 merges.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    if not merges or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_path!r} is not a CLIP BPE merges file.")
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    return {token: i for i, token in enumerate(tokens)}, merges


def build_clip_tokenizer(bpe_path: str | None = None, model_max_length: int = 77) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` with OpenAI CLIP's vocabulary (ids match ``clip.tokenize``)."""
    vocab, merges = read_clip_bpe(bpe_path)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def write_vocab_and_merges(tokenizer: CLIPTokenizer, folder: str) -> None:
    """Write the BPE model of ``tokenizer`` as ``vocab.json`` and ``merges.txt`` into ``folder``."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(backend["vocab"], f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in backend["merges"]:
            f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")

