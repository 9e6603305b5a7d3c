"""A tiny byte-level BPE learner that produces a real :class:`~transformers.CLIPTokenizer`.

The full CLIP vocabulary has 49,408 tokens; at text width 128 its embedding table alone is 6.3M parameters. A corpus
of a few dozen distinct words needs only a few dozen merges, so :func:`train_bpe_tokenizer` learns them with plain
greedy pair-merge BPE (Sennrich et al., 2016) over the corpus' words and builds a ``CLIPTokenizer`` whose vocabulary is

1. the 256 byte-level symbols of ``bytes_to_unicode`` (the byte fallback: any text still tokenises),
2. the same 256 symbols with the ``</w>`` end-of-word marker,
3. one token per learned merge, in merge order,
4. ``<|startoftext|>`` and ``<|endoftext|>``.

This is the layout of OpenAI's CLIP vocabulary, just with fewer merges, so the result saves as ``vocab.json`` +
``merges.txt`` and loads back with ``CLIPTokenizer.from_pretrained(folder)``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Iterable

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

END_OF_WORD = "</w>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
NUM_BASE_TOKENS = 2 * 256 + 2  # byte symbols, their </w> forms, and the two special tokens

Pair = tuple[str, str]


def byte_level_vocab() -> dict[str, int]:
    """The base vocabulary (no merges): 256 byte symbols, their ``</w>`` forms, then BOS and EOS (514 ids)."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + END_OF_WORD for s in symbols])}
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab


def pretokenize(texts: Iterable[str]) -> Counter:
    """Word frequencies of ``texts`` after CLIP's own normalisation and pre-tokenisation.

    Words come back in byte-level unicode (the ``bytes_to_unicode`` alphabet), exactly as the BPE model sees them.
    """
    backend = CLIPTokenizer(vocab=byte_level_vocab(), merges=[]).backend_tokenizer
    counts: Counter = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
        counts.update(word for word, _ in words)
    return counts


def _merge_word(symbols: tuple[str, ...], pair: Pair) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_bpe_merges(word_counts: Counter, num_merges: int | None = None) -> list[Pair]:
    """Greedy BPE: repeatedly merge the most frequent adjacent symbol pair (ties: the lexicographically smallest).

    Words are split into byte-level symbols, the last one carrying ``</w>``. Stops after ``num_merges`` merges, or,
    with ``num_merges=None``, once every word is a single symbol (so every corpus word is one whole-word token).
    """
    if num_merges is not None and num_merges < 0:
        raise ValueError(f"num_merges must be None or >= 0, got {num_merges}")
    words: dict[tuple[str, ...], int] = Counter()
    for word, count in word_counts.items():
        if word:
            words[tuple(word[:-1]) + (word[-1] + END_OF_WORD,)] += count
    merges: list[Pair] = []
    while num_merges is None or len(merges) < num_merges:
        pairs: Counter = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = Counter()
        for symbols, count in words.items():
            merged[_merge_word(symbols, best)] += count
        words = merged
    return merges


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int | None = None,
    num_merges: int | None = None,
    model_max_length: int = 77,
) -> CLIPTokenizer:
    """Learn a small BPE vocabulary on ``texts`` and return a ``CLIPTokenizer`` built from it.

    Args:
        texts: the training corpus (e.g. all training captions).
        vocab_size: total vocabulary size including the 514 base tokens; mutually exclusive with ``num_merges``.
        num_merges: number of merges to learn. With neither given, merges are learned until every corpus word is a
            single token.
        model_max_length: the context length the text encoder is built with (``max_position_embeddings``);
            the pipeline pads prompts to it.

    Returns:
        A ``CLIPTokenizer`` (``len(tokenizer) == 514 + number of merges``). Save it with ``save_pretrained``.
    """
    if vocab_size is not None and num_merges is not None:
        raise ValueError("pass either vocab_size or num_merges, not both")
    if vocab_size is not None:
        if vocab_size < NUM_BASE_TOKENS:
            raise ValueError(f"vocab_size must be at least {NUM_BASE_TOKENS} (the byte-level base), got {vocab_size}")
        num_merges = vocab_size - NUM_BASE_TOKENS
    if model_max_length < 3:
        raise ValueError(f"model_max_length must be >= 3 (BOS, one token, EOS), got {model_max_length}")
    merges = learn_bpe_merges(pretokenize(texts), num_merges)
    base = byte_level_vocab()
    special = [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for token, i in base.items() if token not in special}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for token in special:
        vocab[token] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def save_bpe_tokenizer(tokenizer: CLIPTokenizer, save_directory: str | os.PathLike) -> tuple[str, ...]:
    """Save ``tokenizer`` with ``save_pretrained`` (``tokenizer.json``) plus OpenAI-style ``vocab.json`` and
    ``merges.txt``, so the folder loads with ``CLIPTokenizer.from_pretrained`` in any transformers version."""
    save_directory = str(save_directory)
    files = list(tokenizer.save_pretrained(save_directory))
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    vocab_file = os.path.join(save_directory, "vocab.json")
    merges_file = os.path.join(save_directory, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump(model["vocab"], f, ensure_ascii=False, indent=1)
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{left} {right}\n" for left, right in merges)
    return tuple(files + [vocab_file, merges_file])
